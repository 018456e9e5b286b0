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
    assert all(s == 0.0 for s in scores[:300]), "no score while the scorer learns its normal"


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
    # Not given, the default is named as such, with the range that would do.
    with pytest.raises(
        DetectError, match=r"default fit \(10 % of 200 rows: 20\).*--fit-rows 60 to 199"
    ):
        run_detect(source, tmp_path / "o.csv")
    write_series(source, planted_series(n=50))
    with pytest.raises(DetectError, match=r"has 50 rows: fitting needs at least 60.*--fit-input"):
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


def test_the_runaway_from_the_issue_alerts_within_60_rows_and_never_before(
    tmp_path: Path,
) -> None:
    """3,000 rows 5 min apart of 62 + 6 sin(2 pi i / 288) + N(0, 0.8^2) degC, plus 0.35 degC per
    row from row 2,400 to 2,519 (a +42 degC runaway), fitted on the first 1,000 rows."""
    rng = np.random.default_rng(2400)
    i = np.arange(3000)
    values = 62.0 + 6.0 * np.sin(2 * np.pi * i / 288) + rng.normal(0.0, 0.8, 3000)
    values[2400:2520] += 0.35 * np.arange(1, 121)
    values[2520:] += 42.0
    source, out = tmp_path / "temp.csv", tmp_path / "out.csv"
    with source.open("w") as handle:
        handle.write("temperature_c\n")
        handle.writelines(f"{v:.3f}\n" for v in values)
    run_detect(source, out, fit_rows=1000)
    rows = read_rows(out)
    firing = [r["anomaly_alert"] == "firing" for r in rows]
    assert not any(firing[1000:2400]), "an anomaly alert while the machine was normal"
    assert any(firing[2400:2460]), "the runaway was not flagged within 60 rows"
    assert rows[2459]["anomaly_driver"] == "temperature_c"
    assert float(rows[2459]["anomaly_score_temperature_c"]) >= 0.5


def multi_column(n: int = 1200, seed: int = 4) -> np.ndarray:
    rng = np.random.default_rng(seed)
    load = 50.0 + 8.0 * np.sin(2 * np.pi * np.arange(n) / 200) + rng.normal(0.0, 0.5, n)
    return np.stack([load, 2.0 * load + rng.normal(0.0, 0.5, n), rng.poisson(3, n)], axis=1)


def write_table(path: Path, table: np.ndarray, delimiter: str = ",", comma: bool = False) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle, delimiter=delimiter)
        writer.writerow(["ts", "load", "current", "count"])
        for i, row in enumerate(table):
            cells = [f"{v:.3f}".replace(".", ",") if comma else f"{v:.3f}" for v in row]
            writer.writerow([f"t{i}", *cells])


def test_every_numeric_column_is_scored_and_semicolons_with_decimal_commas_read_alike(
    tmp_path: Path,
) -> None:
    table = multi_column()
    plain, european = tmp_path / "plain.csv", tmp_path / "eu.csv"
    write_table(plain, table)
    write_table(european, table, delimiter=";", comma=True)
    run_detect(plain, tmp_path / "a.csv", timestamp_column="ts", fit_rows=400)
    run_detect(european, tmp_path / "b.csv", timestamp_column="ts", fit_rows=400)
    a, b = read_rows(tmp_path / "a.csv"), read_rows(tmp_path / "b.csv")
    assert a == b
    columns = list(a[0])
    for name in ("load", "current", "count"):
        assert f"anomaly_score_{name}" in columns
    assert {
        "anomaly_score",
        "anomaly_alert",
        "anomaly_driver",
        "anomaly_onset",
        "alert_state",
    } <= set(columns)
    # --columns keeps its order rule: the first named is the one forecast.
    run_detect(
        plain, tmp_path / "c.csv", timestamp_column="ts", columns=["current", "load"], fit_rows=400
    )
    c = read_rows(tmp_path / "c.csv")
    assert "anomaly_score_count" not in c[0]
    assert abs(float(c[500]["forecast"]) - table[500, 1]) < abs(
        float(c[500]["forecast"]) - table[500, 0]
    )


