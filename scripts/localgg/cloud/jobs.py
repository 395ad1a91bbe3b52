"""AWS IoT Jobs, the service's rules without I/O: jobs, one execution per (job, thing), the
device MQTT API and the notifications. jobs_service.py is the MQTT shell around it.

    model = Jobs()
    out = model.create_job("rotate-1", ["pi-1"], {"operation": "rotate"}, now=1700000000)
    out = model.request("pi-1", "start-next", b'{"clientToken": "t"}', now=...)
    for topic, body in out.messages: publish(topic, body)     # replies and notifications
    model.expire(now)                                          # step timers run out: TIMED_OUT

What it reproduces, with where it is written (developer guide, jobs-mqtt-api.md,
jobs-mqtt-https-api.md, jobs-comm-notifications.md, iot-jobs-lifecycle.md,
jobs-workflow-jobs-online.md; the awsiotsdk's awsiot/iotjobs.py for the field names):

- Requests on `$aws/things/T/jobs/get` (GetPendingJobExecutions), `jobs/start-next`
  (StartNextPendingJobExecution), `jobs/<jobId>/get` (DescribeJobExecution, `$next` for the
  next pending one) and `jobs/<jobId>/update` (UpdateJobExecution), answered on the request
  topic + `/accepted` or `/rejected`. Every reply carries `timestamp` and echoes a string
  `clientToken`.
- Times are integer epoch SECONDS (the guide's old examples show milliseconds; the SDK parses
  `queuedAt`, `timestamp`, ... with datetime.fromtimestamp, which milliseconds would break).
- Pending executions are IN_PROGRESS before QUEUED, each by the time it was queued; start-next
  takes the first: a QUEUED one becomes IN_PROGRESS (startedAt, statusDetails as given), an
  IN_PROGRESS one is returned unchanged; none pending: accepted without `execution`.
- UpdateJobExecution: `status` is required; the device may set IN_PROGRESS, SUCCEEDED,
  FAILED or REJECTED from QUEUED or IN_PROGRESS; a terminal execution changes no more
  (InvalidStateTransition, with `executionState`); `expectedVersion` other than the
  execution's `versionNumber` is VersionMismatch (with `executionState`); every accepted
  update adds 1 to versionNumber; statusDetails given replace the old ones, absent keep
  them; `includeJobExecutionState` / `includeJobDocument` (default false) add those fields.
- statusDetails is a map of string to string (keys `[a-zA-Z0-9:_-]+`, 1-128 characters,
  values 1-1024 characters), stepTimeoutInMinutes 1-10080: otherwise InvalidRequest.
  A payload that is not JSON is InvalidJson.
- stepTimeoutInMinutes (start-next, or an update to IN_PROGRESS) starts a step timer; when
  it runs out before a terminal status the execution is TIMED_OUT. DescribeJobExecution
  shows `approximateSecondsBeforeTimedOut` while a timer runs.
- notify (ListNotification: `{"jobs": {"IN_PROGRESS": [...], "QUEUED": [...]}, "timestamp"}`,
  summaries without executionNumber, `{"jobs": {}}` when nothing is pending) is published
  when an execution is queued, changes to a non-terminal status or becomes terminal;
  notify-next (`{"execution": JobExecution with jobDocument, "timestamp"}`, no `execution`
  when none is left) only when WHICH execution is next changes, not when the next one's
  details change.
- A job's status is IN_PROGRESS until all its executions are terminal, then COMPLETED
  (targetSelection SNAPSHOT); CancelJob cancels QUEUED executions, and IN_PROGRESS ones
  too with force (again on a CANCELED job), and the job is CANCELED. The control plane's
  outputs use only members of botocore's shapes for CreateJob, CancelJob, ListJobs,
  DescribeJob and DescribeJobExecution (test_jobs_model.py checks it).

The error messages are localgg's: the guide gives the codes and when they are used, not the
service's texts.
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass, field
from typing import Optional

PENDING = ("IN_PROGRESS", "QUEUED")
TERMINAL = ("SUCCEEDED", "FAILED", "TIMED_OUT", "REJECTED", "REMOVED", "CANCELED")
STATUSES = PENDING + TERMINAL
DEVICE_STATUSES = ("IN_PROGRESS", "SUCCEEDED", "FAILED", "REJECTED")
JOB_ID = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
THING_NAME = re.compile(r"^[a-zA-Z0-9:_-]{1,128}$")
DETAIL_KEY = re.compile(r"^[a-zA-Z0-9:_-]{1,128}$")
MAX_DETAIL_VALUE = 1024
STEP_TIMEOUT_RANGE = (1, 10080)
NOTIFY_LIMIT = 15          # a ListNotification holds at most 15 executions
MAX_DOCUMENT = 32 * 1024   # CreateJob's document: 32 KB


class JobsError(Exception):
    """A rejected request: `code` is one of the API's ErrorCode values."""

    def __init__(self, code: str, message: str, execution: Optional["Execution"] = None) -> None:
        super().__init__(message)
        self.code, self.message, self.execution = code, message, execution


