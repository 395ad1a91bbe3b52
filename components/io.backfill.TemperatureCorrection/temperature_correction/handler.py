"""The edge-temperature-correction Lambda: ``handler(event, context)`` in AWS Lambda's shape.

    from temperature_correction.handler import handler, configure
    configure({"method": "linear", "a": 1.08, "b": -0.21, "c": 1.3})   # -> [] or refusals
    corrected = handler(raw_reading, None)

As an AWS Lambda function (handler ``temperature_correction.handler.handler``, with
backfill_common and jsonschema beside it) the parameters come from the environment:
CORRECTION_METHOD (cpu_factor | linear), CORRECTION_FACTOR, CORRECTION_WINDOW, CORRECTION_A,
CORRECTION_B, CORRECTION_C; a missing one keeps its default, a bad one is logged and
refused. On Greengrass the component's runner calls ``configure(settings)`` instead.

The event is a raw reading (a dict, or its JSON as bytes or str). It is checked against the
contract ``reading-raw`` and the result against ``reading-corrected``. An event that breaks
its contract raises InvalidReading; a correction that leaves the contract (say a linear fit
that gives 250 °C) raises OutOfContract, which carries the reading passed through uncorrected.
Both are ValueErrors with a `kind` (the same problem always gives the same kind).
"""

from __future__ import annotations

import json
import logging
import os
from itertools import islice
from typing import Mapping, Optional

from backfill_common import contracts, strictjson

from .correction import PARAMETER_KEYS, Corrector, passthrough

log = logging.getLogger(__name__)

RAW, CORRECTED = "reading-raw", "reading-corrected"
ENVIRONMENT = {key: "CORRECTION_" + key.upper() for key in PARAMETER_KEYS}


class InvalidReading(ValueError):
    """The event is not a reading-raw; `errors` says why, `kind` classifies it for counting."""

    def __init__(self, kind: str, errors: list[str]) -> None:
        super().__init__(f"invalid raw reading: {'; '.join(errors)}")
        self.kind, self.errors = kind, errors


class OutOfContract(ValueError):
    """The corrected reading breaks reading-corrected (the parameters are at fault, not the
    reading); `passthrough` is the reading uncorrected (correction "none"), which satisfies it."""

    def __init__(self, kind: str, errors: list[str], passthrough: dict) -> None:
        super().__init__(f"corrected reading out of contract: {'; '.join(errors)}")
        self.kind, self.errors, self.passthrough = kind, errors, passthrough


def from_environment(environ: Mapping[str, str]) -> Corrector:
    """A Corrector with the parameters set in CORRECTION_* variables (refusals logged)."""
    settings: dict = {}
    for key, name in ENVIRONMENT.items():
        text = environ.get(name)
        if text is None or text.strip() == "":
            continue
        settings[key] = text.strip() if key == "method" else _number(text)
    corrector = Corrector(settings)
    for refusal in corrector.refused:
        log.warning("environment: %s", refusal)
    return corrector


_corrector: Optional[Corrector] = None


def current() -> Corrector:
    """The module's Corrector, made from the environment on first use."""
    return _corrector if _corrector is not None else reset()


def reset(environ: Optional[Mapping[str, str]] = None) -> Corrector:
    """Replace the module's Corrector with a fresh one from `environ` (default os.environ)."""
    global _corrector
    _corrector = from_environment(os.environ if environ is None else environ)
    return _corrector


def configure(settings: Mapping) -> list[str]:
    """Apply new parameters live (other keys are ignored); returns a message per refused value.
    The CPU window keeps its readings."""
    return current().update(settings)


def correct_event(event: object, corrector: Corrector) -> dict:
    """The work of `handler` with an explicit Corrector. Raises InvalidReading, OutOfContract."""
    reading = _decode(event)
    errors = contracts.check(RAW, reading)
    if errors:
        raise InvalidReading(_kind(RAW, reading), errors)
    reading = contracts.integers(reading)
    out = corrector.correct(reading)
    errors = contracts.check(CORRECTED, out)
    if errors:
        fallback = passthrough(reading)
        if contracts.check(CORRECTED, fallback):   # reading-raw and reading-corrected disagree: a bug
            raise AssertionError(f"a valid raw reading passed through is not a valid corrected one: {errors}")
        raise OutOfContract(_kind(CORRECTED, out), errors, fallback)
    return out


def handler(event: object, context: object = None) -> dict:
    """AWS Lambda entry point: the corrected reading for a raw one (see the module docstring)."""
    return correct_event(event, current())


def _decode(event: object) -> object:
    if isinstance(event, (bytes, bytearray, memoryview)):
        try:
            event = bytes(event).decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidReading("not JSON", ["the payload is not UTF-8 text"]) from None
    if isinstance(event, str):
        try:
            return strictjson.loads(event)
        except ValueError as error:
            raise InvalidReading("not JSON", [f"the payload is not JSON ({error})"]) from None
    return event


def _kind(name: str, doc: object) -> str:
    """What is wrong, without the values: 'reading-raw: run pattern', 'reading-raw: (document)
    required (mono, seq)'. Bounded by the schema, so it suits counting and logging once."""
    parts: dict[str, list[str]] = {}
    for error in islice(contracts.validator(name).iter_errors(doc), contracts.MAX_ERRORS):
        where = "/".join("*" if isinstance(p, int) else str(p) for p in error.absolute_path) or "(document)"
        names = parts.setdefault(f"{where} {error.validator}", [])
        if error.validator == "required" and error.message.count("'") >= 2:
            names.append(error.message.split("'")[1])
    return f"{name}: " + ", ".join(key + (f" ({', '.join(sorted(names))})" if names else "")
                                   for key, names in sorted(parts.items()))


def _number(text: str) -> object:
    try:
        return float(text)
    except ValueError:
        return text.strip()   # refused by the Corrector with the allowed range
