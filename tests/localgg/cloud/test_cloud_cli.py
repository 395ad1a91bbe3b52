"""`localgg cloud start` as a process: what it says it runs."""

import json
import signal
import subprocess
import sys

from conftest import short_tmp, wait_for
from localgg.cloud.broker import find_mosquitto


def test_the_banner_names_the_broker_that_runs():
    base = short_tmp("lggb-")
    out = base / "cloud.out"
    proc = subprocess.Popen([sys.executable, "-m", "localgg", "cloud", "start", "--dir", str(base / "cloud")],
                            stdout=open(out, "w"), stderr=subprocess.STDOUT)
    try:
        banner = wait_for(lambda: [line for line in out.read_text().splitlines() if "localgg cloud running" in line],
                          60, message="the banner")[0]
        assert f"broker mosquitto ({find_mosquitto()}, MQTT 5)" in banner
        assert json.loads((base / "cloud" / "endpoint.json").read_text())["broker"] == "mosquitto"
        status = subprocess.run([sys.executable, "-m", "localgg", "fault", "broker", "status", "--cloud",
                                 str(base / "cloud")], capture_output=True, text=True, timeout=60)
        assert json.loads(status.stdout)["name"] == "mosquitto"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
