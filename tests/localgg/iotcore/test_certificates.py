"""When the core reads its certificate and key (issue item 4): once per MQTT client, as the
nucleus does (bridge.IoTCoreBridge._client_tls cites the source), not at every connection.

A component that swaps the certificate files without restarting the core must not pass
here after a link flap when a device would go on with the pair it loaded."""

import json
import shutil

import pytest

from conftest import FAST_MQTT, CoreThread, provisioned_core, short_tmp, wait_for
from localgg.cloud.pki import CertificateAuthority


def configure(mqtt: dict):
    def setup(kernel):
        kernel.config.replace("aws.greengrass.Nucleus", {"mqtt": {**FAST_MQTT, **mqtt}}, 1)
    return setup


def bridge(core, attribute: str):
    return core.call(lambda: getattr(core.kernel.iotcore, attribute))


def foreign_pair() -> tuple:
    """A certificate and key from a CA the broker does not trust: it refuses them."""
    directory = short_tmp("lggf-")
    cert, key, _ = CertificateAuthority.load_or_create(directory / "ca").issue_client(directory, "intruder")
    return cert, key


def install(pair: tuple, files: dict) -> None:
    shutil.copyfile(pair[0], files["cert"])
    shutil.copyfile(pair[1], files["key"])


def test_a_reconnect_uses_the_loaded_pair_and_only_a_new_core_reads_the_files(cloud_dir):
    core = provisioned_core(cloud_dir)
    root = core.kernel.root
    try:
        wait_for(lambda: bridge(core, "online"), 15, message="the core to connect")
        files = json.loads((root / "config" / "cloud.json").read_text())
        install(foreign_pair(), files)   # what a component rotating the certificate would do
        before = bridge(core, "connections")
        core.call(lambda: core.kernel.iotcore.link.down())
        wait_for(lambda: not bridge(core, "online"), 10, message="the link to drop")
        core.call(lambda: core.kernel.iotcore.link.up())
        wait_for(lambda: bridge(core, "connections") > before and bridge(core, "online"), 15,
                 message="the reconnection with the pair the core loaded (the files hold a refused one)")
    finally:
        core.close()
    core = CoreThread(root, configure({}))   # a restart: a new client reads the files
    try:
        wait_for(lambda: bridge(core, "failed_connects") >= 2, 15, message="the new core to be refused")
        assert not bridge(core, "online") and bridge(core, "connections") == 0
    finally:
        core.close()


@pytest.mark.parametrize("version, reads_again", [("mqtt5", False), ("mqtt3", True)])
def test_before_the_first_connection_only_mqtt3_reads_the_files_again(cloud_dir, version, reads_again):
    """MQTT 5: the CRT client made at start keeps its TLS context through every retry, so a
    pair fixed after a refused start is not seen. MQTT 3: a failed connect discards the
    connection and the next attempt builds a new one from the files."""
    root = short_tmp("lggk-") / "gg"
    cloud_dir.provision(root, "test-thing")
    files = json.loads((root / "config" / "cloud.json").read_text())
    good = short_tmp("lggg-")
    good_pair = (shutil.copy(files["cert"], good), shutil.copy(files["key"], good))
    install(foreign_pair(), files)
    core = CoreThread(root, configure({"version": version}))
    try:
        wait_for(lambda: bridge(core, "failed_connects") >= 1, 15, message="the refused pair to fail")
        install(good_pair, files)
        fixed_at = bridge(core, "failed_connects")
        if reads_again:
            wait_for(lambda: bridge(core, "online"), 15, message="the fixed pair to be read and accepted")
        else:
            wait_for(lambda: bridge(core, "failed_connects") >= fixed_at + 3, 15,
                     message="more attempts with the context made at start")
            assert not bridge(core, "online")
    finally:
        core.close()
