import pytest

from localgg.deployment import RecipeStore, ResolutionError, resolve, resolve_configuration
from localgg.recipe import parse_recipe


def add(store, name, version, deps=None):
    store.add(parse_recipe({"RecipeFormatVersion": "2020-01-25", "ComponentName": name, "ComponentVersion": version,
                            "Manifests": [{}], "ComponentDependencies": deps or {}}))


def test_resolution_follows_dependencies_and_prefers_running_versions(tmp_path):
    store = RecipeStore(tmp_path)
    add(store, "App", "1.0.0", {"Lib": {"VersionRequirement": "^1.0.0"}, "aws.greengrass.Nucleus":
                                 {"VersionRequirement": ">=2.0.0"}})
    for v in ("1.0.0", "1.4.0", "2.0.0"):
        add(store, "Lib", v)
    builtins = {"aws.greengrass.Nucleus": "2.18.2"}
    assert resolve({"App": "1.0.0"}, store, {}, builtins) == {"App": "1.0.0", "Lib": "1.4.0",
                                                              "aws.greengrass.Nucleus": "2.18.2"}
    assert resolve({"App": "1.0.0"}, store, {"Lib": "1.0.0"}, builtins)["Lib"] == "1.0.0"


def test_unsatisfiable_requirements_name_who_wants_what(tmp_path):
    store = RecipeStore(tmp_path)
    add(store, "App", "1.0.0", {"Lib": {"VersionRequirement": ">=3.0.0"}})
    add(store, "Lib", "1.0.0")
    with pytest.raises(ResolutionError, match="Component Lib version constraints: App requires >=3.0.0"):
        resolve({"App": "1.0.0"}, store, {}, {})


def test_configuration_reset_then_defaults_then_merge():
    current = {"a": 1, "keep": {"x": 1, "y": 2}, "gone": True}
    defaults = {"a": 0, "keep": {"z": 3}, "gone": False, "fresh": "d"}
    update = {"RESET": ["/gone", "/keep/y"], "MERGE": {"keep": {"x": 9}, "list": [1]}}
    assert resolve_configuration(current, defaults, update) == {
        "a": 1, "keep": {"x": 9, "z": 3}, "gone": False, "fresh": "d", "list": [1]}
    assert resolve_configuration(current, defaults, {"RESET": [""]}) == defaults
