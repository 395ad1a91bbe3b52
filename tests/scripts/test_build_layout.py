"""scripts/build.py on a small repository made here (offline): GDK's output layout, what the
zips hold and leave out (a code component's, the runtime's per architecture), the recipe
copied as it is, and the refusals."""

from __future__ import annotations

import json
import shutil
import zipfile

import pytest

from build_testkit import bundled_pip, load_script, make_repo, make_wheel

build = load_script("build")
NAME, RUNTIME, VERSION, BUNDLE = "io.test.Widget", "io.test.Runtime", "1.2.3", "io.test.Bundle"
RUNTIME_ZIP = f"{RUNTIME}-x86_64.zip"


def make_house(tmp_path, index=None):
    cache = tmp_path / "cache"
    (cache / "pip").mkdir(parents=True, exist_ok=True)
    shutil.copy(bundled_pip(), cache / "pip")
    index = index or tmp_path / "no-index"
    return build.Wheelhouse(cache, ["--no-index", "--find-links", str(index)],
                            pip_version=bundled_pip().name.split("-")[1],
                            targets=[build.Target("3.11", "x86_64")], log=lambda line: None)


def make_full_repo(root):
    folder = make_repo(root, requirements="tinylib==1.0\n")
    # what must stay out of the artifact
    (folder / "widget" / "__pycache__").mkdir()
    (folder / "widget" / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"")
    (folder / "widget" / "stale.pyc").write_bytes(b"")
    (folder / "widget" / "test_widget.py").write_text("")
    (folder / "tests").mkdir()
    (folder / "tests" / "test_more.py").write_text("")
    (folder / ".env").write_text("SECRET=1\n")
    (folder / "widget" / ".cache").mkdir()
    (folder / "widget" / ".cache" / "x").write_text("")
    (folder / "greengrass-build" / "recipes").mkdir(parents=True)
    (folder / "greengrass-build" / "recipes" / "old.yaml").write_text("")
    (root / "components" / "_common" / "backfill_common" / "__pycache__").mkdir()
    (root / "components" / "_common" / "backfill_common" / "__pycache__" / "a.pyc").write_bytes(b"")
    # what goes in
    (folder / "widget" / "data").mkdir()
    (folder / "widget" / "data" / "curve.csv").write_text("t,v\n")
    (folder / "widget" / "run.sh").write_text("#!/bin/sh\n")
    (folder / "widget" / "run.sh").chmod(0o755)
    return root


@pytest.fixture
def repo(tmp_path):
    return make_full_repo(tmp_path / "repo")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("built")
    repo = make_full_repo(tmp_path / "repo")
    index = tmp_path / "index"
    make_wheel(index, "tinylib", "1.0", requires=["tinydrop"])
    make_wheel(index, "tinydrop", "1.0")
    shutil.copy(bundled_pip(), index)
    (repo / "components" / RUNTIME / "without.txt").write_text("tinydrop   # not needed on the device\n")
    out = tmp_path / "out"
    lines = build.build(repo, out, [], make_house(tmp_path, index), log=lambda line: None)
    return repo, out, lines


def test_the_layout_is_gdks(built):
    repo, out, lines = built
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == [
        f"artifacts/{RUNTIME}/{VERSION}/{RUNTIME_ZIP}", f"artifacts/{NAME}/{VERSION}/{NAME}.zip",
        f"recipes/{BUNDLE}.yaml", f"recipes/{RUNTIME}.yaml", f"recipes/{NAME}.yaml"]
    assert (out / "artifacts" / BUNDLE / VERSION).is_dir()        # empty, as GDK leaves it for the bundle
    for name in (NAME, RUNTIME, BUNDLE):                            # the recipe as it is (GDK publish rewrites it)
        assert (out / "recipes" / f"{name}.yaml").read_bytes() == (repo / "recipes" / f"{name}.yaml").read_bytes()
    assert [line.split(":")[0] for line in lines] == [f"{RUNTIME} {VERSION}", f"{NAME} {VERSION}", f"{BUNDLE} {VERSION}"]
    assert " MB (" in lines[0] and "1 wheels" in lines[0] and "recipe only" in lines[2]


def test_a_code_components_zip_holds_its_package_and_the_common_code_only(built):
    repo, out, _ = built
    with zipfile.ZipFile(out / "artifacts" / NAME / VERSION / f"{NAME}.zip") as archive:
        names = sorted(archive.namelist())
        assert archive.getinfo("widget/run.sh").external_attr >> 16 & 0o111
        assert {info.date_time for info in archive.infolist()} == {(1980, 1, 1, 0, 0, 0)}
    assert names == sorted(["backfill_common/__init__.py", "backfill_common/schemas/a.json",
                            "widget/__init__.py", "widget/__main__.py", "widget/data/curve.csv", "widget/run.sh"])


def test_the_runtimes_zip_holds_its_installer_the_wheels_and_their_manifest(built):
    repo, out, _ = built
    with zipfile.ZipFile(out / "artifacts" / RUNTIME / VERSION / RUNTIME_ZIP) as archive:
        names = sorted(archive.namelist())
        manifest = json.loads(archive.read("wheels/manifest.json"))
        assert archive.read("install.py") == b"# installer\n"
    # pip's wheel is not shipped (the device unpacks wheels itself); without.txt's tinydrop neither
    assert names == ["install.py", "requirements.txt", "wheels/manifest.json", "wheels/tinylib-1.0-py3-none-any.whl",
                     "without.txt"]
    assert manifest == {"arch": "x86_64", "requirements": ["tinylib==1.0"],
                        "targets": {"cp311-x86_64": ["tinylib-1.0-py3-none-any.whl"]}}


