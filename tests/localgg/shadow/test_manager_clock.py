"""ShadowManager and its sync take their time from the injected clock (issue 8), not time.time():
the timestamps of accepted, get and list responses, and of the sync record."""

from __future__ import annotations

import asyncio
import json

from localgg.authz import Authorizer
from localgg.configstore import ConfigStore
from localgg.pubsub import PubSub
from localgg.shadow.manager import NAME, ShadowManager

NOW = 1_000_000.5
ACCESS = {"accessControl": {NAME: {"p1": {"operations": ["*"], "resources": ["*"]}}}}


class OfflineIoTCore:
    online = False

    def add_listener(self, listener) -> None:
        pass


def test_responses_carry_the_injected_clock(tmp_path):
    async def scenario() -> tuple[dict, dict, dict]:
        config = ConfigStore(lambda: 1)
        config.replace("com.ex.App", ACCESS, 1)
        authz = Authorizer(lambda component: config.view(component, ["accessControl"]))
        manager = ShadowManager(config, PubSub(), authz, OfflineIoTCore(), "thing", tmp_path / "shadow.db",
                                lambda name: name == NAME, lambda: NOW)
        await manager.start()
        try:
            accepted = json.loads(manager.update("com.ex.App", "thing", "", b'{"state": {"reported": {"v": 1}}}'))
            got = json.loads(manager.get("com.ex.App", "thing", ""))
            listed = manager.list_named("com.ex.App", "thing", None, None)
        finally:
            await manager.stop()
        return accepted, got, listed

    accepted, got, listed = asyncio.run(scenario())
    assert accepted["timestamp"] == int(NOW)
    assert accepted["metadata"]["reported"]["v"]["timestamp"] == int(NOW)
    assert got["timestamp"] == int(NOW)
    assert listed["timestamp"] == NOW
