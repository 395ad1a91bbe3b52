"""The shadow document model (localgg.shadow.document), both flavours, table-driven.

Expected values come from scripts/localgg/docs/shadow.md (sections 1.3-1.7, 2, 6, 7), the
ShadowManager integration test ShadowIPCTest (the V1/V2/V3 documents) and its unit-test
fixtures (json_shadow_examples/*.json).

shadow.md section 7, items 1-12, are covered by: 1 test_accepted_echoes_request_nulls_and_stamps_them,
test_local_drops_state_delta_and_echoes_unknown_state_keys; 2 test_local_unparsable_payload_is_service_error_500;
3 test_local_schema_errors_are_invalid_json_400; 4 test_local_version_must_equal_the_current_one;
5 test_size_*; 6 test_local_drops_state_delta_*, test_empty_state_still_makes_a_version_*; 7 test_shared_merge_rules;
8 test_first_write_into_an_empty_section_keeps_nulls_only_locally; 9 test_delta*; 10 test_metadata_*;
11 test_get_payload_*, test_missing_shadow_texts_*; 12 test_delete_*, test_recreated_shadow_*."""

from __future__ import annotations

import json

import pytest

from localgg.shadow import document as sd
from localgg.shadow.document import CLOUD, LOCAL, Shadow, ShadowError

BOTH = pytest.mark.parametrize("flavour", [LOCAL, CLOUD])
DEPTH_TEXT = "JSON contains too many levels of nesting; maximum is 6"


def encode(payload: object) -> bytes:
    return payload if isinstance(payload, bytes) else json.dumps(payload).encode()


def run(*payloads: object, flavour: str = LOCAL, start: Shadow | None = None, **kw: object) -> sd.UpdateResult:
    """Apply updates in order at now = 100, 200, ...; return the last result."""
    shadow, result = start, None
    for i, payload in enumerate(payloads, 1):
        result = sd.update(shadow, encode(payload), 100 * i, flavour=flavour, **kw)
        shadow = result.shadow
    return result


def rejection(payload: object, flavour: str = LOCAL, current: Shadow | None = None, **kw: object) -> ShadowError:
    with pytest.raises(ShadowError) as info:
        sd.update(current, encode(payload), 7, flavour=flavour, **kw)
    return info.value


def shadow(desired: dict | None = None, reported: dict | None = None, version: int = 3, ts: int = 1) -> Shadow:
    result = run({"state": {k: v for k, v in (("desired", desired), ("reported", reported)) if v}})
    stamp = json.loads(json.dumps(result.shadow.metadata).replace('"timestamp": 100', f'"timestamp": {ts}'))
    return Shadow(result.shadow.state, stamp, version)


def deep(n: int) -> dict:
    """A desired section whose innermost object sits at depth n (the section itself is depth 1)."""
    node: object = 1
    for i in range(n):
        node = {f"d{i}": node}
    return {"state": {"desired": node}, "clientToken": "tok"}


# -- names ---------------------------------------------------------------------------------

@pytest.mark.parametrize("thing, name, message", [
    (None, None, "ThingName is missing"),
    ("", "x", "ThingName is missing"),
    ("a" * 129, None, "ThingName has a maximum length of 128"),
    ("a b", None, "ThingName must match pattern [a-zA-Z0-9:_-]+"),
    ("a/b", None, "ThingName must match pattern [a-zA-Z0-9:_-]+"),
    ("T", "s" * 65, "ShadowName has a maximum length of 64"),
    ("T", "a.b", "ShadowName must match pattern [a-zA-Z0-9:_-]+"),
    ("T", "é", "ShadowName must match pattern [a-zA-Z0-9:_-]+"),
])
def test_bad_names_are_400_with_exact_texts(thing, name, message):
    with pytest.raises(ShadowError) as info:
        sd.validate_names(thing, name)
    assert (info.value.code, info.value.message, info.value.ipc_shape, info.value.ipc_message) == \
        (400, message, "InvalidArgumentsError", message)


@pytest.mark.parametrize("thing, name", [("T", None), ("T", ""), ("a" * 128, "s" * 64), ("a:b_c-D9", "x:y_z-0")])
def test_good_names_pass(thing, name):
    assert sd.validate_names(thing, name) is None


@pytest.mark.parametrize("name, text", [(None, "Unnamed Shadow"), ("", "Unnamed Shadow"), ("cfg", "cfg")])
def test_missing_shadow_texts_differ_between_topic_and_ipc(name, text):
    assert sd.shadow_name_for_messages(name) == text
    error = sd.not_found(name)
    assert (error.code, error.message, error.ipc_shape, error.ipc_message) == \
        (404, f"No shadow exists with name: {text}", "ResourceNotFoundError", "No shadow found")
    assert sd.rejected_payload(error, 5) == \
        {"timestamp": 5, "code": 404, "message": f"No shadow exists with name: {text}"}


