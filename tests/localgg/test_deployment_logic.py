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


def test_a_version_we_do_not_have_names_the_versions_we_do(tmp_path):
    store = RecipeStore(tmp_path)
    for v in ("1.10.0", "1.2.0"):
        add(store, "Lib", v)
    with pytest.raises(ResolutionError, match=r"LOCAL_DEPLOYMENT requires 2\.0\.0\. "
                                              r"\(localgg: the versions of Lib here are 1\.2\.0, 1\.10\.0\.\)$"):
        resolve({"Lib": "2.0.0"}, store, {}, {})
    with pytest.raises(ResolutionError, match=r"\(localgg: aws\.greengrass\.ShadowManager is built in, version "
                                              r"2\.3\.12 only\.\)$"):
        resolve({"aws.greengrass.ShadowManager": "2.4.0"}, store, {}, {"aws.greengrass.ShadowManager": "2.3.12"})
    with pytest.raises(ResolutionError, match=r"\(localgg: there is no recipe of Ghost"):
        resolve({"Ghost": "1.0.0"}, store, {}, {})


def test_configuration_reset_then_defaults_then_merge():
    current = {"a": 1, "keep": {"x": 1, "y": 2}, "gone": True}
    defaults = {"a": 0, "keep": {"z": 3}, "gone": False, "fresh": "d"}
    update = {"RESET": ["/gone", "/keep/y"], "MERGE": {"keep": {"x": 9}, "list": [1]}}
    assert resolve_configuration(current, defaults, update) == {
        "a": 1, "keep": {"x": 9, "z": 3}, "gone": False, "fresh": "d", "list": [1]}
    assert resolve_configuration(current, defaults, {"RESET": [""]}) == defaults


@pytest.mark.parametrize("deps, message", [
    ({"A": {"B": "1.0.0"}, "B": {"A": "1.0.0"}}, "Circular dependency detected for component A-v1.0.0"),
    ({"A": {"A": "1.0.0"}, "B": {}}, "Circular dependency detected for component A-v1.0.0"),
    ({"A": {"B": "*"}, "B": {"C": "*"}, "C": {"B": "*"}}, "Circular dependency detected for component A-v1.0.0"),
])
def test_dependency_cycles_are_refused(tmp_path, deps, message):
    store = RecipeStore(tmp_path)
    for name, needs in deps.items():
        add(store, name, "1.0.0", {d: {"VersionRequirement": r} for d, r in needs.items()})
    with pytest.raises(ResolutionError, match=message):
        resolve({"A": "1.0.0"}, store, {}, {})


def test_a_diamond_is_not_a_cycle(tmp_path):
    store = RecipeStore(tmp_path)
    add(store, "A", "1.0.0", {"B": {"VersionRequirement": "*"}, "C": {"VersionRequirement": "*"}})
    add(store, "B", "1.0.0", {"D": {"VersionRequirement": "*"}})
    add(store, "C", "1.0.0", {"D": {"VersionRequirement": "*"}})
    add(store, "D", "1.0.0")
    assert resolve({"A": "1.0.0"}, store, {}, {}) == {"A": "1.0.0", "B": "1.0.0", "C": "1.0.0", "D": "1.0.0"}
