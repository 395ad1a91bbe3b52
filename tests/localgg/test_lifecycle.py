"""Lifecycle scripts as written, driven by deployments over the real IPC client.

The core runs in-process (fast); components are real processes started from recipes;
they call UpdateState with the real awsiotsdk client."""

import os
import sys
import textwrap
from pathlib import Path

import pytest
import yaml
from awsiot.greengrasscoreipc.model import RequestStatus

from conftest import wait_for

# A component program: it records its start, then obeys files in its work directory.
APP = textwrap.dedent("""\
    import os, sys, time
    from awsiot.greengrasscoreipc.clientv2 import GreengrassCoreIPCClientV2
    with open("starts.txt", "a") as f:
        f.write(f"{os.getpid()}\\n")
    client = GreengrassCoreIPCClientV2()
    while not os.path.exists("go"):
        time.sleep(0.02)
    client.update_state(state="RUNNING")
    while not os.path.exists("fail"):
        time.sleep(0.02)
    os.remove("fail")
    client.update_state(state="ERRORED")
    time.sleep(60)
    """)


class Deployer:
    def __init__(self, core, tmp_path: Path):
        self.core, self.recipes, self.artifacts = core, tmp_path / "recipes", tmp_path / "artifacts"
        self.recipes.mkdir()
        self.cli = core.cli_client()

    def recipe(self, name: str, lifecycle: dict, version: str = "1.0.0", dependencies: dict | None = None,
               config: dict | None = None, app: str | None = None) -> None:
        manifest = {"Platform": {"os": "linux"}, "Lifecycle": lifecycle}
        if app is not None:
            folder = self.artifacts / name / version
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "app.py").write_text(app)
            manifest["Artifacts"] = [{"URI": f"s3://bucket/{name}/{version}/app.py"}]
        recipe = {"RecipeFormatVersion": "2020-01-25", "ComponentName": name, "ComponentVersion": version,
                  "ComponentConfiguration": {"DefaultConfiguration": config or {}},
                  "ComponentDependencies": dependencies or {}, "Manifests": [manifest]}
        (self.recipes / f"{name}-{version}.yaml").write_text(yaml.safe_dump(recipe))

    def deploy(self, wait: bool = True, **roots: str):
        merge = {name.replace("_", "."): version for name, version in roots.items()}
        kwargs = {"root_component_versions_to_add": merge, "recipe_directory_path": str(self.recipes)}
        if self.artifacts.exists():
            kwargs["artifacts_directory_path"] = str(self.artifacts)
        deployment_id = self.cli.create_local_deployment(**kwargs).deployment_id
        if not wait:
            return deployment_id
        return wait_for(lambda: self.finished(deployment_id), 60, message="the deployment")

    def finished(self, deployment_id):
        status = self.cli.get_local_deployment_status(deployment_id=deployment_id).deployment
        return status if status.status in ("SUCCEEDED", "FAILED") else None

    def state(self, name: str) -> str:
        return self.core.call(lambda: self.core.kernel.state_of(name))

    def work(self, name: str) -> Path:
        return self.core.kernel.root / "work" / name


@pytest.fixture
def deployer(core, tmp_path, monkeypatch):
    # the components' python3 must be the one with awsiotsdk
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    return Deployer(core, tmp_path)


def starts(deployer, name):
    path = deployer.work(name) / "starts.txt"
    return path.read_text().split() if path.exists() else []


def test_startup_is_running_only_once_the_component_reports_it(deployer):
    deployer.recipe("com.ex.Svc", {"Startup": "python3 -u {artifacts:path}/app.py"}, app=APP)
    deployment_id = deployer.deploy(wait=False, com_ex_Svc="1.0.0")
    wait_for(lambda: starts(deployer, "com.ex.Svc"), 30, message="the component to start")
    assert deployer.state("com.ex.Svc") == "STARTING"
    assert deployer.finished(deployment_id) is None  # the deployment waits for it
    (deployer.work("com.ex.Svc") / "go").touch()
    wait_for(lambda: deployer.state("com.ex.Svc") == "RUNNING", 10, message="RUNNING")
    assert wait_for(lambda: deployer.finished(deployment_id), 10).status == "SUCCEEDED"


