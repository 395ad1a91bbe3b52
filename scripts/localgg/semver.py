"""Semantic versions and npm-style ranges, as recipes' VersionRequirement uses them.

Usage::

    Version.parse("1.2.3") < Version.parse("1.10.0")
    satisfies("2.5.1", ">=2.0.0 <3.0.0")      # True
    satisfies("1.4.0", "^1.2 || ~0.9.1")      # True

Ranges follow node-semver: comparators (`<`, `<=`, `>`, `>=`, `=`), caret, tilde,
x-ranges (`1.x`, `*`), hyphen ranges (`1.0.0 - 2.0.0`), a space is AND and `||` is OR.
A prerelease version satisfies a range only if some comparator of the same set names
a prerelease of the same major.minor.patch. Raises ValueError for what it cannot parse.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import total_ordering

_VERSION = re.compile(r"^v?(\d+)\.(\d+)\.(\d+)(?:-([0-9A-Za-z.-]+))?(?:\+([0-9A-Za-z.-]+))?$")
_PARTIAL = re.compile(r"^v?(\d+|[xX*])(?:\.(\d+|[xX*]))?(?:\.(\d+|[xX*]))?(?:-([0-9A-Za-z.-]+))?(?:\+[0-9A-Za-z.-]+)?$")


@total_ordering
@dataclass(frozen=True)
class Version:
    major: int
    minor: int
    patch: int
    prerelease: tuple = ()

    @classmethod
    def parse(cls, text: str) -> "Version":
        m = _VERSION.match(str(text).strip())
        if not m:
            raise ValueError(f"not a semantic version: {text!r}")
        pre = tuple(int(p) if p.isdigit() else p for p in m.group(4).split(".")) if m.group(4) else ()
        return cls(int(m.group(1)), int(m.group(2)), int(m.group(3)), pre)

    @property
    def core(self) -> tuple[int, int, int]:
        return (self.major, self.minor, self.patch)

    def __lt__(self, other: "Version") -> bool:
        if self.core != other.core:
            return self.core < other.core
        if not self.prerelease or not other.prerelease:
            return bool(self.prerelease) and not other.prerelease
        for a, b in zip(self.prerelease, other.prerelease):
            if a == b:
                continue
            if isinstance(a, int) and isinstance(b, int):
                return a < b
            if isinstance(a, int) != isinstance(b, int):
                return isinstance(a, int)
            return str(a) < str(b)
        return len(self.prerelease) < len(other.prerelease)

    def __str__(self) -> str:
        pre = "-" + ".".join(str(p) for p in self.prerelease) if self.prerelease else ""
        return f"{self.major}.{self.minor}.{self.patch}{pre}"


def valid(text: str) -> bool:
    return _VERSION.match(str(text).strip()) is not None


def _comparators(token: str) -> list[tuple[str, Version]]:
    """One range token (e.g. '^1.2', '>=1.0.0', '1.x') as (op, version) comparators."""
    m = re.match(r"^(<=|>=|<|>|=|\^|~>?)?\s*(.*)$", token)
    op, rest = m.group(1) or "", m.group(2)
    p = _PARTIAL.match(rest)
    if not p:
        raise ValueError(f"invalid version range element: {token!r}")

    def number(group: str | None) -> int | None:
        return None if group is None or group in ("x", "X", "*") else int(group)

    major = number(p.group(1))
    minor = None if major is None else number(p.group(2))
    patch = None if minor is None else number(p.group(3))
    pre = tuple(int(x) if x.isdigit() else x for x in p.group(4).split(".")) if p.group(4) else ()
    full = patch is not None
    lo = Version(major or 0, minor or 0, patch or 0, pre if full else ())
    # the first version above a partial one, as a bound that excludes its prereleases
    above = None if major is None else (
        Version(major + 1, 0, 0, (0,)) if minor is None else Version(major, minor + 1, 0, (0,)))

    if major is None:  # '*' or 'x': anything, except '<*' and '>*', which match nothing
        return [("<", Version(0, 0, 0, (0,)))] if op in ("<", ">") else []
    if op in ("", "="):
        return [("=", lo)] if full else [(">=", lo), ("<", above)]
    if op == "^":
        if major > 0 or minor is None:
            upper = Version(major + 1, 0, 0, (0,))
        elif minor > 0 or patch is None:
            upper = Version(0, minor + 1, 0, (0,))
        else:
            upper = Version(0, 0, patch + 1, (0,))
        return [(">=", lo), ("<", upper)]
    if op in ("~", "~>"):
        return [(">=", lo), ("<", above if minor is None else Version(major, minor + 1, 0, (0,)))]
    if op == ">":
        return [(">", lo)] if full else [(">=", Version(*above.core))]
    if op == ">=":
        return [(">=", lo)]
    if op == "<":
        return [("<", lo if full else Version(*lo.core, (0,)))]
    return [("<=", lo)] if full else [("<", above)]  # "<="


def _parse_set(text: str) -> list[tuple[str, Version]]:
    text = text.strip()
    hyphen = re.match(r"^(\S+)\s+-\s+(\S+)$", text)
    if hyphen:
        return _comparators(">=" + hyphen.group(1)) + _comparators("<=" + hyphen.group(2))
    text = re.sub(r"(<=|>=|<|>|=|\^|~>?)\s+", r"\1", text)
    out = []
    for token in text.split():
        out.extend(_comparators(token))
    return out


def _test(version: Version, comparators: list[tuple[str, Version]]) -> bool:
    for op, bound in comparators:
        ok = {"=": version == bound, "<": version < bound, "<=": version <= bound,
              ">": version > bound, ">=": version >= bound}[op]
        if not ok:
            return False
    if version.prerelease:
        return any(b.prerelease and b.prerelease != (0,) and b.core == version.core for _, b in comparators)
    return True


def satisfies(version: str | Version, requirement: str) -> bool:
    """Whether `version` is in the npm range `requirement`. Raises ValueError if either is malformed."""
    v = version if isinstance(version, Version) else Version.parse(version)
    sets = [s for s in str(requirement).split("||")]
    return any(_test(v, _parse_set(s)) for s in sets)


def check_range(requirement: str) -> None:
    """Raise ValueError if `requirement` is not a valid range."""
    for s in str(requirement).split("||"):
        _parse_set(s)
