"""jobs.py, the AWS IoT Jobs model: the device API's replies, status transitions, version checks
and notifications, as the developer guide describes them (see the module's docstring)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from localgg.cloud.jobs import TERMINAL, ControlError, Jobs

T0 = 1_700_000_000
DOC = {"operation": "rotate", "version": 2}


def req(model, thing, op, body=None, now=T0, job_id="", raw=None):
    payload = raw if raw is not None else json.dumps(body or {}).encode()
    return model.request(thing, op, payload, now, job_id)


def only(outcome, suffix):
    found = [body for topic, body in outcome.messages if topic.endswith(suffix)]
    assert len(found) == 1, outcome.messages
    return found[0]


def topics(outcome):
    return [topic for topic, _ in outcome.messages]


def test_a_created_job_is_queued_and_notified_on_both_topics():
    model = Jobs()
    out = model.create_job("job-1", ["pi-1"], DOC, T0)
    assert topics(out) == ["$aws/things/pi-1/jobs/notify", "$aws/things/pi-1/jobs/notify-next"]
    assert only(out, "/notify") == {"timestamp": T0, "jobs": {"QUEUED": [
        {"jobId": "job-1", "queuedAt": T0, "lastUpdatedAt": T0, "versionNumber": 1}]}}
    assert only(out, "/notify-next") == {"timestamp": T0, "execution": {
        "jobId": "job-1", "thingName": "pi-1", "status": "QUEUED", "queuedAt": T0, "lastUpdatedAt": T0,
        "versionNumber": 1, "executionNumber": 1, "jobDocument": DOC}}


def test_a_second_job_is_listed_but_is_not_next():
    model = Jobs()
    model.create_job("job-1", ["pi-1"], DOC, T0)
    out = model.create_job("job-2", ["pi-1"], DOC, T0 + 1)
    assert topics(out) == ["$aws/things/pi-1/jobs/notify"]
    assert [s["jobId"] for s in only(out, "/notify")["jobs"]["QUEUED"]] == ["job-1", "job-2"]


def test_start_next_starts_the_oldest_and_echoes_the_client_token():
    model = Jobs()
    model.create_job("job-1", ["pi-1"], DOC, T0)
    model.create_job("job-2", ["pi-1"], DOC, T0 + 1)
    out = req(model, "pi-1", "start-next", {"clientToken": "tok", "statusDetails": {"step": "download"}}, T0 + 5)
    accepted = only(out, "start-next/accepted")
    assert accepted == {"timestamp": T0 + 5, "clientToken": "tok", "execution": {
        "jobId": "job-1", "thingName": "pi-1", "status": "IN_PROGRESS", "statusDetails": {"step": "download"},
        "queuedAt": T0, "startedAt": T0 + 5, "lastUpdatedAt": T0 + 5, "versionNumber": 2, "executionNumber": 1,
        "jobDocument": DOC}}
    # the list changed (QUEUED -> IN_PROGRESS) but the next one is the same: no notify-next
    assert topics(out) == ["$aws/things/pi-1/jobs/start-next/accepted", "$aws/things/pi-1/jobs/notify"]
    assert list(only(out, "/notify")["jobs"]) == ["IN_PROGRESS", "QUEUED"]
    # an IN_PROGRESS execution comes back unchanged: status details and version kept
    again = only(req(model, "pi-1", "start-next", {"statusDetails": {"step": "other"}}, T0 + 6), "accepted")
    assert again["execution"]["statusDetails"] == {"step": "download"} and again["execution"]["versionNumber"] == 2
    assert "clientToken" not in again


def test_start_next_with_nothing_pending_is_accepted_without_an_execution():
    out = req(Jobs(), "pi-1", "start-next", {"clientToken": "c"})
    assert out.messages == [("$aws/things/pi-1/jobs/start-next/accepted", {"timestamp": T0, "clientToken": "c"})]


def test_get_lists_in_progress_and_queued_summaries():
    model = Jobs()
    model.create_job("job-1", ["pi-1"], DOC, T0)
    model.create_job("job-2", ["pi-1"], DOC, T0 + 1)
    req(model, "pi-1", "update", {"status": "IN_PROGRESS"}, T0 + 2, "job-2")
    accepted = only(req(model, "pi-1", "get", {"clientToken": "g"}, T0 + 3), "get/accepted")
    assert accepted == {"timestamp": T0 + 3, "clientToken": "g",
                        "inProgressJobs": [{"jobId": "job-2", "queuedAt": T0 + 1, "startedAt": T0 + 2,
                                            "lastUpdatedAt": T0 + 2, "versionNumber": 2, "executionNumber": 1}],
                        "queuedJobs": [{"jobId": "job-1", "queuedAt": T0, "lastUpdatedAt": T0, "versionNumber": 1,
                                        "executionNumber": 1}]}


def test_a_later_job_moved_to_in_progress_becomes_next_and_notify_next_says_so():
    """The guide's example: J1 and J2 QUEUED, J2 set IN_PROGRESS: notify-next with J2."""
    model = Jobs()
    model.create_job("J1", ["pi-1"], DOC, T0)
    model.create_job("J2", ["pi-1"], DOC, T0 + 1)
    out = req(model, "pi-1", "update", {"status": "IN_PROGRESS"}, T0 + 2, "J2")
    assert only(out, "/notify-next")["execution"]["jobId"] == "J2"