# -- LOCAL rejections ----------------------------------------------------------------------

ROOT_SCHEMA = [
    (b"null", "Invalid JSON: "),
    (b"{}", "Invalid JSON: "),
    (b" \r\n\t", "Invalid JSON: "),
    (b"[1]", "Invalid JSON: $: array found, object expected"),
    (b'"x"', "Invalid JSON: $: string found, object expected"),
    (b"5", "Invalid JSON: $: integer found, object expected"),
    (b"1.5", "Invalid JSON: $: number found, object expected"),
    (b"true", "Invalid JSON: $: boolean found, object expected"),
    ({"version": 1}, "Invalid JSON: state: is missing but it is required"),
    ({"state": {}, "version": None}, "Invalid JSON: version: null found, number expected"),
    ({"state": {}, "version": "1"}, "Invalid JSON: version: string found, number expected"),
    ({"state": {}, "version": -1}, "Invalid JSON: version: must have a minimum value of 0"),
    ({"state": {}, "version": -0.5}, "Invalid JSON: version: must have a minimum value of 0"),
    ({"state": "x"}, "Invalid JSON: state: string found, but [object, null] is required"),
    ({"state": []}, "Invalid JSON: state: array found, but [object, null] is required"),
    ({"state": {"desired": 5}}, "Invalid JSON: state.desired: integer found, but [object, null] is required"),
    ({"state": {"reported": [], "desired": "x"}},
     "Invalid JSON: state.desired: string found, but [object, null] is required. "
     "state.reported: array found, but [object, null] is required"),
    ({"state": {"foo": 1, "bar": 2}},
     "Invalid JSON: state.reported: is missing but it is required. state.desired: is missing but it is required. "
     "state.foo: is not defined in the schema and the schema does not allow additional properties. "
     "state.bar: is not defined in the schema and the schema does not allow additional properties"),
    ({"state": {"a$.b": 1}},
     "Invalid JSON: state.reported: is missing but it is required. state.desired: is missing but it is required. "
     "state.ab: is not defined in the schema and the schema does not allow additional properties"),
    ({"state": {}, "clientToken": "x" * 65}, "Invalid JSON: clientToken: may only be 64 characters long"),
    ({"state": {}, "clientToken": 7}, "Invalid JSON: clientToken: integer found, string expected"),
    ({"state": {}, "clientToken": None}, "Invalid JSON: clientToken: null found, string expected"),
    ({"version": "x", "clientToken": 1},
     "Invalid JSON: state: is missing but it is required. clientToken: integer found, string expected. "
     "version: string found, number expected"),
    ({"state": 5, "version": -2, "clientToken": "x" * 65},
     "Invalid JSON: clientToken: may only be 64 characters long. "
     "state: integer found, but [object, null] is required. version: must have a minimum value of 0"),
]


@pytest.mark.parametrize("payload, message", ROOT_SCHEMA)
def test_local_schema_errors_are_invalid_json_400(payload, message):
    error = rejection(payload)
    assert (error.code, error.message, error.ipc_shape, error.ipc_message, error.client_token) == \
        (400, message, "InvalidArgumentsError", message, None)


def test_local_empty_payload_is_missing_update_payload():
    error = rejection(b"")
    assert (error.code, error.message, error.ipc_shape) == (400, "Missing update payload", "InvalidArgumentsError")


@pytest.mark.parametrize("payload", [b"{", b'{"state":\xff}', b"NaN", b'{"state":{"desired":{"a":Infinity}}}',
                                     b'{"state":{"desired":{"a":1}}'])
def test_local_unparsable_payload_is_service_error_500(payload):
    error = rejection(payload)
    assert (error.code, error.message, error.ipc_shape, error.client_token) == \
        (500, "Internal service failure", "ServiceError", None)
    assert error.ipc_message and error.ipc_message != "Internal service failure"


@pytest.mark.parametrize("payload", [
    b'{"state":{"desired":{"a":1}}} trailing junk',                 # Jackson readTree stops after one value
    '{"state":{"desired":{"a":1}}}'.encode("utf-16"),             # and detects UTF-16
    b'\xef\xbb\xbf{"state":{"desired":{"a":1}}}',                 # and skips a UTF-8 BOM
])
def test_local_parser_is_as_lenient_as_jackson(payload):
    assert sd.update(None, payload, 1).shadow.state == {"desired": {"a": 1}}


