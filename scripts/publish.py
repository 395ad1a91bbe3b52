#!/usr/bin/env python3
"""Publish every component, then the bundle, to AWS IoT Greengrass with GDK.

    python3 scripts/publish.py --dry-run          what it would do, without AWS
    python3 scripts/publish.py [--gdk PATH] [--bucket EXACT_NAME] [--region REGION]

For each components/<Name>/ (io.backfill.Runtime first, as the others depend on it; then the
top level, the bundle io.backfill.SensorPipeline) it
runs `gdk component build` and `gdk component publish --region <region>` in that folder.
The bucket and region are the top-level gdk-config.json's `publish` section; every
component's gdk-config.json must say the same (this script refuses otherwise). GDK
creates and uses the bucket `<bucket>-<region>-<account>` (account from STS
GetCallerIdentity), or exactly `--bucket NAME`; it uploads each artifact to
`<Name>/<version>/<file>`, rewrites the recipe's s3:// URIs and calls
CreateComponentVersion. GDK v1.6.2 is not on PyPI: install it from its repository
(aws-greengrass/aws-greengrass-gdk-cli, tag v1.6.2) with pip. Standard library only.
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import build  # noqa: E402  (scripts/build.py: the projects, as the build reads them)


class PublishError(Exception):
    pass


def plan(root: Path, gdk: str, bucket: str | None, region: str | None) -> tuple[str, str, list[dict]]:
    """(bucket as GDK names it, region, steps): one step per project, the bundle last."""
    order = {"runtime": 0, "code": 1, "bundle": 2}     # what a component depends on is published before it
    projects = sorted(build.find_projects(root), key=lambda p: order[p.kind])
    bundle = [p for p in projects if p.bundle]
    if not bundle:
        raise PublishError(f"{root}/gdk-config.json (the bundle) is missing")
    top = bundle[0].publish
    if not top.get("bucket") or not top.get("region"):
        raise PublishError(f"{root}/gdk-config.json: publish needs a bucket and a region")
    differ = [f"{p.folder.relative_to(root)}/gdk-config.json" for p in projects
              if (p.publish.get("bucket"), p.publish.get("region")) != (top["bucket"], top["region"])]
    if differ:
        raise PublishError(f"publish.bucket/region differ from the top-level gdk-config.json "
                           f"({top['bucket']}, {top['region']}) in: {', '.join(differ)}")
    region = region or top["region"]
    shown_bucket = bucket or f"{top['bucket']}-{region}-<account>"
    publish = [gdk, "component", "publish", "--region", region] + (["--bucket", bucket] if bucket else [])
    steps = []
    for project in projects:
        uploads = [f"{project.name}/{project.version}/{name}" for name in project.zip_names(build.ARCHES)]
        steps.append({"project": project, "commands": [[gdk, "component", "build"], publish], "uploads": uploads})
    return shown_bucket, region, steps


def describe(root: Path, bucket: str, region: str, steps: list[dict]) -> str:
    lines = [f"bucket: {bucket}  (GDK's pattern <bucket>-<region>-<account> unless --bucket; "
             f"<account> comes from STS GetCallerIdentity)", f"region: {region}"]
    for step in steps:
        project = step["project"]
        where = project.folder.relative_to(root).as_posix() if project.folder != root else "."
        lines.append(f"{project.name} {project.version}  (in {where})")
        lines += [f"  $ {shlex.join(command)}" for command in step["commands"]]
        lines += [f"  upload s3://{bucket}/{key}" for key in step["uploads"]] or ["  no artifacts to upload"]
        lines.append(f"  create component version {project.name} {project.version} from "
                     f"{where}/greengrass-build/recipes/{project.name}-{project.version}.{project.recipe.suffix[1:]}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true", help="print the commands, bucket and S3 keys only")
    parser.add_argument("--gdk", default="gdk", help="the GDK CLI (default: gdk on PATH)")
    parser.add_argument("--bucket", help="an exact bucket name (GDK then adds no region or account)")
    parser.add_argument("--region", help="override the top-level gdk-config.json's region")
    parser.add_argument("--root", type=Path, default=build.ROOT, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    root = args.root.resolve()
    try:
        bucket, region, steps = plan(root, args.gdk, args.bucket, args.region)
    except (PublishError, build.BuildError) as exc:
        print(f"publish: {exc}", file=sys.stderr)
        return 1
    print(("dry run: would publish\n" if args.dry_run else "publishing\n") + describe(root, bucket, region, steps))
    if args.dry_run:
        return 0
    if shutil.which(args.gdk) is None:
        print(f"publish: {args.gdk!r} not found: install GDK v1.6.2 from its repository "
              "(aws-greengrass/aws-greengrass-gdk-cli) with pip, or pass --gdk PATH", file=sys.stderr)
        return 1
    for step in steps:
        for command in step["commands"]:
            print(f"[{step['project'].name}] $ {shlex.join(command)}", flush=True)
            if subprocess.run(command, cwd=step["project"].folder).returncode != 0:
                print(f"publish: failed in {step['project'].folder}; nothing after it was published",
                      file=sys.stderr)
                return 1
    print(f"published {len(steps)} components")
    return 0


if __name__ == "__main__":
    sys.exit(main())
