"""scripts/build.py's wheelhouse against an offline package index made in a folder: targets
across CPython 3.10-3.13 and linux x86_64/aarch64 (the real eight are checked on the real
artifacts in test_build_artifacts.py), each target's markers, glibc and musl wheels told
apart, the cache (warm = no pip at all), and sdist-only dependencies."""

from __future__ import annotations

import json
import shutil

import pytest

from build_testkit import bundled_pip, load_script, make_sdist, make_wheel, runs_on

build = load_script("build")
TARGETS = [("3.10", "x86_64"), ("3.13", "aarch64")]


@pytest.fixture(scope="module")
def index(tmp_path_factory):
    folder = tmp_path_factory.mktemp("index")
    shutil.copy(bundled_pip(), folder)
    for arch in ("x86_64", "aarch64"):
        make_wheel(folder, "tinybin", "1.0", f"cp310-cp310-manylinux_2_17_{arch}.manylinux2014_{arch}")
        make_wheel(folder, "tinybin", "1.0", f"cp311-abi3-manylinux_2_17_{arch}.manylinux2014_{arch}")
        make_wheel(folder, "tinybin", "1.1", f"cp311-abi3-manylinux_2_39_{arch}")    # glibc too new for Ubuntu 22.04
        make_wheel(folder, "tinybin", "1.0", f"cp311-abi3-musllinux_1_2_{arch}")     # not glibc
    make_wheel(folder, "tinybin", "1.0", "cp39-cp39-manylinux_2_17_x86_64")            # Python too old
    make_wheel(folder, "tinypure", "2.0", requires=['tinyold; python_version < "3.11"',
                                                   'tinyarm; platform_machine == "aarch64"'])
    make_wheel(folder, "tinyold", "1.0")
    make_wheel(folder, "tinyarm", "1.0")
    make_sdist(folder, "tinysrc")
    return folder


def house(cache, index, seed_pip=True, **kwargs):
    """A wheelhouse on the folder index; pip's wheel already in its cache unless seed_pip is false."""
    if seed_pip:
        (cache / "pip").mkdir(parents=True, exist_ok=True)
        shutil.copy(bundled_pip(), cache / "pip")
    pip_version = bundled_pip().name.split("-")[1]
    return build.Wheelhouse(cache, ["--no-index", "--find-links", str(index)], pip_version=pip_version,
                            log=lambda line: None, **kwargs)


@pytest.fixture(scope="module")
def matrix(tmp_path_factory, index):
    cache = tmp_path_factory.mktemp("cache")
    wheelhouse = house(cache, index, seed_pip=False, targets=[build.Target(*t) for t in TARGETS])
    folder, files = wheelhouse.wheels("tinybin\ntinypure  # a comment\n")
    return cache, folder, files, json.loads((folder / "manifest.json").read_text())


def test_every_target_gets_a_binary_wheel_that_runs_on_it(matrix):
    _, folder, files, manifest = matrix
    assert set(manifest["targets"]) == {f"cp{py.replace('.', '')}-{arch}" for py, arch in TARGETS}
    for py, arch in TARGETS:
        chosen = manifest["targets"][f"cp{py.replace('.', '')}-{arch}"]
        binary = [f for f in chosen if f.startswith("tinybin-")]
        assert len(binary) == 1 and runs_on(binary[0], py, arch), (py, arch, chosen)
    assert all((folder / f).is_file() for f in files)
    assert sorted(f for f in files if f.startswith("tinybin-")) == [
        "tinybin-1.0-cp310-cp310-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
        "tinybin-1.0-cp311-abi3-manylinux_2_17_aarch64.manylinux2014_aarch64.whl"]
    assert (cache_pip := sorted((folder.parent / "pip").glob("pip-*.whl"))) and cache_pip[0].name in files


def test_markers_are_evaluated_for_each_target(matrix):
    _, _, _, manifest = matrix
    for label, chosen in manifest["targets"].items():
        assert any(f.startswith("tinyold-") for f in chosen) == label.startswith("cp310-"), label
        assert any(f.startswith("tinyarm-") for f in chosen) == label.endswith("-aarch64"), label


def test_files_are_deduplicated_and_include_pip(matrix):
    _, _, files, manifest = matrix
    assert len(files) == len(set(files))
    assert [f for f in files if f.startswith("tinypure-")] == ["tinypure-2.0-py3-none-any.whl"]
    assert manifest["pip"] in files and manifest["pip"].startswith("pip-")
    assert "manifest.json" not in files


def test_a_warm_cache_runs_no_pip_and_needs_no_index(matrix, tmp_path):
    cache, folder, files, _ = matrix
    offline = house(cache, tmp_path / "no-such-index", targets=[build.Target(*t) for t in TARGETS])
    assert offline.wheels("tinybin\ntinypure\n") == (folder, files)   # comments and blank lines don't matter
    assert offline.pip_runs == 0