@pytest.mark.parametrize("flavour", [LOCAL, CLOUD])
@pytest.mark.parametrize("levels, ok", [(6, True), (7, False)])
def test_depth_limit_is_six_levels_below_the_section(flavour, levels, ok):
    if ok:
        assert run(deep(levels), flavour=flavour).shadow.version == 1
    else:
        error = rejection(deep(levels), flavour)
        assert (error.code, error.message, error.client_token) == (400, DEPTH_TEXT, "tok")


@BOTH
@pytest.mark.parametrize("value, ok", [
    ({"a": {"b": {"c": {"d": {"e": {"f": {}}}}}}}, True),          # empty containers never count
    ({"a": [[[[[1]]]]]}, True),                                   # arrays count as a level
    ({"a": [[[[[[1]]]]]]}, False),
    ({"color": {"d1": {"d2": {"d3": {"d4": {"d5": {"d6": {"d7": "v"}}}}}}}}, False),  # bad_..._with_depth.json
])
def test_depth_counts_arrays_but_not_empty_containers(flavour, value, ok):
    for section in ("desired", "reported"):
        payload = {"state": {section: value}}
        if ok:
            assert run(payload, flavour=flavour).shadow.version == 1
        else:
            assert rejection(payload, flavour).message == DEPTH_TEXT


@pytest.mark.parametrize("version, current, code, message, shape", [
    (2, None, 400, "Invalid version", "InvalidArgumentsError"),
    (0, None, 400, "Invalid version", "InvalidArgumentsError"),
    (0, 3, 409, "Version conflict", "ConflictError"),
    (4, 3, 409, "Version conflict", "ConflictError"),
    (2, 3, 409, "Version conflict", "ConflictError"),
])
def test_local_version_must_equal_the_current_one(version, current, code, message, shape):
    existing = None if current is None else shadow({"a": 1}, version=current)
    error = rejection({"state": {"desired": {"a": 2}}, "version": version, "clientToken": "c"}, current=existing)
    assert (error.code, error.message, error.ipc_shape, error.ipc_message, error.client_token) == \
        (code, message, shape, message, "c")
    assert sd.rejected_payload(error, 9) == {"timestamp": 9, "clientToken": "c", "code": code, "message": message}
    assert list(sd.rejected_payload(error, 9)) == ["timestamp", "clientToken", "code", "message"]


@pytest.mark.parametrize("version, current, expected", [(1, None, 1), (1.5, None, 1), (3, 3, 4), (3.9, 3, 4)])
def test_local_matching_version_is_accepted_and_truncated_to_int(version, current, expected):
    existing = None if current is None else shadow({"a": 1}, version=current)
    assert run({"state": {"desired": {"a": 2}}, "version": version}, start=existing).shadow.version == expected


# -- CLOUD rejections ----------------------------------------------------------------------

@pytest.mark.parametrize("payload, code, message", [
    (b"", 400, "Invalid JSON"),
    (b"{", 400, "Invalid JSON"),
    (b"NaN", 400, "Invalid JSON"),
    (b'{"state":{"desired":{"sampling":{"interval_s":1e999}}}}', 400, "Invalid JSON"),   # beyond a double
    (b'{"state":{"reported":{"a":[-1E400]}}}', 400, "Invalid JSON"),
    (b'{"state":{}} junk', 400, "Invalid JSON"),
    (b"[1]", 400, "Invalid JSON"),
    (b"null", 400, "Invalid JSON"),
    (b'{"state":"\xff"}', 415, "Unsupported documented encoding; supported encoding is UTF-8"),
    (b"{}", 400, "Missing required node: state"),
    ({"state": 5}, 400, "State node must be an object"),
    ({"state": {"desired": 5}}, 400, "Desired node must be an object"),
    ({"state": {"reported": [1]}}, 400, "Reported node must be an object"),
    ({"state": {"delta": {}}}, 400, "State contains an invalid node"),
    ({"state": {"desired": {"a": 1}, "foo": 1}}, 400, "State contains an invalid node"),
    ({"state": {}, "version": "1"}, 400, "Invalid version"),
    ({"state": {}, "version": -1}, 400, "Invalid version"),
    ({"state": {}, "version": 1.0}, 400, "Invalid version"),
    ({"state": {}, "version": True}, 400, "Invalid version"),
    ({"state": {}, "version": None}, 400, "Invalid version"),
    ({"state": {"desired": {"a": [1, None]}}}, 400, "Invalid JSON"),
    ({"state": {"reported": {"a": {"b": [[None]]}}}}, 400, "Invalid JSON"),
    ({"state": {"reported": {"a": [{"b": [2, None]}]}}}, 400, "Invalid JSON"),
])
def test_cloud_rejections_use_the_aws_texts(payload, code, message):
    error = rejection(payload, CLOUD)
    assert (error.code, error.message) == (code, message)