def test_update_to_succeeded_completes_the_job_and_empties_the_lists():
    model = Jobs()
    model.create_job("job-1", ["pi-1"], DOC, T0)
    req(model, "pi-1", "start-next", {}, T0 + 1)
    out = req(model, "pi-1", "update", {"status": "SUCCEEDED", "expectedVersion": 2, "statusDetails": {"r": "ok"},
                                        "includeJobExecutionState": True, "includeJobDocument": True,
                                        "clientToken": "u"}, T0 + 9, "job-1")
    assert only(out, "update/accepted") == {"timestamp": T0 + 9, "clientToken": "u", "jobDocument": DOC,
                                            "executionState": {"status": "SUCCEEDED", "statusDetails": {"r": "ok"},
                                                               "versionNumber": 3}}
    assert only(out, "/notify") == {"timestamp": T0 + 9, "jobs": {}}
    assert only(out, "/notify-next") == {"timestamp": T0 + 9}
    job = model.describe_job("job-1")["job"]
    assert job["status"] == "COMPLETED" and job["completedAt"] == T0 + 9
    assert job["jobProcessDetails"]["numberOfSucceededThings"] == 1
    assert job["jobProcessDetails"]["numberOfInProgressThings"] == 0


def test_a_plain_update_reply_has_only_timestamp_and_token():
    model = Jobs()
    model.create_job("job-1", ["pi-1"], DOC, T0)
    out = req(model, "pi-1", "update", {"status": "IN_PROGRESS", "clientToken": "x"}, T0 + 1, "job-1")
    assert only(out, "update/accepted") == {"timestamp": T0 + 1, "clientToken": "x"}


def test_a_wrong_expected_version_is_a_version_mismatch_with_the_execution_state():
    model = Jobs()
    model.create_job("job-1", ["pi-1"], DOC, T0)
    out = req(model, "pi-1", "update", {"status": "IN_PROGRESS", "expectedVersion": 5, "clientToken": "v",
                                        "statusDetails": {"a": "b"}}, T0 + 1, "job-1")
    assert topics(out) == ["$aws/things/pi-1/jobs/job-1/update/rejected"]
    rejected = out.messages[0][1]
    assert rejected["code"] == "VersionMismatch" and rejected["clientToken"] == "v"
    assert rejected["executionState"] == {"status": "QUEUED", "statusDetails": {}, "versionNumber": 1}
    assert "5" in rejected["message"] and "1" in rejected["message"]
    # nothing changed
    assert model.executions[("pi-1", "job-1")].version_number == 1
    # the guide's own example sends expectedVersion as a string
    assert topics(req(model, "pi-1", "update", {"status": "IN_PROGRESS", "expectedVersion": "1"}, T0 + 2,
                      "job-1"))[0].endswith("update/accepted")


@pytest.mark.parametrize("final", ["SUCCEEDED", "FAILED", "REJECTED"])
def test_a_terminal_execution_cannot_change_any_more(final):
    model = Jobs()
    model.create_job("job-1", ["pi-1"], DOC, T0)
    req(model, "pi-1", "update", {"status": final}, T0 + 1, "job-1")
    out = req(model, "pi-1", "update", {"status": "IN_PROGRESS"}, T0 + 2, "job-1")
    rejected = only(out, "update/rejected")
    assert rejected["code"] == "InvalidStateTransition"
    assert rejected["executionState"] == {"status": final, "statusDetails": {}, "versionNumber": 2}


