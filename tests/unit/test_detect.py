"""`forewarn detect` on small CSVs: it finds a planted failure, and it is causal."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from forewarn.cli import main
from forewarn.detect import DetectError, run_detect


def write_series(path: Path, values: np.ndarray, stamps: list[str] | None = None) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["ts", "load_pct"])
        for i, value in enumerate(values):
            writer.writerow([stamps[i] if stamps else f"t{i}", "" if np.isnan(value) else value])


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def planted_series(n: int = 900, seed: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    values = 40.0 + 4.0 * np.sin(2 * np.pi * t / 50) + rng.normal(0.0, 0.4, n)
    if n > 700:
        values[600:700] += np.linspace(0.0, 30.0, 100)  # a load that runs away, stays high
        values[700:] += 30.0
    return values


def test_one_column_csv_finds_the_planted_failure_before_it_crosses(tmp_path: Path) -> None:
    values = planted_series()
    source, out = tmp_path / "load.csv", tmp_path / "out.csv"
    write_series(source, values)
    summary = run_detect(source, out, timestamp_column="ts", fit_rows=300, threshold=60.0)
    rows = read_rows(out)
    assert len(rows) == len(values)
    assert [r["ts"] for r in rows] == [f"t{i}" for i in range(len(values))]
    first_crossing = int(np.argmax(values >= 60.0))
    alerting = [i for i, r in enumerate(rows) if r["alert_state"] in ("warning", "critical")]
    assert alerting, "the runaway load was never flagged"
    assert alerting[0] < first_crossing, (alerting[0], first_crossing)
    assert min(alerting) >= 600, "flagged before the fault began"
    assert summary.alerts >= 1
    scores = [float(r["anomaly_score"]) for r in rows]
    assert all(0.0 <= s <= 1.0 for s in scores)
    assert all(s == 0.0 for s in scores[: 300 + 20]), "no score before the model can score"


def test_changing_a_future_row_never_changes_an_earlier_output(tmp_path: Path) -> None:
    values = planted_series()
    changed = values.copy()
    changed[650] += 50.0
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    write_series(a, values)
    write_series(b, changed)
    run_detect(a, tmp_path / "a_out.csv", timestamp_column="ts", fit_rows=300, threshold=60.0)
    run_detect(b, tmp_path / "b_out.csv", timestamp_column="ts", fit_rows=300, threshold=60.0)
    rows_a, rows_b = read_rows(tmp_path / "a_out.csv"), read_rows(tmp_path / "b_out.csv")
    assert rows_a[:650] == rows_b[:650]
    assert rows_a[650:] != rows_b[650:], "the change must show from its own row on"


def test_irregular_repeated_timestamps_and_gaps_are_handled(tmp_path: Path) -> None:
    values = planted_series(n=500)
    values[400] = np.nan
    stamps = [str(1000 + i * (1 if i % 7 else 13)) for i in range(500)]
    stamps[200] = stamps[199]  # a repeated timestamp
    source, out = tmp_path / "x.csv", tmp_path / "y.csv"
    write_series(source, values, stamps)
    summary = run_detect(source, out, timestamp_column="ts", fit_rows=150)
    rows = read_rows(out)
    assert [r["ts"] for r in rows] == stamps
    assert summary.gaps == 1
    assert rows[400]["forecast"] == "" and rows[400]["anomaly_score"] == "0.0"
    # The window restarts after the gap: no forecast for the next 20 rows.
    assert all(r["forecast"] == "" for r in rows[401:421])
    assert rows[422]["forecast"] != ""


def test_too_few_fit_rows_is_a_clear_error(tmp_path: Path) -> None:
    source = tmp_path / "short.csv"
    write_series(source, planted_series(n=200))
    with pytest.raises(DetectError, match="--fit-rows 20 is too few"):
        run_detect(source, tmp_path / "o.csv", fit_rows=20)


def test_cli_detect_prints_a_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source, out = tmp_path / "load.csv", tmp_path / "out.csv"
    write_series(source, planted_series())
    code = main(["detect", "--input", str(source), "--output", str(out), "--fit-rows", "300"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "900 rows" in printed and str(out) in printed
    code = main(["detect", "--input", str(tmp_path / "nope.csv"), "--output", str(out)])
    assert code == 2
