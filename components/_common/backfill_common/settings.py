"""Effective settings of a component: the schema's defaults, then the deployment
configuration, then the shadow's desired.<section> (per-device overrides). Pure.

    settings = Settings("config-sensor", "sampling")
    change = settings.apply(config=ipc.get_configuration())       # at start
    change = settings.apply(desired=document["state"]["desired"].get("sampling"))
    change.effective, change.changed, change.errors      # errors: refusals not reported before

Every key is checked on its own against its property in the schema: a bad value is
refused with its key and the allowed range, and the last good value of that key stays.
Keys the schema does not know are reported once (accessControl is Greengrass's own).
`together(effective)` (optional) checks keys against each other: it returns (keys, why)
for each rule broken, and the keys of that rule keep their last good values.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Callable, Optional

import jsonschema

from . import contracts

IGNORED_KEYS = {"accessControl"}


@dataclass
class Change:
    effective: dict
    changed: set[str] = field(default_factory=set)
    errors: list[str] = field(default_factory=list)


def allowed(prop: dict) -> str:
    """A person's description of what a schema property allows."""
    if "enum" in prop:
        return "one of " + ", ".join(repr(v) for v in prop["enum"])
    kind = prop.get("type", "value")
    kind = " or ".join(kind) if isinstance(kind, list) else kind
    low, high = prop.get("minimum"), prop.get("maximum")
    if low is not None and high is not None:
        return f"{kind} from {low} to {high}"
    if low is not None:
        return f"{kind} >= {low}"
    if high is not None:
        return f"{kind} <= {high}"
    if "maxLength" in prop:
        return f"{kind} of {prop.get('minLength', 0)} to {prop['maxLength']} characters"
    return kind


class Settings:
    def __init__(self, schema_name: str, section: str,
                 together: Optional[Callable[[dict], list]] = None) -> None:
        schema = contracts.schema_of(schema_name)
        self.together = together
        self.section = section
        self.properties: dict[str, dict] = schema["properties"]
        self.defaults = {key: prop["default"] for key, prop in self.properties.items() if "default" in prop}
        self._validators = {key: jsonschema.Draft202012Validator(prop) for key, prop in self.properties.items()}
        self._config: dict = {}
        self._desired: dict = {}
        self.effective: dict = copy.deepcopy(self.defaults)
        self.problems: list[str] = []     # every refusal in force now

    def problem(self, key: str, value: object) -> str | None:
        """Why `value` is not allowed for `key`, or None."""
        if key not in self.properties:
            return f"{key}: unknown setting (known: {', '.join(sorted(self.properties))})"
        if isinstance(value, bool) and self.properties[key].get("type") in ("number", "integer"):
            return f"{key}: {value!r} is not allowed (allowed: {allowed(self.properties[key])})"
        if not self._validators[key].is_valid(value):
            return f"{key}: {value!r} is not allowed (allowed: {allowed(self.properties[key])})"
        return None

    def apply(self, config: dict | None = None, desired: dict | None = None) -> Change:
        """New layers replace the old ones (None keeps a layer as it was)."""
        if config is not None:
            self._config = {k: v for k, v in config.items() if k not in IGNORED_KEYS}
        if desired is not None:
            self._desired = desired if isinstance(desired, dict) else {}
        new, errors = copy.deepcopy(self.defaults), []
        for origin, layer in (("configuration", self._config), (f"shadow desired.{self.section}", self._desired)):
            for key, value in layer.items():
                why = self.problem(key, value)
                if why is None:
                    new[key] = self._normalise(key, value)
                else:
                    errors.append(f"{origin}: {why}; keeping {self.effective.get(key)!r}")
                    if key in self.effective:
                        new[key] = self.effective[key]
        for _ in range(4):                # a rule broken: its keys keep their last good values
            broken = self.together(new) if self.together is not None else []
            if not broken:
                break
            for keys, why in broken:
                values = ", ".join(f"{k} {new.get(k)!r}" for k in keys)
                kept = ", ".join(f"{k} {self.effective.get(k)!r}" for k in keys)
                errors.append(f"{values}: {why}; keeping {kept}")
                for key in keys:
                    new[key] = self.effective.get(key, self.defaults.get(key))
            if new == self.effective:
                break
        changed = {k for k in set(new) | set(self.effective) if new.get(k) != self.effective.get(k)}
        fresh = [e for e in errors if e not in self.problems]
        self.effective, self.problems = new, errors
        return Change(copy.deepcopy(new), changed, fresh)

    def _normalise(self, key: str, value: object) -> object:
        # Greengrass hands JSON numbers back as doubles (5 -> 5.0)
        if self.properties[key].get("type") == "integer" and isinstance(value, float):
            return int(value)
        return value