def test_cloud_keeps_the_largest_double_and_the_smallest():
    result = run(b'{"state":{"desired":{"big":1.7976931348623157e308,"tiny":5e-324}}}',
                 flavour=CLOUD)
    assert result.shadow.state["desired"] == {"big": 1.7976931348623157e308, "tiny": 5e-324}


@pytest.mark.parametrize("token, ok", [("x" * 64, True), ("é" * 32, True), ("é" * 33, False), (5, False)])
def test_cloud_client_token_is_limited_to_64_bytes(token, ok):
    payload = {"state": {}, "clientToken": token}
    if ok:
        assert run(payload, flavour=CLOUD).client_token == token
    else:
        error = rejection(payload, CLOUD)
        assert (error.code, error.message, error.client_token) == (400, "Invalid clientToken", None)


def test_local_client_token_is_limited_to_64_characters():
    assert run({"state": {}, "clientToken": "é" * 64}).client_token == "é" * 64


def test_cloud_errors_after_the_token_carry_it_and_use_aws_key_order():
    error = rejection({"clientToken": "c"}, CLOUD)
    payload = sd.rejected_payload(error, 3, flavour=CLOUD)
    assert payload == {"code": 400, "message": "Missing required node: state", "timestamp": 3, "clientToken": "c"}
    assert list(payload) == ["code", "message", "timestamp", "clientToken"]


@pytest.mark.parametrize("current, deleted, version, ok", [
    (None, None, 0, True), (None, None, 1, False), (None, 4, 4, True), (None, 4, 5, False),
    (3, None, 3, True), (3, None, 4, False), (3, None, 2, False),
])
def test_cloud_version_must_equal_the_current_or_deleted_version(current, deleted, version, ok):
    existing = None if current is None else shadow({"a": 1}, version=current)
    payload = {"state": {"desired": {"a": 2}}, "version": version}
    if ok:
        assert run(payload, flavour=CLOUD, start=existing, deleted_version=deleted).shadow.version == version + 1
    else:
        error = rejection(payload, CLOUD, current=existing, deleted_version=deleted)
        assert (error.code, error.message, error.ipc_shape) == (409, "Version conflict", "ConflictError")


# -- size ----------------------------------------------------------------------------------

@BOTH
@pytest.mark.parametrize("max_size, ok", [(17, True), (16, False)])
def test_size_limit_counts_compact_section_bytes(flavour, max_size, ok):
    payload = {"state": {"reported": {"SomeKey": "***"}}, "clientToken": "t"}   # {"SomeKey":"***"} = 17 bytes
    if ok:
        assert run(payload, flavour=flavour, max_size=max_size).shadow.version == 1
    else:
        error = rejection(payload, flavour, max_size=max_size)
        assert (error.code, error.message, error.ipc_shape, error.client_token) == \
            (413, "The payload exceeds the maximum size allowed", "InvalidArgumentsError", "t")


@BOTH
@pytest.mark.parametrize("max_size, ok", [(23, True), (22, False)])
def test_size_counts_the_merged_desired_plus_reported_not_the_request(flavour, max_size, ok):
    start = run({"state": {"desired": {"a": "é"}}}, flavour=flavour).shadow      # {"a":"é"} = 10 bytes
    payload = {"state": {"reported": {"b": 1}, "desired": {"c": 2}}}              # 7 {"b":1} + 16 {"a":"é","c":2}
    if ok:
        assert sd.update(start, encode(payload), 9, flavour=flavour, max_size=max_size).shadow.version == 2
    else:
        assert rejection(payload, flavour, current=start, max_size=max_size).code == 413


# -- merge ---------------------------------------------------------------------------------