def test_update_state_errored_restarts_the_component(deployer):
    deployer.recipe("com.ex.Svc", {"Startup": "python3 -u {artifacts:path}/app.py"}, app=APP)
    (deployer.work("com.ex.Svc")).mkdir(parents=True, exist_ok=True)
    (deployer.work("com.ex.Svc") / "go").touch()
    assert deployer.deploy(com_ex_Svc="1.0.0").status == "SUCCEEDED"
    first = starts(deployer, "com.ex.Svc")
    (deployer.work("com.ex.Svc") / "fail").touch()
    wait_for(lambda: len(starts(deployer, "com.ex.Svc")) == len(first) + 1, 20, message="a restart")
    wait_for(lambda: deployer.state("com.ex.Svc") == "RUNNING", 20, message="RUNNING again")


def test_hard_dependency_starts_first_and_soft_does_not_wait(deployer):
    deployer.recipe("com.ex.Base", {"Startup": "python3 -u {artifacts:path}/app.py"}, app=APP)
    deployer.recipe("com.ex.Hard", {"Run": "echo $$ >> starts.txt; exec sleep 60"},
                    dependencies={"com.ex.Base": {"VersionRequirement": "^1.0.0", "DependencyType": "HARD"}})
    deployer.recipe("com.ex.Soft", {"Run": "echo $$ >> starts.txt; exec sleep 60"},
                    dependencies={"com.ex.Base": {"VersionRequirement": "^1.0.0", "DependencyType": "SOFT"}})
    deployer.deploy(wait=False, com_ex_Hard="1.0.0", com_ex_Soft="1.0.0")
    wait_for(lambda: deployer.state("com.ex.Soft") == "RUNNING", 30, message="the SOFT depender to run")
    wait_for(lambda: starts(deployer, "com.ex.Base"), 30)
    assert deployer.state("com.ex.Base") == "STARTING"
    assert deployer.state("com.ex.Hard") == "INSTALLED"  # waits for its HARD dependency
    (deployer.work("com.ex.Base") / "go").touch()
    wait_for(lambda: deployer.state("com.ex.Hard") == "RUNNING", 20, message="the HARD depender to run")
    # a HARD dependency that errors restarts its HARD depender, not its SOFT one
    wait_for(lambda: starts(deployer, "com.ex.Hard"), 10)
    (deployer.work("com.ex.Base") / "fail").touch()
    wait_for(lambda: len(starts(deployer, "com.ex.Hard")) == 2, 30, message="the HARD depender to restart")
    wait_for(lambda: deployer.state("com.ex.Hard") == "RUNNING", 30)
    assert len(starts(deployer, "com.ex.Soft")) == 1


def test_setenv_skipif_and_the_nucleus_environment(deployer):
    deployer.recipe("com.ex.Env", {
        "Setenv": {"A": "from-lifecycle", "B": "from-lifecycle"},
        "Install": {"Script": "echo should-not-run > skipped", "Skipif": "exists /"},
        "Run": {"Script": "env > env.txt", "Setenv": {"B": "from-step"}},
    })
    assert deployer.deploy(com_ex_Env="1.0.0").status == "SUCCEEDED"
    env = dict(line.split("=", 1) for line in (deployer.work("com.ex.Env") / "env.txt").read_text().splitlines()
               if "=" in line)
    assert (env["A"], env["B"]) == ("from-lifecycle", "from-step")
    assert env["AWS_IOT_THING_NAME"] == "test-thing"
    assert env["AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH_FOR_COMPONENT"] == deployer.core.kernel.socket_path
    assert len(env["SVCUID"]) == 16 and env["GGC_VERSION"] == "2.18.2"
    assert env["PWD"] == str(deployer.work("com.ex.Env"))  # scripts run in the work directory
    assert not (deployer.work("com.ex.Env") / "skipped").exists()
    assert deployer.state("com.ex.Env") == "FINISHED"  # Run exited 0