@pytest.mark.parametrize("status", ["QUEUED", "CANCELED", "TIMED_OUT", "REMOVED"])
def test_a_device_cannot_set_the_statuses_of_the_service(status):
    model = Jobs()
    model.create_job("job-1", ["pi-1"], DOC, T0)
    assert only(req(model, "pi-1", "update", {"status": status}, T0 + 1, "job-1"),
                "update/rejected")["code"] == "InvalidStateTransition"


@pytest.mark.parametrize("body, where", [
    ({}, "status"),
    ({"status": "DONE"}, "status"),
    ({"status": "IN_PROGRESS", "statusDetails": {"n": 1}}, "statusDetails"),
    ({"status": "IN_PROGRESS", "statusDetails": {"bad key": "x"}}, "statusDetails"),
    ({"status": "IN_PROGRESS", "statusDetails": {"k": ""}}, "statusDetails"),
    ({"status": "IN_PROGRESS", "statusDetails": ["x"]}, "statusDetails"),
    ({"status": "IN_PROGRESS", "stepTimeoutInMinutes": 0}, "stepTimeoutInMinutes"),
    ({"status": "IN_PROGRESS", "stepTimeoutInMinutes": 10081}, "stepTimeoutInMinutes"),
    ({"status": "IN_PROGRESS", "expectedVersion": "one"}, "expectedVersion"),
    ({"status": "IN_PROGRESS", "includeJobDocument": "yes"}, "includeJobDocument"),
])
def test_invalid_requests_say_which_field(body, where):
    model = Jobs()
    model.create_job("job-1", ["pi-1"], DOC, T0)
    rejected = only(req(model, "pi-1", "update", body, T0 + 1, "job-1"), "update/rejected")
    assert rejected["code"] == "InvalidRequest" and where in rejected["message"]
    assert model.executions[("pi-1", "job-1")].version_number == 1


def test_a_payload_that_is_not_json_is_invalid_json():
    out = req(Jobs(), "pi-1", "get", raw=b"{nope")
    assert only(out, "get/rejected")["code"] == "InvalidJson"


def test_describe_a_missing_execution_is_resource_not_found():
    model = Jobs()
    model.create_job("job-1", ["pi-1"], DOC, T0)
    for thing, job in (("pi-2", "job-1"), ("pi-1", "job-9")):
        rejected = only(req(model, thing, "describe", {"clientToken": "d"}, T0, job), "get/rejected")
        assert rejected["code"] == "ResourceNotFound" and rejected["clientToken"] == "d"
        assert job in rejected["message"] and thing in rejected["message"]
    wrong_number = req(model, "pi-1", "describe", {"executionNumber": 2}, T0, "job-1")
    assert only(wrong_number, "get/rejected")["code"] == "ResourceNotFound"
    assert only(req(model, "pi-1", "update", {"status": "FAILED"}, T0, "job-9"),
                "update/rejected")["code"] == "ResourceNotFound"


def test_describe_gives_the_document_unless_told_not_and_next_finds_the_next():
    model = Jobs()
    model.create_job("job-1", ["pi-1"], DOC, T0)
    with_doc = only(req(model, "pi-1", "describe", {}, T0, "job-1"), "job-1/get/accepted")
    assert with_doc["execution"]["jobDocument"] == DOC
    without = only(req(model, "pi-1", "describe", {"includeJobDocument": False}, T0, "job-1"), "accepted")
    assert "jobDocument" not in without["execution"]
    nxt = only(req(model, "pi-1", "describe", {}, T0, "$next"), "$next/get/accepted")
    assert nxt["execution"]["jobId"] == "job-1"
    req(model, "pi-1", "update", {"status": "SUCCEEDED"}, T0 + 1, "job-1")
    assert "execution" not in only(req(model, "pi-1", "describe", {}, T0 + 2, "$next"), "accepted")
    # a terminal execution can still be described by its job id
    assert only(req(model, "pi-1", "describe", {}, T0 + 2, "job-1"), "accepted")["execution"]["status"] == "SUCCEEDED"


