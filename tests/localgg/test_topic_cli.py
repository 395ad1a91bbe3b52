"""`localgg pubsub pub|sub` and `localgg iotcore pub|sub`: greengrass-cli's topic commands, with
its arguments and output, against a core running as a process and connected to the cloud."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import CloudListener, short_tmp, wait_for
from localgg.cloud import mqtt


class Core:
    def __init__(self, base: Path, cloud_dir: Path):
        self.base, self.root = base, base / "gg"
        self.env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
                        PYTHONUNBUFFERED="1")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "localgg", "start", "--root", str(self.root), "--thing", "topic-thing",
             "--cloud", str(cloud_dir)], stdout=open(base / "core.out", "w"), stderr=subprocess.STDOUT, env=self.env)
        wait_for(lambda: (self.root / "localgg.pid").exists(), 60, message="the core to start")
        wait_for(lambda: self.status()["iotcore"]["online"], 60, message="the core to reach IoT Core")

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "localgg", *args, "--root", str(self.root)],
                              capture_output=True, text=True, env=self.env, timeout=120)

    def status(self) -> dict:
        result = self.cli("status")
        return json.loads(result.stdout) if result.returncode == 0 else {"iotcore": {"online": False}}

    def subscriber(self, name: str, *args: str) -> "Subscriber":
        return Subscriber(self, name, args)

    def stop(self):
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(60)


class Subscriber:
    def __init__(self, core: Core, name: str, args):
        self.out, self.err = core.base / f"{name}.out", core.base / f"{name}.err"
        self.process = subprocess.Popen([sys.executable, "-m", "localgg", *args, "--root", str(core.root)],
                                        stdout=open(self.out, "w"), stderr=open(self.err, "w"), env=core.env)

    def lines(self) -> list[str]:
        return self.out.read_text().splitlines()

    def wait_for_line(self, line: str) -> None:
        wait_for(lambda: line in self.lines() or self.process.poll() is not None, 60, message=repr(line))
        assert line in self.lines(), f"{self.lines()}\n{self.err.read_text()}"

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        return self.process.wait(30)


@pytest.fixture
def gg(cloud_dir):
    base = short_tmp("lggt-")
    core = Core(base, cloud_dir.directory)
    yield core
    if core.process.poll() is None:
        core.stop()
    subprocess.run(["rm", "-rf", str(base)])


def test_pubsub_pub_and_sub(gg):
    # an exact topic: a wildcard subscription's default receive mode is from-others, and every
    # CLI invocation is the same component (on a device, the same greengrass-cli#<user> client)
    sub = gg.subscriber("sub", "pubsub", "sub", "-t", "test/x")
    sub.wait_for_line("Successfully subscribed to topic: test/x")
    result = gg.cli("pubsub", "pub", "-t", "test/x", "-m", "hello world")
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    sub.wait_for_line("Received new message on topic test/x: hello world")
    message_file = gg.base / "message.json"
    message_file.write_text('{"from": "a file"}')
    assert gg.cli("pubsub", "pub", "--topic", "test/x", "--message", str(message_file)).returncode == 0
    sub.wait_for_line('Received new message on topic test/x: {"from": "a file"}')
    assert sub.stop() == 0


def test_iotcore_pub_and_sub(gg, cloud_dir):
    listener = CloudListener(cloud_dir, "dt/#", name="topic-cli-listener")
    try:
        result = gg.cli("iotcore", "pub", "-t", "dt/topic-thing/x", "-m", "to the cloud", "-q", "1")
        assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
        wait_for(lambda: b"to the cloud" in listener.payloads(), 30, message="the message at IoT Core")
    finally:
        listener.close()
    sub = gg.subscriber("iot", "iotcore", "sub", "-t", "cmd/#", "-q", "1")
    sub.wait_for_line("Successfully subscribed to topic: cmd/#")
    cloud = mqtt.connect(cloud_dir.directory, "topic-cli-cloud")
    try:
        cloud.publish("cmd/topic-thing/go", b"from the cloud", qos=1).wait_for_publish(10)
        sub.wait_for_line("Received new message on topic cmd/topic-thing/go: from the cloud")  # the message's topic
    finally:
        cloud.loop_stop()
        cloud.disconnect()
    assert sub.stop() == 0


def test_blank_topics_are_refused_with_greengrass_clis_text(gg):
    for command in (("pubsub", "pub", "-t", "  ", "-m", "x"), ("iotcore", "sub", "-t", "")):
        result = gg.cli(*command)
        assert result.returncode == 1
        assert "Topic name cannot be empty" in result.stderr


def test_a_subscriber_is_told_when_the_core_ends_its_stream(gg):
    sub = gg.subscriber("sub", "pubsub", "sub", "-t", "t")
    sub.wait_for_line("Successfully subscribed to topic: t")
    gg.stop()
    sub.wait_for_line("Subscribe to topic stream closed.")
    assert sub.stop() == 1


def test_iotcore_help_warns_of_overlapping_filters():
    """Issue item 5: where a user looks before typing `localgg iotcore sub -t 'base/#'`."""
    for command in (["iotcore", "-h"], ["iotcore", "sub", "-h"]):
        result = subprocess.run([sys.executable, "-m", "localgg", *command], capture_output=True, text=True, timeout=60)
        text = " ".join(result.stdout.split())
        assert result.returncode == 0
        assert "the core keeps base/# after this command ends" in text and "every base/x message twice" in text