def test_install_timeout_three_times_is_broken(deployer):
    deployer.recipe("com.ex.Slow", {"Install": {"Script": "sleep 30", "Timeout": 0.3}, "Run": "sleep 60"})
    status = deployer.deploy(com_ex_Slow="1.0.0")
    assert status.status == "FAILED"
    assert deployer.state("com.ex.Slow") == "BROKEN"
    log = (deployer.core.kernel.root / "logs" / "com.ex.Slow.log").read_text()
    assert log.count("Timeout in install") == 3


def test_stop_and_restart_through_the_cli_operations(deployer):
    deployer.recipe("com.ex.Svc", {"Run": "echo run >> runs.txt; exec sleep 60",
                                   "Shutdown": "echo shutdown >> shutdowns.txt"})
    assert deployer.deploy(com_ex_Svc="1.0.0").status == "SUCCEEDED"
    work = deployer.work("com.ex.Svc")
    restart = deployer.cli.restart_component(component_name="com.ex.Svc")
    assert restart.restart_status == RequestStatus.SUCCEEDED
    wait_for(lambda: (work / "runs.txt").exists() and len((work / "runs.txt").read_text().split()) == 2, 20)
    assert (work / "shutdowns.txt").read_text().split() == ["shutdown"]
    assert deployer.cli.stop_component(component_name="com.ex.Svc").stop_status == RequestStatus.SUCCEEDED
    wait_for(lambda: deployer.state("com.ex.Svc") == "FINISHED", 20)
    assert (work / "shutdowns.txt").read_text().split() == ["shutdown", "shutdown"]


def test_configuration_reset_and_merge_in_deployments(deployer):
    deployer.recipe("com.ex.Conf", {"Run": "echo {configuration:/color} > color.txt"},
                    config={"color": "red", "size": 1})
    deployer.deploy(com_ex_Conf="1.0.0")
    cli = deployer.cli
    def deploy_update(update):
        deployment_id = cli.create_local_deployment(component_to_configuration={"com.ex.Conf": update}).deployment_id
        return wait_for(lambda: deployer.finished(deployment_id), 30)
    deploy_update({"MERGE": {"color": "blue", "extra": {"a": 1}}})
    assert deployer.core.call(lambda: deployer.core.kernel.config.value("com.ex.Conf")) == {
        "color": "blue", "size": 1, "extra": {"a": 1}}
    wait_for(lambda: (deployer.work("com.ex.Conf") / "color.txt").read_text() == "blue\n", 20,
             message="the lifecycle to be interpolated again and restarted")
    deploy_update({"RESET": ["/color", "/extra"]})
    assert deployer.core.call(lambda: deployer.core.kernel.config.value("com.ex.Conf")) == {"color": "red", "size": 1}


def test_an_update_for_a_component_that_is_not_a_root_is_ignored_and_logged(deployer):
    deployer.recipe("com.ex.Lib", {"Run": "true"}, config={"color": "red"})
    deployer.recipe("com.ex.App", {"Run": "true"}, dependencies={"com.ex.Lib": {"VersionRequirement": "1.0.0"}})
    deployment_id = deployer.cli.create_local_deployment(
        root_component_versions_to_add={"com.ex.App": "1.0.0"}, recipe_directory_path=str(deployer.recipes),
        component_to_configuration={"com.ex.Lib": {"MERGE": {"color": "blue"}}}).deployment_id
    assert wait_for(lambda: deployer.finished(deployment_id), 30).status == "SUCCEEDED"
    assert deployer.core.call(lambda: deployer.core.kernel.config.value("com.ex.Lib")) == {"color": "red"}
    log = (deployer.core.kernel.root / "logs" / "greengrass.log").read_text()
    assert "Ignoring the configuration update for com.ex.Lib: it is not a root component of this deployment" in log


