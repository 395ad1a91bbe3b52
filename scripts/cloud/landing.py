"""The cloud landing: an AWS Lambda that an IoT rule on `dt/backfill/+/readings` invokes with
each batch. It decodes the batch with the store's own `packer.decode` (packaged beside it by
`scripts/deploy-cloud`), writes each reading once into DynamoDB keyed by (device, run, seq),
keeps what it cannot decode in an error store (S3), and only then publishes the batch's
acknowledgement, so a store with `confirm: landing` deletes a batch only once it is in the
table (not merely at the broker).

    handler(event, context)                 # the Lambda entry (clients from boto3)
    land(event, clients)                    # the same, clients injected (tests, stand-ins)
    plan(event) -> Plan                     # pure: items to write, or why it is an error

The rule's SQL hands the payload over base64-encoded with the thing from the topic
(`SELECT encode(*, 'base64') AS payload, topic(3) AS thing FROM 'dt/backfill/+/readings'`), so
a payload that is not JSON still reaches the error store instead of failing in the rules engine.

Writes: a reading's first copy is put; a resend is a no-op (the condition fails); a re-timed
copy (it carries `t_orig`) replaces a first copy that was not re-timed. The acknowledgement
`{"batch", "device", "landed", "retimed", "duplicates"}` goes to `backfill/ack/<thing>` (QoS 0)
after every write succeeded; a write that fails raises, so nothing is acknowledged and the
device sends the batch again. A batch that is kept in the error store is acknowledged too when
its id can be read (it is safe there; sending it again would only fail again).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Callable, Optional

from store_and_forward import packer     # beside it in the Lambda's package (scripts/deploy-cloud)

ACK_TOPIC = "backfill/ack/{thing}"
WRITERS = 8                      # conditional puts in parallel (a drained batch holds ~2,100 readings)
FIRST = "attribute_not_exists(device)"
RETIMED = "attribute_not_exists(device) OR attribute_not_exists(t_orig)"


@dataclass
class Plan:
    thing: str
    batch: Optional[str] = None          # the batch id, when it can be read
    device: Optional[str] = None
    items: list = field(default_factory=list)     # (item, condition)
    error: Optional[str] = None          # why it goes to the error store


@dataclass
class Clients:
    """What the landing writes to: `put(item, condition) -> bool` (False: the condition failed),
    `keep(key, body)` the error store, `publish(topic, payload)` the acknowledgement."""
    put: Callable[[dict, str], bool]
    keep: Callable[[str, bytes], None]
    publish: Callable[[str, bytes], None]


def sort_key(run: str, seq: int) -> str:
    return f"{run}#{int(seq):012d}"


def plan(event: dict) -> Plan:
    """What to do with one rule event. Pure."""
    thing = str(event.get("thing") or "")
    try:
        payload = base64.b64decode(event["payload"], validate=True)
    except (KeyError, TypeError, ValueError) as error:
        return Plan(thing, error=f"the rule's event has no base64 payload ({error})")
    doc = packer.batch_of(payload)
    if doc is None:
        return Plan(thing, error="not a batch of format version 1 (or not JSON)")
    out = Plan(thing, batch=doc["batch"], device=str(doc.get("device")))
    if out.device != thing:
        out.error = f"the batch's device {out.device!r} is not the thing of its topic {thing!r}"
        return out
    try:
        readings = packer.decode(doc)
    except ValueError as error:
        out.error = str(error)
        return out
    for reading in readings:
        if not isinstance(reading.get("run"), str) or not isinstance(reading.get("seq"), int):
            out.error = "a reading without a run or an integer seq"
            out.items = []
            return out
        item = json.loads(json.dumps(reading), parse_float=Decimal)    # DynamoDB numbers
        item["run_seq"] = sort_key(reading["run"], reading["seq"])
        out.items.append((item, RETIMED if reading.get("t_orig") is not None else FIRST))
    return out


def land(event: dict, clients: Clients, now: Callable[[], float] = time.time) -> dict:
    """Land one batch; returns what was done (also the acknowledgement's content)."""
    p = plan(event)
    result = {"batch": p.batch, "device": p.device or p.thing, "landed": 0, "retimed": 0, "duplicates": 0}
    if p.error is not None:
        raw = json.dumps({"reason": p.error, "thing": p.thing, "received_at": now(), "event": event}).encode()
        digest = hashlib.sha256(raw).hexdigest()[:16]
        clients.keep(f"errors/{p.thing or 'unknown'}/{time.strftime('%Y-%m-%d', time.gmtime(now()))}/{digest}.json", raw)
        result["error"] = p.error
    else:
        with ThreadPoolExecutor(WRITERS) as pool:
            written = list(pool.map(lambda pair: clients.put(*pair), p.items))
        for (item, condition), done in zip(p.items, written):
            if not done:
                result["duplicates"] += 1
            elif condition == RETIMED:
                result["retimed"] += 1        # a re-timed copy: new, or over a first copy
            else:
                result["landed"] += 1
    if p.batch is not None and p.thing:
        clients.publish(ACK_TOPIC.format(thing=p.thing), json.dumps(result).encode())
    return result


def aws_clients(table_name: str, bucket: str, session=None) -> Clients:
    """Clients over boto3 (DynamoDB table, S3 bucket, the IoT data plane)."""
    import boto3
    session = session or boto3.session.Session()
    table = session.resource("dynamodb").Table(table_name)
    s3 = session.client("s3")
    iot = session.client("iot-data", endpoint_url=os.environ.get("BACKFILL_IOT_ENDPOINT") or None)
    failed = table.meta.client.exceptions.ConditionalCheckFailedException

    def put(item: dict, condition: str) -> bool:
        try:
            table.put_item(Item=item, ConditionExpression=condition)
            return True
        except failed:
            return False

    return Clients(put=put,
                   keep=lambda key, body: s3.put_object(Bucket=bucket, Key=key, Body=body,
                                                        ContentType="application/json"),
                   publish=lambda topic, payload: iot.publish(topic=topic, qos=0, payload=payload))


_CLIENTS: Optional[Clients] = None


def handler(event, context):
    """The Lambda entry: BACKFILL_TABLE and BACKFILL_ERRORS_BUCKET from the environment."""
    global _CLIENTS
    if _CLIENTS is None:
        _CLIENTS = aws_clients(os.environ["BACKFILL_TABLE"], os.environ["BACKFILL_ERRORS_BUCKET"])
    return land(event, _CLIENTS)
