"""`localgg cloud shadow get|update` (issue 13, item 4): the cloud side at the fingertips, in the
shapes of `aws iot-data get-thing-shadow` / `update-thing-shadow`, against a running
`localgg cloud start` (its shadow service answers on the shadow MQTT topics)."""

import json
import signal
import subprocess
import sys

import pytest

from conftest import short_tmp, wait_for


@pytest.fixture(scope="module")
def cloud():
    base = short_tmp("lggs-")
    out = base / "cloud.out"
    proc = subprocess.Popen([sys.executable, "-m", "localgg", "cloud", "start", "--dir", str(base / "cloud")],
                            stdout=open(out, "w"), stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: "localgg cloud running" in out.read_text(), 60, message="the cloud")
        yield base / "cloud"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


def shadow(cloud, *args):
    return subprocess.run([sys.executable, "-m", "localgg", "cloud", "shadow", *args, "--cloud", str(cloud)],
                          capture_output=True, text=True, timeout=60)


def test_a_missing_shadow_is_refused_as_the_aws_cli_says_it(cloud):
    result = shadow(cloud, "get", "--thing-name", "pi-1", "--shadow-name", "backfill")
    assert result.returncode == 255
    assert "ResourceNotFoundException" in result.stderr and "GetThingShadow" in result.stderr


def test_update_then_get_gives_the_document_with_its_delta_and_version(cloud, tmp_path):
    desired = {"state": {"desired": {"sampling": {"interval_s": 5}}}}
    result = shadow(cloud, "update", "--thing-name", "pi-2", "--shadow-name", "backfill", "--payload", json.dumps(desired))
    assert result.returncode == 0, result.stderr
    accepted = json.loads(result.stdout)
    assert accepted["state"]["desired"] == {"sampling": {"interval_s": 5}} and accepted["version"] == 1
    assert "clientToken" not in accepted
    out = tmp_path / "shadow.json"
    result = shadow(cloud, "get", "--thing-name", "pi-2", "--shadow-name", "backfill", str(out))
    assert result.returncode == 0, result.stderr
    doc = json.loads(out.read_text())
    assert doc["state"]["delta"] == {"sampling": {"interval_s": 5}} and doc["version"] == 1


def test_a_payload_that_is_not_an_object_is_refused_before_anything_is_sent(cloud):
    result = shadow(cloud, "update", "--thing-name", "pi-3", "--payload", "[1, 2]")
    assert result.returncode == 1 and "must be a JSON object" in result.stderr


def test_status_says_when_the_device_last_reported_what_it_reported_and_what_waits(cloud):
    reported = {"state": {"reported": {"store": {"link": "online", "backlog": {"count": 7}, "counters": {"sent": 3}}},
                          "desired": {"sampling": {"interval_s": 2}}}}
    assert shadow(cloud, "update", "--thing-name", "pi-9", "--shadow-name", "backfill",
                  "--payload", json.dumps(reported)).returncode == 0
    result = shadow(cloud, "status", "--thing-name", "pi-9", "--shadow-name", "backfill")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("version 1; the device last reported 20") and " s ago)" in lines[0]
    assert lines[1].startswith("reported.store  (at 20")
    assert lines[2].split() == ['link="online"', "backlog.count=7", "counters.sent=3"]
    assert lines[-1] == "delta (desired, not yet reported): sampling.interval_s=2"
    missing = shadow(cloud, "status", "--thing-name", "pi-nobody", "--shadow-name", "backfill")
    assert missing.returncode == 255 and "ResourceNotFoundException" in missing.stderr
