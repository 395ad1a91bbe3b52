"""The deployment templates: the fleet one is a valid greengrassv2 CreateDeployment request
(checked against botocore's service model, offline) and says the same as the local one."""

import json
from pathlib import Path

import botocore.session
from botocore.stub import Stubber

DEPLOYMENT = Path(__file__).resolve().parents[2] / "scripts" / "deployment"


def test_the_fleet_template_is_a_valid_create_deployment_request():
    request = json.loads((DEPLOYMENT / "fleet.json").read_text())
    client = botocore.session.get_session().create_client(
        "greengrassv2", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    with Stubber(client) as stub:
        stub.add_response("create_deployment", {"deploymentId": "d-1"}, request)
        assert client.create_deployment(**request)["deploymentId"] == "d-1"


def test_fleet_and_local_deployments_configure_the_core_alike():
    fleet = json.loads((DEPLOYMENT / "fleet.json").read_text())["components"]
    local = json.loads((DEPLOYMENT / "local.json").read_text())
    for name in ("aws.greengrass.Nucleus", "aws.greengrass.ShadowManager"):
        assert json.loads(fleet[name]["configurationUpdate"]["merge"]) == local[name]["MERGE"]
    assert {"io.backfill.SensorPipeline", "io.backfill.Bme680Sensor"} <= set(fleet)
    assert json.loads(fleet["io.backfill.Bme680Sensor"]["configurationUpdate"]["merge"])["bus"] == "i2c"
