"""What real third-party components needed (issue 8), with small components of our own that
use the same operations and files: effectiveConfig.yaml (the certificate rotator reads
`system.certificateFilePath` from it), configuration validation over IPC, and
RequiresPrivilege / runWith (steps run as ggc_user when the core runs as root)."""

import json
import os
import pwd
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml
from awsiot.greengrasscoreipc.model import (ConfigurationValidityReport, ConfigurationValidityStatus,
                                            InvalidArgumentsError)

from conftest import CoreThread, provisioned_core, short_tmp, wait_for
from test_lifecycle import Deployer

from localgg import runwith


@pytest.fixture
def python_on_path(monkeypatch):
    # the components' python3 must be the one with awsiotsdk and PyYAML
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}:{os.environ['PATH']}")


@pytest.fixture
def deployer(core, tmp_path, python_on_path):
    return Deployer(core, tmp_path)


def effective(core) -> dict:
    return yaml.safe_load((core.kernel.root / "config" / "effectiveConfig.yaml").read_text())


# -- effectiveConfig.yaml ------------------------------------------------------------------

# As the certificate rotator does: find the thing's certificate through effectiveConfig.yaml.
ROTATOR = textwrap.dedent("""\
    import json, sys, yaml
    root, name = sys.argv[1], sys.argv[2]
    with open(f"{root}/config/effectiveConfig.yaml") as f:
        config = yaml.safe_load(f)
    cert = config["system"]["certificateFilePath"]
    with open(cert) as f:
        first = f.readline().strip()
    with open("seen.json", "w") as f:
        json.dump({"cert": cert, "first": first, "period": config["services"][name]["configuration"]["period"],
                   "thing": config["system"]["thingName"]}, f)
    """)


def test_effective_config_names_the_certificate_and_follows_deployments(cloud_dir, tmp_path, python_on_path):
    core = provisioned_core(cloud_dir)
    try:
        deployer = Deployer(core, tmp_path)
        deployer.recipe("com.ex.Rotator", {"Run": "python3 {artifacts:path}/app.py {kernel:rootPath} com.ex.Rotator"},
                        config={"period": 1}, app=ROTATOR)
        assert deployer.deploy(com_ex_Rotator="1.0.0").status == "SUCCEEDED"
        wait_for(lambda: (deployer.work("com.ex.Rotator") / "seen.json").exists(), 20, message="the component to read")
        seen = json.loads((deployer.work("com.ex.Rotator") / "seen.json").read_text())
        assert seen == {"cert": str(core.kernel.root / "thingCert.crt"), "first": "-----BEGIN CERTIFICATE-----",
                        "period": 1, "thing": "test-thing"}

        deployment_id = deployer.cli.create_local_deployment(
            root_component_versions_to_add={"com.ex.Rotator": "1.0.0"},
            component_to_configuration={"com.ex.Rotator": {"MERGE": {"period": 2}}}).deployment_id
        assert wait_for(lambda: deployer.finished(deployment_id), 30).status == "SUCCEEDED"
        data = effective(core)
        service = data["services"]["com.ex.Rotator"]
        assert (service["version"], service["configuration"], service["componentType"]) == ("1.0.0", {"period": 2},
                                                                                          "GENERIC")
        assert "com.ex.Rotator" in data["services"]["main"]["dependencies"]
        assert data["system"]["privateKeyPath"] == str(core.kernel.root / "privKey.key")
        assert data["system"]["rootCaPath"] == str(core.kernel.root / "rootCA.pem")
    finally:
        core.close()


def test_effective_config_of_a_core_not_provisioned(core):
    data = effective(core)
    assert data["system"] == {"certificateFilePath": "", "privateKeyPath": "", "rootCaPath": "",
                              "rootpath": str(core.kernel.root), "thingName": "test-thing"}
    nucleus = data["services"]["aws.greengrass.Nucleus"]
    assert (nucleus["componentType"], nucleus["version"]) == ("NUCLEUS", "2.18.2")
    assert nucleus["configuration"]["awsRegion"] == "us-east-1"
    assert data["services"]["main"]["dependencies"] == []