def test_system_variables_in_configuration_need_interpolate_component_configuration(deployer):
    config = {"topic": "dt/{iot:thingName}/x", "work": "{work:path}", "self": "{configuration:/topic}"}
    deployer.recipe("com.ex.Vars", {"Run": "true"}, config=config)
    deployer.deploy(com_ex_Vars="1.0.0")
    value = lambda: deployer.core.call(lambda: deployer.core.kernel.config.value("com.ex.Vars"))  # noqa: E731
    assert value()["topic"] == "dt/{iot:thingName}/x"  # off by default, as on the nucleus
    cli = deployer.cli
    deployment_id = cli.create_local_deployment(
        root_component_versions_to_add={"aws.greengrass.Nucleus": "2.18.2"},
        component_to_configuration={"aws.greengrass.Nucleus": {"MERGE": {"interpolateComponentConfiguration": True}},
                                    "com.ex.Vars": {"RESET": [""]}}).deployment_id
    wait_for(lambda: deployer.finished(deployment_id), 30)
    assert value()["topic"] == "dt/test-thing/x"
    assert value()["work"] == str(deployer.work("com.ex.Vars"))
    assert value()["self"] == "{configuration:/topic}"


def test_a_deployment_that_fixes_a_broken_component_succeeds(deployer):
    deployer.recipe("com.ex.Fix", {"Run": "exit 3"})
    assert deployer.deploy(com_ex_Fix="1.0.0").status == "FAILED"
    assert deployer.state("com.ex.Fix") == "BROKEN"
    deployer.recipe("com.ex.Fix", {"Run": "exec sleep 60"}, version="1.0.1")
    assert deployer.deploy(com_ex_Fix="1.0.1").status == "SUCCEEDED"
    assert deployer.state("com.ex.Fix") == "RUNNING"


def test_a_stop_during_error_recovery_is_not_undone(deployer):
    deployer.recipe("com.ex.Flaky", {"Run": "exit 1", "Recover": "touch recovering; sleep 1"})
    deployer.deploy(wait=False, com_ex_Flaky="1.0.0")
    wait_for(lambda: (deployer.work("com.ex.Flaky") / "recovering").exists(), 20, message="the Recover step")
    assert deployer.cli.stop_component(component_name="com.ex.Flaky").stop_status == RequestStatus.SUCCEEDED
    wait_for(lambda: deployer.state("com.ex.Flaky") == "FINISHED", 20, message="the stop to win over the restart")


def test_deploying_to_another_group_keeps_the_local_deployments_components(deployer):
    deployer.recipe("com.ex.Mine", {"Run": "exec sleep 60"})
    deployer.recipe("com.ex.Theirs", {"Run": "exec sleep 60"})
    deployer.deploy(com_ex_Mine="1.0.0")
    deployment_id = deployer.cli.create_local_deployment(
        group_name="other", root_component_versions_to_add={"com.ex.Theirs": "1.0.0"}).deployment_id
    assert wait_for(lambda: deployer.finished(deployment_id), 30).status == "SUCCEEDED"
    assert deployer.state("com.ex.Mine") == "RUNNING" and deployer.state("com.ex.Theirs") == "RUNNING"