def test_a_rebuild_from_the_warm_cache_is_identical(built):
    repo, out, _ = built
    first = (out / "artifacts" / RUNTIME / VERSION / RUNTIME_ZIP).read_bytes()
    house = make_house(out.parent)                       # the same cache, no index at all
    build.build(repo, out, [RUNTIME], house, log=lambda line: None)
    assert house.pip_runs == 0
    assert (out / "artifacts" / RUNTIME / VERSION / RUNTIME_ZIP).read_bytes() == first


def test_building_some_keeps_the_others(built):
    repo, out, _ = built
    (out / "recipes" / f"{BUNDLE}.yaml").unlink()
    build.build(repo, out, ["Bundle"], make_house(out.parent), log=lambda line: None)
    assert (out / "artifacts" / NAME / VERSION / f"{NAME}.zip").exists()
    assert (out / "artifacts" / RUNTIME / VERSION / RUNTIME_ZIP).exists()
    assert (out / "recipes" / f"{NAME}.yaml").exists() and (out / "recipes" / f"{BUNDLE}.yaml").exists()


def test_exclusion_rules():
    keep = ["pkg/mod.py", "requirements.txt", "pkg/data/x.csv", "pkg/testdata.bin", "pkg/contest.py"]
    drop = ["gdk-config.json", "recipe.yaml", "recipe.json", "tests/a.py", "pkg/tests/a.py", "pkg/test/a.py",
            ".git/x", "pkg/.hidden", "pkg/__pycache__/m.pyc", "pkg/m.pyc", "greengrass-build/x",
            "zip-build/x", "pkg/test_mod.py", "conftest.py"]
    from pathlib import PurePosixPath
    assert [p for p in keep if build.excluded(PurePosixPath(p))] == []
    assert [p for p in drop if not build.excluded(PurePosixPath(p))] == []


@pytest.mark.parametrize("key,bad", [("ComponentVersion", '"9.9.9"'), ("ComponentName", "io.test.Other"),
                                     ("ComponentPublisher", "Someone")])
def test_a_recipe_that_disagrees_with_gdk_config_is_refused(repo, tmp_path, key, bad):
    recipe = repo / "recipes" / f"{NAME}.yaml"
    text = recipe.read_text()
    recipe.write_text("\n".join(f"{key}: {bad}" if line.startswith(key + ":") else line
                                for line in text.splitlines()))
    with pytest.raises(build.BuildError, match=key):
        build.build(repo, tmp_path / "out", [NAME], make_house(tmp_path), log=lambda line: None)


def test_a_recipe_whose_artifact_is_not_built_is_refused(repo, tmp_path):
    recipe = repo / "recipes" / f"{NAME}.yaml"
    recipe.write_text(recipe.read_text().replace(f"{NAME}.zip", "other.zip"))
    with pytest.raises(build.BuildError, match="other.zip"):
        build.build(repo, tmp_path / "out", [NAME], make_house(tmp_path), log=lambda line: None)


def test_a_runtime_recipe_without_an_architectures_artifact_is_refused(repo, tmp_path):
    recipe = repo / "recipes" / f"{RUNTIME}.yaml"
    recipe.write_text(recipe.read_text().replace(RUNTIME_ZIP, f"{RUNTIME}-aarch64.zip"))
    with pytest.raises(build.BuildError, match="aarch64.zip"):
        build.build(repo, tmp_path / "out", [RUNTIME], make_house(tmp_path), log=lambda line: None)


def test_common_code_copied_into_a_component_is_refused(repo, tmp_path):
    shutil.copytree(repo / "components" / "_common" / "backfill_common",
                    repo / "components" / NAME / "backfill_common")
    with pytest.raises(build.BuildError, match="backfill_common"):
        build.build(repo, tmp_path / "out", [NAME], make_house(tmp_path), log=lambda line: None)


def test_a_wheels_folder_in_the_runtime_is_refused(repo, tmp_path):
    (repo / "components" / RUNTIME / "wheels").mkdir()
    (repo / "components" / RUNTIME / "wheels" / "x.whl").write_text("")
    with pytest.raises(build.BuildError, match="wheels"):
        build.build(repo, tmp_path / "out", [RUNTIME], make_house(tmp_path), log=lambda line: None)


def test_components_are_chosen_by_name_short_name_or_folder(repo):
    projects = build.find_projects(repo)
    assert [p.name for p in projects] == [RUNTIME, NAME, BUNDLE]           # the bundle last
    assert [p.kind for p in projects] == ["runtime", "code", "bundle"]
    for word in (NAME, "Widget", str(repo / "components" / NAME)):
        assert [p.name for p in build.select(projects, [word])] == [NAME]
    assert [p.name for p in build.select(projects, [str(repo)])] == [BUNDLE]
    with pytest.raises(build.BuildError, match="no component 'Nope'"):
        build.select(projects, ["Nope"])
