"""MQTT-style topic filters, as local pub/sub and the MQTT bridge use them.

`matches("a/+/c", "a/b/c")` -> True; `matches("a/#", "a")` -> True (MQTT 3.1.1 4.7.1.2:
"sport/#" also matches "sport"). `+` matches exactly one level, `#` the rest.
"""

from __future__ import annotations

from functools import lru_cache


def has_wildcard(topic: str) -> bool:
    return "+" in topic or "#" in topic


@lru_cache(maxsize=4096)
def _levels(topic: str) -> tuple[str, ...]:
    return tuple(topic.split("/"))


def matches(topic_filter: str, topic: str) -> bool:
    """Whether `topic` matches the MQTT filter `topic_filter`."""
    if topic_filter == topic:
        return True
    f_levels, t_levels = _levels(topic_filter), _levels(topic)
    for i, level in enumerate(f_levels):
        if level == "#":
            return True
        if i >= len(t_levels):
            return False
        if level != "+" and level != t_levels[i]:
            return False
    return len(f_levels) == len(t_levels)


def valid_filter(topic_filter: str) -> bool:
    """MQTT filter rules: `#` only as the last whole level, `+` only as a whole level."""
    if not topic_filter:
        return False
    levels = topic_filter.split("/")
    for i, level in enumerate(levels):
        if "#" in level and (level != "#" or i != len(levels) - 1):
            return False
        if "+" in level and level != "+":
            return False
    return True


def glob_matches(pattern: str, value: str) -> bool:
    """`*` matches any run of characters (the nucleus's resource wildcard); nothing else is special."""
    parts = pattern.split("*")
    if len(parts) == 1:
        return pattern == value
    if not value.startswith(parts[0]):
        return False
    pos = len(parts[0])
    for middle in parts[1:-1]:
        found = value.find(middle, pos)
        if found < 0:
            return False
        pos = found + len(middle)
    return value.endswith(parts[-1]) and len(value) - len(parts[-1]) >= pos
