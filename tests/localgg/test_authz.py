import pytest

from localgg.authz import Authorizer, Denied, resource_matches


@pytest.mark.parametrize("pattern, resource, mqtt, expected", [
    ("a/*", "a/b/c", False, True), ("*", "$aws/x", False, True), ("a/#", "a/b", False, False),
    ("a/#", "a/#", False, True), ("a/+", "a/b", False, False),
    ("a/#", "a", True, True), ("a/#", "a/b/c", True, True), ("a/+/c", "a/b/c", True, True),
    ("a/+/c", "a/b/d/c", True, False), ("#", "anything/at/all", True, True),
    ("q/${*}", "q/*", False, True), ("q/${*}", "q/x", False, False), ("x${$}y", "x$y", False, True),
])
def test_resource_matching(pattern, resource, mqtt, expected):
    assert resource_matches(pattern, resource, mqtt) is expected


def test_policies_are_per_declaring_component_and_operation():
    configs = {"A": {"accessControl": {"svc": {"p": {"operations": ["op1"], "resources": ["r/*"]},
                                                "q": {"operations": [], "resources": ["*"]}}}}}
    authz = Authorizer(lambda c: configs.get(c, {}).get("accessControl"))
    authz.check("A", "svc", "op1", "r/x")
    with pytest.raises(Denied, match="Principal A is not authorized to perform svc:op2 on resource r/x"):
        authz.check("A", "svc", "op2", "r/x")  # a policy with no operations grants nothing
    with pytest.raises(Denied):
        authz.check("B", "svc", "op1", "r/x")
    with pytest.raises(Denied, match="Resource cannot be empty"):
        authz.check("A", "svc", "op1", "")