def test_a_step_timer_times_the_execution_out():
    model = Jobs()
    model.create_job("job-1", ["pi-1"], DOC, T0)
    started = only(req(model, "pi-1", "start-next", {"stepTimeoutInMinutes": 2}, T0), "accepted")
    assert started["execution"]["approximateSecondsBeforeTimedOut"] == 120
    assert model.next_deadline() == T0 + 120
    assert model.expire(T0 + 119).messages == []
    out = model.expire(T0 + 120)
    assert model.executions[("pi-1", "job-1")].status == "TIMED_OUT"
    assert only(out, "/notify") == {"timestamp": T0 + 120, "jobs": {}}
    assert model.next_deadline() is None and model.describe_job("job-1")["job"]["status"] == "COMPLETED"


def test_an_update_in_progress_resets_the_step_timer_and_a_terminal_one_stops_it():
    model = Jobs()
    model.create_job("job-1", ["pi-1"], DOC, T0)
    req(model, "pi-1", "start-next", {"stepTimeoutInMinutes": 1}, T0)
    req(model, "pi-1", "update", {"status": "IN_PROGRESS", "stepTimeoutInMinutes": 5}, T0 + 30, "job-1")
    assert model.next_deadline() == T0 + 30 + 300
    req(model, "pi-1", "update", {"status": "SUCCEEDED"}, T0 + 40, "job-1")
    assert model.next_deadline() is None and model.expire(T0 + 10_000).messages == []


def test_cancel_cancels_queued_executions_and_in_progress_ones_only_with_force():
    model = Jobs()
    model.create_job("job-1", ["pi-1", "pi-2"], DOC, T0)
    req(model, "pi-1", "start-next", {}, T0 + 1)
    out = model.cancel_job("job-1", T0 + 2)
    assert model.executions[("pi-2", "job-1")].status == "CANCELED"
    assert model.executions[("pi-1", "job-1")].status == "IN_PROGRESS"
    assert "$aws/things/pi-2/jobs/notify-next" in topics(out)
    model.cancel_job("job-1", T0 + 3, force=True)
    assert model.executions[("pi-1", "job-1")].status == "CANCELED"
    assert only(req(model, "pi-1", "update", {"status": "SUCCEEDED"}, T0 + 4, "job-1"),
                "rejected")["code"] == "InvalidStateTransition"


def test_the_control_plane_refuses_as_the_aws_cli_names_it():
    model = Jobs()
    model.create_job("job-1", ["pi-1"], DOC, T0)
    for call, name in ((lambda: model.create_job("job-1", ["pi-1"], DOC, T0), "ResourceAlreadyExistsException"),
                       (lambda: model.create_job("bad id", ["pi-1"], DOC, T0), "InvalidRequestException"),
                       (lambda: model.create_job("job-2", [], DOC, T0), "InvalidRequestException"),
                       (lambda: model.create_job("job-2", ["pi-1"], ["x"], T0), "InvalidRequestException"),
                       (lambda: model.describe_job("job-9"), "ResourceNotFoundException"),
                       (lambda: model.describe_execution("job-1", "pi-9", T0), "ResourceNotFoundException")):
        with pytest.raises(ControlError) as caught:
            call()
        assert caught.value.name == name
    assert list(model.jobs) == ["job-1"]   # nothing was added
    req(model, "pi-1", "update", {"status": "SUCCEEDED"}, T0 + 1, "job-1")
    with pytest.raises(ControlError) as caught:
        model.cancel_job("job-1", T0 + 2, force=True)
    assert caught.value.name == "InvalidRequestException" and "COMPLETED" in caught.value.message


def _members_only(value, shape, where="") -> list:
    """The keys of `value` that are not members of the botocore shape (recursively)."""
    if shape.type_name == "structure":
        assert isinstance(value, dict), where
        bad = [f"{where}.{k}" for k in value if k not in shape.members]
        return bad + [b for k, v in value.items() if k in shape.members
                      for b in _members_only(v, shape.members[k], f"{where}.{k}")]
    if shape.type_name == "list":
        return [b for i, v in enumerate(value) for b in _members_only(v, shape.member, f"{where}[{i}]")]
    if shape.type_name == "map":
        return [b for k, v in value.items() for b in _members_only(v, shape.value, f"{where}.{k}")]
    return []