def test_the_cache_key_follows_the_requirements_and_targets():
    key = build.cache_key
    assert key("a==1\n# x\n\n", build.TARGETS, "1") == key("a==1", build.TARGETS, "1")
    assert key("a==1", build.TARGETS, "1") != key("a==2", build.TARGETS, "1")
    assert key("a==1", build.TARGETS, "1") != key("a==1", build.TARGETS[:1], "1")
    assert key("a==1", build.TARGETS, "1") != key("a==1", build.TARGETS, "2")


def test_an_sdist_only_pure_dependency_is_built_once_into_a_wheel(index, tmp_path):
    wheelhouse = house(tmp_path, index, targets=[build.Target("3.12", "aarch64")])
    folder, files = wheelhouse.wheels("tinysrc\ntinybin\n")
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["built_from_sdist"] == ["tinysrc-1.0-py3-none-any.whl"]
    for chosen in manifest["targets"].values():
        assert "tinysrc-1.0-py3-none-any.whl" in chosen
    assert not any(f.endswith(".tar.gz") for f in files)


def test_only_pure_wheels_built_from_sdists_are_accepted():
    assert build.not_pure(["a-1.0-py3-none-any.whl", "b-1.0-py2.py3-none-any.whl",
                           "c-1.0-cp311-cp311-linux_x86_64.whl", "d-1.0-py3-none-linux_aarch64.whl",
                           "e-1.0-cp311-abi3-any.whl"]) == ["c-1.0-cp311-cp311-linux_x86_64.whl",
                                                            "d-1.0-py3-none-linux_aarch64.whl",
                                                            "e-1.0-cp311-abi3-any.whl"]


def test_an_unknown_dependency_fails_with_pips_reason(index, tmp_path):
    wheelhouse = house(tmp_path, index, targets=[build.Target("3.11", "x86_64")])
    with pytest.raises(build.BuildError, match="(?i)no matching distribution|could not find"):
        wheelhouse.wheels("no-such-package==1.0\n")


def test_no_requirements_means_pips_wheel_only(index, tmp_path):
    wheelhouse = house(tmp_path, index)
    _, files = wheelhouse.wheels("# nothing\n")
    assert wheelhouse.pip_runs == 0
    assert files == [bundled_pip().name]


def test_installable_reads_the_tags_as_pip_does_on_each_target():
    t310, t313, arm = build.Target("3.10", "x86_64"), build.Target("3.13", "x86_64"), build.Target("3.11", "aarch64")
    yes = [("x-1-py3-none-any.whl", t310), ("x-1-py2.py3-none-any.whl", t313), ("x-1-cp310-cp310-manylinux2014_x86_64.whl", t310),
           ("x-1-cp311-abi3-manylinux_2_17_x86_64.manylinux2014_x86_64.whl", t313), ("x-1-py311-none-any.whl", arm),
           ("x-1-cp311-abi3-manylinux_2_35_aarch64.whl", arm)]
    no = [("x-1-cp310-cp310-manylinux2014_x86_64.whl", t313), ("x-1-cp311-abi3-manylinux_2_17_x86_64.whl", t310),
          ("x-1-cp311-abi3-manylinux_2_39_aarch64.whl", arm), ("x-1-cp311-abi3-musllinux_1_2_aarch64.whl", arm),
          ("x-1-cp311-abi3-manylinux2014_x86_64.whl", arm), ("x-1-py312-none-any.whl", arm),
          ("x-1-cp311-abi3-linux_aarch64.whl", arm)]
    assert [w for w, t in yes if not build.installable(w, t)] == []
    assert [w for w, t in no if build.installable(w, t)] == []


def test_the_fewest_wheels_cover_every_python_of_an_architecture():
    targets = [build.Target(py, "x86_64") for py in ("3.10", "3.11", "3.12", "3.13")]
    cp310, abi311, abi313 = ("crt-1-cp310-cp310-manylinux2014_x86_64.whl", "crt-1-cp311-abi3-manylinux2014_x86_64.whl",
                             "crt-1-cp313-abi3-manylinux2014_x86_64.whl")
    pure, rpds = "pure-1-py3-none-any.whl", "rpds-2-cp312-cp312-manylinux2014_x86_64.whl"
    chosen_by_pip = {"cp310-x86_64": [cp310, pure], "cp311-x86_64": [abi311, pure],
                     "cp312-x86_64": [abi311, pure, rpds], "cp313-x86_64": [abi313, pure]}
    assert build.fewest_wheels(chosen_by_pip, targets) == {
        "cp310-x86_64": [cp310, pure], "cp311-x86_64": [abi311, pure],
        "cp312-x86_64": [abi311, pure, rpds], "cp313-x86_64": [abi311, pure]}   # abi3 from 3.11 serves 3.13