# -- configuration validation --------------------------------------------------------------

# A component that validates its configuration as the AWS docs show: `threshold` must stay
# under 100; with `silent` it never answers.
VALIDATOR = textwrap.dedent("""\
    import json, time
    from awsiot.greengrasscoreipc.clientv2 import GreengrassCoreIPCClientV2
    from awsiot.greengrasscoreipc.model import ConfigurationValidityReport, ConfigurationValidityStatus
    client = GreengrassCoreIPCClientV2()

    def on_event(event):
        request = event.validate_configuration_update_event
        with open("requests.jsonl", "a") as f:
            f.write(json.dumps({"deploymentId": request.deployment_id, "configuration": request.configuration}) + "\\n")
        if request.configuration.get("silent"):
            return
        bad = request.configuration["threshold"] >= 100
        client.send_configuration_validity_report(configuration_validity_report=ConfigurationValidityReport(
            status=ConfigurationValidityStatus.REJECTED if bad else ConfigurationValidityStatus.ACCEPTED,
            deployment_id=request.deployment_id, message="threshold too high" if bad else None))

    client.subscribe_to_validate_configuration_updates(on_stream_event=on_event)
    open("subscribed", "w").close()
    while True:
        time.sleep(1)
    """)


def requests(deployer) -> list[dict]:
    path = deployer.work("com.ex.Validator") / "requests.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def update(deployer, merge: dict, version: str = "1.0.0"):
    deployment_id = deployer.cli.create_local_deployment(
        root_component_versions_to_add={"com.ex.Validator": version}, recipe_directory_path=str(deployer.recipes),
        component_to_configuration={"com.ex.Validator": {"MERGE": merge}}).deployment_id
    return deployment_id, wait_for(lambda: deployer.finished(deployment_id), 60, message="the deployment")


@pytest.fixture
def validator(deployer):
    for version in ("1.0.0", "2.0.0"):
        deployer.recipe("com.ex.Validator", {"Run": "python3 -u {artifacts:path}/app.py"}, version=version,
                        config={"threshold": 10}, app=VALIDATOR)
    assert deployer.deploy(com_ex_Validator="1.0.0").status == "SUCCEEDED"
    wait_for(lambda: (deployer.work("com.ex.Validator") / "subscribed").exists(), 20, message="the subscription")
    return deployer


def test_a_configuration_the_component_accepts_is_deployed(validator):
    deployment_id, status = update(validator, {"threshold": 50})
    assert status.status == "SUCCEEDED"
    assert requests(validator) == [{"deploymentId": deployment_id, "configuration": {"threshold": 50}}]
    assert validator.core.call(lambda: validator.core.kernel.config.value("com.ex.Validator")) == {"threshold": 50}


def test_a_rejected_configuration_fails_the_deployment_and_changes_nothing(validator):
    _, status = update(validator, {"threshold": 500})
    assert status.status == "FAILED"
    details = status.deployment_status_details
    assert details.detailed_deployment_status == "FAILED_NO_STATE_CHANGE"
    assert details.deployment_failure_cause == ("Components reported that their to-be-deployed configuration is "
                                                "invalid { name = com.ex.Validator, message = threshold too high }")
    assert details.deployment_error_stack == ["DEPLOYMENT_FAILURE", "COMPONENT_CONFIGURATION_NOT_VALID"]
    assert validator.core.call(lambda: validator.core.kernel.config.value("com.ex.Validator")) == {"threshold": 10}
    assert validator.state("com.ex.Validator") == "RUNNING"


def test_no_report_in_time_fails_the_deployment(validator):
    validator.core.call(lambda: setattr(validator.core.kernel, "validation_timeout", 0.5))
    _, status = update(validator, {"threshold": 20, "silent": True})
    assert status.status == "FAILED"
    assert status.deployment_status_details.deployment_failure_cause == (
        "Error while waiting for validation report for one or more components:null")
    assert validator.core.call(lambda: validator.core.kernel.config.value("com.ex.Validator")) == {"threshold": 10}