def test_changing_a_future_row_of_any_column_never_changes_an_earlier_score(
    tmp_path: Path,
) -> None:
    table = multi_column()
    changed = table.copy()
    changed[800, 2] += 40.0
    write_table(tmp_path / "a.csv", table)
    write_table(tmp_path / "b.csv", changed)
    run_detect(tmp_path / "a.csv", tmp_path / "ao.csv", timestamp_column="ts", fit_rows=400)
    run_detect(tmp_path / "b.csv", tmp_path / "bo.csv", timestamp_column="ts", fit_rows=400)
    a, b = read_rows(tmp_path / "ao.csv"), read_rows(tmp_path / "bo.csv")
    assert a[:800] == b[:800]
    assert a[800:] != b[800:]


def test_fit_input_fits_on_a_known_good_file_and_scores_every_row(tmp_path: Path) -> None:
    table = multi_column(1600)
    write_table(tmp_path / "good.csv", table[:800])
    faulty = table[800:].copy()
    faulty[300:, 1] += 60.0  # current jumps while load does not
    write_table(tmp_path / "new.csv", faulty)
    summary = run_detect(
        tmp_path / "new.csv",
        tmp_path / "out.csv",
        timestamp_column="ts",
        fit_input=tmp_path / "good.csv",
    )
    rows = read_rows(tmp_path / "out.csv")
    assert any(float(r["anomaly_score"]) > 0.0 for r in rows[:20]), "scored from the first row"
    assert not any(r["anomaly_alert"] == "firing" for r in rows[:300])
    assert any(r["anomaly_alert"] == "firing" for r in rows[300:320])
    assert rows[310]["anomaly_driver"] == "current"
    assert summary.anomaly_alerts >= 1


def test_an_unreadable_csv_is_a_clear_error(tmp_path: Path) -> None:
    binary = tmp_path / "x.csv"
    binary.write_bytes(b"ts,value\n1,\xff\xfe\n")
    with pytest.raises(DetectError, match="not UTF-8"):
        run_detect(binary, tmp_path / "o.csv")
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(DetectError, match="is empty"):
        run_detect(empty, tmp_path / "o.csv")
    words = tmp_path / "words.csv"
    words.write_text("a,b\nx,y\n" * 100)
    with pytest.raises(DetectError, match="no numeric column"):
        run_detect(words, tmp_path / "o.csv")


def test_cli_takes_a_delimiter_and_a_fit_input(tmp_path: Path) -> None:
    table = multi_column(900)
    write_table(tmp_path / "good.csv", table[:500], delimiter=";", comma=True)
    write_table(tmp_path / "new.csv", table[500:], delimiter=";", comma=True)
    out = tmp_path / "out.csv"
    args = ["detect", "--input", str(tmp_path / "new.csv"), "--output", str(out)]
    assert (
        main(
            [
                *args,
                "--timestamp-column",
                "ts",
                "--fit-input",
                str(tmp_path / "good.csv"),
                "--delimiter",
                ";",
            ]
        )
        == 0
    )
    rows = read_rows(out)
    assert len(rows) == 400 and "anomaly_score_current" in rows[0]
    # The wrong delimiter, named: the header is one field, and the message says what to do.
    assert main([*args, "--timestamp-column", "ts", "--delimiter", ","]) == 2


def test_a_tab_delimiter_as_typed_in_a_shell_and_a_bad_one(tmp_path: Path) -> None:
    source, out = tmp_path / "tabs.csv", tmp_path / "out.csv"
    values = planted_series(400)
    source.write_text("ts\tload_pct\n" + "".join(f"t{i}\t{v}\n" for i, v in enumerate(values)))
    run_detect(source, out, timestamp_column="ts", fit_rows=200, delimiter="\\t")
    assert len(read_rows(out)) == len(values)
    with pytest.raises(DetectError, match="one character"):
        run_detect(source, out, timestamp_column="ts", fit_rows=200, delimiter="ab")


def test_decimal_commas_read_as_the_delimiter_are_refused_not_truncated(tmp_path: Path) -> None:
    """``60,13`` under a one-field header: the sniffer takes the comma for the delimiter, and
    reading on would keep 60 of 60.13 in every row."""
    source = tmp_path / "comma.csv"
    source.write_text("temp\n" + "".join(f"{60 + i % 7},{i % 10}3\n" for i in range(300)))
    with pytest.raises(DetectError, match="--delimiter"):
        run_detect(source, tmp_path / "out.csv", fit_rows=100)
    run_detect(source, tmp_path / "out.csv", fit_rows=100, delimiter=";")  # the right one reads


