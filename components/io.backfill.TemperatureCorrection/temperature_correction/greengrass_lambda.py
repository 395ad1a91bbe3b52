"""The correction as a Greengrass Lambda component (scripts/import-lambda):
``temperature_correction.greengrass_lambda.handler``.

A Greengrass v2 Lambda gets each message of its event source (backfill/readings/raw) as
`event` and its return value goes nowhere: the documented way out is IPC from inside
(awsiotsdk's PublishToTopic; AWS docs, run-lambda-functions, "Migrate from V1"). So this
handler corrects the reading with handler.correct_event (the same work as the generic
component's runner) and publishes the result on CORRECTED_TOPIC (default
backfill/readings/corrected) with the one GreengrassCoreIPCClientV2 of the process (a pinned
Lambda keeps it, and the CPU windows, between invocations; handler.current() keeps them
per device and run). Parameters: CORRECTION_* in the function's environment (handler.py).

What is not a raw reading is logged and dropped (the sensor resends only what the store has
not acknowledged, and a malformed message never will be); a correction out of contract is
published uncorrected, as the runner does. Returns the published reading (or None).
"""

from __future__ import annotations

import logging
import os
from typing import Callable, Optional

from . import handler as lambda_handler

log = logging.getLogger(__name__)

DEFAULT_TOPIC = "backfill/readings/corrected"
_publish: Optional[Callable[[str, dict], None]] = None


def publisher() -> Callable[[str, dict], None]:
    """publish(topic, doc) over the process's IPC connection, made on first use."""
    global _publish
    if _publish is None:
        from backfill_common.ipc import Ipc
        _publish = Ipc().publish_json
    return _publish


def handler(event: object, context: object = None, publish: Optional[Callable[[str, dict], None]] = None):
    topic = os.environ.get("CORRECTED_TOPIC") or DEFAULT_TOPIC
    try:
        out = lambda_handler.correct_event(event, lambda_handler.current())
    except lambda_handler.InvalidReading as error:
        log.warning("dropped a message that is not a raw reading (%s): %s", subject(context), error)
        return None
    except lambda_handler.OutOfContract as error:
        log.warning("published uncorrected: %s", error)
        out = error.passthrough
    (publish or publisher())(topic, out)
    return out


def subject(context: object) -> str:
    """The topic the event came on: context.client_context.custom['subject'] (as in Greengrass V1)."""
    custom = getattr(getattr(context, "client_context", None), "custom", None) or {}
    return str(custom.get("subject", "?"))
