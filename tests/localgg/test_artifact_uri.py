"""Artifact URI schemes as the nucleus checks them (artifacturi.py), and recipe errors that
name the user's file rather than the stored copy (deployment.RecipeStore)."""

import pytest
import yaml

from localgg.artifacturi import ArtifactUriError, check_prerequisites, docker_registry, scheme
from localgg.deployment import RecipeStore
from localgg.recipe import RecipeError, find_recipes

C = "com.ex.A"
RECIPE_ERROR = ["COMPONENT_RECIPE_ERROR"]


def failure(uris, closure=(C,)):
    with pytest.raises(ArtifactUriError) as caught:
        check_prerequisites([(C, list(uris))], set(closure))
    return str(caught.value), caught.value.stack, caught.value.types


@pytest.mark.parametrize("uri", ["s3://bucket/com.ex.A/1.0.0/app.py", "S3://b/k.zip", "greengrass:abc/app.py",
                                 "GreenGrass:app.py"])
def test_s3_and_greengrass_in_any_case_pass(uri):
    check_prerequisites([(C, [uri])], {C})


@pytest.mark.parametrize("uri, found", [("file:ipc_greengrass.py", "file"), ("https://x/y", "https"),
                                        ("ipc_greengrass.py", None), ("docker:ubuntu", "docker"), ("a+b.c-d:x", "a+b.c-d"),
                                        ("1x:y", None)])
def test_the_scheme_is_what_java_net_uri_calls_one(uri, found):
    assert scheme(uri) == found


@pytest.mark.parametrize("uri", ["file:ipc_greengrass.py", "file:///opt/app.py", "http://example.com/a.py",
                                 "https://example.com/a.zip", "C:/x.py"])
def test_other_schemes_fail_the_deployment_with_the_nucleus_texts(uri):
    message, stack, types = failure(["s3://b/ok.py", uri])
    assert message == (f"Failed to download due to bad artifact URI: {uri} for component {C}. Artifact URI {uri} "
                       f"is invalid. Only URI schemes supported are [GREENGRASS, S3, DOCKER]")
    assert stack == ["DEPLOYMENT_FAILURE", "COMPONENT_PACKAGE_LOADING_ERROR", "ARTIFACT_URI_NOT_VALID",
                     "UNSUPPORTED_ARTIFACT_SCHEME"]
    assert types == RECIPE_ERROR


def test_a_uri_without_a_scheme():
    message, stack, types = failure(["ipc_greengrass.py"])
    assert message == (f"Failed to download due to bad artifact URI: ipc_greengrass.py for component {C}. "
                       f"Artifact URI ipc_greengrass.py is invalid. It does not have a scheme")
    assert stack[-1] == "EMPTY_ARTIFACT_SCHEME" and types == RECIPE_ERROR


def test_every_resolved_component_is_checked_in_order():
    with pytest.raises(ArtifactUriError, match="for component com.ex.B. "):
        check_prerequisites([(C, ["s3://b/a.py"]), ("com.ex.B", ["file:b.py"]), ("com.ex.D", ["x"])], {C})


def test_docker_needs_the_docker_application_manager():
    message, stack, types = failure(["docker:ubuntu:22.04"])
    assert message == ("Deployments containing docker artifacts must include the "
                       "aws.greengrass.DockerApplicationManager component")
    assert (stack, types) == (["DEPLOYMENT_FAILURE", "MISSING_DOCKER_APPLICATION_MANAGER"], ["REQUEST_ERROR"])


WITH_DOCKER = (C, "aws.greengrass.DockerApplicationManager")


@pytest.mark.parametrize("uri, registry", [
    ("docker:ubuntu", None), ("docker:ubuntu:22.04", None), ("docker:library/ubuntu@sha256:" + "a" * 64, "library"),
    ("docker:public.ecr.aws/x/app:v1.2", "public.ecr.aws"), ("docker:foo.bar:8080/path/to/image:v1.10", "foo.bar:8080"),
])
def test_docker_uris_that_follow_dockers_grammar(uri, registry):
    assert docker_registry(uri) == registry
    check_prerequisites([(C, [uri])], set(WITH_DOCKER))


@pytest.mark.parametrize("uri", ["docker:Ubuntu", "docker:ubuntu:", "docker:ubuntu@sha256:abc", "docker:reg/",
                                 "docker:-bad-/img", "docker:ubuntu:bad tag"])
def test_docker_uris_that_do_not(uri):
    message, stack, types = failure([uri], WITH_DOCKER)
    assert message == (f"Failed to download due to bad artifact URI: {uri} for component {C}. Invalid Docker image "
                       f"artifact uri. URI should follow the format of `docker:registry/image_name[:tag]|[@digest]`, "
                       f"where registry, tag or digest are optional")
    assert stack[-1] == "DOCKER_ARTIFACT_URI_NOT_VALID" and types == RECIPE_ERROR


def test_a_private_ecr_image_needs_the_token_exchange_service():
    uri = "docker:123456789012.dkr.ecr.us-east-1.amazonaws.com/app:1.0"
    message, stack, types = failure([uri], WITH_DOCKER)
    assert message == ("Deployments containing private ECR Docker artifacts must include the "
                       "aws.greengrass.TokenExchangeService component")
    assert (stack, types) == (["DEPLOYMENT_FAILURE", "MISSING_TOKEN_EXCHANGE_SERVICE"], ["REQUEST_ERROR"])
    check_prerequisites([(C, [uri])], {*WITH_DOCKER, "aws.greengrass.TokenExchangeService"})


# -- recipe errors name the user's file ------------------------------------------------------------

def test_an_error_in_a_stored_recipe_names_the_file_it_came_from(tmp_path):
    user = tmp_path / "my-recipes"
    user.mkdir()
    recipe = {"RecipeFormatVersion": "2020-01-25", "ComponentName": C, "ComponentVersion": "1.0.0",
              "Manifests": [{"Platform": {"os": "linux"}, "Lifecycle": {"Run": {"Script": "true", "Timeout": "soon"}}}]}
    (user / "a.yaml").write_text(yaml.safe_dump(recipe))
    store = RecipeStore(tmp_path / "packages" / "recipes")
    for found in find_recipes(user):
        store.add(found)
    stored = store.get(C, "1.0.0")
    assert stored.source == str(user / "a.yaml")
    with pytest.raises(RecipeError) as caught:
        stored.select({"os": "linux", "architecture": "amd64"})
    assert str(caught.value).startswith(f"{user / 'a.yaml'}: ") and "Timeout" in str(caught.value)
    assert "packages" not in str(caught.value)
    assert store.versions(C) == ["1.0.0"]     # the note beside the copy is not a version
