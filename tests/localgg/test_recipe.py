from pathlib import Path

import pytest

from localgg.recipe import RecipeError, find_recipes, parse_recipe, platform_matches, step

BASE = {"RecipeFormatVersion": "2020-01-25", "ComponentName": "com.ex.A", "ComponentVersion": "1.0.0"}
LINUX = {"os": "linux", "architecture": "amd64"}


def recipe(**extra):
    return parse_recipe({**BASE, **extra}, "test.yaml")


def test_first_matching_manifest_wins_and_keys_are_case_insensitive():
    r = recipe(Manifests=[{"Platform": {"os": "windows"}, "Lifecycle": {"run": "win"}},
                          {"platform": {"os": "linux", "architecture": "/amd64|aarch64/"}, "lifecycle": {"RUN": "a"}},
                          {"Platform": {"os": "*"}, "Lifecycle": {"Run": "b"}}])
    chosen = r.select(LINUX)
    assert step(chosen.lifecycle, "run").script == "a"


def test_no_matching_manifest():
    with pytest.raises(RecipeError, match="no manifest matches"):
        recipe(Manifests=[{"Platform": {"os": "darwin"}}]).select(LINUX)


def test_top_level_lifecycle_with_selections():
    r = recipe(Manifests=[{"Platform": {"os": "linux"}, "Selections": ["linux"]}],
               Lifecycle={"Run": {"linux": "python3 x.py", "windows": "py x.py"}, "Install": {"all": "true"}})
    chosen = r.select(LINUX)
    assert step(chosen.lifecycle, "run").script == "python3 x.py"
    assert step(chosen.lifecycle, "install").script == "true"


def test_step_object_form():
    s = step({"Run": {"Script": "go", "Timeout": 5, "Skipif": "onpath go", "Setenv": {"A": "1"},
                      "RequiresPrivilege": True}}, "run")
    assert (s.script, s.timeout, s.skipif, s.setenv, s.requires_privilege) == ("go", 5.0, "onpath go", {"A": "1"}, True)
    with pytest.raises(RecipeError, match="no Script"):
        step({"Run": {"Timeout": 5}}, "run")


@pytest.mark.parametrize("change, message", [
    ({"RecipeFormatVersion": "2021-01-01"}, "RecipeFormatVersion"),
    ({"ComponentName": "bad name!"}, "ComponentName"),
    ({"ComponentVersion": "1.0"}, "semantic version"),
    ({"Manifests": []}, "missing manifests"),
    ({"Manifests": [{}], "ComponentDependencies": {"B": {"VersionRequirement": ">=banana"}}}, "VersionRequirement"),
    ({"Manifests": [{}], "ComponentDependencies": {"B": {"VersionRequirement": "1.0.0", "DependencyType": "WEAK"}}},
     "DependencyType"),
])
def test_invalid_recipes_say_why(change, message):
    with pytest.raises(RecipeError, match=message):
        parse_recipe({**BASE, "Manifests": [{}], **change}, "r.yaml")


def test_platform_rules():
    assert platform_matches({"os": "all", "architecture": "any"}, LINUX)
    assert not platform_matches({"os": "Linux"}, LINUX)  # values are case-sensitive
    assert not platform_matches({"runtime": "aws_nucleus_lite"}, LINUX)
    assert platform_matches({"runtime": "*"}, LINUX)


def test_find_recipes_walks_recursively_and_one_bad_file_fails(tmp_path: Path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.yaml").write_text(
        "RecipeFormatVersion: '2020-01-25'\nComponentName: A\nComponentVersion: 1.0.0\nManifests: [{}]\n")
    (tmp_path / "notes.txt").write_text("not a recipe")
    (tmp_path / "b.json").write_text(
        '{"RecipeFormatVersion": "2020-01-25", "ComponentName": "B", "ComponentVersion": "2.0.0", "Manifests": [{}]}')
    assert sorted(r.name for r in find_recipes(tmp_path)) == ["A", "B"]
    (tmp_path / "broken.yml").write_text("{{{")
    with pytest.raises(RecipeError, match="Unable to parse"):
        find_recipes(tmp_path)
