"""The cloud Jobs service end to end: `localgg cloud start` answers the Jobs device MQTT API,
and the client is the awsiotsdk's own (awsiot.iotjobs.IotJobsClientV2, the request-response
client that matches replies by clientToken, over awscrt MQTT with mutual TLS, as a device
connects to IoT Core); jobs are created, listed, described and cancelled with `localgg cloud
job ...` in the shapes of `aws iot create-job` and friends."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
from concurrent.futures import Future

import pytest
from awscrt import mqtt, mqtt_request_response
from awsiot import ServiceStreamOptions, V2ServiceException, iotjobs, mqtt_connection_builder

from conftest import short_tmp, wait_for
from localgg.cloud import mqtt as cloud_mqtt

TIMEOUT = 10


def start_cloud(directory):
    starts = len(list(directory.parent.glob("cloud-*.out")))
    out = directory.parent / f"cloud-{starts}.out"   # one per start: the banner is this start's
    proc = subprocess.Popen([sys.executable, "-m", "localgg", "cloud", "start", "--dir", str(directory)],
                            stdout=open(out, "w"), stderr=subprocess.STDOUT)
    wait_for(lambda: "localgg cloud running" in out.read_text() and proc.poll() is None
             or proc.poll() is not None, 60, message="the cloud")
    assert proc.poll() is None, out.read_text()
    return proc


def stop_cloud(proc):
    proc.send_signal(signal.SIGTERM)
    proc.wait(30)


@pytest.fixture(scope="module")
def cloud():
    directory = short_tmp("lggj-") / "cloud"
    proc = start_cloud(directory)
    try:
        yield directory
    finally:
        stop_cloud(proc)


def job(cloud, *args):
    return subprocess.run([sys.executable, "-m", "localgg", "cloud", "job", *args, "--cloud", str(cloud)],
                          capture_output=True, text=True, timeout=60)


def create(cloud, job_id, thing, document):
    result = job(cloud, "create", "--job-id", job_id, "--thing-name", thing, "--document", json.dumps(document))
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


class Device:
    """A thing connected with the SDK: its Jobs client, and what notify / notify-next brought."""

    def __init__(self, cloud, thing: str) -> None:
        info = cloud_mqtt.endpoint(cloud)
        cert, key, ca = cloud_mqtt.client_files(cloud, thing)
        self.thing = thing
        self.connection = mqtt_connection_builder.mtls_from_path(
            endpoint=info["host"], port=info["port"], cert_filepath=str(cert), pri_key_filepath=str(key),
            ca_filepath=str(ca), client_id=cloud_mqtt.unique_client_id(thing), clean_session=True,
            keep_alive_secs=30)
        self.connection.connect().result(TIMEOUT)
        self.jobs = iotjobs.IotJobsClientV2(self.connection, mqtt_request_response.ClientOptions(
            max_request_response_subscriptions=4, max_streaming_subscriptions=2, operation_timeout_in_seconds=TIMEOUT))
        self.changed = threading.Condition()
        self.notify: list = []
        self.notify_next: list = []
        self.streams = []
        for create_stream, request_class, seen in (
                (self.jobs.create_job_executions_changed_stream, iotjobs.JobExecutionsChangedSubscriptionRequest,
                 self.notify),
                (self.jobs.create_next_job_execution_changed_stream,
                 iotjobs.NextJobExecutionChangedSubscriptionRequest, self.notify_next)):
            subscribed: Future = Future()

            def status(event, subscribed=subscribed):
                if event.type == mqtt_request_response.SubscriptionStatusEventType.SUBSCRIPTION_ESTABLISHED \
                        and not subscribed.done():
                    subscribed.set_result(True)

            def arrived(event, seen=seen):
                with self.changed:
                    seen.append(event)
                    self.changed.notify_all()
            stream = create_stream(request_class(thing_name=thing),
                                   ServiceStreamOptions(incoming_event_listener=arrived,
                                                        subscription_status_listener=status))
            stream.open()
            subscribed.result(TIMEOUT)
            self.streams.append(stream)

    def wait(self, seen: list, count: int) -> list:
        with self.changed:
            assert self.changed.wait_for(lambda: len(seen) >= count, TIMEOUT), f"{len(seen)} of {count} events"
            return list(seen)

    def close(self) -> None:
        self.streams.clear()   # a StreamingOperation has no close: it ends with its client
        self.connection.disconnect().result(TIMEOUT)


@pytest.fixture
def device(cloud, request):
    thing = "pi-" + request.node.name[-40:].replace("[", "-").replace("]", "").replace("_", "-")
    dev = Device(cloud, thing)
    yield dev
    dev.close()


def rejected(future: Future):
    with pytest.raises(V2ServiceException) as caught:
        future.result(TIMEOUT)
    return caught.value.modeled_error


def test_a_job_created_with_the_cli_reaches_the_device_and_runs_to_succeeded(cloud, device):
    document = {"operation": "rotate", "files": ["a", "b"]}
    created = create(cloud, "rotate-1", device.thing, document)
    assert created == {"jobArn": "arn:aws:iot:us-east-1:123456789012:job/rotate-1", "jobId": "rotate-1",
                       "description": ""}
    nxt = device.wait(device.notify_next, 1)[0].execution
    assert (nxt.job_id, nxt.status, nxt.job_document, nxt.version_number) == ("rotate-1", "QUEUED", document, 1)
    assert device.wait(device.notify, 1)[0].jobs["QUEUED"][0].job_id == "rotate-1"

    pending = device.jobs.get_pending_job_executions(
        iotjobs.GetPendingJobExecutionsRequest(thing_name=device.thing)).result(TIMEOUT)
    assert [s.job_id for s in pending.queued_jobs] == ["rotate-1"] and pending.in_progress_jobs == []

    started = device.jobs.start_next_pending_job_execution(iotjobs.StartNextPendingJobExecutionRequest(
        thing_name=device.thing, status_details={"step": "started"})).result(TIMEOUT)
    execution = started.execution
    assert (execution.status, execution.version_number, execution.status_details) == \
        ("IN_PROGRESS", 2, {"step": "started"})
    assert execution.started_at is not None and execution.job_document == document

    stale = rejected(device.jobs.update_job_execution(iotjobs.UpdateJobExecutionRequest(
        thing_name=device.thing, job_id="rotate-1", status="SUCCEEDED", expected_version=1)))
    assert stale.code == "VersionMismatch" and stale.execution_state.version_number == 2

    done = device.jobs.update_job_execution(iotjobs.UpdateJobExecutionRequest(
        thing_name=device.thing, job_id="rotate-1", status="SUCCEEDED", expected_version=2,
        status_details={"step": "done"}, include_job_execution_state=True)).result(TIMEOUT)
    assert (done.execution_state.status, done.execution_state.version_number) == ("SUCCEEDED", 3)

    again = rejected(device.jobs.update_job_execution(iotjobs.UpdateJobExecutionRequest(
        thing_name=device.thing, job_id="rotate-1", status="IN_PROGRESS")))
    assert again.code == "InvalidStateTransition" and again.execution_state.status == "SUCCEEDED"

    # the last notify has an empty list; notify-next says nothing is next
    assert device.wait(device.notify_next, 2)[-1].execution is None
    wait_for(lambda: device.notify[-1].jobs == {}, TIMEOUT, message="an empty notify")
    described = device.jobs.describe_job_execution(iotjobs.DescribeJobExecutionRequest(
        thing_name=device.thing, job_id="rotate-1", include_job_document=False)).result(TIMEOUT)
    assert described.execution.status == "SUCCEEDED" and described.execution.job_document is None

    shown = json.loads(job(cloud, "describe", "--job-id", "rotate-1", "--thing-name", device.thing).stdout)
    assert shown["execution"]["status"] == "SUCCEEDED"
    assert shown["execution"]["statusDetails"] == {"detailsMap": {"step": "done"}}
    whole = json.loads(job(cloud, "describe", "--job-id", "rotate-1").stdout)["job"]
    assert whole["status"] == "COMPLETED" and whole["jobProcessDetails"]["numberOfSucceededThings"] == 1
    listed = json.loads(job(cloud, "list").stdout)["jobs"]
    assert {"jobId": "rotate-1", "status": "COMPLETED"}.items() <= \
        [j for j in listed if j["jobId"] == "rotate-1"][0].items()


def test_requests_about_what_does_not_exist_are_rejected(cloud, device):
    missing = rejected(device.jobs.describe_job_execution(iotjobs.DescribeJobExecutionRequest(
        thing_name=device.thing, job_id="no-such-job")))
    assert missing.code == "ResourceNotFound" and "no-such-job" in missing.message
    nothing = device.jobs.start_next_pending_job_execution(iotjobs.StartNextPendingJobExecutionRequest(
        thing_name=device.thing)).result(TIMEOUT)
    assert nothing.execution is None and nothing.timestamp is not None
    bad = rejected(device.jobs.start_next_pending_job_execution(iotjobs.StartNextPendingJobExecutionRequest(
        thing_name=device.thing, step_timeout_in_minutes=0)))
    assert bad.code == "InvalidRequest" and "stepTimeoutInMinutes" in bad.message


def test_cancel_reaches_the_device_and_the_cli_refuses_as_the_aws_cli_does(cloud, device):
    create(cloud, "cancel-me", device.thing, {"operation": "noop"})
    device.wait(device.notify_next, 1)
    result = job(cloud, "cancel", "--job-id", "cancel-me")
    assert result.returncode == 0, result.stderr
    assert device.wait(device.notify_next, 2)[-1].execution is None
    duplicate = job(cloud, "create", "--job-id", "cancel-me", "--thing-name", device.thing, "--document", "{}")
    assert duplicate.returncode == 255
    assert duplicate.stderr.startswith("An error occurred (ResourceAlreadyExistsException) when calling the "
                                       "CreateJob operation: ")
    unknown = job(cloud, "describe", "--job-id", "cancel-me", "--thing-name", "someone-else")
    assert unknown.returncode == 255 and "(ResourceNotFoundException)" in unknown.stderr
    assert "DescribeJobExecution" in unknown.stderr
    not_json = job(cloud, "create", "--job-id", "x1", "--thing-name", device.thing, "--document", "{oops")
    assert not_json.returncode == 1 and "--document is not JSON" in not_json.stderr
    no_file = job(cloud, "create", "--job-id", "x1", "--thing-name", device.thing, "--document", "file:///nonexistent")
    assert no_file.returncode == 1 and "--document file:///nonexistent: No such file or directory" in no_file.stderr
    assert "x1" not in job(cloud, "list").stdout


def test_jobs_and_their_executions_survive_a_restart_of_the_cloud(tmp_path):
    directory = short_tmp("lggk-") / "cloud"
    proc = start_cloud(directory)
    try:
        document = tmp_path / "doc.json"
        document.write_text(json.dumps({"operation": "upload"}))
        result = job(directory, "create", "--job-id", "keep-1", "--thing-name", "pi-keep",
                     "--document", f"file://{document}")
        assert result.returncode == 0, result.stderr
        dev = Device(directory, "pi-keep")
        try:
            dev.jobs.start_next_pending_job_execution(iotjobs.StartNextPendingJobExecutionRequest(
                thing_name="pi-keep", status_details={"part": "1"})).result(TIMEOUT)
        finally:
            dev.close()
    finally:
        stop_cloud(proc)
    proc = start_cloud(directory)
    try:
        dev = Device(directory, "pi-keep")
        try:
            again = dev.jobs.start_next_pending_job_execution(iotjobs.StartNextPendingJobExecutionRequest(
                thing_name="pi-keep")).result(TIMEOUT).execution
            assert (again.job_id, again.status, again.status_details, again.version_number,
                    again.job_document) == ("keep-1", "IN_PROGRESS", {"part": "1"}, 2, {"operation": "upload"})
        finally:
            dev.close()
    finally:
        stop_cloud(proc)


class FakeClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_a_step_timer_that_runs_out_times_the_execution_out_and_notifies_the_device():
    """The service's timer thread with a clock of the test's (a step timer is at least a minute)."""
    from localgg.cloud.jobs_service import JobsService
    from localgg.cloud.service import Cloud
    cloud = Cloud(short_tmp("lggt-") / "cloud")
    cloud.start(jobs=False)
    clock = FakeClock(1_700_000_000.0)
    service = JobsService(cloud.directory, clock=clock, timer_poll=0.05)
    service.start()
    try:
        service.control({"action": "create", "jobId": "slow-1", "targets": ["pi-slow"], "document": {"op": "x"}})
        dev = Device(cloud.directory, "pi-slow")
        try:
            started = dev.jobs.start_next_pending_job_execution(iotjobs.StartNextPendingJobExecutionRequest(
                thing_name="pi-slow", step_timeout_in_minutes=1)).result(TIMEOUT).execution
            assert started.status == "IN_PROGRESS"
            clock.now += 59
            assert service.control({"action": "describe", "jobId": "slow-1", "thingName": "pi-slow"})[
                "execution"]["approximateSecondsBeforeTimedOut"] == 1
            clock.now += 1
            assert dev.wait(dev.notify_next, 1)[-1].execution is None     # nothing next any more
            described = dev.jobs.describe_job_execution(iotjobs.DescribeJobExecutionRequest(
                thing_name="pi-slow", job_id="slow-1")).result(TIMEOUT).execution
            assert (described.status, described.version_number) == ("TIMED_OUT", 3)
            late = rejected(dev.jobs.update_job_execution(iotjobs.UpdateJobExecutionRequest(
                thing_name="pi-slow", job_id="slow-1", status="SUCCEEDED")))
            assert late.code == "InvalidStateTransition" and late.execution_state.status == "TIMED_OUT"
        finally:
            dev.close()
    finally:
        service.stop()
        cloud.stop()
