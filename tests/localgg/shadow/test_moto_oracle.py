"""The CLOUD flavour against moto's FakeShadow, an independent model of AWS IoT shadows.

Hypothesis generates sequences of updates (desired/reported patches with nested objects,
scalar and array changes, deletions by null, `"state": null`, copies of the other section
with 3 and 3.0 swapped) and deletes; after every
step the stored state, the version, the delta and the metadata SHAPE must equal moto's,
and the leaves whose timestamp our update set must be exactly the leaves moto's
update response stamps (moto's stored timestamps cannot be compared: see 1).

The 14 known moto differences (scripts/localgg/docs/shadow.md section 2.4) and how each
is kept out of the generated domain or asserted below:
 1. moto re-stamps EVERY leaf on each update (time.time()); we keep old timestamps →
    compare metadata shape + the set of stamped leaves; asserted in test_moto_restamps_everything.
 2. `"desired": null` is ignored by moto → never generated; asserted.
 3. `"desired": {}` is a no-op in moto and nested `{}` is stored → never generated; asserted.
 4. moto's delta keeps `{}` for equal nested subsets → moto's delta is pruned of empty
    objects before comparing; asserted.
 5. moto compares with Python == (True == 1, [1] == [1.0]) → scalars are 2, 3, 3.0, 2.5,
    a string and booleans, arrays hold ints only, so == and Jackson's rules agree; asserted.
 6. nulls on a first write: both drop them (CLOUD) → generated.
 7. validation (state.delta, unknown keys, missing state, invalid JSON): FakeShadow has
    none (it is in the backend) → only valid requests are generated; see test_document.py.
 8. a version on a missing shadow crashes moto → `version` is only sent when the shadow exists.
 9. moto's update response has no clientToken and drops nested nulls of new keys → only
    the stamped-leaf set is taken from it (nulls are not leaves of the state).
10. get timestamp = last update in moto → not compared (get_payload uses `now`).
11. delete: moto's tombstone is version + 1 and the next update version + 2, as ours
    (tombstone_version / deleted_version) → compared; moto's delete response says v + 1
    where AWS and ShadowManager say v → asserted.
12. list_named_shadows (deleted shadows listed by moto) → not part of this model.
13. no size/depth/clientToken limits in moto → generated documents are small and shallow.
14. `"state": null` → same in both → generated.
Emptied objects: moto keeps `{}` after its last key is deleted and creates `{}` from an
object of nulls; we keep the first but not the second, and the deltas of `{}` differ →
nested patches always carry a non-null "y", so no object is ever emptied.

test_local_flavour_matches_moto_where_they_agree replays the same sequences with flavour=LOCAL
(ShadowManager) and asserts the same things. All 14 exclusions above hold for it too; the
LOCAL-vs-CLOUD list in document.py's docstring (LOCAL n below) adds:
 L1 (LOCAL 8) nulls in a first write into an absent section, or inside an object that replaces
    a non-object, are stored by LOCAL (with no metadata) and dropped by moto → `agreeable`
    strips exactly those nulls from the request (a section left empty is left out, see 3)
    before both see it; asserted in test_local_keeps_first_write_nulls.
 L2 (LOCAL 11) versions restart at 1 after a delete (deleted_version is ignored); moto goes on
    from its tombstone → the versions must differ by exactly moto's last tombstone; asserted.
 L3 (LOCAL 10) stale metadata.desired after `"desired": {}` with reported present → never
    generated (see 3); asserted in test_local_desired_empty_quirks.
 L4 (LOCAL 6) versions: LOCAL cuts numbers to int and wants 1 on a missing shadow, moto
    ignores `version` (see 8) → only the current integer version of an existing shadow is sent.
 L5 (LOCAL 9) a key named "state" inside a section clears or no-ops it in LOCAL only → keys
    are only "a" and "b".
 L6 (LOCAL 1-5, 7, 12) parsing, schema, state.delta, clientToken length, arrays holding null,
    key order → only valid requests with int arrays are generated, payload order not compared.
Everything else (merge, deletion by null, `"state": null`, `{"state": {}}`, mirrored sections,
delete, delta, metadata shape, stamped and kept timestamps) must be equal, as for CLOUD.
"""

