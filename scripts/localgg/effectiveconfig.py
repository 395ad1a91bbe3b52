"""`<root>/config/effectiveConfig.yaml`: the core's configuration as the nucleus dumps it.

Usage::

    data = effective_config(services, roots, system)   # pure: what the file holds
    write_effective_config(root / "config" / "effectiveConfig.yaml", data)

As `Kernel.writeConfig` (lifecycle/Kernel.java): a YAML map of two namespaces,
`services` (every service's `componentType`, `version`, `configuration`, `dependencies`
as `"<name>:<HARD|SOFT>"`, `lifecycle`, `runWith`, and `main`, whose dependencies are
the deployed roots) and `system` (`certificateFilePath`, `privateKeyPath`, `rootCaPath`,
"" until the thing is provisioned as `DeviceConfiguration` defaults them, `rootpath`,
`thingName`). Keys are sorted (`Topics.toPOJO` is a case-insensitive TreeMap) and keys
starting with `_` are left out. The file is replaced whole (`CommitableWriter`), so a
reader never sees half of it.

The nucleus writes it when it starts and when it stops; localgg also writes it each time
it saves what is deployed (after every deployment and configuration update), so that a
component reading it (the certificate rotator reads `system.certificateFilePath`) sees
the current state.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import yaml

FILE_NAME = "effectiveConfig.yaml"   # Kernel.DEFAULT_CONFIG_YAML_FILE_WRITE


@dataclass
class ServiceEntry:
    """One service as the effective configuration shows it."""

    component_type: str                 # GENERIC, NUCLEUS, PLUGIN
    version: str
    configuration: dict
    dependencies: dict[str, str]        # name -> HARD | SOFT
    lifecycle: dict
    run_with: dict | None = None


def effective_config(services: dict[str, ServiceEntry], roots: list[str], system: dict[str, str]) -> dict:
    out: dict = {}
    for name, entry in services.items():
        service = {"componentType": entry.component_type, "version": entry.version,
                   "configuration": entry.configuration,
                   "dependencies": [f"{d}:{kind}" for d, kind in sorted(entry.dependencies.items())],
                   "lifecycle": entry.lifecycle}
        if entry.run_with:
            service["runWith"] = entry.run_with
        out[name] = service
    out["main"] = {"dependencies": sorted(set(roots)), "lifecycle": {}}
    return {"services": _public(out), "system": _public(system)}


def _public(value: object) -> object:
    if isinstance(value, dict):
        return {str(k): _public(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]).lower())
                if not str(k).startswith("_")}
    if isinstance(value, list):
        return [_public(v) for v in value]
    return value


def write_effective_config(path: Path, data: dict) -> None:
    """Replace `path` with `data` as YAML."""
    text = yaml.safe_dump(data, default_flow_style=False, sort_keys=False, explicit_start=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
