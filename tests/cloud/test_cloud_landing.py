"""The landing Lambda (scripts/cloud/landing.py) offline, against moto's DynamoDB, S3 and IoT
data plane, through its real boto3 clients (`aws_clients`), with batches made by the store's
own packer: each reading lands once by (device, run, seq); a resend is a no-op; a re-timed copy
replaces the first; what cannot be decoded goes to the error store; the acknowledgement is
published only after every write."""

from __future__ import annotations

import base64
import json
import sys
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from store_and_forward import packer

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts" / "cloud"))
import landing  # noqa: E402

REGION, TABLE, BUCKET, THING = "eu-west-1", "backfill-readings", "backfill-errors", "pi-garage-01"
T0 = 1_764_338_400_000


def reading(seq, run="0badcafe0badcafe", t=None, **extra) -> dict:
    doc = {"device": THING, "run": run, "seq": seq, "t": T0 + seq * 1000 if t is None else t,
           "mono": seq * 1000, "clock_synced": True, "status": "ok", "temperature": 21.5 + seq / 100,
           "temperature_raw": 24.0, "humidity": 45.0, "pressure": 1013.25, "gas_resistance": 50000.0,
           "heat_stable": True, "cpu_temperature": 48.3, "correction": "cpu_factor"}
    doc.update(extra)
    return doc


def event(payload: bytes, thing: str = THING) -> dict:
    """What the rule's SQL hands the Lambda."""
    return {"payload": base64.b64encode(payload).decode(), "thing": thing}


def batch(readings, device=THING) -> bytes:
    (only,) = packer.pack(device, readings)
    return only.payload


@pytest.fixture
def aws(monkeypatch):
    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_DEFAULT_REGION": REGION}.items():
        monkeypatch.setenv(key, value)
    with mock_aws():
        session = boto3.session.Session(region_name=REGION)
        session.client("dynamodb").create_table(
            TableName=TABLE, BillingMode="PAY_PER_REQUEST",
            AttributeDefinitions=[{"AttributeName": "device", "AttributeType": "S"},
                                  {"AttributeName": "run_seq", "AttributeType": "S"}],
            KeySchema=[{"AttributeName": "device", "KeyType": "HASH"}, {"AttributeName": "run_seq", "KeyType": "RANGE"}])
        session.client("s3").create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
        yield session


def table_items(session) -> dict:
    items = session.resource("dynamodb").Table(TABLE).scan()["Items"]
    return {(item["run"], int(item["seq"])): item for item in items}


def published(session) -> list[tuple[str, dict]]:
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.iotdata.models import iotdata_backends
    backend = iotdata_backends[DEFAULT_ACCOUNT_ID][REGION]
    return [(topic, json.loads(payload)) for topic, payload in backend.published_payloads]


def errors(session) -> list[dict]:
    s3 = session.client("s3")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET).get("Contents", [])]
    return [json.loads(s3.get_object(Bucket=BUCKET, Key=k)["Body"].read()) for k in keys]


def test_a_batch_lands_once_per_reading_and_then_is_acknowledged(aws):
    clients = landing.aws_clients(TABLE, BUCKET, aws)
    payload = batch([reading(seq) for seq in range(50)])
    result = landing.land(event(payload), clients)
    assert result["landed"] == 50 and result["duplicates"] == 0
    items = table_items(aws)
    assert sorted(items) == [("0badcafe0badcafe", seq) for seq in range(50)]
    assert float(items[("0badcafe0badcafe", 7)]["temperature"]) == pytest.approx(21.57)
    assert int(items[("0badcafe0badcafe", 7)]["t"]) == T0 + 7000
    ((topic, ack),) = published(aws)
    assert topic == f"backfill/ack/{THING}"
    assert ack["batch"] == packer.batch_of(payload)["batch"] and ack["landed"] == 50


def test_a_resend_is_a_no_op_and_a_retimed_copy_replaces_the_first(aws):
    clients = landing.aws_clients(TABLE, BUCKET, aws)
    first = batch([reading(seq, clock_synced=False, t=1_000 + seq) for seq in range(5)])
    landing.land(event(first), clients)
    again = landing.land(event(first), clients)
    assert again["landed"] == 0 and again["duplicates"] == 5
    retimed = batch([reading(seq, t=T0 + seq * 1000, t_orig=1_000 + seq) for seq in range(5)])
    result = landing.land(event(retimed), clients)
    assert result["retimed"] == 5 and result["duplicates"] == 0
    items = table_items(aws)
    assert len(items) == 5
    assert all(int(item["t"]) == T0 + seq * 1000 and int(item["t_orig"]) == 1_000 + seq
               for (run, seq), item in items.items())
    late = landing.land(event(first), clients)            # the first copy again, late: the re-timed one stays
    assert late["duplicates"] == 5 and int(table_items(aws)[("0badcafe0badcafe", 0)]["t"]) == T0
    assert len(published(aws)) == 4                        # every batch acknowledged, duplicates too


def test_what_cannot_be_decoded_goes_to_the_error_store_and_a_readable_batch_id_is_acknowledged(aws):
    clients = landing.aws_clients(TABLE, BUCKET, aws)
    landing.land(event(b"not json at all \xff"), clients)
    doc = json.loads(batch([reading(0)]))
    doc["rows"] = "broken"
    landing.land(event(json.dumps(doc).encode()), clients)
    spoof = batch([reading(0, device="pi-kitchen-02")], device="pi-kitchen-02")   # another device, on this thing's topic
    landing.land(event(spoof), clients)
    kept = errors(aws)
    assert len(kept) == 3
    reasons = sorted(k["reason"] for k in kept)
    assert any("not a batch" in r for r in reasons) and any("integer seq" in r for r in reasons)
    assert any("is not the thing of its topic" in r for r in reasons)
    assert table_items(aws) == {}
    acks = [ack for _, ack in published(aws)]
    assert len(acks) == 2 and all("error" in ack for ack in acks)       # the unreadable one cannot be


def test_nothing_is_acknowledged_when_a_write_fails(aws):
    clients = landing.aws_clients(TABLE, BUCKET, aws)
    calls = []

    def failing(item, condition):
        calls.append(item)
        if len(calls) == 3:
            raise RuntimeError("ProvisionedThroughputExceededException")
        return True
    with pytest.raises(RuntimeError):
        landing.land(event(batch([reading(seq) for seq in range(5)])),
                     landing.Clients(put=failing, keep=clients.keep, publish=clients.publish))
    assert published(aws) == []                  # the device sends the batch again


def test_the_plan_is_pure_and_keys_sort_by_seq():
    p = landing.plan(event(batch([reading(9), reading(10)])))
    assert p.error is None and [item["run_seq"] for item, _ in p.items] == [
        "0badcafe0badcafe#000000000009", "0badcafe0badcafe#000000000010"]
    assert landing.plan({"thing": THING}).error.startswith("the rule's event has no base64 payload")
