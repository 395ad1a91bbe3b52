"""`localgg cloud record`, as processes: any number of recorders on one cloud each record
every message, and a recorder that loses the broker says so and records again."""

import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import short_tmp, wait_for
from localgg.cloud import mqtt


class RecorderProcess:
    def __init__(self, cloud_dir: Path, db: Path, *topics: str):
        self.db, self.out, self.err = db, db.with_suffix(".out"), db.with_suffix(".err")
        args = [a for t in topics for a in ("--topic", t)]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "localgg", "cloud", "record", "--cloud", str(cloud_dir), "--db", str(db), *args],
            stdout=open(self.out, "w"), stderr=open(self.err, "w"),
            env=dict(os.environ, PYTHONUNBUFFERED="1"))
        wait_for(lambda: "recording" in self.out.read_text() or self.proc.poll() is not None, 60,
                 message="the recorder to subscribe")
        assert self.proc.poll() is None, self.err.read_text()

    def payloads(self) -> list[bytes]:
        if not self.db.exists():
            return []
        db = sqlite3.connect(self.db)
        try:
            return [bytes(p) for (p,) in db.execute("SELECT payload FROM messages ORDER BY id")]
        finally:
            db.close()

    def stderr(self) -> str:
        return self.err.read_text()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def recorders(cloud_dir):
    base = short_tmp("lggr-")
    started = []

    def start(name: str, *topics: str) -> RecorderProcess:
        started.append(RecorderProcess(cloud_dir.directory, base / f"{name}.db", *topics))
        return started[-1]
    yield start
    for recorder in started:
        recorder.stop()


def publish(cloud, topic: str, payloads: list[bytes]) -> None:
    client = mqtt.connect(cloud.directory, "test-publisher", client_id=mqtt.unique_client_id("test-publisher"))
    try:
        for info in [client.publish(topic, p, qos=1) for p in payloads]:
            info.wait_for_publish(30)
            assert info.is_published()
    finally:
        client.loop_stop()
        client.disconnect()


def test_two_recorders_both_record_every_message(cloud_dir, recorders):
    first, second = recorders("first", "dt/#"), recorders("second", "dt/#")
    sent = [f"m{i}".encode() for i in range(300)]
    publish(cloud_dir, "dt/x", sent)
    for recorder in (first, second):
        wait_for(lambda: len(recorder.payloads()) >= len(sent), 60, message="every message at each recorder")
        assert recorder.payloads() == sent
        assert "disconnected" not in recorder.stderr()
    assert "already connected" not in (cloud_dir.directory / "mosquitto.log").read_text()


def test_topic_is_repeatable(cloud_dir, recorders):
    recorder = recorders("both", "dt/#", "cmd/#")
    publish(cloud_dir, "dt/a", [b"1"])
    publish(cloud_dir, "other/b", [b"2"])
    publish(cloud_dir, "cmd/c", [b"3"])
    wait_for(lambda: len(recorder.payloads()) >= 2, 30, message="both topics recorded")
    publish(cloud_dir, "dt/end", [b"4"])
    wait_for(lambda: len(recorder.payloads()) >= 3, 30, message="the last message")
    assert recorder.payloads() == [b"1", b"3", b"4"]


def test_a_disconnected_recorder_says_so_and_records_again(cloud_dir, recorders):
    first, second = recorders("first", "dt/#"), recorders("second", "dt/#")
    cloud_dir.broker.stop()
    for recorder in (first, second):
        wait_for(lambda: "disconnected from" in recorder.stderr(), 30, message="the recorder to say it lost the broker")
        assert "reconnected" not in recorder.stderr()
    cloud_dir.broker.start()
    for recorder in (first, second):
        wait_for(lambda: "reconnected" in recorder.stderr(), 60, message="the recorder to say it is back")
        assert recorder.stderr().count("disconnected from") == 1  # a transition is said once, not per attempt
    sent = [f"after{i}".encode() for i in range(20)]
    publish(cloud_dir, "dt/y", sent)
    for recorder in (first, second):
        wait_for(lambda: len(recorder.payloads()) >= len(sent), 30, message="messages after the reconnection")
        assert recorder.payloads() == sent
