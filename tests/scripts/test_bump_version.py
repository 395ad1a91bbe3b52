"""scripts/bump-version: one command moves every place that names the components' version
(recipes and their dependency ranges, every gdk-config.json, the fleet deployment, the
README's commands), on a copy of the checkout; and the checkout itself agrees."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
BUMP = REPO / "scripts" / "bump-version"


def bump(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(BUMP), *args], capture_output=True, text=True)


def checkout_copy(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    shutil.copytree(REPO / "recipes", root / "recipes")
    for config in [REPO / "gdk-config.json", *REPO.glob("components/*/gdk-config.json")]:
        target = root / config.relative_to(REPO)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(config, target)
    (root / "scripts" / "deployment").mkdir(parents=True)
    shutil.copy(REPO / "scripts" / "deployment" / "fleet.json", root / "scripts" / "deployment" / "fleet.json")
    shutil.copy(REPO / "README.md", root / "README.md")
    return root


def test_the_checkout_names_one_version_everywhere():
    result = bump("--check")
    assert result.returncode == 0, result.stderr
    assert "everywhere" in result.stdout


def test_a_bump_moves_every_place_and_the_ranges_follow(tmp_path):
    root = checkout_copy(tmp_path)
    old = bump("--root", str(root)).stdout.split()[0]
    result = bump("minor", "--root", str(root))
    assert result.returncode == 0, result.stderr
    major, minor, _ = (int(x) for x in old.split("."))
    new = f"{major}.{minor + 1}.0"
    assert f"{old} -> {new}" in result.stdout
    for path in (root / "recipes").glob("io.backfill.*.yaml"):
        recipe = yaml.safe_load(path.read_text())
        assert recipe["ComponentVersion"] == new, path.name
        for name, dep in (recipe.get("ComponentDependencies") or {}).items():
            if name.startswith("io.backfill."):
                assert dep["VersionRequirement"] == f">={new} <{major + 1}.0.0", (path.name, name)
            else:                                            # the nucleus's own components are not ours
                assert dep["VersionRequirement"] == yaml.safe_load(
                    (REPO / "recipes" / path.name).read_text())["ComponentDependencies"][name]["VersionRequirement"]
    for config in [root / "gdk-config.json", *root.glob("components/*/gdk-config.json")]:
        assert {c["version"] for c in json.loads(config.read_text())["component"].values()} == {new}
    fleet = json.loads((root / "scripts" / "deployment" / "fleet.json").read_text())["components"]
    assert {c["componentVersion"] for n, c in fleet.items() if n.startswith("io.backfill.")} == {new}
    assert fleet["aws.greengrass.Nucleus"]["componentVersion"] != new
    assert f"io.backfill.SensorPipeline={new}" in (root / "README.md").read_text()
    assert bump("--check", "--root", str(root)).returncode == 0
    result = bump("major", "--root", str(root))
    assert result.returncode == 0 and f"-> {major + 1}.0.0" in result.stdout
    bundle = yaml.safe_load((root / "recipes" / "io.backfill.SensorPipeline.yaml").read_text())
    assert {d["VersionRequirement"] for d in bundle["ComponentDependencies"].values()} == \
        {f">={major + 1}.0.0 <{major + 2}.0.0"}


def test_places_that_disagree_are_named(tmp_path):
    root = checkout_copy(tmp_path)
    config = root / "components" / "io.backfill.StoreAndForward" / "gdk-config.json"
    config.write_text(config.read_text().replace('"version": "', '"version": "9.', 1))
    result = bump("--check", "--root", str(root))
    assert result.returncode == 1 and "io.backfill.StoreAndForward/gdk-config.json version: 9." in result.stderr
    assert bump("patch", "--root", str(root)).returncode != 0       # which one is right is not guessed
    assert bump("not-a-version", "--root", str(root)).returncode != 0
