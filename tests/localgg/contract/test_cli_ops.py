"""The operations greengrass-cli uses (served by aws.greengrass.Cli), with the real client."""

import pytest
from awsiot.greengrasscoreipc.model import (InvalidArgumentsError, InvalidArtifactsDirectoryPathError,
                                            ResourceNotFoundError, UnauthorizedError)

from conftest import policy


def test_list_components_includes_builtins_and_external_ones(core):
    core.client("com.ex.A", {"k": "v"})
    cli = core.cli_client()
    components = {c.component_name: c for c in cli.list_components().components}
    assert components["aws.greengrass.Nucleus"].version == "2.18.2"
    assert components["com.ex.A"].state == "RUNNING"
    assert components["com.ex.A"].configuration == {"k": "v"}


def test_component_details_and_unknown_component(core):
    core.client("com.ex.A", {"k": "v"})
    cli = core.cli_client()
    details = cli.get_component_details(component_name="com.ex.A").component_details
    assert (details.component_name, details.state) == ("com.ex.A", "RUNNING")
    with pytest.raises(ResourceNotFoundError) as err:
        cli.get_component_details(component_name="com.ex.Ghost")
    assert err.value.message == "Component with name com.ex.Ghost not found in Greengrass"
    with pytest.raises(InvalidArgumentsError):
        cli.get_component_details(component_name="")


def test_unknown_deployment(core):
    cli = core.cli_client()
    with pytest.raises(ResourceNotFoundError) as err:
        cli.get_local_deployment_status(deployment_id="00000000-0000-0000-0000-000000000000")
    assert err.value.message == "Cannot find deployment"


def test_components_need_a_cli_policy(core):
    denied = core.client("com.ex.Denied", {})
    with pytest.raises(UnauthorizedError) as err:
        denied.list_components()
    assert err.value.message == ("Principal com.ex.Denied is not authorized to perform "
                                 "aws.greengrass.Cli:aws.greengrass#ListComponents on resource *")
    allowed = core.client("com.ex.Admin", policy("aws.greengrass.Cli", ["aws.greengrass#ListComponents"], ["*"]))
    assert allowed.list_components().components


def test_a_deployment_with_a_bad_recipe_directory_fails_without_change(core):
    from conftest import wait_for
    cli = core.cli_client()
    deployment_id = cli.create_local_deployment(recipe_directory_path="/nonexistent/recipes",
                                                root_component_versions_to_add={"x": "1.0.0"}).deployment_id
    status = wait_for(lambda: (lambda d: d if d.status in ("SUCCEEDED", "FAILED") else None)(
        cli.get_local_deployment_status(deployment_id=deployment_id).deployment))
    assert status.status == "FAILED"
    assert status.deployment_status_details.detailed_deployment_status == "FAILED_NO_STATE_CHANGE"
    assert "does not exist" in status.deployment_status_details.deployment_failure_cause


def test_an_artifact_directory_above_the_cores_own_is_refused_at_once(core):
    cli = core.cli_client()
    with pytest.raises(InvalidArtifactsDirectoryPathError) as err:
        cli.create_local_deployment(artifacts_directory_path=str(core.kernel.root.parent),
                                    root_component_versions_to_add={"x": "1.0.0"})
    assert err.value.message.startswith("Requested artifacts directory path is parent of kernel artifacts")
    with pytest.raises(InvalidArgumentsError) as err:
        cli.create_local_deployment(group_name="a:b")
    assert err.value.message == "Thing group name cannot contain colon characters"


def test_failure_causes_that_echo_a_huge_input_are_clipped_and_listing_still_works(core):
    from conftest import wait_for
    cli = core.cli_client()
    path = "/nonexistent/" + "x" * (12 * 1024 * 1024)
    ids = [cli.create_local_deployment(recipe_directory_path=path).deployment_id for _ in range(2)]
    for deployment_id in ids:
        status = wait_for(lambda: cli.get_local_deployment_status(deployment_id=deployment_id).deployment.status
                          == "FAILED" and cli.get_local_deployment_status(deployment_id=deployment_id).deployment, 30)
        cause = status.deployment_status_details.deployment_failure_cause
        assert len(cause) < 5000 and cause.endswith("more characters)")
    assert {d.deployment_id for d in cli.list_local_deployments().local_deployments} >= set(ids)