from __future__ import annotations

import copy
import json

from hypothesis import given, settings
from hypothesis import strategies as st
from moto.iotdata.models import FakeShadow

from localgg.shadow import document as sd
from localgg.shadow.document import CLOUD, LOCAL

SCALAR = st.sampled_from([2, 3, 3.0, 2.5, "s", True, False])   # few values: equal ones meet often
ARRAY = st.lists(st.integers(2, 3), max_size=2)
NESTED = st.fixed_dictionaries({"y": SCALAR}, optional={"x": st.one_of(st.none(), SCALAR, ARRAY)})
PATCH = st.dictionaries(st.sampled_from("ab"), st.one_of(st.none(), SCALAR, ARRAY, NESTED), min_size=1, max_size=3)
STATE = st.one_of(st.none(), st.fixed_dictionaries({}, optional={"desired": PATCH, "reported": PATCH}))
UPDATE = st.tuples(STATE, st.booleans(), st.booleans())      # state, send version, send clientToken
MIRROR = st.tuples(st.just("mirror"), st.sampled_from(["desired", "reported"]))   # copy the other section
OPS = st.lists(st.one_of(UPDATE, UPDATE, MIRROR, st.just("delete")), min_size=2, max_size=7)


def twin(node: object) -> object:
    """The same values with ints and integral floats swapped (3 <-> 3.0); arrays untouched."""
    if isinstance(node, dict):
        return {k: twin(v) for k, v in node.items()}
    if isinstance(node, float) and node.is_integer():
        return int(node)
    return float(node) if type(node) is int else node


def strict(value: object) -> str:
    """A comparison key that tells 3 from 3.0 and True from 1."""
    return json.dumps(value, sort_keys=True)


def prune_empty(node: object) -> object:
    """moto leaves {} in a delta where nested values are equal (difference 4)."""
    if not isinstance(node, dict):
        return node
    kept = {k: prune_empty(v) for k, v in node.items()}
    return {k: v for k, v in kept.items() if v != {}}


def is_leaf(node: object) -> bool:
    return isinstance(node, dict) and list(node) == ["timestamp"] and isinstance(node["timestamp"], int)


def shape(node: object) -> object:
    if is_leaf(node):
        return "T"
    if isinstance(node, dict):
        return {k: shape(v) for k, v in node.items()}
    if isinstance(node, list):
        return [shape(v) for v in node]
    return node


def leaves(node: object, path: tuple = ()) -> dict:
    """{path: timestamp} for every metadata leaf."""
    if is_leaf(node):
        return {path: node["timestamp"]}
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    found = {}
    for key, child in items:
        found.update(leaves(child, path + (key,)))
    return found


def moto_state(shadow: FakeShadow) -> dict:
    return {k: v for k, v in (("desired", shadow.desired), ("reported", shadow.reported)) if v is not None}


def moto_metadata(shadow: FakeShadow) -> dict:
    return {k: v for k, v in (("desired", shadow.metadata_desired), ("reported", shadow.metadata_reported))
            if v is not None}


def check_step(ours: sd.UpdateResult, previous: sd.Shadow | None, moto: FakeShadow, now: int,
               offset: int = 0) -> None:
    shadow = ours.shadow
    assert shadow.version == moto.version - offset
    assert strict(shadow.state) == strict(moto_state(moto))
    expected_delta = prune_empty(FakeShadow.parse_payload(moto.desired, moto.reported)) or None
    assert strict(None if ours.delta is None else ours.delta["state"]) == strict(expected_delta)
    assert shape(shadow.metadata) == shape(moto_metadata(moto))
    if ours.delta is not None:      # delta metadata mirrors desired's, leaf for leaf
        assert shape(ours.delta["metadata"]) == shape(moto._create_metadata_from_state(expected_delta, 0))
        desired_leaves = leaves(shadow.metadata.get("desired"))
        assert all(desired_leaves[p] == t for p, t in leaves(ours.delta["metadata"]).items())
    stamped = {p for p, t in leaves(shadow.metadata).items() if t == now}
    assert stamped == set(leaves(moto.to_response_dict()["metadata"])) & set(leaves(moto_metadata(moto)))
    old = leaves(previous.metadata) if previous is not None else {}
    assert all(old[p] == t for p, t in leaves(shadow.metadata).items() if p not in stamped)


