"""Local publish/subscribe between components, with the nucleus's matching rules.

Usage::

    bus = PubSub()
    sub = bus.subscribe("sensors/+", "com.example.Sink", None, deliver)   # deliver(event_body)
    bus.publish("sensors/t", "com.example.Source", {"jsonMessage": {"message": {...}}})
    sub.cancel()

Rules (`PubSubIPCEventStreamAgent.java`, `SubscriptionTrie.java`; docs/ipc-services.md 2.2-2.3):
- a topic is split on '/', and trailing empty levels are dropped ("a/" is "a");
- `+` matches exactly one level (an empty one too); `#` matches one or more further
  levels but NOT the parent ("a/#" does not match "a"); a `#` that is not last acts as `+`;
  '$' topics are not special ("#" matches "$aws/...");
- receive mode RECEIVE_MESSAGES_FROM_OTHERS skips messages the subscribing component
  published itself; the default is FROM_OTHERS for a wildcard subscription (a level
  that is `+`, or a last level `#`) and RECEIVE_ALL_MESSAGES otherwise;
- each matching subscription gets its own copy, in publish order.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable

log = logging.getLogger("localgg.pubsub")

RECEIVE_ALL = "RECEIVE_ALL_MESSAGES"
FROM_OTHERS = "RECEIVE_MESSAGES_FROM_OTHERS"


def split_topic(topic: str) -> tuple[str, ...]:
    """Java's String.split("/"): trailing empty levels are dropped."""
    levels = topic.split("/")
    while levels and levels[-1] == "":
        levels.pop()
    return tuple(levels)


def is_wildcard(topic: str) -> bool:
    levels = split_topic(topic)
    return "+" in levels or (bool(levels) and levels[-1] == "#")


def filter_matches(filter_levels: tuple[str, ...], topic_levels: tuple[str, ...]) -> bool:
    for i, level in enumerate(filter_levels):
        if level == "#" and i == len(filter_levels) - 1:
            return len(topic_levels) > i
        if i >= len(topic_levels):
            return False
        if level not in ("+", "#") and level != topic_levels[i]:
            return False
    return len(filter_levels) == len(topic_levels)


@dataclass(eq=False)
class Subscription:
    topic: str
    component: str
    receive_mode: str
    deliver: Callable[[dict], None]
    levels: tuple[str, ...] = ()
    bus: "PubSub | None" = field(default=None, repr=False)

    def cancel(self) -> None:
        if self.bus is not None:
            self.bus._remove(self)
            self.bus = None


class PubSub:
    def __init__(self) -> None:
        self._exact: dict[tuple[str, ...], list[Subscription]] = {}
        self._wild: list[Subscription] = []

    def subscribe(self, topic: str, component: str, receive_mode: str | None,
                  deliver: Callable[[dict], None]) -> Subscription:
        if receive_mode not in (RECEIVE_ALL, FROM_OTHERS):
            receive_mode = FROM_OTHERS if is_wildcard(topic) else RECEIVE_ALL
        levels = split_topic(topic)
        sub = Subscription(topic, component, receive_mode, deliver, levels, self)
        if "+" in levels or "#" in levels:
            self._wild.append(sub)
        else:
            self._exact.setdefault(levels, []).append(sub)
        return sub

    def _remove(self, sub: Subscription) -> None:
        if sub in self._wild:
            self._wild.remove(sub)
            return
        subs = self._exact.get(sub.levels, [])
        if sub in subs:
            subs.remove(sub)
            if not subs:
                del self._exact[sub.levels]

    def matching(self, topic: str) -> list[Subscription]:
        levels = split_topic(topic)
        found = list(self._exact.get(levels, ()))
        found.extend(s for s in self._wild if filter_matches(s.levels, levels))
        return found

    def publish(self, topic: str, source: str, message: dict) -> int:
        """Deliver `message` (a PublishMessage union) to every matching subscriber.

        Each gets `{<jsonMessage|binaryMessage>: {"message": ..., "context": {"topic": topic}}}`.
        Returns how many subscriptions it was delivered to."""
        count = 0
        for sub in self.matching(topic):
            if sub.receive_mode == FROM_OTHERS and sub.component == source:
                continue
            body = {}
            for kind in ("jsonMessage", "binaryMessage"):
                if kind in message:
                    body[kind] = {"message": message[kind].get("message"), "context": {"topic": topic}}
            try:
                sub.deliver(body)
            except Exception:  # one subscriber's failure is not the publisher's nor the others'
                log.exception("delivering to %s's subscription %s failed", sub.component, sub.topic)
                continue
            count += 1
        return count

    @property
    def subscription_count(self) -> int:
        return len(self._wild) + sum(len(v) for v in self._exact.values())
