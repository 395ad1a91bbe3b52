"""Which correction a deployment carries, as deploy-local and deploy-fleet build it: the
generic component (the bundle io.backfill.SensorPipeline, which brings
io.backfill.TemperatureCorrection), or the correction imported as a Lambda component by
scripts/import-lambda, named beside the sensor and the store with the accessControl
import-lambda writes (its generated recipe has none).

    lambda_config(None)          # ("io.backfill.TemperatureCorrectionLambda", {"accessControl": ...})
    lambda_config("out/lambda-config.json")       # what import-lambda wrote (the --config shape)
    local_version(Path("greengrass-build/recipes"), name)   # what `import-lambda --local` put there
    refused(config, "lambda", name)                # a --config naming what the form leaves out
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from bundleinfo import BUNDLE, load_config

SENSOR = "io.backfill.Bme680Sensor"
GENERIC = "io.backfill.TemperatureCorrection"
STORE = "io.backfill.StoreAndForward"
LAMBDA = "io.backfill.TemperatureCorrectionLambda"      # import-lambda's --component-name default
RAW, CORRECTED = "backfill/readings/raw", "backfill/readings/corrected"
FORMS = ("component", "lambda")


@dataclass(frozen=True)
class LambdaForm:
    """The imported Lambda component a deployment names instead of the bundle."""
    name: str
    version: str
    merge: dict            # its configuration's MERGE: the accessControl import-lambda wrote


def access_control(name: str, raw: str = RAW, corrected: str = CORRECTED) -> dict:
    """The deployment configuration granting the Lambda component its topics, in the --config
    shape (the recipe CreateComponentVersion generates has no accessControl: AWS, "Run AWS
    Lambda functions", import-lambda-function-cli)."""
    return {name: {"MERGE": {"accessControl": {"aws.greengrass.ipc.pubsub": {
        f"{name}:pubsub:1": {"policyDescription": "Receive raw readings (its event source).",
                             "operations": ["aws.greengrass#SubscribeToTopic"], "resources": [raw]},
        f"{name}:pubsub:2": {"policyDescription": "Publish corrected readings.",
                             "operations": ["aws.greengrass#PublishToTopic"], "resources": [corrected]}}}}}}


def lambda_config(value: Optional[str]) -> tuple[str, dict]:
    """(component name, its MERGE) from import-lambda's lambda-config.json (a path or the JSON),
    or, without one, what import-lambda writes with its defaults."""
    if value is None:
        config = access_control(LAMBDA)
    elif not value.lstrip().startswith("{") and not Path(value).is_file():
        raise SystemExit(f"--lambda-config: no file {value} (scripts/import-lambda writes lambda-config.json "
                         "into its --out folder)")
    else:
        try:
            config = load_config(value)
        except SystemExit as error:
            raise SystemExit(str(error.code).replace("--config", "--lambda-config", 1)) from None
    if len(config) != 1:
        raise SystemExit(f"--lambda-config names {len(config)} components: import-lambda's "
                         '{"<component>": {"MERGE": {"accessControl": ...}}} names one')
    (name, entry), = config.items()
    if name in (BUNDLE, SENSOR, GENERIC, STORE):
        raise SystemExit(f"--lambda-config names {name}, not the imported Lambda component")
    if set(entry) != {"MERGE"} or not isinstance(entry["MERGE"].get("accessControl"), dict):
        raise SystemExit(f'--lambda-config: {{"{name}": {{"MERGE": {{"accessControl": {{...}}}}}}}} '
                         "(scripts/import-lambda writes it as lambda-config.json)")
    return name, entry["MERGE"]


def local_version(recipes: Path, name: str) -> Optional[str]:
    """The newest version of `name` among the JSON recipes in `recipes` (`import-lambda --local
    DIR` writes DIR/recipes/<name>-<version>.json), None if there is none."""
    from localgg.semver import Version
    found = []
    for path in sorted(recipes.glob("*.json")) if recipes.is_dir() else []:
        try:
            recipe = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(recipe, dict) and recipe.get("ComponentName") == name and "ComponentVersion" in recipe:
            found.append((Version.parse(recipe["ComponentVersion"]), recipe["ComponentVersion"]))
    return max(found, key=lambda pair: pair[0])[1] if found else None


def refused(config: dict, form: str, lambda_name: str) -> None:
    """SystemExit when --config configures a correction the form does not deploy."""
    left_out = (BUNDLE, GENERIC) if form == "lambda" else (lambda_name,)
    for name in config:
        if name in left_out:
            other = "component" if form == "lambda" else "lambda"
            raise SystemExit(f"--config names {name}, which --correction {form} does not deploy "
                             f"(--correction {other} does)")
