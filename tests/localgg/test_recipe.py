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


# -- bad input: each refused with the file, the field and what was expected ----------------

MANIFEST = [{"Platform": {"os": "linux"}, "Lifecycle": {"Run": "true"}}]


@pytest.mark.parametrize("extra, message", [
    ({"ComponentDependencies": [{"com.ex.B": {"VersionRequirement": "1.0.0"}}]},
     "test.yaml: ComponentDependencies must be a mapping of component names to .*, not a list"),
    ({"ComponentDependencies": {"com.ex.B": "1.0.0"}},
     "test.yaml: ComponentDependencies.com.ex.B must be a mapping with VersionRequirement, not a string"),
    ({"Manifests": [{"Platform": ["linux"], "Lifecycle": {"Run": "true"}}]},
     r"test.yaml: Manifests\[\].Platform must be a mapping such as \{os: linux\}, not a list"),
    ({"Manifests": ["linux"]}, r"test.yaml: Manifests\[\] must be a mapping .*, not a string"),
    ({"Manifests": [{"Lifecycle": ["true"]}]}, r"test.yaml: Manifests\[\].Lifecycle must be a mapping of steps"),
    ({"Manifests": [{"Artifacts": {"URI": "s3://b/x"}}]}, r"Manifests\[\].Artifacts must be a list, not a mapping"),
    ({"ComponentConfiguration": ["a"]}, "ComponentConfiguration must be a mapping with DefaultConfiguration"),
    ({"Lifecycle": "true"}, "test.yaml: Lifecycle must be a mapping of steps, not a string"),
])
def test_wrong_types_name_the_file_the_field_and_what_was_expected(extra, message):
    with pytest.raises(RecipeError, match=message):
        recipe(**{"Manifests": MANIFEST, **extra})


@pytest.mark.parametrize("lifecycle, message", [
    ({"Run": {"Script": "x", "Setenv": ["A=1"]}}, "test.yaml: Lifecycle.Run.Setenv must be a mapping of variable "
                                                  "names to values, not a list"),
    ({"Setenv": ["A=1"], "Run": "x"}, "test.yaml: Lifecycle.Setenv must be a mapping"),
    ({"Run": ["x"]}, "test.yaml: Lifecycle.Run must be a script or a mapping with Script, not a list"),
    ({"Install": {"Script": "x", "Timeout": "soon"}}, "test.yaml: Lifecycle.Install.Timeout must be a number"),
    ({"Run": {"Script": "x", "RequiresPrivilege": "maybe"}}, "Lifecycle.Run.RequiresPrivilege must be true or false"),
])
def test_steps_are_checked_when_the_manifest_is_chosen(lifecycle, message):
    with pytest.raises(RecipeError, match=message):
        recipe(Manifests=[{"Platform": {"os": "linux"}, "Lifecycle": lifecycle}]).select(LINUX)


def test_requires_privilege_false_as_a_string_is_false():
    assert step({"Run": {"Script": "x", "RequiresPrivilege": "false"}}, "run").requires_privilege is False
    assert step({"Run": {"Script": "x", "RequiresPrivilege": "TRUE"}}, "run").requires_privilege is True


@pytest.mark.parametrize("name", ["..", ".", "com.ex.A\n", " com.ex.A", "a/b", "x" * 129])
def test_names_that_are_not_safe_paths_are_refused(name):
    with pytest.raises(RecipeError, match="ComponentName must match"):
        parse_recipe({**BASE, "ComponentName": name, "Manifests": MANIFEST}, "test.yaml")


@pytest.mark.parametrize("version", ["1.0.0\n", " 1.0.0", "1.0.0 ", "1.0", ""])
def test_versions_with_spaces_are_refused(version):
    with pytest.raises(RecipeError, match="ComponentVersion must be a semantic version"):
        parse_recipe({**BASE, "ComponentVersion": version, "Manifests": MANIFEST}, "test.yaml")


@pytest.mark.parametrize("uri", ["s3://b/com.ex.A/1.0.0/...zip", "s3://b/com.ex.A/1.0.0/..zip"])
def test_a_zip_whose_folder_would_be_a_dot_name_is_refused(uri):
    with pytest.raises(RecipeError, match="would unpack to a folder called"):
        recipe(Manifests=[{"Platform": {"os": "linux"}, "Artifacts": [{"URI": uri, "Unarchive": "ZIP"}]}])


def test_yaml_aliases_are_not_expanded_beyond_a_bound(tmp_path):
    lines = ['RecipeFormatVersion: "2020-01-25"', "ComponentName: com.ex.Bomb", "ComponentVersion: 1.0.0",
             "a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    lines += ["Manifests: [{Lifecycle: {Run: 'true'}}]"]
    (tmp_path / "bomb.yaml").write_text("\n".join(lines) + "\n")
    assert (tmp_path / "bomb.yaml").stat().st_size < 1000  # 10^9 strings once expanded
    with pytest.raises(RecipeError, match=r"bomb.yaml as a recipe due to: its aliases expand to more than"):
        find_recipes(tmp_path)
    (tmp_path / "bomb.yaml").write_text("&r [*r]\n")
    with pytest.raises(RecipeError, match="aliases expand"):
        find_recipes(tmp_path)


def test_a_few_aliases_are_fine(tmp_path):
    (tmp_path / "ok.yaml").write_text('RecipeFormatVersion: "2020-01-25"\nComponentName: com.ex.Ok\n'
                                      "ComponentVersion: 1.0.0\nx: &run {Run: 'true'}\n"
                                      "Manifests: [{Platform: {os: linux}, Lifecycle: *run}]\n")
    assert step(find_recipes(tmp_path)[0].select(LINUX).lifecycle, "run").script == "true"


def test_a_recipe_nested_too_deeply_is_refused(tmp_path):
    (tmp_path / "deep.json").write_text('{"RecipeFormatVersion": "2020-01-25", "ComponentName": "com.ex.D", '
                                        '"ComponentVersion": "1.0.0", "Manifests": [{}], "x": ' + "[" * 5000
                                        + "]" * 5000 + "}")
    with pytest.raises(RecipeError, match="deep"):
        find_recipes(tmp_path)
    (tmp_path / "deep.json").unlink()
    (tmp_path / "deep.yaml").write_text('RecipeFormatVersion: "2020-01-25"\nx: ' + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(RecipeError, match="deep"):
        find_recipes(tmp_path)