class ControlError(Exception):
    """A refused control-plane call (`localgg cloud job ...`): the AWS CLI's exception name."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(message)
        self.name, self.message = name, message


@dataclass
class Job:
    job_id: str
    document: dict
    targets: list
    created_at: int
    last_updated_at: int
    description: str = ""
    status: str = "IN_PROGRESS"
    completed_at: Optional[int] = None
    force_canceled: bool = False
    order: int = 0

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class Execution:
    job_id: str
    thing_name: str
    queued_at: int
    last_updated_at: int
    execution_number: int
    status: str = "QUEUED"
    status_details: dict = field(default_factory=dict)
    started_at: Optional[int] = None
    version_number: int = 1
    step_deadline: Optional[float] = None
    order: int = 0

    def to_dict(self) -> dict:
        return dict(self.__dict__)

    def state(self) -> dict:
        """JobExecutionState."""
        return {"status": self.status, "statusDetails": dict(self.status_details),
                "versionNumber": self.version_number}

    def summary(self, with_number: bool = True) -> dict:
        """JobExecutionSummary (the guide's ListNotification example has no executionNumber)."""
        out = {"jobId": self.job_id, "queuedAt": self.queued_at}
        if self.started_at is not None:
            out["startedAt"] = self.started_at
        out.update(lastUpdatedAt=self.last_updated_at, versionNumber=self.version_number)
        if with_number:
            out["executionNumber"] = self.execution_number
        return out

    def data(self, document: Optional[dict], now: float) -> dict:
        """JobExecution (JobExecutionData in the SDK); `document` None leaves jobDocument out."""
        out = {"jobId": self.job_id, "thingName": self.thing_name, "status": self.status}
        if self.status_details:
            out["statusDetails"] = dict(self.status_details)
        out["queuedAt"] = self.queued_at
        if self.started_at is not None:
            out["startedAt"] = self.started_at
        out.update(lastUpdatedAt=self.last_updated_at, versionNumber=self.version_number,
                   executionNumber=self.execution_number)
        if self.step_deadline is not None and self.status == "IN_PROGRESS":
            out["approximateSecondsBeforeTimedOut"] = max(0, int(self.step_deadline - now))
        if document is not None:
            out["jobDocument"] = copy.deepcopy(document)
        return out


@dataclass
class Outcome:
    """What to publish, and what changed (for the store)."""
    messages: list = field(default_factory=list)
    jobs: set = field(default_factory=set)
    executions: set = field(default_factory=set)


def prefix(thing: str) -> str:
    return f"$aws/things/{thing}/jobs"


class Jobs:
    def __init__(self, jobs: Optional[list] = None, executions: Optional[list] = None) -> None:
        self.jobs: dict[str, Job] = {j.job_id: j for j in jobs or []}
        self.executions: dict[tuple, Execution] = {(e.thing_name, e.job_id): e for e in executions or []}
        self._order = max([0] + [j.order for j in self.jobs.values()] +
                          [e.order for e in self.executions.values()])

    # -- the control plane (CreateJob, CancelJob, ListJobs, DescribeJob, DescribeJobExecution) --

    def create_job(self, job_id: str, things: list, document: dict, now: float, description: str = "") -> Outcome:
        if not JOB_ID.match(job_id or ""):
            raise ControlError("InvalidRequestException", f"jobId {job_id!r}: 1 to 64 characters of [a-zA-Z0-9_-]")
        if job_id in self.jobs:
            raise ControlError("ResourceAlreadyExistsException", f"Job {job_id} already exists")
        if not things:
            raise ControlError("InvalidRequestException", "targets: at least one thing")
        for thing in things:
            if not THING_NAME.match(thing):
                raise ControlError("InvalidRequestException", f"thing name {thing!r}: 1 to 128 characters of [a-zA-Z0-9:_-]")
        if not isinstance(document, dict):
            raise ControlError("InvalidRequestException", "document: a JSON object")
        if len(json.dumps(document, separators=(",", ":")).encode()) > MAX_DOCUMENT:
            raise ControlError("InvalidRequestException", f"document: at most {MAX_DOCUMENT} bytes")
        now = int(now)
        out = Outcome(jobs={job_id})
        self._order += 1
        self.jobs[job_id] = Job(job_id, copy.deepcopy(document), list(dict.fromkeys(things)), now, now,
                                description, order=self._order)
        for thing in dict.fromkeys(things):
            before = self._next(thing)
            self._order += 1
            self.executions[(thing, job_id)] = Execution(job_id, thing, now, now, execution_number=1, order=self._order)
            out.executions.add((thing, job_id))
            self._notify(out, thing, before, now)
        return out

    def cancel_job(self, job_id: str, now: float, force: bool = False) -> Outcome:
        job = self._job(job_id)
        if job.status == "COMPLETED" or (job.status == "CANCELED" and not force):
            # a CANCELED job may be cancelled again with force, for its IN_PROGRESS executions
            raise ControlError("InvalidRequestException", f"Job {job_id} is {job.status}: it can only be canceled "
                               "while IN_PROGRESS (or CANCELED, with force)")
        now = int(now)
        out = Outcome(jobs={job_id})
        for thing in job.targets:
            execution = self.executions[(thing, job_id)]
            if execution.status == "QUEUED" or (force and execution.status == "IN_PROGRESS"):
                before = self._next(thing)
                self._set(execution, "CANCELED", now)
                out.executions.add((thing, job_id))
                self._notify(out, thing, before, now)
        job.status, job.force_canceled, job.last_updated_at = "CANCELED", force, now
        job.completed_at = now
        return out

    def list_jobs(self) -> dict:
        """ListJobs' shape."""
        return {"jobs": [{"jobArn": arn(j.job_id), "jobId": j.job_id, "targetSelection": "SNAPSHOT",
                          "status": j.status, "createdAt": j.created_at, "lastUpdatedAt": j.last_updated_at,
                          **({"completedAt": j.completed_at} if j.completed_at is not None else {})}
                         for j in sorted(self.jobs.values(), key=lambda j: j.order, reverse=True)]}

    def describe_job(self, job_id: str) -> dict:
        """DescribeJob's shape: the job, with jobProcessDetails counted from its executions."""
        job = self._job(job_id)
        counts = {s: 0 for s in STATUSES}
        for thing in job.targets:
            counts[self.executions[(thing, job_id)].status] += 1
        details = {"numberOf" + "".join(w.capitalize() for w in s.split("_")) + "Things": n for s, n in counts.items()}
        body = {"jobArn": arn(job_id), "jobId": job_id, "targetSelection": "SNAPSHOT", "status": job.status,
                "forceCanceled": job.force_canceled, "description": job.description,
                "targets": [thing_arn(t) for t in job.targets], "createdAt": job.created_at,
                "lastUpdatedAt": job.last_updated_at, "jobProcessDetails": details}
        if job.completed_at is not None:
            body["completedAt"] = job.completed_at
        return {"job": body}

    def job_document(self, job_id: str) -> dict:
        """GetJobDocument's shape: the document as a JSON string."""
        return {"document": json.dumps(self._job(job_id).document)}

    def describe_execution(self, job_id: str, thing: str, now: float) -> dict:
        """DescribeJobExecution's shape (the control plane's: times are the same seconds)."""
        self._job(job_id)
        execution = self.executions.get((thing, job_id))
        if execution is None:
            raise ControlError("ResourceNotFoundException", f"No job execution of job {job_id} on thing {thing}")
        body = {"jobId": job_id, "status": execution.status, "forceCanceled": False,
                "statusDetails": {"detailsMap": dict(execution.status_details)}, "thingArn": thing_arn(thing),
                "queuedAt": execution.queued_at, "lastUpdatedAt": execution.last_updated_at,
                "executionNumber": execution.execution_number, "versionNumber": execution.version_number}
        if execution.started_at is not None:
            body["startedAt"] = execution.started_at
        if execution.step_deadline is not None and execution.status == "IN_PROGRESS":
            body["approximateSecondsBeforeTimedOut"] = max(0, int(execution.step_deadline - now))
        return {"execution": body}

    # -- the device MQTT API ---------------------------------------------------------------

    def request(self, thing: str, operation: str, payload: bytes, now: float, job_id: str = "") -> Outcome:
        """One request: operation "get" | "start-next" (on jobs/...), or "describe" | "update"
        (on jobs/<job_id>/...). Replies go to the request topic + /accepted or /rejected."""
        topic = f"{prefix(thing)}/{job_id + '/' if job_id else ''}{'get' if operation == 'describe' else operation}"
        now_i = int(now)
        out = Outcome()
        token = None
        try:
            try:
                body = json.loads(payload.decode("utf-8")) if payload and payload.strip() else {}
            except (UnicodeDecodeError, ValueError):
                raise JobsError("InvalidJson", "The request payload is not valid UTF-8 JSON")
            if not isinstance(body, dict):
                raise JobsError("InvalidRequest", "The request payload must be a JSON object")
            token = body.get("clientToken") if isinstance(body.get("clientToken"), str) else None
            if operation == "get":
                reply = self._pending(thing)
            elif operation == "start-next":
                reply = self._start_next(thing, body, now, out)
            elif operation == "describe":
                reply = self._describe(thing, job_id, body, now)
            elif operation == "update":
                reply = self._update(thing, job_id, body, now, out)
            else:
                raise JobsError("InvalidTopic", f"No Jobs API for {topic}")
            reply["timestamp"] = now_i
            if token is not None:
                reply["clientToken"] = token
            out.messages.insert(0, (f"{topic}/accepted", reply))
        except JobsError as error:
            rejected = {"code": error.code, "message": error.message, "timestamp": now_i}
            if token is not None:
                rejected["clientToken"] = token
            if error.execution is not None:
                rejected["executionState"] = error.execution.state()
            out.messages = [(f"{topic}/rejected", rejected)]
            out.jobs, out.executions = set(), set()
        return out

    def expire(self, now: float) -> Outcome:
        """Step timers that ran out: those executions are TIMED_OUT."""
        out = Outcome()
        for key, execution in sorted(self.executions.items(), key=lambda kv: kv[1].order):
            if execution.status == "IN_PROGRESS" and execution.step_deadline is not None \
                    and execution.step_deadline <= now:
                before = self._next(execution.thing_name)
                self._set(execution, "TIMED_OUT", int(now))
                out.executions.add(key)
                self._notify(out, execution.thing_name, before, int(now))
        return out

    def next_deadline(self) -> Optional[float]:
        deadlines = [e.step_deadline for e in self.executions.values()
                     if e.status == "IN_PROGRESS" and e.step_deadline is not None]
        return min(deadlines) if deadlines else None

    # -- the operations --------------------------------------------------------------------

    def _pending(self, thing: str) -> dict:
        pending = self._pending_list(thing)
        return {"inProgressJobs": [e.summary() for e in pending if e.status == "IN_PROGRESS"],
                "queuedJobs": [e.summary() for e in pending if e.status == "QUEUED"]}

    def _start_next(self, thing: str, body: dict, now: float, out: Outcome) -> dict:
        details = _status_details(body)
        step = _step_timeout(body)
        execution = self._next(thing)
        if execution is None:
            return {}
        if execution.status == "QUEUED":
            before = execution
            execution.started_at = int(now)
            if details is not None:
                execution.status_details = details
            if step is not None:
                execution.step_deadline = now + step * 60
            self._set(execution, "IN_PROGRESS", int(now))
            out.executions.add((thing, execution.job_id))
            self._notify(out, thing, before, int(now))
        return {"execution": execution.data(self.jobs[execution.job_id].document, now)}

    def _describe(self, thing: str, job_id: str, body: dict, now: float) -> dict:
        include = body.get("includeJobDocument", True)
        if not isinstance(include, bool):
            raise JobsError("InvalidRequest", "includeJobDocument must be a boolean")
        if job_id == "$next":
            execution = self._next(thing)
            if execution is None:
                return {}
        else:
            execution = self._execution(thing, job_id, body)
        return {"execution": execution.data(self.jobs[execution.job_id].document if include else None, now)}

    def _update(self, thing: str, job_id: str, body: dict, now: float, out: Outcome) -> dict:
        status = body.get("status")
        if status is None:
            raise JobsError("InvalidRequest", "status is required")
        if status not in STATUSES:
            raise JobsError("InvalidRequest", f"status {status!r}: one of {', '.join(DEVICE_STATUSES)}")
        details = _status_details(body)
        step = _step_timeout(body)
        expected = body.get("expectedVersion")
        if expected is not None:
            try:
                expected = int(expected) if not isinstance(expected, bool) else None
            except (TypeError, ValueError):
                expected = None
            if expected is None:
                raise JobsError("InvalidRequest", "expectedVersion must be a number")
        for flag in ("includeJobExecutionState", "includeJobDocument"):
            if flag in body and not isinstance(body[flag], bool):
                raise JobsError("InvalidRequest", f"{flag} must be a boolean")
        execution = self._execution(thing, job_id, body)
        if expected is not None and expected != execution.version_number:
            raise JobsError("VersionMismatch", f"expectedVersion {expected} does not match the job execution's "
                            f"version {execution.version_number}", execution)
        if execution.status in TERMINAL:
            raise JobsError("InvalidStateTransition", f"The job execution is in the terminal state "
                            f"{execution.status} and cannot be updated", execution)
        if status not in DEVICE_STATUSES:
            raise JobsError("InvalidStateTransition", f"A device cannot set the status {status} "
                            f"(from {execution.status})", execution)
        before = self._next(thing)
        if details is not None:
            execution.status_details = details
        if status == "IN_PROGRESS":
            if execution.started_at is None:
                execution.started_at = int(now)
            if step is not None:
                execution.step_deadline = now + step * 60
        changed_list = status != execution.status or status in TERMINAL
        self._set(execution, status, int(now))
        out.executions.add((thing, job_id))
        if changed_list:
            self._notify(out, thing, before, int(now))
        reply: dict = {}
        if body.get("includeJobExecutionState"):
            reply["executionState"] = execution.state()
        if body.get("includeJobDocument"):
            reply["jobDocument"] = copy.deepcopy(self.jobs[job_id].document)
        return reply

    # -- helpers ---------------------------------------------------------------------------

    def _job(self, job_id: str) -> Job:
        job = self.jobs.get(job_id)
        if job is None:
            raise ControlError("ResourceNotFoundException", f"Job {job_id} does not exist")
        return job

    def _execution(self, thing: str, job_id: str, body: dict) -> Execution:
        execution = self.executions.get((thing, job_id))
        number = body.get("executionNumber")
        if number is not None and (isinstance(number, bool) or not isinstance(number, int)):
            raise JobsError("InvalidRequest", "executionNumber must be a number")
        if execution is None or (number is not None and number != execution.execution_number):
            raise JobsError("ResourceNotFound", f"No job execution of job {job_id} on thing {thing}"
                            + (f" with executionNumber {number}" if number is not None else ""))
        return execution

    def _pending_list(self, thing: str) -> list:
        pending = [e for (t, _), e in self.executions.items() if t == thing and e.status in PENDING]
        return sorted(pending, key=lambda e: (e.status != "IN_PROGRESS", e.queued_at, e.order))

    def _next(self, thing: str) -> Optional[Execution]:
        pending = self._pending_list(thing)
        return pending[0] if pending else None

    def _set(self, execution: Execution, status: str, now: int) -> None:
        execution.status = status
        execution.version_number += 1
        execution.last_updated_at = now
        if status in TERMINAL:
            execution.step_deadline = None
            job = self.jobs[execution.job_id]
            job.last_updated_at = now
            if job.status == "IN_PROGRESS" and all(self.executions[(t, job.job_id)].status in TERMINAL
                                                   for t in job.targets):
                job.status, job.completed_at = "COMPLETED", now

    def _notify(self, out: Outcome, thing: str, before: Optional[Execution], now: int) -> None:
        """notify after a change of the pending list; notify-next if the next one is another."""
        pending = self._pending_list(thing)[:NOTIFY_LIMIT]
        jobs: dict = {}
        for status in PENDING:
            listed = [e.summary(with_number=False) for e in pending if e.status == status]
            if listed:
                jobs[status] = listed
        out.messages.append((f"{prefix(thing)}/notify", {"timestamp": now, "jobs": jobs}))
        after = self._next(thing)
        if (before.job_id if before else None) != (after.job_id if after else None):
            body: dict = {"timestamp": now}
            if after is not None:
                body["execution"] = after.data(self.jobs[after.job_id].document, now)
            out.messages.append((f"{prefix(thing)}/notify-next", body))


def arn(job_id: str) -> str:
    return f"arn:aws:iot:us-east-1:123456789012:job/{job_id}"


def thing_arn(thing: str) -> str:
    return f"arn:aws:iot:us-east-1:123456789012:thing/{thing}"


def _status_details(body: dict) -> Optional[dict]:
    details = body.get("statusDetails")
    if details is None:
        return None
    if not isinstance(details, dict):
        raise JobsError("InvalidRequest", "statusDetails must be a map of strings to strings")
    for key, value in details.items():
        if not DETAIL_KEY.match(key):
            raise JobsError("InvalidRequest", f"statusDetails key {key!r}: 1 to 128 characters of [a-zA-Z0-9:_-]")
        if not isinstance(value, str) or not 1 <= len(value) <= MAX_DETAIL_VALUE \
                or any(ord(c) < 32 or 127 <= ord(c) < 160 for c in value):
            raise JobsError("InvalidRequest", f"statusDetails[{key!r}]: a string of 1 to {MAX_DETAIL_VALUE} "
                            "characters without control characters")
    return dict(details)


def _step_timeout(body: dict) -> Optional[int]:
    value = body.get("stepTimeoutInMinutes")
    if value is None:
        return None
    low, high = STEP_TIMEOUT_RANGE
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise JobsError("InvalidRequest", f"stepTimeoutInMinutes {value!r}: a whole number from {low} to {high}")
    return value