def test_rows_are_steps_so_an_alert_ends_with_the_rows_that_clear_it(tmp_path: Path) -> None:
    """The agent holds an incident keep_firing_for_s seconds; detect's rows are steps, so its
    alert state follows the policy row by row and ends soon after the series cools."""
    values = planted_series(900)
    values[760:] = 40.0  # repaired: back to normal well under the threshold
    source, out = tmp_path / "load.csv", tmp_path / "out.csv"
    write_series(source, values)
    run_detect(source, out, timestamp_column="ts", fit_rows=300, threshold=60.0)
    states = [r["alert_state"] for r in read_rows(out)]
    assert "critical" in states[600:760]
    overheat_after = [s for s in states[780:] if s in ("warning", "critical")]
    assert overheat_after == [], states[760:800]


@pytest.mark.parametrize(
    ("setting", "match"),
    [
        ({"anomaly_threshold": 0.0}, "anomaly-threshold"),  # outside the score's range
        ({"anomaly_threshold": 1.5}, "anomaly-threshold"),
        ({"horizon": 0}, "--horizon"),  # under one row ahead: refused, not a traceback
        ({"horizon": -3}, "--horizon"),
    ],
)
def test_a_setting_out_of_range_is_refused(
    tmp_path: Path, setting: dict[str, float], match: str
) -> None:
    source = tmp_path / "load.csv"
    write_series(source, planted_series(400))
    with pytest.raises(DetectError, match=match):
        run_detect(source, tmp_path / "out.csv", fit_rows=200, **setting)  # type: ignore[arg-type]


def test_values_beyond_float32_are_gaps_and_a_column_of_them_a_clear_error(
    tmp_path: Path,
) -> None:
    """Readings are float32, as in the agent: a wider value would be inf in the window and
    turn the next forecasts into NaN; a column of them cannot be scored at all."""
    table = multi_column(600)
    write_table(tmp_path / "spike.csv", table)
    lines = (tmp_path / "spike.csv").read_text().splitlines()
    lines[401] = lines[401].split(",")[0] + ",1e39," + ",".join(lines[401].split(",")[2:])
    (tmp_path / "spike.csv").write_text("\n".join(lines) + "\n")
    summary = run_detect(
        tmp_path / "spike.csv", tmp_path / "out.csv", timestamp_column="ts", fit_rows=300
    )
    rows = read_rows(tmp_path / "out.csv")
    assert len(rows) == 600 and summary.gaps == 1
    assert rows[400]["load"] == "" and rows[400]["anomaly_score"] == "0.0"
    assert not any("nan" in value for row in rows for value in row.values())
    huge = tmp_path / "huge.csv"
    huge.write_text("ts,h\n" + "".join(f"t{i},{1e300 * (1 + i % 7)!r}\n" for i in range(300)))
    with pytest.raises(DetectError, match=r"'h'.*line 2: '1e\+300'.*rescale"):
        run_detect(huge, tmp_path / "out.csv", timestamp_column="ts", fit_rows=100)


def lines_of(table: np.ndarray, delimiter: str = ",") -> list[str]:
    return [
        f"t{i}{delimiter}" + delimiter.join(f"{v:.3f}" for v in row) for i, row in enumerate(table)
    ]


def test_thousands_separators_read_as_numbers_not_as_a_column_dropped(tmp_path: Path) -> None:
    """``1.234,5`` (European) and ``"1,234.5"`` (quoted, comma-delimited) are the same number;
    a column of them was judged not numeric and left out without a word."""
    table = multi_column(600)
    table[:, 1] *= 100.0  # current in the thousands
    european, quoted = tmp_path / "eu.csv", tmp_path / "us.csv"
    european.write_text(
        "ts;load;current;count\n"
        + "".join(
            f"t{i};{r[0]:.3f};{r[1]:,.1f};{r[2]:.0f}\n".replace(",", "X")
            .replace(".", ",")
            .replace("X", ".")
            for i, r in enumerate(table)
        )
    )
    quoted.write_text(
        "ts,load,current,count\n"
        + "".join(f't{i},{r[0]:.3f},"{r[1]:,.1f}",{r[2]:.0f}\n' for i, r in enumerate(table))
    )
    for source in (european, quoted):
        summary = run_detect(source, tmp_path / "out.csv", timestamp_column="ts", fit_rows=300)
        rows = read_rows(tmp_path / "out.csv")
        assert "anomaly_score_current" in rows[0], source
        assert float(rows[5]["current"]) == pytest.approx(round(table[5, 1], 1))
        assert summary.gaps == 0 and summary.notes == ()


