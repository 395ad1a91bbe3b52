"""What the dev runtime and the deploy scripts share about the bundle: its name, its one
version (the bundle's recipe; scripts/bump-version keeps every other place at it), and a
deployment's per-component configuration given on the command line.

    version()                         # "1.0.0"
    load_config('{"io.backfill.StoreAndForward": {"MERGE": {...}}}')   # or a JSON file's path
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parent.parent
BUNDLE = "io.backfill.SensorPipeline"


def version(root: Path = ROOT) -> str:
    text = (root / "recipes" / f"{BUNDLE}.yaml").read_text()
    return re.search(r'^ComponentVersion: "([^"]+)"', text, re.M).group(1)


def load_config(value: Optional[str]) -> Optional[dict]:
    """A JSON object, or a file holding one: {component: {"MERGE": {...}, "RESET": [...]}}
    (None: none given). A bad one ends the command with what is wrong."""
    if value is None:
        return None
    path = Path(value)
    text = path.read_text() if not value.lstrip().startswith("{") and path.exists() else value
    try:
        config = json.loads(text)
    except ValueError as error:
        raise SystemExit(f"--config: not JSON ({error}): {value[:80]}")
    if not isinstance(config, dict) or not all(isinstance(v, dict) for v in config.values()):
        raise SystemExit('--config: {"<component>": {"MERGE": {...}, "RESET": [...]}, ...}')
    return config