def strip_nulls(node: object) -> object:
    return {k: strip_nulls(v) for k, v in node.items() if v is not None} if isinstance(node, dict) else node


def agreeable(patch: dict, old: object) -> dict:
    """`patch` without the nulls LOCAL would store verbatim (L1): those of a first write into an
    absent section and of an object replacing a non-object; nulls merged into objects stay."""
    if not isinstance(old, dict):
        return strip_nulls(patch)
    return {k: agreeable(v, old[k]) if isinstance(v, dict) and k in old else v for k, v in patch.items()}


def replay(ops: list, flavour: str) -> None:
    local = flavour == LOCAL
    ours, moto, tombstone, offset = None, None, None, 0
    for step, op in enumerate(ops, 1):
        now = 1000 * step
        if op == "delete":
            if ours is None:
                continue
            tombstone, ours = sd.tombstone_version(ours), None
            moto = FakeShadow.create_from_previous_version(moto, None)
            assert moto.version == tombstone + offset
            offset = moto.version if local else 0     # L2: LOCAL restarts at 1
            continue
        if op[0] == "mirror":
            source = {"desired": "reported", "reported": "desired"}[op[1]]
            op = ({op[1]: twin((ours.state if ours else {}).get(source) or {"a": 2})}, False, False)
        state, send_version, send_token = op
        if local and state is not None:
            current = ours.state if ours else {}
            state = {k: p for k, v in state.items() if (p := agreeable(v, current.get(k)))}
        request = {"state": state}
        if send_version and ours is not None:
            request["version"] = ours.version
        if send_token:
            request["clientToken"] = f"token-{step}"
        result = sd.update(ours, json.dumps(request).encode(), now, flavour=flavour, deleted_version=tombstone)
        moto = FakeShadow.create_from_previous_version(moto, copy.deepcopy(request))
        check_step(result, ours, moto, now, offset)
        assert result.accepted["state"] == state and result.client_token == request.get("clientToken")
        ours = result.shadow


@settings(max_examples=300, deadline=None)
@given(ops=OPS)
def test_cloud_flavour_matches_moto(ops):
    replay(ops, CLOUD)


@settings(max_examples=300, deadline=None)
@given(ops=OPS)
def test_local_flavour_matches_moto_where_they_agree(ops):
    replay(ops, LOCAL)


def cloud(*states: object, flavour: str = CLOUD) -> tuple[sd.UpdateResult, FakeShadow]:
    ours, moto, result = None, None, None
    for step, state in enumerate(states, 1):
        result = sd.update(ours, json.dumps({"state": state}).encode(), 1000 * step, flavour=flavour)
        ours = result.shadow
        moto = FakeShadow.create_from_previous_version(moto, {"state": copy.deepcopy(state)})
    return result, moto


def test_moto_restamps_everything():                    # difference 1
    ours, moto = cloud({"reported": {"a": 1, "b": 2}}, {"reported": {"b": 3}})
    assert ours.shadow.metadata == {"reported": {"a": {"timestamp": 1000}, "b": {"timestamp": 2000}}}
    assert {t for t in leaves(moto.metadata_reported).values()} == {moto.timestamp}


