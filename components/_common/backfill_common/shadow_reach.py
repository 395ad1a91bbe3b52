"""Whether this deployment lets a component use the `backfill` shadow, judged from its own
accessControl before it tries (a refused SubscribeToTopic would otherwise end it). Pure.

    reach = ShadowReach(thing="pi-1", shadow="backfill", log=log)
    if reach.check(config):            # config: GetConfiguration's answer
        ipc.on_shadow_document(...)    # ... read, follow and report the shadow
    # else: said once in the log; the component runs on its deployment configuration

Why: the recipes name the core's own thing in accessControl (`{iot:thingName}`), and the
nucleus replaces it only when `aws.greengrass.Nucleus` has
`interpolateComponentConfiguration: true` (nucleus >= 2.6; false by default). A console
deployment of the bundle alone leaves it false, so every shadow operation is refused
(UnauthorizedError, the resource still reads `{iot:thingName}` literally). The nucleus
compares resources literally then, so this judges them literally too (`access.denied`
with no thing name to substitute).
"""

from __future__ import annotations

import logging
from typing import Optional

from .access import PUBSUB, SUBSCRIBE, THING, denied

SHADOW_MANAGER = "aws.greengrass.ShadowManager"
GET_SHADOW = "aws.greengrass#GetThingShadow"
UPDATE_SHADOW = "aws.greengrass#UpdateThingShadow"
FIX = ("set the Nucleus's configuration interpolateComponentConfiguration to true in the same deployment "
       "(aws.greengrass.Nucleus, merge {\"interpolateComponentConfiguration\": true}; nucleus >= 2.6), "
       "and ShadowManager's synchronize for the named shadow backfill to see it in the cloud "
       "(README, \"From the console\")")


def unreachable(config: object, thing: str, shadow: str) -> Optional[str]:
    """Why the nucleus would refuse this component's shadow operations, or None when it would
    allow them (or when there is no accessControl to judge by)."""
    access = config.get("accessControl") if isinstance(config, dict) else None
    if not isinstance(access, dict) or not thing:
        return None
    document = f"$aws/things/{thing}/shadow/name/{shadow}"
    needed = ((SHADOW_MANAGER, GET_SHADOW, document), (SHADOW_MANAGER, UPDATE_SHADOW, document),
              (PUBSUB, SUBSCRIBE, f"{document}/update/documents"))
    refused = [f"{operation.split('#')[1]} {topic}" for service, operation, topic in needed
               if denied(access, service, operation, topic) is not None]
    if not refused:
        return None
    literal = any(THING in resource for resource in _resources(access))
    cause = (f"this component's accessControl still reads {THING} literally (the nucleus does not "
             "interpolate component configuration)" if literal else "this component's accessControl does not allow it")
    return (f"the {shadow} shadow is out of reach: {cause}, so the nucleus would refuse "
            f"{'; '.join(refused)}. Running on the deployment configuration alone (no shadow "
            f"overrides, nothing reported); readings are not affected. To use the shadow: "
            + (FIX if literal else "add these to accessControl"))


def _resources(access: dict) -> list:
    out = []
    for block in access.values():
        for policy in (block.values() if isinstance(block, dict) else ()):
            if isinstance(policy, dict) and isinstance(policy.get("resources"), list):
                out += [str(r) for r in policy["resources"]]
    return out


class ShadowReach:
    """The shadow's reachability as configurations come: says once when it is out of reach,
    once when it comes into reach."""

    def __init__(self, thing: str, shadow: str, log: logging.Logger) -> None:
        self.thing, self.shadow, self._log = thing, shadow, log
        self.reachable: Optional[bool] = None       # None: not judged yet
        self.why: Optional[str] = None
        self.followed = False                       # its documents are subscribed to
        self.read_pending = False                   # followed, GetThingShadow still owed
        self._failing: Optional[str] = None         # a transient failure, said once

    @property
    def pending(self) -> bool:
        """A subscription or a read is still owed (try follow_shadow again later)."""
        return self.reachable is not False and (not self.followed or self.read_pending)

    def failed(self, why: str) -> None:
        """A transient failure (not a refusal): tried again later, said once."""
        if self._failing is None:
            self._log.warning("could not follow the %s shadow yet (%s); trying again every few seconds",
                              self.shadow, why)
        self._failing = why

    def succeeded(self) -> None:
        if self._failing is not None:
            self._log.info("following the %s shadow now", self.shadow)
        self._failing = None

    def refused(self, why: str) -> None:
        """The nucleus refused a shadow operation all the same: out of reach, said once."""
        if self.reachable is not False:
            self._log.warning("the %s shadow is out of reach (%s); running on the deployment "
                              "configuration alone; readings are not affected", self.shadow, why)
        self.reachable, self.why = False, why

    def check(self, config: object) -> bool:
        """Judge `config` (None: a failed read, the judgement stays). True when reachable."""
        if config is None:
            return bool(self.reachable) if self.reachable is not None else True
        why = unreachable(config, self.thing, self.shadow)
        if why is not None and self.reachable is not False:
            self._log.warning("%s", why)
        elif why is None and self.reachable is False:
            self._log.info("the %s shadow is in reach now: following it", self.shadow)
        self.reachable, self.why = why is None, why
        return why is None