def test_duplicate_column_names_are_refused_not_read_as_the_first(tmp_path: Path) -> None:
    source = tmp_path / "dup.csv"
    source.write_text("ts,load,load\n" + "\n".join(lines_of(multi_column(300)[:, :2])) + "\n")
    with pytest.raises(DetectError, match=r"'load' appears 2 times.*fields \[2, 3\].*rename"):
        run_detect(source, tmp_path / "out.csv", timestamp_column="ts", fit_rows=100)


def test_a_text_column_and_cells_that_are_no_number_are_named_never_dropped_in_silence(
    tmp_path: Path,
) -> None:
    table = multi_column(400)
    rows = [f"{line},{'RUN' if i % 50 else 'STOP'}" for i, line in enumerate(lines_of(table))]
    rows[250] = rows[250].replace(rows[250].split(",")[1], "ERR", 1)
    rows[260] = rows[260].replace(rows[260].split(",")[1], "nan", 1)
    source = tmp_path / "mixed.csv"
    source.write_text("ts,load,current,count,status\n" + "\n".join(rows) + "\n")
    out = tmp_path / "out.csv"
    summary = run_detect(source, out, timestamp_column="ts", fit_rows=100)
    assert len(read_rows(out)) == 400 and summary.gaps == 2
    notes = "\n".join(summary.notes)
    assert "column 'status' not scored: 400 of 400 cells are text (first: line 2, 'STOP')" in notes
    assert "column 'load': 1 cell(s) not a number, read as gaps (first: line 252, 'ERR')" in notes
    assert "column 'load': 1 cell(s) nan or inf, read as gaps (first: line 262, 'nan')" in notes
    with pytest.raises(DetectError, match=r"'status' holds no usable number \(line 2: 'STOP'"):
        run_detect(source, out, timestamp_column="ts", columns=["load", "status"], fit_rows=100)


def test_ragged_rows_name_their_line_a_long_one_stops_a_short_one_is_a_gap(
    tmp_path: Path,
) -> None:
    """A long row may have every value after an unquoted delimiter shifted into the wrong
    column; a short row's cells cannot be placed. Neither is read as if it were whole."""
    rows = lines_of(multi_column(400))
    rows[200] = ",".join(rows[200].split(",")[:2])  # t200,load: current and count missing
    source, out = tmp_path / "short.csv", tmp_path / "out.csv"
    source.write_text("ts,load,current,count\n" + "\n".join(rows) + "\n")
    summary = run_detect(source, out, timestamp_column="ts", fit_rows=100)
    assert len(read_rows(out)) == 400 and read_rows(out)[200]["load"] == ""
    assert "1 row(s) with fewer fields than the header's 4, read as gaps (first: line 202" in (
        "\n".join(summary.notes)
    )
    rows[300] = rows[300] + ",99"
    source.write_text("ts,load,current,count\n" + "\n".join(rows) + "\n")
    with pytest.raises(DetectError, match=r"line 302 has 5 fields, the header 4 \(extra: \['99'\]"):
        run_detect(source, out, timestamp_column="ts", fit_rows=100)


def test_a_csv_with_no_rows_or_a_fit_input_without_the_columns_says_what_to_do(
    tmp_path: Path,
) -> None:
    header = tmp_path / "header.csv"
    header.write_text("ts,load\n")
    with pytest.raises(DetectError, match="a header but no data rows"):
        run_detect(header, tmp_path / "out.csv")
    write_table(tmp_path / "new.csv", multi_column(300))
    (tmp_path / "good.csv").write_text(
        "ts,load,flow\n" + "\n".join(lines_of(multi_column(300)[:, :2]))
    )
    with pytest.raises(DetectError, match=r"--fit-input .* has no column \['current', 'count'\]"):
        run_detect(tmp_path / "new.csv", tmp_path / "out.csv", fit_input=tmp_path / "good.csv")
    latin = tmp_path / "latin.csv"
    latin.write_bytes(b"ts,load\n1,2\n2,3\xb0\n")
    with pytest.raises(DetectError, match="line 3 holds byte 0xb0"):
        run_detect(latin, tmp_path / "out.csv")


