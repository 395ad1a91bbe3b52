"""The recipes against the contracts: every default in a recipe is the schema's default (one
definition, no drift), accessControl names exact operations and exact topics, and the bundle
installs the three components."""

from pathlib import Path

import pytest
import yaml

from backfill_common import contracts

RECIPES = Path(__file__).resolve().parents[3] / "recipes"
COMPONENTS = {"io.backfill.Bme680Sensor": "config-sensor", "io.backfill.TemperatureCorrection": "config-correction",
              "io.backfill.StoreAndForward": "config-store"}


def recipe(name: str) -> dict:
    return yaml.safe_load((RECIPES / f"{name}.yaml").read_text())


@pytest.mark.parametrize("name, schema", sorted(COMPONENTS.items()))
def test_recipe_defaults_are_the_schema_defaults(name, schema):
    defaults = dict(recipe(name)["ComponentConfiguration"]["DefaultConfiguration"])
    defaults.pop("accessControl")
    properties = contracts.schema_of(schema)["properties"]
    assert defaults == {key: prop["default"] for key, prop in properties.items()}
    assert contracts.check(schema, defaults) == []


@pytest.mark.parametrize("name", sorted(COMPONENTS))
def test_access_control_is_least_privilege(name):
    policies = recipe(name)["ComponentConfiguration"]["DefaultConfiguration"]["accessControl"]
    for service, by_id in policies.items():
        for policy_id, policy in by_id.items():
            assert policy_id.startswith(name + ":")
            for operation in policy["operations"]:
                assert operation.startswith("aws.greengrass#") and "*" not in operation
            for resource in policy["resources"]:
                assert "*" not in resource and "#" not in resource, resource
                if service == "aws.greengrass.ipc.mqttproxy":
                    # IoT Core topics: `+` stands for the thing only (so that a deployment
                    # without interpolation forwards); IoT Core's policy pins the thing
                    assert resource in ("dt/backfill/+/readings", "dt/backfill/+/dead-letters",
                                        "backfill/ack/+"), resource
                else:
                    assert "+" not in resource, resource
                    assert resource.startswith(("backfill/", "$aws/things/{iot:thingName}/shadow/name/backfill"))


def test_the_bundle_installs_the_three_components():
    bundle = recipe("io.backfill.SensorPipeline")
    assert set(bundle["ComponentDependencies"]) == set(COMPONENTS)
    assert all(dep["DependencyType"] == "HARD" for dep in bundle["ComponentDependencies"].values())
    assert "Artifacts" not in bundle["Manifests"][0]


@pytest.mark.parametrize("schema", sorted(COMPONENTS.values()))
def test_the_readme_documents_every_setting(schema):
    readme = (RECIPES.parent / "README.md").read_text()
    missing = [key for key in contracts.schema_of(schema)["properties"] if f"`{key}`" not in readme]
    assert missing == []
