"""IoT Core topic rules as the nucleus checks them, and its local routing match.

`validate(topic, publish=True)` raises TopicError with IotCoreTopicValidator's texts
(docs/mqtt-spool.md 1): no wildcards in a publish topic; at most 7 slashes and 256
characters, not counting a Basic Ingest prefix `$aws/rules/<rule>/` (or `$share/<g>/`
for a subscription); other `$aws/` topics only up to 512. Lengths are counted in UTF-16
units, as Java's String.length() does.

`covers(filter, topic)` is MqttTopic.isSupersetOf, which routes cloud messages to local
subscribers: `+` one level, `#` the rest, but "a/#" does NOT cover "a".
"""

from __future__ import annotations


class TopicError(ValueError):
    pass


def _java_length(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def validate(topic: str | None, publish: bool) -> None:
    if topic is None or not topic.strip():
        raise TopicError("Topic must not be empty")
    if publish and ("#" in topic or "+" in topic):
        raise TopicError("Publish topics must not contain wildcard characters of '#' or '+'")
    lowered = topic.lower()
    effective = topic
    if lowered.startswith("$aws/rules/"):
        parts = topic.split("/", 3)
        effective = parts[3] if len(parts) > 3 else ""
        if not effective:
            raise TopicError("Effective direct ingest topic (without '$aws/rules/rule-name/' prefix) is empty")
    elif not publish and lowered.startswith("$share/"):
        parts = topic.split("/", 2)
        effective = parts[2] if len(parts) > 2 else ""
        if not effective:
            raise TopicError("Effective shared subscription topic (without '$share/share-group/' prefix) is empty")
    elif lowered.startswith("$aws/"):
        if _java_length(topic) > 512:
            raise TopicError("Reserved topic total length is greater than 512 bytes of UTF-8 encoded characters and "
                             "is most likely over the IoT Core limit of 256 bytes (excluding prefixes).")
        return
    if effective.count("/") > 7:
        raise TopicError("The request topic must have no more than 7 forward slashes (/)")
    if _java_length(effective) > 256:
        suffix = "" if publish else " or first 2 mandatory segments for MQTT Shared Subscriptions ($share/share-name/)"
        raise TopicError("The topic size of request must be no larger than 256 bytes of UTF-8 encoded characters. "
                         "This excludes the first 3 mandatory segments for Basic Ingest topics "
                         f"($AWS/rules/rule-name/){suffix}")


def covers(topic_filter: str, topic: str) -> bool:
    """MqttTopic.isSupersetOf: does the filter cover the topic (or a narrower filter)?"""
    f, t = topic_filter.split("/"), topic.split("/")
    for i in range(min(len(f), len(t))):
        if f[i] == "#":
            return True
        if f[i] != "+" and f[i] != t[i]:
            return False
    return len(f) == len(t)