@BOTH
@pytest.mark.parametrize("updates, state", [
    ([{"desired": {"a": 1, "b": 2}}, {"desired": {"a": {}}}], {"desired": {"b": 2}}),
    ([{"desired": {"a": 1, "b": 2}}, {"desired": {"a": None}}], {"desired": {"b": 2}}),
    ([{"desired": {"a": {"x": 1, "y": 2}}}, {"desired": {"a": {"x": None}}}], {"desired": {"a": {"y": 2}}}),
    ([{"desired": {"a": {"x": 1}}}, {"desired": {"a": {"x": None}}}], {"desired": {"a": {}}}),
    ([{"desired": {"a": 1}, "reported": {"b": 2}}, {"desired": {}}], {"reported": {"b": 2}}),
    ([{"desired": {"a": 1}, "reported": {"b": 2}}, {"desired": None}], {"reported": {"b": 2}}),
    ([{"desired": {"a": [1, 2, 3]}}, {"desired": {"a": [4]}}], {"desired": {"a": [4]}}),
    ([{"desired": {"a": {"x": 1}}}, {"desired": {"a": 5}}], {"desired": {"a": 5}}),
    ([{"desired": {"a": 5}}, {"desired": {"a": {"x": 1}}}], {"desired": {"a": {"x": 1}}}),
    ([{"desired": {"k": 1}}, {"desired": {"a": {"x": None, "y": {"z": None}}}}], {"desired": {"k": 1}}),
    ([{"desired": {"k": 1}}, {"desired": {"a": {"x": None, "y": 2}}}], {"desired": {"k": 1, "a": {"y": 2}}}),
    ([{"desired": {"a": 1}}, {"desired": {"a": None}}], {}),
    ([{"reported": {"color": {"r": 255, "g": 255, "b": 255}}},
      {"reported": {"color": {"r": 0, "a": 255, "g": 255}}}],
     {"reported": {"color": {"r": 0, "g": 255, "b": 255, "a": 255}}}),
])
def test_shared_merge_rules(flavour, updates, state):
    assert run(*({"state": u} for u in updates), flavour=flavour).shadow.state == state


@BOTH
def test_state_null_clears_both_sections_but_keeps_the_shadow(flavour):
    result = run({"state": {"desired": {"a": 1}, "reported": {"b": 1}}}, {"state": None}, flavour=flavour)
    assert (result.shadow, result.delta) == (Shadow({}, {}, 2), None)
    assert result.accepted["state"] is None and result.accepted["metadata"] == {"timestamp": 200}
    assert sd.get_payload(result.shadow, 5) == {"state": {}, "metadata": {}, "version": 2, "timestamp": 5}


@BOTH
def test_empty_state_still_makes_a_version_and_creates_the_shadow(flavour):
    first = run({"state": {}}, flavour=flavour)
    assert first.shadow == Shadow({}, {}, 1)
    assert (first.accepted["state"], first.accepted["metadata"], first.documents["previous"]) == ({}, {}, None)
    assert run({"state": {}}, flavour=flavour, start=shadow({"a": 1}, version=3)).shadow.version == 4


@pytest.mark.parametrize("flavour, stored", [
    (LOCAL, {"color": {"r": 255, "g": 0, "b": None}, "temperature": 70}),
    (CLOUD, {"color": {"r": 255, "g": 0}, "temperature": 70}),
])
def test_first_write_into_an_empty_section_keeps_nulls_only_locally(flavour, stored):
    # fixtures good_initial_document + good_update_document_with_desired_and_add_remove_node
    initial = {"state": {"reported": {"color": {"r": 255, "g": 255, "b": 255}, "SomeKey": "SomeValue"}}}
    change = {"version": 1, "clientToken": "device",
              "state": {"desired": {"color": {"r": 255, "g": 0, "b": None}, "temperature": 70}}}
    result = run(initial, change, flavour=flavour)
    assert result.shadow.state["desired"] == stored
    assert sd.get_payload(result.shadow, 1)["state"]["desired"] == stored
    assert "b" not in result.shadow.metadata["desired"]["color"]          # no metadata for stored nulls
    expected_delta = {"color": {"g": 0, "b": None} if flavour == LOCAL else {"g": 0}, "temperature": 70}
    assert result.delta["state"] == expected_delta
    assert result.delta["metadata"]["color"].get("b", "absent") == (None if flavour == LOCAL else "absent")


@pytest.mark.parametrize("flavour, stored", [(LOCAL, {"a": {"x": 1, "y": None}}), (CLOUD, {"a": {"x": 1}})])
def test_object_replacing_a_value_keeps_nulls_only_locally(flavour, stored):
    assert run({"state": {"desired": {"a": 5}}}, {"state": {"desired": {"a": {"x": 1, "y": None}}}},
               flavour=flavour).shadow.state["desired"] == stored


def test_local_stores_nulls_inside_arrays():
    assert run({"state": {"desired": {"a": [None, 1]}}}).shadow.state == {"desired": {"a": [None, 1]}}


@pytest.mark.parametrize("flavour, patch, desired", [
    (LOCAL, {"state": None, "b": 2}, None),           # JsonMerger: a section patch {"state": null} clears it
    (LOCAL, {"state": {}, "b": 2}, {"a": 1}),         # ... and {"state": {}} is ignored
    (CLOUD, {"state": None, "b": 2}, {"a": 1, "b": 2}),
    (CLOUD, {"state": {}, "b": 2}, {"a": 1, "b": 2}),
])
def test_state_key_inside_a_section_is_a_local_quirk(flavour, patch, desired):
    result = run({"state": {"desired": {"a": 1}}}, {"state": {"desired": patch}}, flavour=flavour)
    assert result.shadow.state.get("desired") == desired


