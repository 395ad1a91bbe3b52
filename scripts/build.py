#!/usr/bin/env python3
"""Build every component the way `gdk component build` does, into greengrass-build/.

    python3 scripts/build.py [--out DIR] [COMPONENT ...]

Standard library only: it is also the top-level gdk-config.json's custom build command.
For each `components/<Name>/gdk-config.json` (GDK: one component per config, one
recipe.yaml or recipe.json next to it) it writes

    <out>/artifacts/<Name>/<version>/<zip>.zip   the folder's files at the zip root
    <out>/recipes/<recipe file name>              the recipe, as GDK copies it

GDK v1.6.2's zip rules (gdk/build_system/Zip.py): gdk-config.json, greengrass-build and
the recipe are always left out; with no `options`, so are `**/test*`, `**/.*` and
`**/node_modules`; with options, only its `excludes` apply. The zip is named after the
folder, or `zip_name` ("" means the component name). The top-level project (the bundle)
contributes its recipe only. A recipe whose ComponentName or ComponentVersion differs
from its gdk-config.json is an error here (GDK would overwrite it silently).
`localgg deployment create --recipeDir <out>/recipes --artifactDir <out>/artifacts` deploys the result.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_EXCLUDES = ["**/test*", "**/.*", "**/node_modules"]


class BuildError(Exception):
    pass


def read_project(folder: Path) -> tuple[str, dict, Path]:
    config = json.loads((folder / "gdk-config.json").read_text())
    components = config.get("component") or {}
    if len(components) != 1:
        raise BuildError(f"{folder}/gdk-config.json must describe exactly one component")
    name, settings = next(iter(components.items()))
    recipes = [p for p in (folder / "recipe.yaml", folder / "recipe.json") if p.exists()]
    if len(recipes) != 1:
        raise BuildError(f"{folder}: need exactly one recipe.yaml or recipe.json next to gdk-config.json")
    return name, settings, recipes[0]


def check_recipe(recipe: Path, name: str, version: str) -> None:
    text = recipe.read_text()
    for key, wanted in (("ComponentName", name), ("ComponentVersion", version)):
        found = re.search(rf'^\s*"?{key}"?\s*:\s*"?([^",\s]+)"?', text, re.M)
        if not found or found.group(1) != wanted:
            raise BuildError(f"{recipe}: {key} is {found.group(1) if found else 'missing'}, "
                             f"gdk-config.json says {wanted}")


def excluded_paths(folder: Path, patterns: list[str]) -> set[Path]:
    out = set()
    for pattern in patterns:
        out.update(p.resolve() for p in folder.glob(pattern))
        if "/" not in pattern:
            out.add((folder / pattern).resolve())
    return out


def zip_component(folder: Path, target: Path, patterns: list[str]) -> int:
    skip = excluded_paths(folder, patterns)
    count = 0
    target.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(folder.rglob("*")):
            relative = path.relative_to(folder)
            lexical = [folder.joinpath(*relative.parts[:i + 1]).resolve() for i in range(len(relative.parts))]
            if path.is_dir() or any(p in skip for p in lexical):
                continue
            archive.write(path, relative.as_posix())
            count += 1
    return count


def build_component(folder: Path, out: Path) -> str:
    name, settings, recipe = read_project(folder)
    version = settings.get("version", "")
    if not re.fullmatch(r"\d+\.\d+\.\d+(-[0-9A-Za-z.-]+)?", version):
        raise BuildError(f"{folder}: version must be a fixed semantic version for local deployments, not {version!r}")
    check_recipe(recipe, name, version)
    build = settings.get("build") or {}
    system = build.get("build_system")
    if system == "zip":
        options = build.get("options") or {}
        patterns = ["gdk-config.json", "greengrass-build", "zip-build", recipe.name, recipe.resolve().name]
        patterns += options.get("excludes", []) if options else DEFAULT_EXCLUDES
        zip_name = options.get("zip_name")
        zip_name = folder.name if zip_name is None else (zip_name or name)
        count = zip_component(folder, out / "artifacts" / name / version / f"{zip_name}.zip", patterns)
        what = f"{zip_name}.zip ({count} files)"
    elif system == "custom" and folder == ROOT:
        what = "recipe only"
    else:
        raise BuildError(f"{folder}: build_system {system!r} is not supported here (use zip)")
    (out / "recipes").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(recipe.resolve(), out / "recipes" / recipe.resolve().name)
    return f"{name}@{version}: {what}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "greengrass-build")
    parser.add_argument("components", nargs="*", help="component folder names (default: all)")
    args = parser.parse_args(argv)
    folders = sorted(p.parent for p in (ROOT / "components").glob("*/gdk-config.json"))
    if args.components:
        folders = [f for f in folders if f.name in args.components]
    elif (ROOT / "gdk-config.json").exists():
        folders.append(ROOT)
    if args.out.exists():
        shutil.rmtree(args.out)
    try:
        for folder in folders:
            print(build_component(folder, args.out))
    except (BuildError, OSError, ValueError) as exc:
        print(f"build failed: {exc}", file=sys.stderr)
        return 1
    print(f"built {len(folders)} components into {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
