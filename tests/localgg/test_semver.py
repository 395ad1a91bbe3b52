import pytest

from localgg.semver import Version, check_range, satisfies


@pytest.mark.parametrize("version, requirement, expected", [
    ("2.5.1", ">=2.0.0 <3.0.0", True), ("3.0.0", ">=2.0.0 <3.0.0", False),
    ("1.4.0", "^1.2 || ~0.9.1", True), ("0.9.5", "^1.2 || ~0.9.1", True), ("0.10.0", "~0.9.1", False),
    ("1.0.0", "1.0.0", True), ("1.0.1", "1.0.0", False), ("1.2.9", "1.2.x", True), ("1.3.0", "1.2", False),
    ("2.0.0", "*", True), ("0.2.5", "^0.2.3", True), ("0.3.0", "^0.2.3", False), ("0.0.4", "^0.0.3", False),
    ("1.5.0", "1.0.0 - 2.0.0", True), ("2.0.1", "1.0.0 - 2.0.0", False),
    ("2.0.0-beta", "^1.0.0", False), ("1.2.3-beta.2", ">=1.2.3-beta.1", True), ("1.2.4-beta", ">=1.2.3-beta.1", False),
    ("1.9.9", "<2", True), ("2.0.0", "<2", False), ("2.9.0", "<=2", True), ("2.1.0", ">2.0", True),
    ("2.0.5", ">2.0", False), ("1.0.0", ">= 1.0.0", True),
])
def test_npm_ranges(version, requirement, expected):
    assert satisfies(version, requirement) is expected


def test_ordering_with_prereleases():
    ordered = ["1.0.0-alpha", "1.0.0-alpha.1", "1.0.0-alpha.beta", "1.0.0-beta", "1.0.0-beta.2",
               "1.0.0-beta.11", "1.0.0-rc.1", "1.0.0", "1.10.0"]
    assert sorted(ordered, key=Version.parse) == ordered


@pytest.mark.parametrize("bad", ["1.0", "x.y.z", "1.0.0.0"])
def test_bad_versions(bad):
    with pytest.raises(ValueError):
        Version.parse(bad)


def test_bad_range():
    with pytest.raises(ValueError):
        check_range(">=banana")