@pytest.mark.parametrize("state, expected", [
    ({"state": None, "desired": {"a": 2}}, {}),                                     # request state "state": null
    ({"state": {}, "desired": {"a": 2}}, {"desired": {"a": 1}, "reported": {"b": 1}}),
    ({"state": {"state": {}}, "desired": {"a": 2}}, {"desired": {"a": 1}, "reported": {"b": 1}}),
])
def test_local_state_key_inside_the_request_state(state, expected):
    result = run({"state": {"desired": {"a": 1}, "reported": {"b": 1}}}, {"state": state})
    assert (result.shadow.state, result.shadow.version) == (expected, 2)


def test_local_drops_state_delta_and_echoes_unknown_state_keys():
    result = run({"state": {"desired": {"a": 1}, "delta": {"x": 1}, "foo": 5}, "clientToken": "t"})
    assert result.shadow.state == {"desired": {"a": 1}}
    assert result.accepted == {"version": 1, "clientToken": "t", "timestamp": 100,
                               "state": {"desired": {"a": 1}, "foo": 5},
                               "metadata": {"desired": {"a": {"timestamp": 100}}, "foo": {"timestamp": 100}}}
    assert list(result.accepted) == ["version", "clientToken", "timestamp", "state", "metadata"]


@pytest.mark.parametrize("state", [{"delta": {"x": 1}}, {"delta": 5}, {"#note": 1}])
def test_local_state_with_only_a_delta_or_hash_keys_is_an_empty_update(state):
    result = run({"state": {"desired": {"a": 1}}}, {"state": state})
    assert (result.shadow.state, result.shadow.version) == ({"desired": {"a": 1}}, 2)


# -- metadata ------------------------------------------------------------------------------

@BOTH
def test_metadata_keeps_old_timestamps_of_untouched_leaves(flavour):
    result = run({"state": {"reported": {"color": {"r": 1, "g": 2}, "list": [1, 2], "k": "v"}}},
                 {"state": {"reported": {"color": {"g": 3, "b": 4}, "list": [5]}}}, flavour=flavour)
    assert result.shadow.metadata == {"reported": {
        "color": {"r": {"timestamp": 100}, "g": {"timestamp": 200}, "b": {"timestamp": 200}},
        "list": [{"timestamp": 200}], "k": {"timestamp": 100}}}


@BOTH
def test_metadata_follows_type_changes_and_deletions(flavour):
    result = run({"state": {"desired": {"a": 1, "b": {"x": 1}, "c": [1], "d": {"x": 1}, "e": {"x": 1}}}},
                 {"state": {"desired": {"a": {"y": 2}, "b": None, "c": {"z": [3]}, "d": 7, "e": [8]}}},
                 flavour=flavour)
    assert result.shadow.metadata == {"desired": {"a": {"y": {"timestamp": 200}}, "c": {"z": [{"timestamp": 200}]},
                                                  "d": {"timestamp": 200}, "e": [{"timestamp": 200}]}}


@pytest.mark.parametrize("flavour, desired_metadata", [(LOCAL, {"a": {"timestamp": 100}}), (CLOUD, None)])
def test_empty_desired_leaves_stale_metadata_only_locally(flavour, desired_metadata):
    # ShadowStateMetadata.update skips an empty patch, so metadata.desired survives the section
    result = run({"state": {"desired": {"a": 1}, "reported": {"b": 1}}}, {"state": {"desired": {}}}, flavour=flavour)
    assert result.shadow.state == {"reported": {"b": 1}}
    assert result.shadow.metadata.get("desired") == desired_metadata


def test_metadata_sections_are_ordered_desired_then_reported():
    result = run({"state": {"reported": {"b": 1}}}, {"state": {"desired": {"a": 1}}})
    assert list(result.shadow.metadata) == ["desired", "reported"]
    assert list(sd.get_payload(result.shadow, 1)["metadata"]) == ["desired", "reported"]


# -- delta ---------------------------------------------------------------------------------

