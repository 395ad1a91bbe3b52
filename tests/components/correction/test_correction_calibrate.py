"""scripts/calibrate, run as a subprocess with the plain interpreter on CSVs written here."""

import csv
import json
import math
import random
import subprocess
import sys
from pathlib import Path

import pytest

from temperature_correction.correction import Corrector

SCRIPT = Path(__file__).resolve().parents[3] / "scripts" / "calibrate"


def calibrate(*args, cwd=None):
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True,
                          timeout=60, cwd=cwd)


def synthetic(n=200, a=1.3, b=-0.28, c=0.7, noise=0.0, seed=7):
    """Rows whose reference is exactly (or up to Gaussian noise) a*raw + b*cpu + c."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        raw = 18 + 12 * rng.random() + 0.01 * i
        cpu = 38 + 30 * rng.random()
        rows.append((raw, cpu, a * raw + b * cpu + c + rng.gauss(0, noise)))
    return rows


def write(path, rows, header=("raw", "cpu", "reference")):
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def test_recovers_known_coefficients_exactly(tmp_path):
    result = calibrate(write(tmp_path / "exact.csv", synthetic()), "--json")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    k = doc["coefficients"]
    assert (k["a"], k["b"], k["c"]) == pytest.approx((1.3, -0.28, 0.7), abs=1e-9)
    assert doc["rows"] == 200
    assert doc["error"]["linear"]["rmse"] < 1e-5 and doc["error"]["linear"]["max_abs"] < 1e-5


def test_recovers_coefficients_under_noise_and_beats_pimoroni(tmp_path):
    rows = synthetic(n=2000, noise=0.1, seed=3)
    result = calibrate(write(tmp_path / "noisy.csv", rows), "--json")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    k = doc["coefficients"]
    assert k["a"] == pytest.approx(1.3, abs=0.01) and k["b"] == pytest.approx(-0.28, abs=0.005)
    assert k["c"] == pytest.approx(0.7, abs=0.3)
    assert doc["error"]["linear"]["rmse"] == pytest.approx(0.1, abs=0.01)
    assert doc["error"]["cpu_factor"]["rmse"] > doc["error"]["linear"]["rmse"]


def test_pimoroni_comparison_is_the_components_cpu_factor(tmp_path):
    rows = [(r, c, y) for r, c, y in synthetic(n=30, seed=11)]
    result = calibrate(write(tmp_path / "cmp.csv", rows), "--json", "--factor", "1.5", "--window", "3")
    doc = json.loads(result.stdout)
    corrector = Corrector({"factor": 1.5, "window": 3})
    ours = [corrector.correct({"seq": i, "status": "ok", "temperature": r, "cpu_temperature": c})["temperature"]
            for i, (r, c, _) in enumerate(rows)]
    residuals = [p - y for p, (_, _, y) in zip(ours, rows)]     # ours is rounded to 0.01
    cf = doc["error"]["cpu_factor"]
    assert (cf["factor"], cf["window"]) == (1.5, 3)
    assert cf["rmse"] == pytest.approx(math.sqrt(sum(e * e for e in residuals) / len(residuals)), abs=0.006)
    assert cf["max_abs"] == pytest.approx(max(map(abs, residuals)), abs=0.006)
    none = [r - y for r, _, y in rows]
    assert doc["error"]["none"]["max_abs"] == pytest.approx(max(map(abs, none)))


def test_report_prints_coefficients_errors_and_both_configurations(tmp_path):
    rows = synthetic(n=50, a=1.444444, b=-0.444444, c=0.0)
    path = write(tmp_path / "r.csv", rows, header=("temperature_raw", "cpu_temperature", "reference", "note"))
    result = calibrate(path)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "a = 1.444444" in out and "b = -0.444444" in out and "c = 0.000000" in out
    assert "RMSE" in out and "max abs" in out and "cpu_factor 2.25, window 5" in out
    documents = [json.loads(line) for line in out.splitlines() if line.startswith("  {")]
    merge, shadow = documents
    correction = {"method": "linear", "a": 1.444444, "b": -0.444444, "c": 0.0}
    assert merge == {"io.backfill.TemperatureCorrection": {"MERGE": correction}}
    assert shadow == {"state": {"desired": {"correction": correction}}}
    # what it prints is accepted as it is by the component
    assert Corrector(correction).refused == []


def test_runs_with_only_the_standard_library(tmp_path):
    """-I -S: no site-packages, no PYTHONPATH, no user site."""
    path = write(tmp_path / "s.csv", synthetic(n=20))
    result = subprocess.run([sys.executable, "-I", "-S", str(SCRIPT), str(path), "--json"], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_is_executable():
    assert SCRIPT.stat().st_mode & 0o111
    assert SCRIPT.read_text().startswith("#!/usr/bin/env python3\n")


@pytest.mark.parametrize("text, message", [
    ("", "empty file; expected a header row raw,cpu,reference"),
    ("raw,cpu,ref\n1,2,3\n", "line 1: no column named reference in the header"),
    ("raw,raw,cpu,reference\n", "line 1: more than one column named raw or temperature_raw"),
    ("raw,cpu,reference\n20,40,19\n21,abc,20\n", "line 3: column 'cpu': 'abc' is not a number"),
    ("raw,cpu,reference\n20,40,19\n\n21,41\n", "line 4: no value in column 'reference' (column 3)"),
    ("raw,cpu,reference\n20,40,\n", "line 2: no value in column 'reference'"),
    ("raw,cpu,reference\n20,nan,19\n", "line 2: column 'cpu': 'nan' is not a finite number"),
    ("raw,cpu,reference\n20,40,19\n21,41,20\n", "2 data row(s); a, b and c need at least 3"),
    ("raw,cpu,reference\n20,40,19\n21,40,20\n22,40,21\n23,40,22\n", "the CPU temperature is the same in every row"),
    ("raw,cpu,reference\n20,40,19\n21,42,20\n22,44,21\n23,46,22\n", "rise and fall together in fixed proportion"),
    ("raw,cpu,reference\n20,40,19\n21,\"4\n", "not a readable CSV"),
])
def test_bad_csv_is_refused_with_line_and_reason(tmp_path, text, message):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    result = calibrate(path)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.startswith(f"calibrate: {path}") or "cannot be told apart" in result.stderr
    assert message in result.stderr


def test_missing_file_and_absurd_coefficients(tmp_path):
    result = calibrate(tmp_path / "nope.csv")
    assert result.returncode == 2 and "cannot read it" in result.stderr
    # a reference in Kelvin: the fit needs c near 273 (fine) ... in millidegrees it leaves the range
    rows = [(r, c, y * 1000) for r, c, y in synthetic(n=20)]
    result = calibrate(write(tmp_path / "milli.csv", rows))
    assert result.returncode == 2 and "outside -1000..1000" in result.stderr and "a = 1300" in result.stderr
