"""The cloud side as code (issue 12, item 3): scripts/cloud/template.yaml passes cfn-lint, and
its core-device IoT policy allows exactly what the bundle uses. The policy is evaluated here
as AWS IoT evaluates it: Allow statements, an action named in full, a resource ARN whose `*`
matches any characters and `?` one, policy variables (`${iot:Connection.Thing.ThingName}`)
replaced by the connecting thing's name. The topics come from the recipes' own defaults."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
TEMPLATE = REPO / "scripts" / "cloud" / "template.yaml"
RECIPES = REPO / "recipes"
REGION, ACCOUNT, PARTITION = "eu-west-1", "123456789012", "aws"
THING, OTHER = "pi-garage-01", "pi-kitchen-02"


def template() -> dict:
    return yaml.safe_load(TEMPLATE.read_text())


def _sub(value: str) -> str:
    """Fn::Sub of the pseudo parameters; `${!x}` is the literal `${x}` (an IoT policy variable)."""
    value = value.replace("${AWS::Partition}", PARTITION).replace("${AWS::Region}", REGION)
    value = value.replace("${AWS::AccountId}", ACCOUNT)
    return re.sub(r"\$\{!([^}]+)\}", r"${\1}", value)


def _resolve(node):
    if isinstance(node, dict) and set(node) == {"Fn::Sub"}:
        return _sub(node["Fn::Sub"])
    if isinstance(node, dict) and set(node) == {"Fn::GetAtt"}:
        return f"arn:{PARTITION}:iot:{REGION}:{ACCOUNT}:rolealias/BackfillTokenExchangeRoleAlias"
    if isinstance(node, list):
        return [_resolve(v) for v in node]
    return node


def core_policy() -> list[dict]:
    doc = template()["Resources"]["CorePolicy"]["Properties"]["PolicyDocument"]
    statements = []
    for statement in doc["Statement"]:
        resources = _resolve(statement["Resource"])
        statements.append({"Effect": statement["Effect"],
                           "Action": statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]],
                           "Resource": resources if isinstance(resources, list) else [resources]})
    return statements


def allowed(statements: list[dict], action: str, resource: str, thing: str) -> bool:
    """AWS IoT's evaluation of an Allow-only policy for a connection of `thing`."""
    for statement in statements:
        if statement["Effect"] != "Allow" or action not in statement["Action"]:
            continue
        for pattern in statement["Resource"]:
            pattern = pattern.replace("${iot:Connection.Thing.ThingName}", thing)
            if "${" in pattern:          # an unknown variable matches nothing
                continue
            # policy wildcards: * any characters, ? one; [ is literal (fnmatch would read a set)
            regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
            if re.fullmatch(regex, resource, re.S):
                return True
    return False


def arn(kind: str, name: str) -> str:
    return f"arn:{PARTITION}:iot:{REGION}:{ACCOUNT}:{kind}/{name}"


def store_topics(thing: str) -> dict:
    recipe = yaml.safe_load((RECIPES / "io.backfill.StoreAndForward.yaml").read_text())
    config = recipe["ComponentConfiguration"]["DefaultConfiguration"]
    name = lambda key: config[key].replace("{iot:thingName}", thing).replace("{thing}", thing)
    return {"readings": name("iot_topic"), "dead": name("dead_letter_topic"), "ack": name("rule_ack_topic")}


def shadow_topics(thing: str) -> tuple[list, list]:
    """What ShadowManager publishes and subscribes to for the synchronised named shadow."""
    base = f"$aws/things/{thing}/shadow/name/backfill"
    publish = [f"{base}/update", f"{base}/get", f"{base}/delete"]
    replies = [f"{base}/{op}/{outcome}" for op in ("update", "get", "delete") for outcome in ("accepted", "rejected")]
    return publish, replies + [f"{base}/update/delta", f"{base}/update/documents"]


def test_cfn_lint_passes_and_would_catch_a_broken_template(tmp_path):
    from cfnlint.api import lint_file
    assert [str(m) for m in lint_file(TEMPLATE)] == []
    broken = template()
    del broken["Resources"]["ReadingsTable"]["Properties"]["KeySchema"]
    broken["Resources"]["LandingFunction"]["Properties"]["Runtime"] = "python2.7"
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(broken))
    assert lint_file(path) != []


