"""The components' recipes as the nucleus hands their configuration to them (for any test)."""

from __future__ import annotations

from pathlib import Path

import yaml

RECIPES = Path(__file__).resolve().parents[1] / "recipes"


def default_config(name: str, interpolated: bool, thing: str = "pi-1") -> dict:
    """A recipe's DefaultConfiguration as GetConfiguration returns it, with or without the
    nucleus's interpolateComponentConfiguration."""
    text = (RECIPES / f"{name}.yaml").read_text()
    if interpolated:        # what the nucleus does with interpolateComponentConfiguration: true
        text = text.replace("{iot:thingName}", thing)
    return yaml.safe_load(text)["ComponentConfiguration"]["DefaultConfiguration"]