def test_a_new_version_is_not_asked_to_validate(validator):
    _, status = update(validator, {"threshold": 500}, version="2.0.0")
    assert status.status == "SUCCEEDED"   # DynamicComponentConfigurationValidator skips version changes
    assert requests(validator) == []


def test_reports_nobody_asked_for_are_refused(core):
    client = core.client("com.ex.Reporter")
    with pytest.raises(InvalidArgumentsError) as refused:
        client.send_configuration_validity_report(configuration_validity_report=ConfigurationValidityReport(
            status=ConfigurationValidityStatus.ACCEPTED, deployment_id="no-such-deployment"))
    assert refused.value.message == "Validation request either timed out or was never made"
    with pytest.raises(InvalidArgumentsError) as refused:
        client.send_configuration_validity_report(configuration_validity_report=ConfigurationValidityReport(
            status=ConfigurationValidityStatus.ACCEPTED))
    assert refused.value.message == ("Cannot accept configuration validity report, the deployment ID provided was "
                                     "null")


# -- RequiresPrivilege and runWith ---------------------------------------------------------

as_root = pytest.mark.skipif(os.geteuid() != 0, reason="the core must run as root to run steps as another user")

WHO = {"Install": {"Script": "id -un > install.user", "RequiresPrivilege": True},
       "Run": {"Script": "id -un > run.user; echo $HOME > run.home; touch made; exec sleep 60",
               "RequiresPrivilege": "false"}}


def new_core(monkeypatch, mode: str | None, reachable: bool = True) -> CoreThread:
    """A core run with LOCALGG_RUN_AS=`mode`, whose root every user can reach, or only root."""
    if mode is None:
        monkeypatch.delenv(runwith.ENV, raising=False)
    else:
        monkeypatch.setenv(runwith.ENV, mode)
    base = short_tmp("lggu-")
    if reachable:
        base.chmod(0o755)
    return CoreThread(base / "gg")


def users(deployer, name: str) -> tuple[str, str]:
    work = deployer.work(name)
    wait_for(lambda: (work / "run.user").exists(), 20, message="the Run step")
    return tuple((work / f"{step}.user").read_text().strip() for step in ("install", "run"))


@pytest.fixture
def who(monkeypatch, tmp_path):
    """`who(mode, reachable)`: a new core (see new_core) with com.ex.Who deployed; closed after the test."""
    cores = []

    def deploy(mode: str | None, reachable: bool = True) -> Deployer:
        cores.append(new_core(monkeypatch, mode, reachable))
        deployer = Deployer(cores[-1], tmp_path)
        deployer.recipe("com.ex.Who", WHO)
        assert deployer.deploy(com_ex_Who="1.0.0").status == "SUCCEEDED"
        return deployer
    yield deploy
    for core in cores:
        core.close()


@as_root
def test_as_root_steps_run_as_ggc_user_and_privileged_ones_as_root(who):
    deployer = who("default")
    core = deployer.core
    assert users(deployer, "com.ex.Who") == ("root", "ggc_user")
    ggc = pwd.getpwnam("ggc_user")
    work = deployer.work("com.ex.Who")
    assert (work.stat().st_uid, (work / "made").stat().st_uid) == (ggc.pw_uid, ggc.pw_uid)
    assert oct(work.stat().st_mode & 0o777) == "0o700"      # private to its user, as on the nucleus
    assert (work / "run.home").read_text().strip() == ggc.pw_dir
    assert core.call(lambda: core.kernel.config.value("aws.greengrass.Nucleus", ["runWithDefault"])) == {
        "posixUser": "ggc_user:ggc_group"}
    assert core.call(lambda: core.kernel.status())["runWith"]["defaultUser"] == "ggc_user:ggc_group"

    # greengrass-cli's --runWith: the root's steps run as that user, installed again
    def cli(*args):
        return subprocess.run([sys.executable, "-m", "localgg", "deployment", "create", "--root",
                               str(core.kernel.root), "--merge", "com.ex.Who=1.0.0", *args],
                              capture_output=True, text=True, timeout=120)
    refused = cli("--runWith", "com.ex.Who=nobody")
    assert refused.returncode != 0 and "--runWith takes NAME:posixUser=USER[:GROUP]" in refused.stderr
    done = cli("--runWith", "com.ex.Who:posixUser=nobody", "--wait", "60")
    assert done.returncode == 0, done.stdout + done.stderr
    wait_for(lambda: (work / "run.user").read_text().strip() == "nobody", 20, message="a Run as nobody")
    assert work.stat().st_uid == pwd.getpwnam("nobody").pw_uid
    assert effective(core)["services"]["com.ex.Who"]["runWith"] == {"posixUser": "nobody"}


