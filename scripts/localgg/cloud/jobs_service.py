"""The cloud Jobs service: jobs.py's model on the cloud broker's Jobs topics, kept in SQLite.

Usage::

    service = JobsService(Path("cloud"))     # needs the cloud's broker running
    service.start()
    service.control({"action": "create", "jobId": "rotate-1", "targets": ["pi-1"], "document": {...}})
    service.stop()

Requests on `$aws/things/+/jobs/get`, `jobs/start-next`, `jobs/+/get` and `jobs/+/update` are
answered on `.../accepted` or `.../rejected`, and `jobs/notify` and `jobs/notify-next` are
published as jobs.py says, QoS 1. Jobs and executions are kept in `<cloud>/jobs.db`, so they
survive a restart of the cloud; a step timer that ran out while the cloud was down fires when it
starts. Requests are handled one at a time, in arrival order. `control` serves `localgg cloud
job ...` through the cloud's control socket (service.py).
"""

from __future__ import annotations

import json
import logging
import re
import sqlite3
import threading
import time
from pathlib import Path
from typing import Callable

from . import mqtt
from .jobs import ControlError, Execution, Job, Jobs, Outcome, arn

log = logging.getLogger("localgg.cloud.jobs")

REQUEST = re.compile(r"^\$aws/things/([^/]+)/jobs/(?:(get|start-next)|([^/]+)/(get|update))$")
SUBSCRIPTIONS = ["$aws/things/+/jobs/get", "$aws/things/+/jobs/start-next",
                 "$aws/things/+/jobs/+/get", "$aws/things/+/jobs/+/update"]


def parse_topic(topic: str) -> tuple[str, str, str] | None:
    """(thing, operation, job id) of a request topic, None for any other topic."""
    match = REQUEST.match(topic)
    if match is None:
        return None
    thing, listed, job_id, op = match.groups()
    if listed:
        return thing, listed, ""
    return thing, "describe" if op == "get" else "update", job_id


class JobStore:
    """jobs.db: one row per job and one per execution, each the JSON of its dataclass."""

    def __init__(self, path: Path) -> None:
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("CREATE TABLE IF NOT EXISTS jobs (job_id TEXT PRIMARY KEY, body TEXT NOT NULL)")
        self._db.execute("CREATE TABLE IF NOT EXISTS executions (thing TEXT NOT NULL, job_id TEXT NOT NULL, "
                         "body TEXT NOT NULL, PRIMARY KEY (thing, job_id))")

    def load(self) -> Jobs:
        jobs = [Job(**json.loads(body)) for (body,) in self._db.execute("SELECT body FROM jobs")]
        executions = [Execution(**json.loads(body)) for (body,) in self._db.execute("SELECT body FROM executions")]
        return Jobs(jobs, executions)

    def save(self, model: Jobs, outcome: Outcome) -> None:
        with self._db:
            self._db.execute("BEGIN")
            for job_id in outcome.jobs | {job for _, job in outcome.executions}:
                self._db.execute("INSERT OR REPLACE INTO jobs VALUES (?,?)",
                                 (job_id, json.dumps(model.jobs[job_id].to_dict())))
            for thing, job_id in outcome.executions:
                self._db.execute("INSERT OR REPLACE INTO executions VALUES (?,?,?)",
                                 (thing, job_id, json.dumps(model.executions[(thing, job_id)].to_dict())))

    def close(self) -> None:
        self._db.close()


class JobsService:
    def __init__(self, cloud_dir: Path, clock: Callable[[], float] = time.time, timer_poll: float = 60.0) -> None:
        """`timer_poll`: the longest the step-timer thread sleeps before it reads the clock again."""
        self.cloud_dir = cloud_dir
        self.clock = clock
        self.timer_poll = timer_poll
        self.store = JobStore(cloud_dir / "jobs.db")
        self.model = self.store.load()
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._stopping = False
        self._client = None
        self._timer: threading.Thread | None = None

    def start(self) -> None:
        self._client = mqtt.connect(self.cloud_dir, "localgg-jobs-service", self._on_message)
        for topic in SUBSCRIPTIONS:
            mqtt.subscribe(self._client, topic, 1)
        self._timer = threading.Thread(target=self._timers, name="localgg-jobs-timers", daemon=True)
        self._timer.start()

    def stop(self) -> None:
        with self._lock:
            self._stopping = True
            self._wake.notify_all()
        if self._timer is not None:
            self._timer.join(5)
        if self._client is not None:
            self._client.loop_stop()
            self._client.disconnect()
        with self._lock:
            self.store.close()

    def _publish(self, outcome: Outcome) -> None:
        for topic, body in outcome.messages:
            self._client.publish(topic, json.dumps(body, separators=(",", ":")).encode(), qos=1)

    def _apply(self, change: Callable[[], Outcome]) -> Outcome:
        """Run one change of the model under the lock, keep it, then publish what it says."""
        with self._lock:
            outcome = change()
            self.store.save(self.model, outcome)
            self._wake.notify_all()   # a step timer may have started
        self._publish(outcome)
        return outcome

    def _on_message(self, client, userdata, message) -> None:
        parsed = parse_topic(message.topic)
        if parsed is None:
            return
        thing, operation, job_id = parsed
        try:
            self._apply(lambda: self.model.request(thing, operation, bytes(message.payload), self.clock(), job_id))
        except Exception:  # never let one request stop the service
            log.exception("jobs request on %s failed", message.topic)
            client.publish(f"{message.topic}/rejected", json.dumps(
                {"code": "InternalError", "message": "Internal service failure",
                 "timestamp": int(self.clock())}).encode(), qos=1)

    def _timers(self) -> None:
        """TIMED_OUT when a step timer runs out (checked at the next deadline, and on every change)."""
        while True:
            with self._lock:
                if self._stopping:
                    return
                deadline = self.model.next_deadline()
                now = self.clock()
                if deadline is None or deadline > now:
                    self._wake.wait(self.timer_poll if deadline is None else min(deadline - now, self.timer_poll))
                    continue
            self._apply(lambda: self.model.expire(self.clock()))

    # -- the control plane, for `localgg cloud job ...` ----------------------------------------

    def control(self, request: dict) -> dict:
        """create | cancel | list | describe | document: the AWS CLI's output, or
        {"refused": {"exception": "ResourceNotFoundException", "message": ...}}."""
        action = request.get("action")
        try:
            if action == "create":
                self._apply(lambda: self.model.create_job(
                    request.get("jobId", ""), list(request.get("targets") or []), request.get("document"),
                    self.clock(), request.get("description") or ""))
                with self._lock:
                    job = self.model.jobs[request["jobId"]]
                    return {"jobArn": arn(job.job_id), "jobId": job.job_id, "description": job.description}
            if action == "cancel":
                self._apply(lambda: self.model.cancel_job(request.get("jobId", ""), self.clock(),
                                                          bool(request.get("force"))))
                with self._lock:
                    job = self.model.jobs[request["jobId"]]
                    return {"jobArn": arn(job.job_id), "jobId": job.job_id, "description": job.description}
            with self._lock:
                if action == "list":
                    return self.model.list_jobs()
                if action == "describe":
                    if request.get("thingName"):
                        return self.model.describe_execution(request.get("jobId", ""), request["thingName"],
                                                             self.clock())
                    return self.model.describe_job(request.get("jobId", ""))
                if action == "document":
                    return self.model.job_document(request.get("jobId", ""))
            return {"error": f"unknown jobs action {action!r}"}
        except ControlError as error:
            return {"refused": {"exception": error.name, "message": error.message}}