def test_every_topic_the_bundle_uses_is_allowed_for_the_thing_itself():
    policy = core_policy()
    topics = store_topics(THING)
    shadow_publish, shadow_replies = shadow_topics(THING)
    assert allowed(policy, "iot:Connect", arn("client", THING), THING)
    assert allowed(policy, "iot:Connect", arn("client", THING + "#2"), THING)      # the nucleus's extra connections
    for topic in (topics["readings"], topics["dead"], *shadow_publish):
        assert allowed(policy, "iot:Publish", arn("topic", topic), THING), topic
    for topic in (topics["readings"], topics["dead"], topics["ack"], *shadow_replies):
        assert allowed(policy, "iot:Subscribe", arn("topicfilter", topic), THING), topic
        assert allowed(policy, "iot:Receive", arn("topic", topic), THING), topic
    jobs = f"$aws/things/{THING}/jobs/notify-next"
    assert allowed(policy, "iot:Subscribe", arn("topicfilter", jobs), THING)
    assert allowed(policy, "iot:AssumeRoleWithCertificate",
                   f"arn:{PARTITION}:iot:{REGION}:{ACCOUNT}:rolealias/BackfillTokenExchangeRoleAlias", THING)


def test_nothing_broader_another_things_topics_and_wildcard_filters_are_refused():
    policy = core_policy()
    others = store_topics(OTHER)
    other_publish, other_replies = shadow_topics(OTHER)
    assert not allowed(policy, "iot:Connect", arn("client", OTHER), THING)
    assert not allowed(policy, "iot:Connect", arn("client", "x" + THING), THING)
    for topic in (others["readings"], others["dead"], *other_publish, f"$aws/things/{OTHER}/jobs/start-next",
                  f"dt/backfill/{THING}/other", f"dt/backfill/{THING}/readings/more", "backfill/acks",
                  f"$aws/things/{THING}/shadow/update", f"$aws/things/{THING}/shadow/name/other/update"):
        assert not allowed(policy, "iot:Publish", arn("topic", topic), THING), topic
    for topic in (others["ack"], *other_replies, "dt/backfill/#", f"dt/backfill/+/readings",
                  f"backfill/ack/+", f"$aws/things/{THING}/shadow/#", "#"):
        assert not allowed(policy, "iot:Subscribe", arn("topicfilter", topic), THING), topic
        assert not allowed(policy, "iot:Receive", arn("topic", topic), THING), topic
    assert not allowed(policy, "iot:Publish", arn("topic", store_topics(THING)["ack"]), THING)   # only the cloud acks


def test_actions_are_named_in_full_and_only_the_greengrass_data_plane_is_any_resource():
    for statement in core_policy():
        assert all("*" not in action for action in statement["Action"]), statement
        if "*" in statement["Resource"]:
            assert all(a.startswith("greengrass:") for a in statement["Action"]), statement


def test_the_evaluator_itself_matches_policy_wildcards():
    rules = [{"Effect": "Allow", "Action": ["iot:Publish"], "Resource": [arn("topic", "a/${iot:Connection.Thing.ThingName}/*"),
                                                                         arn("topic", "b/?")]}]
    assert allowed(rules, "iot:Publish", arn("topic", "a/t1/x/y"), "t1")
    assert not allowed(rules, "iot:Publish", arn("topic", "a/t2/x"), "t1")
    assert allowed(rules, "iot:Publish", arn("topic", "b/c"), "t1")
    assert not allowed(rules, "iot:Publish", arn("topic", "b/cd"), "t1")
    assert not allowed(rules, "iot:Subscribe", arn("topic", "b/c"), "t1")


def test_the_token_exchange_role_reads_the_artifact_bucket_only():
    role = template()["Resources"]["TokenExchangeRole"]["Properties"]
    assert role["AssumeRolePolicyDocument"]["Statement"][0]["Principal"] == {"Service": "credentials.iot.amazonaws.com"}
    statements = [s for p in role["Policies"] for s in p["PolicyDocument"]["Statement"]]
    assert [(s["Action"], s["Resource"]) for s in statements] == [
        ("s3:GetObject", {"Fn::Sub": "arn:${AWS::Partition}:s3:::${ArtifactBucket}/*"})]


def test_the_rule_feeds_the_landing_with_the_thing_and_a_base64_payload():
    rule = template()["Resources"]["LandingRule"]["Properties"]["TopicRulePayload"]
    assert rule["AwsIotSqlVersion"] == "2016-03-23"
    assert rule["Sql"] == "SELECT encode(*, 'base64') AS payload, topic(3) AS thing FROM 'dt/backfill/+/readings'"
    assert "ErrorAction" in rule
