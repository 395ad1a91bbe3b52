"""One Lambda instance: localgg's stand-in for LambdaRuntimes' python/lambda_runtime.py.

    python3.11 -u runtime.py --handler=temperature_correction.greengrass_lambda.handler

Run by the launcher (launcher.py) with the Lambda's interpreter (AWS_GREENGRASS_LAMBDA_EXEC_ARGS
[0]), in the component's work folder, with the function's unpacked artifact first on sys.path
(AWS_GREENGRASS_LAMBDA_ARTIFACT_PATH) and its environment variables set. Standard library
only: the function brings everything else in its zip.

It imports the handler once (module globals live as long as the instance) and reads work
items, one JSON line each, on stdin: {"id", "topic", "payload" (base64), "encoding"}. The event
is the payload decoded per inputPayloadEncodingType: json gives the parsed document (a dict
for a JSON object), binary the bytes. The context carries `client_context.custom['subject']`
= the topic (Greengrass V1's place for it, which v2 code still reads), `function_name`,
`invoked_function_arn`, `aws_request_id` and `get_remaining_time_in_millis()`. Each item is
answered on the instance's answer channel (the original stdout; print() in the handler goes
to stderr, the component's log): {"id", "ok": true} or {"id", "ok": false, "error"}.
"""

from __future__ import annotations

import base64
import importlib
import json
import os
import sys
import time
import traceback
import uuid
from types import SimpleNamespace


def load_handler(spec: str):
    module_name, _, function = spec.rpartition(".")
    if not module_name:
        raise SystemExit(f"--handler must be module.function, not {spec!r}")
    return getattr(importlib.import_module(module_name), function)


def event_of(item: dict):
    payload = base64.b64decode(item["payload"])
    if item.get("encoding", "json") == "binary":
        return payload
    return json.loads(payload.decode("utf-8"))


def context_of(item: dict, timeout_s: float) -> SimpleNamespace:
    deadline = time.monotonic() + timeout_s
    arn = os.environ.get("AWS_GREENGRASS_LAMBDA_ARN", "")
    return SimpleNamespace(
        client_context=SimpleNamespace(custom={"subject": item.get("topic", "")}),
        function_name=arn.split(":")[6] if arn.count(":") >= 6 else "", invoked_function_arn=arn,
        aws_request_id=str(uuid.uuid4()),
        get_remaining_time_in_millis=lambda: max(0, int((deadline - time.monotonic()) * 1000)))


def main(argv: list[str]) -> int:
    spec = next((a.split("=", 1)[1] for a in argv if a.startswith("--handler=")), None)
    if spec is None:
        raise SystemExit("usage: runtime.py --handler=module.function")
    answers = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)                                   # the handler's prints go to the log
    sys.stdout = sys.stderr
    artifact = os.environ.get("AWS_GREENGRASS_LAMBDA_ARTIFACT_PATH")
    if artifact:
        sys.path.insert(0, artifact)
    timeout_s = float(os.environ.get("LOCALGG_LAMBDA_TIMEOUT_S", "3"))
    handler = load_handler(spec)
    answers.write(json.dumps({"ready": True}) + "\n")
    for line in sys.stdin:
        item = json.loads(line)
        try:
            handler(event_of(item), context_of(item, timeout_s))
            answer = {"id": item["id"], "ok": True}
        except Exception as error:                  # the instance lives on, as Lambda's does
            traceback.print_exc()
            answer = {"id": item["id"], "ok": False, "error": f"{type(error).__name__}: {error}"}
        answers.write(json.dumps(answer) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
