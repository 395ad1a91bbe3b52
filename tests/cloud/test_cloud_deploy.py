"""scripts/deploy-cloud offline: its requests are valid against botocore's own service models
(Stubber checks every parameter), `--dry-run` prints the stack parameters and sends nothing, and
the Lambda package it uploads is self-contained (imported by a bare Python with nothing else on
its path, as Lambda's runtime would)."""

from __future__ import annotations

import argparse
import importlib.machinery
import importlib.util
import io
import subprocess
import sys
import zipfile
from pathlib import Path

import boto3
from botocore.stub import Stubber

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "deploy-cloud"


def load():
    loader = importlib.machinery.SourceFileLoader("deploy_cloud", str(SCRIPT))
    spec = importlib.util.spec_from_loader("deploy_cloud", loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


ARGS = argparse.Namespace(artifact_bucket="backfill-artifacts-eu-west-1-123456789012", code_bucket="backfill-code",
                          stack="backfill", region="eu-west-1", role_alias="BackfillTokenExchangeRoleAlias")


def test_the_requests_are_valid_for_botocores_models():
    deploy = load()
    code = deploy.package()
    for exists in (False, True):
        put, stack = deploy.requests(ARGS, code, exists)
        s3 = boto3.client("s3", region_name="eu-west-1", aws_access_key_id="x", aws_secret_access_key="x")
        cfn = boto3.client("cloudformation", region_name="eu-west-1", aws_access_key_id="x", aws_secret_access_key="x")
        with Stubber(s3) as s3_stub, Stubber(cfn) as cfn_stub:
            s3_stub.add_response("put_object", {}, put)
            operation = "update_stack" if exists else "create_stack"
            cfn_stub.add_response(operation, {"StackId": "arn:aws:cloudformation:eu-west-1:123456789012:stack/backfill/1"}, stack)
            s3.put_object(**put)
            getattr(cfn, operation)(**stack)
            s3_stub.assert_no_pending_responses()
            cfn_stub.assert_no_pending_responses()
    assert "OnFailure" not in deploy.requests(ARGS, code, True)[1]        # UpdateStack has no OnFailure


def test_the_package_is_the_same_for_the_same_sources_and_named_by_its_content():
    deploy = load()
    assert deploy.package() == deploy.package()
    key = deploy.requests(ARGS, deploy.package(), False)[0]["Key"]
    assert key.startswith("backfill/landing-") and key.endswith(".zip")


def test_the_package_imports_on_its_own(tmp_path):
    with zipfile.ZipFile(io.BytesIO(load().package())) as zf:
        assert sorted(zf.namelist()) == ["landing.py", "store_and_forward/__init__.py", "store_and_forward/packer.py"]
        zf.extractall(tmp_path)
    # -I -S: no site-packages, no environment, no current directory; only the task root, as in Lambda
    code = f"import sys; sys.path.insert(0, {str(tmp_path)!r}); import landing; print(landing.handler.__name__)"
    result = subprocess.run([sys.executable, "-I", "-S", "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "handler"


def test_dry_run_prints_the_parameters_and_needs_no_credentials():
    result = subprocess.run([sys.executable, str(SCRIPT), "--artifact-bucket", ARGS.artifact_bucket,
                             "--code-bucket", ARGS.code_bucket, "--dry-run"],
                            capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    for text in ("CreateStack", "ArtifactBucket", ARGS.artifact_bucket, "LandingCodeKey", "CAPABILITY_IAM"):
        assert text in result.stdout
