"""What the nucleus really promises: PublishToIoTCore returns once the message is SPOOLED.

A naive publisher deletes a reading as soon as PublishToIoTCore returns. If the core
restarts while the link is down, the in-memory spool dies with it and those readings are
gone: nothing reaches IoT Core and nothing is left on the device. The same sequence with
the nucleus's disk spooler (aws.greengrass.DiskSpooler) loses nothing.
This is the failure our store-and-forward publisher must survive."""

import shutil
import sqlite3


from conftest import FAST_MQTT, CloudListener, CoreThread, policy, short_tmp, wait_for

ALL = policy("aws.greengrass.ipc.mqttproxy", ["*"], ["*"])
READINGS = 20


class NaivePublisher:
    """Keeps readings in SQLite; publishes each with QoS 1 and deletes it when the call returns."""

    def __init__(self, path):
        self.db = sqlite3.connect(path)
        self.db.execute("CREATE TABLE readings (id INTEGER PRIMARY KEY, payload BLOB)")
        self.db.executemany("INSERT INTO readings (payload) VALUES (?)",
                            [(b'{"reading": %d}' % i,) for i in range(READINGS)])
        self.db.commit()

    def forward(self, client) -> None:
        for row_id, payload in self.db.execute("SELECT id, payload FROM readings ORDER BY id").fetchall():
            client.publish_to_iot_core(topic_name="dt/test-thing/readings", qos="1", payload=payload)
            self.db.execute("DELETE FROM readings WHERE id = ?", (row_id,))  # "it was sent"
            self.db.commit()

    def left(self) -> int:
        return self.db.execute("SELECT count(*) FROM readings").fetchone()[0]


def run_outage_with_core_restart(cloud, tmp_path, mqtt_config: dict, deploy_disk_spooler: bool):
    root = short_tmp("lggr-") / "gg"
    cloud.provision(root, "test-thing")
    nucleus = {"mqtt": {**FAST_MQTT, **mqtt_config}}
    core = CoreThread(root, lambda k: k.config.replace("aws.greengrass.Nucleus", nucleus, 1))
    listener = CloudListener(cloud, "dt/#")
    try:
        if deploy_disk_spooler:
            cli = core.cli_client()
            deployment = cli.create_local_deployment(
                root_component_versions_to_add={"aws.greengrass.DiskSpooler": "1.0.3"}).deployment_id
            wait_for(lambda: cli.get_local_deployment_status(deployment_id=deployment).deployment.status
                     == "SUCCEEDED", 30)
            core.close()  # the nucleus picks the spooler's storage when it starts
            core = CoreThread(root)
        wait_for(lambda: core.call(lambda: core.kernel.iotcore.online), 15)
        core.call(lambda: core.kernel.iotcore.link.down())
        wait_for(lambda: not core.call(lambda: core.kernel.iotcore.online), 10)

        naive = NaivePublisher(tmp_path / "naive.db")
        naive.forward(core.client("com.ex.Naive", ALL))
        assert naive.left() == 0                                     # every call succeeded...
        assert core.call(lambda: len(core.kernel.iotcore.spool)) == READINGS   # ...because they were spooled

        core.close()                      # the core restarts while the link is still down
        core = CoreThread(root)
        assert not core.call(lambda: core.kernel.iotcore.link.is_up)  # the outage outlived the core
        core.call(lambda: core.kernel.iotcore.link.up())
        wait_for(lambda: core.call(lambda: core.kernel.iotcore.online), 15)
        # settle: drain whatever survived, then count what IoT Core got
        wait_for(lambda: core.call(lambda: len(core.kernel.iotcore.spool)) == 0, 15)
        listener.client.publish("dt/marker", b"end", qos=1).wait_for_publish(5)
        wait_for(lambda: b"end" in listener.payloads(), 10)
        received = [p for p in listener.payloads() if p != b"end"]
        status = core.call(lambda: core.kernel.iotcore.status())
        log = (root / "logs" / "greengrass.log").read_text()
        return received, naive.left(), status, log
    finally:
        listener.close()
        core.close()
        shutil.rmtree(root.parent, ignore_errors=True)


def test_naive_publisher_loses_readings_when_the_core_restarts_offline(cloud_dir, tmp_path):
    received, left_on_device, status, log = run_outage_with_core_restart(cloud_dir, tmp_path, {},
                                                                         deploy_disk_spooler=False)
    assert received == [] and left_on_device == 0  # all 20 readings are lost
    # ...and the core says so (a localgg addition)
    size = sum(len(b'{"reading": %d}' % i) for i in range(READINGS))
    assert status["spool"]["lostAtRestart"] == {"last": READINGS, "lastBytes": size, "total": READINGS}
    assert f"Stopping: the memory spool loses {READINGS} messages ({size} bytes)" in log
    assert f"The memory spool lost {READINGS} messages ({size} bytes)" in log


def test_with_the_disk_spooler_the_same_sequence_loses_nothing(cloud_dir, tmp_path):
    received, _, status, log = run_outage_with_core_restart(cloud_dir, tmp_path, {"spooler": {"storageType": "Disk"}},
                                                            deploy_disk_spooler=True)
    assert sorted(received) == sorted(b'{"reading": %d}' % i for i in range(READINGS))
    assert status["spool"]["messages"] == 0
    assert status["spool"]["storage"] == "Disk"  # also when the disk spool is empty
    assert status["spool"]["lostAtRestart"]["last"] == 0
    assert "The memory spool lost" not in log