@as_root
def test_as_root_a_default_user_that_cannot_reach_the_root_falls_back_and_says_why(who):
    deployer = who(None, reachable=False)
    core = deployer.core
    assert users(deployer, "com.ex.Who") == ("root", "root")
    note = core.call(lambda: core.kernel.status())["runWith"]
    assert note["defaultUser"] is None
    assert f"ggc_user cannot reach {core.kernel.root}" in note["note"]
    log = (core.kernel.root / "logs" / "greengrass.log").read_text()
    assert "[WARN]" in log and "run-with: every lifecycle step runs as root, not as ggc_user:ggc_group" in log


@as_root
def test_as_root_with_run_as_current_every_step_runs_as_root(who):
    deployer = who("current")
    assert users(deployer, "com.ex.Who") == ("root", "root")
    assert "LOCALGG_RUN_AS=current" in deployer.core.call(lambda: deployer.core.kernel.status())["runWith"]["note"]


@as_root
def test_a_python3_the_default_user_cannot_run_falls_back(monkeypatch, tmp_path):
    hidden = short_tmp("lggp-")   # 0700: only root gets in
    python = hidden / "bin" / "python3"
    python.parent.mkdir()
    python.write_text("#!/bin/sh\nexit 0\n")
    python.chmod(0o755)
    monkeypatch.setenv("PATH", f"{python.parent}:{os.environ['PATH']}")
    core = new_core(monkeypatch, None)
    try:
        note = core.call(lambda: core.kernel.status())["runWith"]
        assert note["defaultUser"] is None
        assert f"ggc_user cannot run {python} (the python3 first on the core's PATH)" in note["note"]
    finally:
        core.close()
        shutil.rmtree(hidden, ignore_errors=True)


def test_an_ordinary_user_runs_every_step_itself():
    def never(*_):
        raise AssertionError("an ordinary user neither creates nor checks accounts")
    policy = runwith.decide(1000, None, "ggc_user:ggc_group", "alice", never, never)
    assert policy.default is None and policy.account({"posixUser": "bob"}, False) is None
    assert policy.note.startswith("localgg runs as alice, not as root: every lifecycle step runs as alice")
    with pytest.raises(runwith.RunWithError, match="LOCALGG_RUN_AS='sometimes'"):
        runwith.decide(0, "sometimes", None, "root", never, never)


def test_the_installer_creates_only_ggc_user_and_ggc_group():
    assert runwith.accounts_to_create("ggc_user:ggc_group", False, False) == [
        ["useradd", "-r", "-m", "ggc_user"], ["groupadd", "-r", "ggc_group"],
        ["usermod", "-a", "-G", "ggc_group", "ggc_user"]]
    assert runwith.accounts_to_create("ggc_user:ggc_group", True, False) == [
        ["groupadd", "-r", "ggc_group"], ["usermod", "-a", "-G", "ggc_group", "ggc_user"]]
    assert runwith.accounts_to_create("ggc_user:ggc_group", True, True) == []
    assert runwith.accounts_to_create("ggc_user", False, True) == [["useradd", "-r", "-m", "ggc_user"]]
    assert runwith.accounts_to_create("alice:staff", False, False) == []
