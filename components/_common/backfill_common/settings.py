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
`access` (optional) names the topic settings and what the component does with them
({key: [(service, operation), ...]}): a topic the component's own accessControl (in its
configuration) does not allow is refused with the reason, as a bad value is.
A shadow whose desired.<section> (or desired, or state) is not an object is refused too,
with a word: the configuration applies.

The last good values survive a restart when the runner keeps them in its work folder:

    settings.restore(last_good.load(path))     # before the first apply
    last_good.save(path, change.effective)      # after a change
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Callable, Optional

import jsonschema

from . import access as access_rules
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
                 together: Optional[Callable[[dict], list]] = None,
                 access: Optional[dict] = None, thing: str = "",
                 expand: Callable[[str, str], str] = lambda topic, thing: topic) -> None:
        schema = contracts.schema_of(schema_name)
        self.together = together
        self.access = access or {}
        self.thing, self.expand = thing, expand
        self._access_control: object = None     # the configuration's accessControl (None: not known)
        self._shadow_error: str | None = None   # why the shadow's section is ignored, while it is
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

    def restore(self, saved: object) -> None:
        """Start from the values an earlier process had in effect (its last good ones), so
        that a refused value keeps them and not the schema's default. A saved value that is
        no longer allowed is left out."""
        if isinstance(saved, dict):
            for key, value in saved.items():
                if key in self.properties and self.problem(key, value) is None:
                    self.effective[key] = self._normalise(key, value)

    def denied(self, key: str, value: object) -> str | None:
        """Why the component's accessControl does not allow the topic `value` of `key`, or None."""
        for service, operation in self.access.get(key, ()):
            topic = self.expand(str(value), self.thing)
            why = access_rules.denied(self._access_control, service, operation, topic, self.thing)
            if why is None and service == access_rules.MQTT:
                why = access_rules.foreign_thing(self._access_control, operation, topic, self.thing)
            if why is not None:
                return f"{key}: {why}"
        return None

    def apply(self, config: dict | None = None, desired: dict | None = None,
              shadow: object = False) -> Change:
        """New layers replace the old ones (None keeps a layer as it was). `shadow`: a whole
        shadow document (None: no shadow), whose desired.<section> is the second layer."""
        shadow_error = None
        if shadow is not False:
            desired, shadow_error = desired_of(shadow, self.section)
        if config is not None:
            self._access_control = config.get("accessControl") if isinstance(config, dict) else None
            self._config = {k: v for k, v in config.items() if k not in IGNORED_KEYS}
        if desired is not None:
            self._desired = desired if isinstance(desired, dict) else {}
            self._shadow_error = shadow_error if isinstance(desired, dict) else (
                f"shadow state.desired.{self.section}: {_kind(desired)}, not an object: ignored "
                f"(the configuration applies)")
        new, errors = copy.deepcopy(self.defaults), []
        if self._shadow_error:
            errors.append(self._shadow_error)
        for origin, layer in (("configuration", self._config), (f"shadow desired.{self.section}", self._desired)):
            for key, value in layer.items():
                why = self.problem(key, value) or (self.denied(key, value) if key in self.access else None)
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


def _kind(value: object) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text[:40]}{'...' if len(text) > 40 else ''}"


def desired_of(document: object, section: str) -> tuple[dict, str | None]:
    """(desired.<section> of a shadow document, why it was ignored or None). A missing shadow,
    state, desired or section is {} without a word (the configuration applies again); one
    that is there but not an object is {} with the reason."""
    value = document
    for name, where in (("state", "the shadow document"), ("desired", "state"), (section, "state.desired")):
        if value is None:
            return {}, None
        if not isinstance(value, dict):
            return {}, f"shadow {where}: {_kind(value)}, not an object: desired.{section} ignored (the configuration applies)"
        value = value.get(name)
    if value is None:
        return {}, None
    if not isinstance(value, dict):
        return {}, f"shadow state.desired.{section}: {_kind(value)}, not an object: ignored (the configuration applies)"
    return value, None