def test_zip_artifacts_need_a_name_and_entries_land_where_zipfile_puts_them(deployer, tmp_path):
    import zipfile
    folder = deployer.artifacts / "com.ex.Zip" / "1.0.0"
    folder.mkdir(parents=True)
    with zipfile.ZipFile(folder / "app.zip", "w") as archive:
        info = zipfile.ZipInfo("a/../b.sh")
        info.external_attr = 0o755 << 16
        archive.writestr(info, "echo hi")
    (folder / ".zip").write_bytes((folder / "app.zip").read_bytes())
    recipe = {"RecipeFormatVersion": "2020-01-25", "ComponentName": "com.ex.Zip", "ComponentVersion": "1.0.0",
              "Manifests": [{"Platform": {"os": "linux"}, "Lifecycle": {"Run": "true"},
                             "Artifacts": [{"URI": "s3://b/com.ex.Zip/1.0.0/app.zip", "Unarchive": "ZIP"}]}]}
    (deployer.recipes / "zip.yaml").write_text(yaml.safe_dump(recipe))
    assert deployer.deploy(com_ex_Zip="1.0.0").status == "SUCCEEDED"
    extracted = deployer.core.kernel.root / "packages/artifacts-unarchived/com.ex.Zip/1.0.0/app/a/b.sh"
    assert extracted.exists() and os.access(extracted, os.X_OK)
    recipe["ComponentVersion"] = "1.0.1"
    recipe["Manifests"][0]["Artifacts"][0]["URI"] = "s3://b/com.ex.Zip/1.0.1/.zip"
    (deployer.artifacts / "com.ex.Zip" / "1.0.1").mkdir()
    (deployer.artifacts / "com.ex.Zip" / "1.0.1" / ".zip").write_bytes((folder / "app.zip").read_bytes())
    (deployer.recipes / "zip.yaml").write_text(yaml.safe_dump(recipe))
    status = deployer.deploy(com_ex_Zip="1.0.1")
    assert status.status == "FAILED" and "a ZIP artifact needs a name" in \
        status.deployment_status_details.deployment_failure_cause


def test_a_dependency_cycle_fails_the_deployment_and_the_next_one_runs(deployer):
    deployer.recipe("com.ex.A", {"Run": "exec sleep 60"}, dependencies={"com.ex.B": {"VersionRequirement": "1.0.0"}})
    deployer.recipe("com.ex.B", {"Run": "exec sleep 60"}, dependencies={"com.ex.A": {"VersionRequirement": "1.0.0"}})
    deployer.recipe("com.ex.C", {"Run": "exec sleep 60"})
    failed = deployer.deploy(com_ex_A="1.0.0")
    assert failed.status == "FAILED"
    assert failed.deployment_status_details.deployment_failure_cause == \
        "Circular dependency detected for component com.ex.A-v1.0.0"
    assert deployer.state("com.ex.A") is None
    assert deployer.deploy(com_ex_C="1.0.0").status == "SUCCEEDED"


def test_a_failed_deploy_of_a_zip_named_dot_dot_leaves_the_running_version_alone(deployer):
    import zipfile
    for version, name in (("1.0.0", "app.zip"), ("1.0.1", "...zip")):
        folder = deployer.artifacts / "com.ex.Zip" / version
        folder.mkdir(parents=True)
        with zipfile.ZipFile(folder / name, "w") as archive:
            archive.writestr("run.sh", "exec sleep 60")
        recipe = {"RecipeFormatVersion": "2020-01-25", "ComponentName": "com.ex.Zip", "ComponentVersion": version,
                  "Manifests": [{"Platform": {"os": "linux"}, "Lifecycle": {"Run": "sh {artifacts:decompressedPath}/app/run.sh"},
                                 "Artifacts": [{"URI": f"s3://b/com.ex.Zip/{version}/{name}", "Unarchive": "ZIP"}]}]}
        (deployer.recipes / f"zip-{version}.yaml").write_text(yaml.safe_dump(recipe))
        if version == "1.0.0":
            assert deployer.deploy(com_ex_Zip=version).status == "SUCCEEDED"
    status = deployer.deploy(com_ex_Zip="1.0.1")
    assert status.status == "FAILED"
    assert "would unpack to a folder called '..'" in status.deployment_status_details.deployment_failure_cause
    unpacked = deployer.core.kernel.root / "packages/artifacts-unarchived/com.ex.Zip/1.0.0/app/run.sh"
    assert unpacked.exists() and deployer.state("com.ex.Zip") == "RUNNING"
