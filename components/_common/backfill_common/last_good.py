"""The settings last in effect, kept in the component's work folder so that after a restart
a refused value keeps the last good one and not the schema's default.

    settings.restore(last_good.load(work / "settings.json"))
    last_good.save(work / "settings.json", change.effective)

A file that cannot be read (missing, torn, not JSON) gives {}: the defaults, as before. A
save is written beside and renamed over (fsynced first), so a crash leaves the old or the new."""

from __future__ import annotations

import json
import os
from pathlib import Path

from . import strictjson


def load(path: Path) -> dict:
    try:
        saved = strictjson.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return {}
    return saved if isinstance(saved, dict) else {}


def save(path: Path, effective: dict) -> None:
    """Raises OSError (a full disk): the runner counts it, the settings stay in effect."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as out:
        out.write(json.dumps(effective, sort_keys=True, separators=(",", ":")))
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)
