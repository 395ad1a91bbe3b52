"""What a full shadow sync decides, without doing it (ShadowManager's FullShadowSyncRequest).

Usage::

    plan = full_sync(local, cloud, record)     # Shadow | None, Shadow | None, SyncRecord
    plan.update_local / plan.update_cloud      # a state patch {"state": {...}} or None
    plan.delete_local / plan.delete_cloud      # bool

Rules (sync/model/FullShadowSyncRequest.java, util/SyncNodeMerger.java; docs/shadow.md 4.4):
- neither side has the shadow: nothing;
- only one side has it: it is copied to the other on the first sync, or if it changed
  since the last sync; otherwise the other side deleted it since, and it is deleted;
- both: unchanged versions on both sides mean nothing to do; else `reported` is merged
  with the DEVICE as owner and `desired` with the CLOUD as owner, against the last synced
  document: where both changed a field, the owner's value wins; where one changed it, that
  value; with no last synced document the owner's whole section is taken. A field that
  ends up null is sent as null (a delete).
- direction deviceToCloud / cloudToDevice: the source side overwrites the other.
"""

from __future__ import annotations

from dataclasses import dataclass

from .document import Shadow

BOTH_WAYS, DEVICE_TO_CLOUD, CLOUD_TO_DEVICE = "betweenDeviceAndCloud", "deviceToCloud", "cloudToDevice"
LOCAL_OWNER, CLOUD_OWNER = "local", "cloud"


@dataclass
class SyncRecord:
    """The sync table's row for one shadow."""
    last_synced: dict | None = None   # {"desired": ..., "reported": ...} as last agreed
    local_version: int = 0
    cloud_version: int = 0
    last_sync_time: int = 0           # epoch seconds; 0: never synced


@dataclass
class SyncPlan:
    update_local: dict | None = None
    update_cloud: dict | None = None
    delete_local: bool = False
    delete_cloud: bool = False
    agreed: dict | None = None        # the new last-synced state


def _latest(metadata: object) -> int:
    if isinstance(metadata, dict):
        if set(metadata) == {"timestamp"} and isinstance(metadata["timestamp"], int):
            return metadata["timestamp"]
        return max([_latest(v) for v in metadata.values()] + [0])
    if isinstance(metadata, list):
        return max([_latest(v) for v in metadata] + [0])
    return 0


def merge_node(local: object, cloud: object, base: object, owner: str) -> object:
    """SyncNodeMerger.getMergedNode: a three-way merge of one value (None = absent)."""
    if local is None and cloud is None:
        return None
    if all(isinstance(x, dict) for x in (local, cloud, base)):
        merged = {}
        for key in list(local) + [k for k in cloud if k not in local]:
            merged[key] = merge_node(local.get(key), cloud.get(key), base.get(key), owner)
        return merged
    local_changed, cloud_changed = local != base, cloud != base
    owners = local if owner == LOCAL_OWNER else cloud
    if local_changed and cloud_changed:
        return owners
    if local_changed:
        return local
    if cloud_changed:
        return cloud
    return owners


def _section(shadow: Shadow, name: str) -> dict | None:
    return shadow.state.get(name)


def full_sync(local: Shadow | None, cloud: Shadow | None, record: SyncRecord,
              direction: str = BOTH_WAYS) -> SyncPlan:
    if direction == DEVICE_TO_CLOUD:
        if local is None:
            return SyncPlan(delete_cloud=cloud is not None)
        return SyncPlan(update_cloud={"state": dict(local.state)} if record.local_version != local.version
                        or cloud is None else None, agreed=dict(local.state))
    if direction == CLOUD_TO_DEVICE:
        if cloud is None:
            return SyncPlan(delete_local=local is not None)
        return SyncPlan(update_local={"state": dict(cloud.state)} if record.cloud_version != cloud.version
                        or local is None else None, agreed=dict(cloud.state))
    first = record.last_sync_time == 0 or record.last_synced is None
    if local is None and cloud is None:
        return SyncPlan()
    if cloud is None:
        if first or _latest(local.metadata) > record.last_sync_time:
            return SyncPlan(update_cloud={"state": dict(local.state)}, agreed=dict(local.state))
        return SyncPlan(delete_local=True)
    if local is None:
        if first or _latest(cloud.metadata) > record.last_sync_time:
            return SyncPlan(update_local={"state": dict(cloud.state)}, agreed=dict(cloud.state))
        return SyncPlan(delete_cloud=True)
    cloud_changed = cloud.version != record.cloud_version
    local_changed = local.version != record.local_version
    if not first and not cloud_changed and not local_changed:
        return SyncPlan(agreed=record.last_synced)
    base = record.last_synced or {}
    if first:
        desired, reported = _section(cloud, "desired"), _section(local, "reported")
    else:
        desired = merge_node(_section(local, "desired"), _section(cloud, "desired"), base.get("desired"), CLOUD_OWNER)
        reported = merge_node(_section(local, "reported"), _section(cloud, "reported"), base.get("reported"),
                              LOCAL_OWNER)
    state = {k: v for k, v in (("desired", desired), ("reported", reported)) if v is not None}
    agreed = {k: _drop_nulls(v) for k, v in state.items()}
    plan = SyncPlan(agreed=agreed)
    if first or cloud_changed:
        plan.update_local = {"state": _with_deletions(state, local.state)}
    if first or local_changed:
        plan.update_cloud = {"state": _with_deletions(state, cloud.state)}
    return plan


def _drop_nulls(value: object) -> object:
    if isinstance(value, dict):
        return {k: _drop_nulls(v) for k, v in value.items() if v is not None}
    return value


def _with_deletions(target: dict, current: dict) -> dict:
    """`target` as an update patch for a side holding `current`: fields to remove become null."""
    patch = {}
    for key, value in target.items():
        old = current.get(key)
        patch[key] = _patch(value, old)
    return patch


def _patch(value: object, old: object) -> object:
    if isinstance(value, dict) and isinstance(old, dict):
        out = {k: _patch(v, old.get(k)) for k, v in value.items()}
        for key in old:
            if key not in value:
                out[key] = None
        return out
    return value