def test_moto_ignores_null_and_empty_sections():        # differences 2 and 3
    for section in (None, {}):
        ours, moto = cloud({"desired": {"a": 1}, "reported": {"b": 1}}, {"desired": section})
        assert ours.shadow.state == {"reported": {"b": 1}}
        assert moto_state(moto) == {"desired": {"a": 1}, "reported": {"b": 1}}
    ours, moto = cloud({"desired": {"k": 1}}, {"desired": {"a": {}}})
    assert (ours.shadow.state, moto_state(moto)) == ({"desired": {"k": 1}}, {"desired": {"k": 1, "a": {}}})


def test_moto_delta_keeps_empty_objects_and_uses_python_equality():   # differences 4 and 5
    ours, moto = cloud({"desired": {"a": {"x": 2}}, "reported": {"a": {"x": 2, "y": 3}}})
    assert (ours.delta, FakeShadow.parse_payload(moto.desired, moto.reported)) == (None, {"a": {}})
    ours, moto = cloud({"desired": {"a": True, "b": [1]}, "reported": {"a": 1, "b": [1.0]}})
    assert ours.delta["state"] == {"a": True, "b": [1]}
    assert FakeShadow.parse_payload(moto.desired, moto.reported) == {}


def test_delete_versions():                             # difference 11
    ours, moto = cloud({"reported": {"a": 1}}, {"reported": {"a": 2}})
    assert sd.delete_payload(ours.shadow, 5, flavour=CLOUD)["version"] == 2
    tomb = FakeShadow.create_from_previous_version(moto, None)
    assert tomb.to_dict()["version"] == 3 == sd.tombstone_version(ours.shadow)
    again = sd.update(None, b'{"state":{"reported":{"a":3}}}', 9, flavour=CLOUD, deleted_version=3)
    recreated = FakeShadow.create_from_previous_version(tomb, {"state": {"reported": {"a": 3}}})
    assert again.shadow.version == recreated.version == 4


def test_local_keeps_first_write_nulls():                # L1
    first = {"reported": {"a": {"y": 2, "x": None}, "b": None}}
    ours, moto = cloud(first, flavour=LOCAL)
    assert ours.shadow.state == first and moto_state(moto) == {"reported": {"a": {"y": 2}}}
    assert ours.shadow.metadata == {"reported": {"a": {"y": {"timestamp": 1000}}}}
    ours, moto = cloud({"reported": {"a": 3}}, {"reported": {"a": {"y": 2, "x": None}}}, flavour=LOCAL)
    assert ours.shadow.state == {"reported": {"a": {"y": 2, "x": None}}}
    assert moto_state(moto) == {"reported": {"a": {"y": 2}}}
    ours, moto = cloud({"desired": {"a": None}}, {"desired": {"b": 2}}, flavour=LOCAL)
    assert (ours.shadow.state, moto_state(moto)) == ({"desired": {"a": None, "b": 2}}, {"desired": {"b": 2}})
    assert agreeable(first["reported"], None) == {"a": {"y": 2}}
    assert agreeable({"a": {"y": 2, "x": None}, "b": None}, {"a": {"y": 3}}) == {"a": {"y": 2, "x": None}, "b": None}


def test_local_desired_empty_quirks():                  # L3, with moto differences 2 and 3
    for section, stale in ((None, False), ({}, True)):
        ours, moto = cloud({"desired": {"a": 1}, "reported": {"b": 1}}, {"desired": section}, flavour=LOCAL)
        assert ours.shadow.state == {"reported": {"b": 1}} and ("desired" in ours.shadow.metadata) == stale
        assert moto_state(moto) == {"desired": {"a": 1}, "reported": {"b": 1}}


def test_local_versions_restart_after_delete():         # L2
    ours, moto = cloud({"reported": {"a": 1}}, {"reported": {"a": 2}}, flavour=LOCAL)
    tomb = FakeShadow.create_from_previous_version(moto, None)
    again = sd.update(None, b'{"state":{"reported":{"a":3}}}', 9, flavour=LOCAL,
                      deleted_version=sd.tombstone_version(ours.shadow))
    recreated = FakeShadow.create_from_previous_version(tomb, {"state": {"reported": {"a": 3}}})
    assert (again.shadow.version, recreated.version) == (1, 4)