def test_cli_prints_each_note_and_names_a_column_that_looks_like_a_timestamp(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    table = multi_column(300)
    source = tmp_path / "epoch.csv"
    source.write_text(
        "epoch,load,current\n"
        + "".join(f"{1_700_000_000 + 60 * i},{r[0]:.3f},{r[1]:.3f}\n" for i, r in enumerate(table))
    )
    args = ["detect", "--input", str(source), "--output", str(tmp_path / "o.csv")]
    assert main([*args, "--fit-rows", "100"]) == 0
    err = capsys.readouterr().err
    assert "note: --input" in err and "--timestamp-column epoch" in err


def test_quoted_decimal_commas_and_spaces_between_thousands_read_as_numbers(
    tmp_path: Path,
) -> None:
    """A spreadsheet's comma-separated export in many locales quotes ``"21,5"``; French
    exports group thousands with a (narrow no-break) space: ``1 234,5``."""
    table = multi_column(400)
    table[:, 1] *= 100.0
    sheet, french = tmp_path / "sheet.csv", tmp_path / "fr.csv"
    sheet.write_text(
        "ts,load,current\n"
        + "".join(
            f't{i},"{r[0]:.3f}","{r[1]:.1f}"\n'.replace(".", ",") for i, r in enumerate(table)
        )
    )
    french.write_text(
        "ts;load;current\n"
        + "".join(
            f"t{i};{r[0]:.3f};{r[1]:,.1f}\n".replace(",", "\u202f").replace(".", ",")
            for i, r in enumerate(table)
        )
    )
    for source in (sheet, french):
        summary = run_detect(source, tmp_path / "out.csv", timestamp_column="ts", fit_rows=200)
        rows = read_rows(tmp_path / "out.csv")
        assert float(rows[7]["load"]) == pytest.approx(round(table[7, 0], 3)), source
        assert float(rows[7]["current"]) == pytest.approx(round(table[7, 1], 1)), source
        assert summary.notes == () and summary.gaps == 0
    # "5,181" alone could be either: read as thousands (as with a decimal point elsewhere),
    # and said so.
    counts = tmp_path / "counts.csv"
    counts.write_text("ts,load\n" + "".join(f't{i},"{5000 + i % 7:,}"\n' for i in range(300)))
    summary = run_detect(counts, tmp_path / "out.csv", timestamp_column="ts", fit_rows=100)
    assert read_rows(tmp_path / "out.csv")[3]["load"] == "5003.0"
    assert "column 'load': a comma between digits read as a thousands separator" in summary.notes[0]


def test_a_gap_row_holds_the_alert_states_it_does_not_report_them_cleared(
    tmp_path: Path,
) -> None:
    """A missing reading changes no alert: a gap in a firing episode read as "ok" for one row
    and "firing" again on the next, as if the alert had flapped."""
    rng = np.random.default_rng(0)
    values = 60.0 + 3.0 * np.sin(2 * np.pi * np.arange(900) / 100) + rng.normal(0.0, 0.5, 900)
    values[600:] += np.linspace(0.0, 40.0, 300)
    source, out = tmp_path / "fire.csv", tmp_path / "out.csv"
    source.write_text(
        "ts,temp\n"
        + "".join(f"t{i},{'' if i == 700 else f'{v:.2f}'}\n" for i, v in enumerate(values))
    )
    run_detect(source, out, timestamp_column="ts", fit_rows=300, threshold=90.0)
    rows = read_rows(out)
    assert [r["anomaly_alert"] for r in rows[699:702]] == ["firing"] * 3
    assert [r["alert_state"] for r in rows[699:702]] == ["anomaly"] * 3
    assert rows[700]["temp"] == "" and rows[700]["forecast"] == ""


def test_an_input_column_named_like_an_output_column_is_refused(tmp_path: Path) -> None:
    """``forecast`` or ``row`` in the input made two output columns of one name."""
    table = multi_column(300)
    for name in ("forecast", "row", "anomaly_score_load"):
        source = tmp_path / "clash.csv"
        source.write_text(f"load,{name}\n" + "".join(f"{r[0]:.3f},{r[1]:.3f}\n" for r in table))
        with pytest.raises(DetectError, match=f"column '{name}' has the name of a column"):
            run_detect(source, tmp_path / "out.csv", fit_rows=100)
    source.write_text(
        "forecast,load\n" + "".join(f"t{i},{r[0]:.3f}\n" for i, r in enumerate(table))
    )
    with pytest.raises(DetectError, match="column 'forecast' has the name of a column"):
        run_detect(source, tmp_path / "out.csv", timestamp_column="forecast", fit_rows=100)


def test_values_near_the_float32_limit_raise_no_threshold_alert_and_write_no_inf(
    tmp_path: Path,
) -> None:
    """Readings near ±3.4e38 are in range, but a forecast of them can overflow to inf: with
    no --threshold that raised 'threshold alerts', and 'inf' was written as a forecast."""
    rng = np.random.default_rng(3)
    source, out = tmp_path / "edge.csv", tmp_path / "out.csv"
    near = 3.3e38 * (1 - 0.05 * np.abs(rng.normal(size=(400, 2)))) * np.array([1.0, -1.0])
    source.write_text(
        "ts,e,neg\n" + "".join(f"t{i},{a!r},{b!r}\n" for i, (a, b) in enumerate(near.tolist()))
    )
    summary = run_detect(source, out, timestamp_column="ts", fit_rows=100)
    rows = read_rows(out)
    assert summary.alerts == 0 and {r["alert_state"] for r in rows} <= {"ok", "anomaly"}
    cells = [r[k] for r in rows for k in ("forecast", "residual")]
    assert not any("inf" in c or "nan" in c for c in cells)
    assert any(c for c in cells)


def test_an_output_over_the_input_or_in_no_folder_is_refused(tmp_path: Path) -> None:
    """--output naming the input overwrote the user's history with the scored copy (its
    timestamps gone); a folder that does not exist ended in a traceback."""
    source = tmp_path / "load.csv"
    write_series(source, planted_series(300))
    before = source.read_text()
    with pytest.raises(DetectError, match="is the --input file"):
        run_detect(source, tmp_path / "." / "load.csv", fit_rows=100)
    with pytest.raises(DetectError, match="is the --fit-input file"):
        run_detect(tmp_path / "other.csv", source, fit_input=source)
    assert source.read_text() == before
    with pytest.raises(DetectError, match=r"cannot write --output .*nowhere.*a folder that exists"):
        run_detect(source, tmp_path / "nowhere" / "out.csv", fit_rows=100)


def test_a_fit_input_read_with_the_wrong_delimiter_names_the_delimiter(tmp_path: Path) -> None:
    table = multi_column(600)
    write_table(tmp_path / "new.csv", table, delimiter=";", comma=True)
    write_table(tmp_path / "good.csv", table)
    with pytest.raises(DetectError, match=r"good.csv: the header has one field .*--delimiter"):
        run_detect(
            tmp_path / "new.csv",
            tmp_path / "out.csv",
            fit_input=tmp_path / "good.csv",
            delimiter=";",
        )


def test_an_excel_sep_line_names_the_delimiter_and_lines_stay_the_files(tmp_path: Path) -> None:
    """Excel writes ``sep=;`` as the first line of some exports; it was read as the header."""
    table = multi_column(400)
    write_table(tmp_path / "eu.csv", table, delimiter=";", comma=True)
    lines = ["sep=;", *(tmp_path / "eu.csv").read_text().splitlines()]
    lines[10] = lines[10].replace(lines[10].split(";")[1], "ERR")
    source = tmp_path / "excel.csv"
    source.write_text("\n".join(lines) + "\n")
    summary = run_detect(source, tmp_path / "out.csv", timestamp_column="ts", fit_rows=100)
    assert len(read_rows(tmp_path / "out.csv")) == 400
    assert "(first: line 11, 'ERR')" in summary.notes[0]


def test_a_sparse_column_that_leaves_no_fit_run_is_named(tmp_path: Path) -> None:
    """A historian export logs some sensors less often: their empty cells make every row a
    gap, and the error named no column."""
    rows = lines_of(multi_column(400))
    rows = [row if i % 10 == 0 else row.rsplit(",", 1)[0] + "," for i, row in enumerate(rows)]
    source = tmp_path / "sparse.csv"
    source.write_text("ts,load,current,count\n" + "\n".join(rows) + "\n")
    with pytest.raises(DetectError, match=r"column 'count' misses 90 of them.*--columns"):
        run_detect(source, tmp_path / "out.csv", timestamp_column="ts", fit_rows=100)


def test_an_empty_named_column_is_noted_and_a_trailing_delimiter_is_not(tmp_path: Path) -> None:
    rows = [f"{line},," for line in lines_of(multi_column(300)[:, :2])]
    source = tmp_path / "t.csv"
    source.write_text("ts,load,current,spare,\n" + "\n".join(rows) + "\n")
    summary = run_detect(source, tmp_path / "out.csv", timestamp_column="ts", fit_rows=100)
    assert summary.notes == (f"--input {source}: column 'spare' not scored: it holds no value",)
