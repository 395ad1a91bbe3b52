"""scripts/publish.py: the dry run (commands, bucket pattern, S3 keys, no AWS), the real run's
sequence with a stand-in `gdk` executable that records its calls, and the refusal of a
component whose bucket or region differ from the top level's."""

from __future__ import annotations

import json
import subprocess
import sys

from build_testkit import BUNDLE, NAMES, REPO, RUNTIME, make_repo

PUBLISH = REPO / "scripts" / "publish.py"


def publish(*args, cwd=REPO):
    return subprocess.run([sys.executable, str(PUBLISH), *args], capture_output=True, text=True, cwd=cwd,
                          timeout=60)


def test_dry_run_prints_commands_bucket_and_keys_without_aws(tmp_path):
    result = publish("--dry-run", "--gdk", str(tmp_path / "no-gdk-here"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    config = json.loads((REPO / "gdk-config.json").read_text())["component"][BUNDLE]["publish"]
    bucket = f"{config['bucket']}-{config['region']}-<account>"
    assert f"bucket: {bucket}" in out and "<bucket>-<region>-<account>" in out
    for name in NAMES:
        assert f"upload s3://{bucket}/{name}/1.0.0/{name}.zip" in out
        assert f"(in components/{name})" in out
    for arch in ("x86_64", "aarch64"):
        assert f"upload s3://{bucket}/{RUNTIME}/1.0.0/{RUNTIME}-{arch}.zip" in out
    assert out.count("$ ") == 2 * (len(NAMES) + 2)
    assert out.count(f"component publish --region {config['region']}") == len(NAMES) + 2
    order = [out.index(f"{name} 1.0.0  (in") for name in (RUNTIME, *NAMES, BUNDLE)]
    assert order[0] == min(order) and order[-1] == max(order)       # the runtime first, the bundle last
    assert "no artifacts to upload" in out.split(f"{BUNDLE} 1.0.0")[1]


def fake_gdk(tmp_path, fail_in=""):
    log = tmp_path / "calls.jsonl"
    script = tmp_path / "gdk"
    script.write_text(f"""#!{sys.executable}
import json, os, sys
with open({str(log)!r}, "a") as f:
    f.write(json.dumps([os.getcwd(), sys.argv[1:]]) + "\\n")
sys.exit(1 if {fail_in!r} and os.getcwd().endswith({fail_in!r}) and "publish" in sys.argv else 0)
""")
    script.chmod(0o755)
    return script, log


def calls(log):
    return [json.loads(line) for line in log.read_text().splitlines()]


def test_publish_builds_then_publishes_each_component_then_the_bundle(tmp_path):
    gdk, log = fake_gdk(tmp_path)
    result = publish("--gdk", str(gdk))
    assert result.returncode == 0, result.stdout + result.stderr
    region = json.loads((REPO / "gdk-config.json").read_text())["component"][BUNDLE]["publish"]["region"]
    folders = [str(REPO / "components" / name) for name in (RUNTIME, *sorted(NAMES))] + [str(REPO)]
    assert calls(log) == [call for folder in folders for call in (
        [folder, ["component", "build"]], [folder, ["component", "publish", "--region", region]])]


def test_publish_stops_at_the_first_failure(tmp_path):
    gdk, log = fake_gdk(tmp_path, fail_in="io.backfill.StoreAndForward")
    result = publish("--gdk", str(gdk), "--bucket", "exact-bucket")
    assert result.returncode == 1 and "failed in" in result.stderr
    assert calls(log)[-1][0].endswith("io.backfill.StoreAndForward")
    assert calls(log)[-1][1][-2:] == ["--bucket", "exact-bucket"]
    assert not [c for c in calls(log) if c[0] == str(REPO)]          # the bundle was not published


def test_a_component_with_another_bucket_is_refused(tmp_path):
    root = tmp_path / "repo"
    folder = make_repo(root)
    config = json.loads((folder / "gdk-config.json").read_text())
    config["component"]["io.test.Widget"]["publish"]["bucket"] = "elsewhere"
    (folder / "gdk-config.json").write_text(json.dumps(config))
    result = publish("--dry-run", "--root", str(root))
    assert result.returncode == 1
    assert "components/io.test.Widget/gdk-config.json" in result.stderr and "test-bucket" in result.stderr
