"""The components' one door to Greengrass: a thin adapter over awsiotsdk's
GreengrassCoreIPCClientV2 that speaks in plain dicts and bytes.

    ipc = Ipc()                                     # connects with the nucleus's environment
    inbox = Inbox()
    ipc.subscribe("backfill/readings/raw", inbox.put_for("raw"))
    ipc.publish_json("backfill/readings/corrected", doc)
    message = inbox.get(timeout=1.0)                # Message(tag, topic, payload) or None

Stream callbacks run on the IPC connection's thread, in the order the core sent them
(the client is built with executor=None): they must only hand the message over, as
Inbox does; the component's own loop does the work. A JSON message arrives as a dict,
a binary one as bytes. The logic never imports awsiot: it takes this adapter (or a fake
of it in unit tests).
"""

from __future__ import annotations

import json
import logging
import os
import queue
from dataclasses import dataclass
from typing import Callable, Optional, Union

from . import strictjson

log = logging.getLogger(__name__)

Payload = Union[dict, bytes]
Callback = Callable[[str, Payload], None]


@dataclass(frozen=True)
class Message:
    tag: str
    topic: str
    payload: Payload


class Inbox:
    """A thread-safe queue of Messages: the hand-over from IPC callbacks to the main loop."""

    def __init__(self, maxsize: int = 0) -> None:
        self._queue: "queue.Queue[Message]" = queue.Queue(maxsize)
        self.dropped = 0              # messages a bounded callback let go (the queue was full)

    def put_for(self, tag: str, bound: Optional[int] = None) -> Callback:
        """A callback that queues (tag, topic, payload). With `bound`, a message that finds
        `bound` or more queued is dropped and counted (a flood must not grow the process
        without limit; use it only where the sender resends what is not acknowledged)."""
        if bound is None:
            return lambda topic, payload: self._queue.put(Message(tag, topic, payload))

        def bounded(topic, payload) -> None:
            if self._queue.qsize() >= bound:
                self.dropped += 1
            else:
                self._queue.put(Message(tag, topic, payload))
        return bounded

    def put(self, message: Message) -> None:
        self._queue.put(message)

    def get(self, timeout: Optional[float] = None) -> Optional[Message]:
        try:
            return self._queue.get(timeout=timeout) if timeout is None or timeout > 0 else self._queue.get_nowait()
        except queue.Empty:
            return None

    def qsize(self) -> int:
        return self._queue.qsize()


def shadow_topic(thing: str, shadow: str, suffix: str) -> str:
    return f"$aws/things/{thing}/shadow/name/{shadow}/{suffix}"