@pytest.mark.parametrize("desired, reported, expected", [
    (None, {"a": 1}, None),
    ({"a": 1}, None, {"a": 1}),
    ({"a": 1}, {"a": 1.0}, None),                             # numbers by value
    ({"a": 2 ** 64 + 1}, {"a": 1}, {"a": 2 ** 64 + 1}),       # ... as Jackson asLong AND asDouble
    ({"a": True}, {"a": 1}, {"a": True}),                     # a boolean is not a number
    ({"a": [1, 2]}, {"a": [1, 2]}, None),
    ({"a": [1]}, {"a": [1.0]}, {"a": [1]}),                   # arrays compared whole, by Jackson equals
    ({"a": [1, 2]}, {"a": [2, 1]}, {"a": [1, 2]}),
    ({"a": "1"}, {"a": 1}, {"a": "1"}),
    ({"l": {"c": {"r": 255, "g": 255, "b": 255}}}, {"l": {"c": {"r": 255, "g": 0, "b": 255}}},
     {"l": {"c": {"g": 255}}}),                               # the path down to the root
    ({"a": {"x": 1}}, {"a": {"x": 1, "y": 2}}, None),         # nested subset: nothing to say
    ({"color": "RED", "state": "STOP"}, {"color": "GREEN", "engine": "ON"}, {"color": "RED", "state": "STOP"}),
    ({"b": None, "c": None}, {"b": 1}, {"b": None}),          # stored first-write nulls
    ({"a": {}}, {"a": 1}, {"a": None}),
    ({"a": {"x": 1}}, {"a": 5}, {"a": {"x": 1}}),
])
def test_delta(desired, reported, expected):
    assert sd.delta(desired, reported) == expected


@BOTH
def test_delta_is_sent_on_every_update_while_desired_differs(flavour):
    result = run({"state": {"desired": {"a": 1, "b": 2}}},
                 {"state": {"reported": {"a": 1, "z": 0}}, "clientToken": "k"}, flavour=flavour)
    assert result.delta["state"] == {"b": 2}
    assert result.delta["metadata"] == {"b": {"timestamp": 100}}   # desired's (old) metadata
    assert result.delta["version"] == 2 and result.delta["clientToken"] == "k"
    assert run({"state": {"desired": {"a": 1}, "reported": {"a": 1.0}}}, flavour=flavour).delta is None


@pytest.mark.parametrize("flavour, keys", [
    (LOCAL, ["version", "timestamp", "state", "metadata", "clientToken"]),
    (CLOUD, ["state", "metadata", "timestamp", "clientToken", "version"]),
])
def test_delta_payload_key_order(flavour, keys):
    assert list(run({"state": {"desired": {"a": 1}}, "clientToken": "c"}, flavour=flavour).delta) == keys


# -- payloads ------------------------------------------------------------------------------

def test_shadow_ipc_test_sequence():
    """ShadowIPCTest expectedShadowDocumentV1/V2/V3, expectedAccepted V2/V3 and expectedDeltaMessageV2."""
    v1 = run({"state": {"reported": {"color": {"r": 255, "g": 255, "b": 255}, "SomeKey": "SomeValue"}}})
    v2 = sd.update(v1.shadow, b'{"state":{"desired":{"color":{"r":0,"a":255,"g":255},'
                              b'"NewArray": [1,2,3,5,8,13]}}}', 200)
    v3 = sd.update(v2.shadow, b'{"state":{"desired": null,"reported":{"color":{"r":0,"a":255,"g":255},'
                              b'"NewArray": [1,2,3,5,8,13]}}}', 300)
    fib = [1, 2, 3, 5, 8, 13]
    assert v2.accepted["state"] == {"desired": {"color": {"r": 0, "a": 255, "g": 255}, "NewArray": fib}}
    assert (v2.delta["version"], v2.delta["state"]) == (2, {"color": {"r": 0, "a": 255}, "NewArray": fib})
    assert json.dumps(v3.accepted["state"], separators=(",", ":")) == \
        '{"desired":null,"reported":{"color":{"r":0,"a":255,"g":255},"NewArray":[1,2,3,5,8,13]}}'
    assert v3.accepted["metadata"]["desired"] == {"timestamp": 300} and v3.delta is None
    got = sd.get_payload(v3.shadow, 999)
    assert (got["version"], got["timestamp"]) == (3, 999)
    assert json.dumps(got["state"], separators=(",", ":")) == \
        '{"reported":{"color":{"r":0,"g":255,"b":255,"a":255},"SomeKey":"SomeValue","NewArray":[1,2,3,5,8,13]}}'
    assert got["metadata"]["reported"]["SomeKey"] == {"timestamp": 100}