def test_the_control_plane_outputs_are_botocore_shapes():
    import botocore.session
    iot = botocore.session.get_session().get_service_model("iot")
    model = Jobs()
    model.create_job("job-1", ["pi-1", "pi-2"], DOC, T0, description="rotate")
    req(model, "pi-1", "start-next", {"stepTimeoutInMinutes": 5, "statusDetails": {"s": "1"}}, T0 + 1)
    outputs = {"ListJobs": model.list_jobs(), "DescribeJob": model.describe_job("job-1"),
               "DescribeJobExecution": model.describe_execution("job-1", "pi-1", T0 + 2)}
    model.cancel_job("job-1", T0 + 3)
    outputs["DescribeJob (canceled)"] = model.describe_job("job-1")
    for operation, output in outputs.items():
        shape = iot.operation_model(operation.split()[0]).output_shape
        assert _members_only(output, shape, operation) == []
    details = outputs["DescribeJob"]["job"]["jobProcessDetails"]
    assert set(details) == set(iot.shape_for("JobProcessDetails").members) - {"processingTargets"}
    execution = outputs["DescribeJobExecution"]["execution"]
    assert execution["approximateSecondsBeforeTimedOut"] == 299 and execution["statusDetails"] == {
        "detailsMap": {"s": "1"}}


# -- properties over random sequences -------------------------------------------------------

JOBS = ["j1", "j2", "j3"]
steps = st.lists(st.one_of(
    st.tuples(st.just("create"), st.sampled_from(JOBS)),
    st.tuples(st.just("start-next"), st.none()),
    st.tuples(st.just("update"), st.sampled_from(JOBS), st.sampled_from(["IN_PROGRESS", "SUCCEEDED", "FAILED",
                                                                          "REJECTED", "QUEUED"]),
              st.one_of(st.none(), st.integers(1, 4))),
    st.tuples(st.just("cancel"), st.sampled_from(JOBS), st.booleans()),
), max_size=25)


@settings(max_examples=150, deadline=None)
@given(steps)
def test_versions_transitions_and_notify_next_hold_over_any_sequence(sequence):
    model = Jobs()
    now = T0
    for step in sequence:
        now += 1
        before_next = model._next("pi-1")
        before_next = before_next.job_id if before_next else None
        before = {k: (e.status, e.version_number) for k, e in model.executions.items()}
        if step[0] == "create":
            try:
                out = model.create_job(step[1], ["pi-1"], DOC, now)
            except ControlError:
                assert step[1] in model.jobs
                continue
        elif step[0] == "start-next":
            out = req(model, "pi-1", "start-next", {}, now)
        elif step[0] == "update":
            body = {"status": step[2]}
            if step[3] is not None:
                body["expectedVersion"] = step[3]
            out = req(model, "pi-1", "update", body, now, step[1])
        else:
            try:
                out = model.cancel_job(step[1], now, step[2])
            except ControlError:
                job = model.jobs.get(step[1])
                assert job is None or job.status == "COMPLETED" or (job.status == "CANCELED" and not step[2])
                continue
        rejected = [b for t, b in out.messages if t.endswith("/rejected")]
        for key, execution in model.executions.items():
            if key not in before:
                assert (execution.status, execution.version_number) == ("QUEUED", 1)
                continue
            status, version = before[key]
            if status in TERMINAL:    # terminal executions never change
                assert (execution.status, execution.version_number) == (status, version)
            else:                     # each accepted change adds exactly one
                assert execution.version_number in (version, version + 1)
                assert (execution.version_number == version + 1) == (key in out.executions)
        if rejected:
            assert len(out.messages) == 1 and not out.executions
            assert rejected[0]["code"] in ("VersionMismatch", "InvalidStateTransition", "ResourceNotFound")
            if rejected[0]["code"] != "ResourceNotFound":
                execution = model.executions[("pi-1", step[1])]
                assert rejected[0]["executionState"]["versionNumber"] == execution.version_number
        after_next = model._next("pi-1")
        after_next = after_next.job_id if after_next else None
        sent = [b for t, b in out.messages if t.endswith("/notify-next")]
        assert bool(sent) == (before_next != after_next)
        if sent:
            assert sent[0].get("execution", {}).get("jobId") == after_next
        # the pending list in a notify is IN_PROGRESS first, each by queue time
        for topic, body in out.messages:
            if topic.endswith("/notify"):
                listed = body["jobs"].get("IN_PROGRESS", []) + body["jobs"].get("QUEUED", [])
                assert [s["jobId"] for s in listed] == [e.job_id for e in model._pending_list("pi-1")]
        for job in model.jobs.values():
            done = all(model.executions[(t, job.job_id)].status in TERMINAL for t in job.targets)
            assert job.status in (("COMPLETED", "CANCELED") if done else ("IN_PROGRESS", "CANCELED"))