class Ipc:
    def __init__(self, client=None, thing_name: Optional[str] = None) -> None:
        if client is None:
            from awsiot.greengrasscoreipc.clientv2 import GreengrassCoreIPCClientV2
            client = GreengrassCoreIPCClientV2(executor=None)
        self.client = client
        self.thing_name = thing_name or os.environ.get("AWS_IOT_THING_NAME", "")
        self._operations: list = []

    # -- configuration -------------------------------------------------------------------
    def get_configuration(self) -> dict:
        """This component's whole configuration."""
        return dict(self.client.get_configuration().value or {})

    def on_configuration_change(self, callback: Callable[[], None]) -> None:
        _, operation = self.client.subscribe_to_configuration_update(
            on_stream_event=lambda event: _guard(callback), on_stream_error=_keep_open)
        self._operations.append(operation)

    # -- local pub/sub -------------------------------------------------------------------
    def publish_json(self, topic: str, doc: dict) -> None:
        """ValueError (nothing sent) for a NaN or Infinity: the SDK would write it as is."""
        from awsiot.greengrasscoreipc.model import JsonMessage, PublishMessage
        where = strictjson.non_finite(doc)
        if where is not None:
            raise ValueError(f"{topic}: {where} is not a finite number; not published")
        self.client.publish_to_topic(topic=topic, publish_message=PublishMessage(json_message=JsonMessage(message=doc)))

    def publish_binary(self, topic: str, payload: bytes) -> None:
        from awsiot.greengrasscoreipc.model import BinaryMessage, PublishMessage
        self.client.publish_to_topic(topic=topic, publish_message=PublishMessage(binary_message=BinaryMessage(message=payload)))

    def subscribe(self, topic: str, callback: Callback) -> None:
        def on_event(event) -> None:
            if event.json_message is not None:
                context = event.json_message.context
                _guard(callback, context.topic if context else topic, event.json_message.message)
            elif event.binary_message is not None:
                context = event.binary_message.context
                _guard(callback, context.topic if context else topic, bytes(event.binary_message.message or b""))
        _, operation = self.client.subscribe_to_topic(topic=topic, on_stream_event=on_event, on_stream_error=_keep_open)
        self._operations.append(operation)

    # -- IoT Core ------------------------------------------------------------------------
    def publish_iot(self, topic: str, payload: bytes, qos: int = 1) -> None:
        """Returns once the core has SPOOLED the message (not once IoT Core has it)."""
        from awsiot.greengrasscoreipc.model import QOS
        self.client.publish_to_iot_core(topic_name=topic, qos=QOS.AT_LEAST_ONCE if qos else QOS.AT_MOST_ONCE,
                                        payload=payload)

    def subscribe_iot(self, topic: str, callback: Callable[[str, bytes], None], qos: int = 1,
                      on_closed: Optional[Callable[[], None]] = None) -> None:
        """Returns after the broker's SUBACK (while offline, once the core is back online).
        `on_closed()` when the core ends the stream (subscribe again: nothing else will come)."""
        from awsiot.greengrasscoreipc.model import QOS

        def on_event(event) -> None:
            message = event.message
            _guard(callback, message.topic_name, bytes(message.payload or b""))
        _, operation = self.client.subscribe_to_iot_core(
            topic_name=topic, qos=QOS.AT_LEAST_ONCE if qos else QOS.AT_MOST_ONCE,
            on_stream_event=on_event, on_stream_error=_keep_open,
            on_stream_closed=(lambda: _guard(on_closed)) if on_closed is not None else None)
        self._operations.append(operation)

    # -- the local shadow (ShadowManager) ------------------------------------------------
    def get_shadow(self, name: str) -> Optional[dict]:
        """The named shadow document of this core's thing, or None when there is none."""
        from awsiot.greengrasscoreipc.model import ResourceNotFoundError
        try:
            response = self.client.get_thing_shadow(thing_name=self.thing_name, shadow_name=name)
        except ResourceNotFoundError:
            return None
        return strictjson.loads(response.payload)

    def update_shadow(self, name: str, document: dict) -> dict:
        response = self.client.update_thing_shadow(thing_name=self.thing_name, shadow_name=name,
                                                   payload=strictjson.dumps(document).encode())
        return strictjson.loads(response.payload)

    def on_shadow_document(self, name: str, callback: Callable[[dict], None]) -> None:
        """`callback(current)` with the whole current document after every accepted update."""
        def on_message(topic: str, payload: Payload) -> None:
            doc = strictjson.loads(payload) if isinstance(payload, bytes) else payload
            callback(doc.get("current") or {})
        self.subscribe(shadow_topic(self.thing_name, name, "update/documents"), on_message)

    def close(self) -> None:
        for operation in self._operations:
            try:
                operation.close()
            except Exception:  # already closed by the core
                pass
        self.client.close()


def read_shadow(ipc, name: str) -> Optional[dict]:
    """`ipc.get_shadow(name)`, or None (logged) when it fails: a component then starts on its
    deployment configuration alone and follows the shadow's documents from there."""
    try:
        return ipc.get_shadow(name)
    except Exception as error:
        log.warning("could not read the %s shadow (%s); using the configuration only", name, error)
        return None


def follow_shadow(ipc, reach, config: Optional[dict], on_document: Callable[[dict], None]) -> object:
    """Follow and read the named shadow once `reach` (backfill_common.shadow_reach) judges that
    `config` lets this component. Returns the document to apply (None: there is none), or
    False when there is nothing new: out of reach (said once), followed and read already, or a
    transient failure (then `reach.pending`: call again later, with config None)."""
    if not reach.check(config):
        return False
    if not reach.followed:
        try:
            ipc.on_shadow_document(reach.shadow, on_document)
        except Exception as error:      # never the end of the component
            (reach.refused if refused(error) else reach.failed)(describe(error))
            return False
        reach.followed = reach.read_pending = True
    if not reach.read_pending:
        return False
    try:
        document = ipc.get_shadow(reach.shadow)        # None: there is no shadow yet
    except Exception as error:
        reach.failed(describe(error))
        return False
    reach.read_pending = False
    reach.succeeded()
    return document


def refused(error: Exception) -> bool:
    """The nucleus's UnauthorizedError (awsiot's model class, by name: no import here)."""
    return type(error).__name__ == "UnauthorizedError"


def describe(error: Exception) -> str:
    return f"{type(error).__name__}: {getattr(error, 'message', None) or error}"


def read_configuration(ipc, problems) -> Optional[dict]:
    """`ipc.get_configuration()`, or None (counted in `problems`, logged once) when it fails:
    the settings in effect stay, and the caller reads it again later."""
    try:
        return ipc.get_configuration()
    except Exception as error:
        text = f"{type(error).__name__}: {getattr(error, 'message', None) or error}"
        problems.add(f"configuration read {type(error).__name__}",
                     f"could not read the configuration (keeping the settings in effect): {text}")
        return None


def _guard(callback: Callable, *args) -> None:
    """A callback's exception is logged, never allowed to close the stream or kill the thread."""
    try:
        callback(*args)
    except Exception:
        log.exception("an IPC event handler failed")


def _keep_open(error: Exception) -> bool:
    log.warning("IPC stream error: %s", error)
    return False