def test_accepted_echoes_request_nulls_and_stamps_them():
    result = run({"state": {"desired": {"a": 1}}}, {"state": {"desired": {"a": None, "b": [1, {"c": None}]}}})
    assert result.accepted["state"] == {"desired": {"a": None, "b": [1, {"c": None}]}}
    assert result.accepted["metadata"] == {"desired": {"a": {"timestamp": 200},
                                                       "b": [{"timestamp": 200}, {"c": {"timestamp": 200}}]}}
    assert "clientToken" not in result.accepted and result.client_token is None


@pytest.mark.parametrize("flavour, keys", [
    (LOCAL, ["version", "clientToken", "timestamp", "state", "metadata"]),
    (CLOUD, ["state", "metadata", "timestamp", "clientToken", "version"]),
])
def test_accepted_key_order(flavour, keys):
    assert list(run({"state": {"reported": {"a": 1}}, "clientToken": "c"}, flavour=flavour).accepted) == keys


@pytest.mark.parametrize("flavour, keys", [
    (LOCAL, ["previous", "current", "clientToken", "timestamp"]),
    (CLOUD, ["previous", "current", "timestamp", "clientToken"]),
])
def test_documents_have_previous_and_current_without_delta(flavour, keys):
    first = run({"state": {"reported": {"a": 1}}}, flavour=flavour)
    assert first.documents["previous"] is None and "clientToken" not in first.documents
    second = sd.update(first.shadow, b'{"state":{"desired":{"a":2}},"clientToken":"c"}', 200, flavour=flavour)
    assert list(second.documents) == keys
    assert second.documents["previous"] == {"state": {"reported": {"a": 1}},
                                            "metadata": {"reported": {"a": {"timestamp": 100}}}, "version": 1}
    assert second.documents["current"] == {
        "state": {"desired": {"a": 2}, "reported": {"a": 1}},
        "metadata": {"desired": {"a": {"timestamp": 200}}, "reported": {"a": {"timestamp": 100}}}, "version": 2}
    assert second.documents["timestamp"] == 200


@pytest.mark.parametrize("flavour, keys", [
    (LOCAL, ["state", "metadata", "version", "timestamp"]),
    (CLOUD, ["state", "metadata", "timestamp", "version"]),
])
def test_get_payload_has_delta_inside_state_and_now(flavour, keys):
    stored = run({"state": {"desired": {"a": 2}, "reported": {"a": 1, "b": 1}}}, flavour=flavour).shadow
    got = sd.get_payload(stored, 555, flavour=flavour)
    assert list(got) == keys and list(got["state"]) == ["desired", "reported", "delta"]
    assert (got["state"]["delta"], got["timestamp"], got["version"]) == ({"a": 2}, 555, 1)
    assert "delta" not in sd.get_payload(run({"state": {"reported": {"a": 1}}}).shadow, 1)["state"]


def test_update_does_not_touch_its_inputs():
    before = run({"state": {"desired": {"a": {"x": 1}}, "reported": {"a": {"x": 2}}}}).shadow
    frozen = json.dumps([before.state, before.metadata])
    after = sd.update(before, b'{"state":{"desired":{"a":{"x":3,"y":4}},"reported":null}}', 500)
    after.accepted["state"]["desired"]["a"]["x"] = 99
    assert json.dumps([before.state, before.metadata]) == frozen
    assert after.shadow.state == {"desired": {"a": {"x": 3, "y": 4}}}


@BOTH
def test_delete_reports_the_deleted_version_and_keeps_a_tombstone(flavour):
    stored = run({"state": {"reported": {"a": 1}}}, {"state": {"reported": {"a": 2}}}, flavour=flavour).shadow
    assert sd.delete_payload(stored, 77, flavour=flavour) == {"version": 2, "timestamp": 77}
    assert sd.tombstone_version(stored) == 3


@pytest.mark.parametrize("flavour, version", [(LOCAL, 1), (CLOUD, 4)])
def test_recreated_shadow_restarts_locally_and_continues_in_the_cloud(flavour, version):
    result = sd.update(None, b'{"state":{"reported":{"a":1}}}', 1, flavour=flavour, deleted_version=3)
    assert result.shadow.version == version and result.documents["previous"] is None


@pytest.mark.parametrize("code, shape", [(400, "InvalidArgumentsError"), (401, "UnauthorizedError"),
                                         (404, "ResourceNotFoundError"), (409, "ConflictError"),
                                         (413, "InvalidArgumentsError"), (500, "ServiceError")])
def test_error_codes_map_to_ipc_shapes(code, shape):
    error = ShadowError(code, "m", client_token="t")
    assert (error.ipc_shape, error.ipc_message, str(error)) == (shape, "m", "m")


def test_unknown_flavour_is_refused():
    with pytest.raises(ValueError):
        sd.update(None, b'{"state":{}}', 1, flavour="edge")
