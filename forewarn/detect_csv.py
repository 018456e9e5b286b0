"""Reading a plant's CSV export for `forewarn detect`: every cell accounted for.

Plant exports differ: ``,`` ``;`` tab or ``|`` between fields, decimal commas (``21,5``) and
thousands separators (``1.234,5`` or ``"1,234.5"``), a byte-order mark, CRLF line endings,
quoted fields. Whatever is read, nothing is dropped without a word: a column that is not scored
and a cell read as a gap are named in a note (with its line and its text), and what cannot be
read stops with an error naming the line or column, the value and the fix. Line numbers are
the file's own, header included, as an editor shows them.
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from wire.reading import FLOAT32_MAX

DELIMITERS = ",;\t|"
NUMERIC_SHARE = 0.5
"""A column is numeric when at least this share of its non-empty cells are numbers: some
``ERR`` or ``n/a`` cells in a sensor's column are gaps, a status column is not a sensor."""


class DetectError(ValueError):
    """Input that cannot be backtested; the message says what to change."""


@dataclass
class Table:
    """The used columns of a CSV, one row per data row, and what reading it left out."""

    columns: list[str]
    stamps: list[str]
    values: NDArray[np.float64]
    notes: list[str] = field(default_factory=list)


@dataclass
class _Column:
    """How one column's cells read as numbers, and the cells that did not."""

    decimal: str
    thousands: str | None
    numbers: int = 0
    texts: int = 0
    first_text: tuple[int, str] | None = None
    gaps: dict[str, tuple[int, int, str]] = field(default_factory=dict)

    def gap(self, reason: str, line: int, text: str) -> None:
        count, first, first_text = self.gaps.get(reason, (0, line, text))
        self.gaps[reason] = (count + 1, first, first_text)


@dataclass
class _Source:
    """A file's parsed rows, each with its line, and the notes said of it so far."""

    path: Path
    role: str
    header: list[str]
    rows: list[list[str]]
    lines: list[int]
    notes: list[str] = field(default_factory=list)

    def note(self, text: str) -> None:
        self.notes.append(f"{self.role} {self.path}: {text}")


def read_table(
    path: Path,
    timestamp_column: str | None,
    columns: Sequence[str] | None,
    delimiter: str | None = None,
    role: str = "--input",
) -> Table:
    """The used columns of ``path`` (``columns``, or every numeric one), timestamps verbatim.

    The delimiter is sniffed (``,`` ``;`` tab ``|``), or read from Excel's ``sep=;`` first
    line, unless given. With a delimiter other than ``,`` a decimal comma (``21,5``) reads as
    a decimal point; see :func:`_format` for quoted decimal commas and thousands separators.
    """
    text = _text(path)
    hint = re.match(r"sep=(.)\r?\n", text)  # Excel's first line naming the delimiter
    if hint:
        text = text[hint.end() :]
        delimiter = delimiter or hint.group(1)
    delimiter = _delimiter(text, delimiter)
    header, rows, lines = _rows(path, text, delimiter, offset=1 if hint else 0)
    source = _Source(path, role, [name.strip() for name in header], rows, lines)
    if not rows:
        raise DetectError(
            f"{path} has a header but no data rows; export the rows too (one per reading)"
        )
    _check_width(path, source.header, rows, lines, delimiter, timestamp_column)
    formats = _formats(source, delimiter != ",")
    parsed = [[_parse(c, formats[i]) for i, c in enumerate(row[: len(header)])] for row in rows]
    _count(source, parsed, formats)
    if timestamp_column is not None and timestamp_column not in source.header:
        raise DetectError(
            f"{role} {path} has no timestamp column {timestamp_column!r}; its header is "
            f"{source.header}: name one of them with --timestamp-column"
        )
    used = _used(source, formats, timestamp_column, columns)
    _check_duplicates(path, source.header, used, timestamp_column)
    values = _values(source, parsed, formats, used)
    if timestamp_column is None and not columns:
        for c, name in enumerate(used):
            steps = np.diff(values[:, c])
            if len(steps) > 1 and (steps > 0).all():
                source.note(
                    f"column {name!r} is scored as a sensor, but it rises on every row: a "
                    f"timestamp or a counter? --timestamp-column {name} copies it to the output "
                    "instead"
                )
    stamp = source.header.index(timestamp_column) if timestamp_column is not None else None
    stamps = [row[stamp] if stamp is not None and stamp < len(row) else "" for row in rows]
    return Table(used, stamps, values, source.notes)


def _count(source: _Source, parsed: list[list[float | None]], formats: list[_Column]) -> None:
    """Counts each column's numbers and texts, and keeps its first text with its line."""
    for row, cells, line in zip(source.rows, parsed, source.lines, strict=True):
        for i, value in enumerate(cells):
            if value is not None:
                formats[i].numbers += 1
            elif row[i].strip():
                formats[i].texts += 1
                if formats[i].first_text is None:
                    formats[i].first_text = (line, row[i])


def _numeric(name: str, column: _Column) -> bool:
    numbers, texts = column.numbers, column.texts
    return bool(name) and numbers > 0 and numbers >= NUMERIC_SHARE * (numbers + texts)


def _values(
    source: _Source, parsed: list[list[float | None]], formats: list[_Column], used: list[str]
) -> NDArray[np.float64]:
    """The used columns' values, NaN where a cell is a gap; each gap's reason is noted."""
    width = len(source.header)
    values = np.full((len(source.rows), len(used)), np.nan)
    for c, name in enumerate(used):
        index = source.header.index(name)
        f = formats[index]
        for r, row in enumerate(source.rows):
            if len(row) < width:
                continue  # a short row's cells cannot be placed: the whole row is a gap
            value, cell, line = parsed[r][index], row[index], source.lines[r]
            if value is None:
                f.gap("empty" if not cell.strip() else "not a number", line, cell)
            elif not math.isfinite(value):
                f.gap("nan or inf", line, cell)
            elif abs(value) > FLOAT32_MAX:
                f.gap(f"beyond ±{FLOAT32_MAX:.3g}", line, cell)
            else:
                values[r, c] = value
        if f.gaps and np.isnan(values[:, c]).all():
            reason, (_, line, cell) = next(iter(f.gaps.items()))
            fix = (
                "rescale the column, e.g. to other units (readings are float32, as in the agent)"
                if reason.startswith("beyond")
                else "name numeric columns with --columns"
            )
            raise DetectError(
                f"{source.role} {source.path}: column {name!r} holds no usable number (line "
                f"{line}: {cell!r} is {reason}); {fix}"
            )
        for reason, (count, line, cell) in f.gaps.items():
            source.note(
                f"column {name!r}: {count} cell(s) {reason}, read as gaps (first: line {line}, "
                f"{cell!r})"
            )
    short = [r for r, row in enumerate(source.rows) if len(row) < width]
    if short:
        source.note(
            f"{len(short)} row(s) with fewer fields than the header's {width}, read as gaps "
            f"(first: line {source.lines[short[0]]}, {len(source.rows[short[0]])} field(s))"
        )
    return values


def _text(path: Path) -> str:
    try:
        data = path.read_bytes()
    except OSError as error:
        raise DetectError(f"cannot read {path}: {error.strerror}") from error
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise DetectError(
            f"cannot read {path}: line {line} holds byte 0x{data[error.start]:02x}, which is not "
            "UTF-8 text; export (or re-save) the CSV as UTF-8"
        ) from error


def _delimiter(text: str, delimiter: str | None) -> str:
    if delimiter is not None:
        delimiter = {"\\t": "\t", "tab": "\t"}.get(delimiter, delimiter)
        if len(delimiter) != 1:
            raise DetectError(
                f"--delimiter {delimiter!r} must be one character, e.g. ',' ';' '|' or '\\t' "
                "for a tab"
            )
        return delimiter
    sample = "\n".join(text.splitlines()[:50])
    try:
        return csv.Sniffer().sniff(sample, delimiters=DELIMITERS).delimiter
    except csv.Error:
        return ","


def _rows(
    path: Path, text: str, delimiter: str, offset: int
) -> tuple[list[str], list[list[str]], list[int]]:
    """Header, data rows and the line each row starts on (``offset`` lines before ``text``);
    a blank line holds no row."""
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    rows: list[list[str]] = []
    lines: list[int] = []
    start = 1 + offset
    try:
        for row in reader:
            if row:
                rows.append(row)
                lines.append(start)
            start = reader.line_num + 1 + offset
    except csv.Error as error:
        raise DetectError(
            f"cannot read {path} as CSV at line {reader.line_num + offset}: {error}; check its "
            "quotes"
        ) from error
    if not rows or not any(cell.strip() for cell in rows[0]):
        raise DetectError(f"{path} is empty: a header row naming the columns is required")
    return rows[0], rows[1:], lines[1:]


def _check_width(
    path: Path,
    header: list[str],
    rows: list[list[str]],
    lines: list[int],
    delimiter: str,
    timestamp_column: str | None,
) -> None:
    longer = [r for r, row in enumerate(rows) if any(c.strip() for c in row[len(header) :])]
    if len(longer) > len(rows) // 2:
        raise DetectError(
            f"{path}: {len(longer)} of {len(rows)} rows have more fields than the header's "
            f"{len(header)} with delimiter {delimiter!r} (decimal commas read as a delimiter?); "
            "give the right one with --delimiter"
        )
    other = [d for d in DELIMITERS if d != delimiter and d in header[0]]
    if len(header) < 2 and (timestamp_column is not None or other):
        raise DetectError(
            f"{path}: the header has one field {header[0]!r} with delimiter {delimiter!r}; "
            "give the right one with --delimiter (it applies to --input and --fit-input alike)"
        )
    if longer:
        row = rows[longer[0]]
        raise DetectError(
            f"{path}: line {lines[longer[0]]} has {len(row)} fields, the header "
            f"{len(header)} (extra: {row[len(header) :]!r})"
            + (f", and {len(longer) - 1} other row(s) too" if len(longer) > 1 else "")
            + ": a delimiter inside an unquoted value shifts every value after it; quote that "
            "value or mend the row"
        )


SPACES = " \u00a0\u202f"
"""Thousands separators some locales write as a space (French: ``1 234,5``, often a narrow
no-break space)."""
_SPACED = re.compile(rf"[+-]?\d{{1,3}}(?:[{SPACES}]\d{{3}})+(?:[.,]\d*)?")


_GROUPED = {
    (t, d): re.compile(rf"[+-]?[1-9]\d{{0,2}}(?:{re.escape(t)}\d{{3}})+(?:{re.escape(d)}\d*)?")
    for t, d in ((".", ","), (",", "."))
}


_COMMA = re.compile(r"[+-]?\d+,\d+")


def _grouped(text: str, thousands: str, decimal: str) -> bool:
    return _GROUPED[thousands, decimal].fullmatch(text) is not None


def _format(cells: list[str], decimal_comma: bool) -> _Column | None:
    """A column's decimal mark and thousands separator, from the cells that show them.

    A number with both marks (``1.234,5``) or one mark twice (``1.234.567``), grouped by three,
    shows which groups thousands. In a ``,``-delimited file a quoted ``"21,5"`` (a spreadsheet's
    export in many locales) is a decimal comma; None when every such cell groups digits by
    three (``"1,234"``): the other columns decide.
    """
    texts = [cell.strip() for cell in cells]
    for text in texts:
        if "," not in text and text.count(".") < 2:
            continue  # the common case, checked first: no mark shows a thousands separator
        for thousands, decimal in ((".", ","), (",", ".")):
            shown = decimal in text or text.count(thousands) > 1
            if shown and _grouped(text, thousands, decimal):
                return _Column(decimal, thousands)
    if not decimal_comma:
        commas = [text for text in texts if "," in text and _COMMA.fullmatch(text)]
        if commas:
            if all(_grouped(text, ",", ".") for text in commas):
                return None
            return _Column(",", None)
    return _Column("," if decimal_comma else ".", None)


def _formats(source: _Source, decimal_comma: bool) -> list[_Column]:
    """Each column's format; a column whose commas could group thousands or mark decimals
    (``"1,234"``) reads as the rest of the file does, and as thousands if nothing tells."""
    found = [
        _format([row[i] for row in source.rows if i < len(row)], decimal_comma)
        for i in range(len(source.header))
    ]
    commas = {f.decimal == "," for f in found if f is not None and "," in (f.decimal, f.thousands)}
    decimal = commas == {True}
    formats = []
    for name, f in zip(source.header, found, strict=True):
        if f is None:
            f = _Column(",", None) if decimal else _Column(".", ",")
            if not commas:
                source.note(
                    f"column {name!r}: a comma between digits read as a thousands separator "
                    "(\"1,234\" = 1234); if it marks decimals, export with ';' between fields"
                )
        formats.append(f)
    return formats


def _parse(cell: str, column: _Column) -> float | None:
    """The cell's number (nan and inf included, judged later), or None if it is none."""
    if column.decimal == "." and column.thousands is None and "_" not in cell:
        try:
            return float(cell)  # the common case, checked first
        except ValueError:
            pass
    text = cell.strip()
    if any(space in text for space in SPACES):
        if not _SPACED.fullmatch(text):
            return None
        text = "".join(c for c in text if c not in SPACES)
    if column.thousands and column.thousands in text:
        if not _grouped(text, column.thousands, column.decimal):
            return None
        text = text.replace(column.thousands, "")
    if column.decimal == ",":
        text = text.replace(",", ".")
    if "_" in text:
        return None  # float() reads "1_000"; a plant export does not mean it
    try:
        return float(text)
    except ValueError:
        return None


def _used(
    source: _Source,
    formats: list[_Column],
    timestamp_column: str | None,
    columns: Sequence[str] | None,
) -> list[str]:
    """``columns`` if given (each in the header), else every numeric column but the timestamp;
    each column left unscored is noted with why."""
    header, role, path = source.header, source.role, source.path
    if columns:
        twice = sorted({c for c in columns if list(columns).count(c) > 1})
        if twice:
            raise DetectError(f"--columns names {twice} more than once; name each column once")
        missing = [c for c in columns if c not in header]
        if missing:
            fix = (
                "fit on a file with the same columns, or name shared ones with --columns"
                if role == "--fit-input"
                else "name columns of its header with --columns"
            )
            raise DetectError(f"{role} {path} has no column {missing}; it has {header}: {fix}")
        return list(columns)
    used, unscored = [], []
    for i, (name, f) in enumerate(zip(header, formats, strict=True)):
        if name == timestamp_column or not (name or f.numbers or f.texts):
            continue  # no name and no value (a trailing delimiter): nothing to say
        if not f.numbers + f.texts:
            unscored.append(f"column {name!r} not scored: it holds no value")
        elif _numeric(name, f):
            used.append(name)
        elif not name:
            unscored.append(f"field {i + 1} has no name in the header, so it is not scored")
        else:
            line, cell = f.first_text or (0, "")
            hint = " (a timestamp? --timestamp-column copies it to the output)"
            unscored.append(
                f"column {name!r} not scored: {f.texts} of {f.texts + f.numbers} cells are text "
                f"(first: line {line}, {cell!r})" + (hint if timestamp_column is None else "")
            )
    if not used:
        raise DetectError(
            f"{role} {path} has no numeric column, one holding numbers in most of its cells: "
            + "; ".join(unscored or [f"its header is {header}"])
        )
    for text in unscored:
        source.note(text)
    return used


def _check_duplicates(
    path: Path, header: list[str], used: list[str], timestamp_column: str | None
) -> None:
    """A used name that appears twice would read the first column's values for both."""
    for name in [*used, *([timestamp_column] if timestamp_column else [])]:
        fields = [i + 1 for i, other in enumerate(header) if other == name]
        if len(fields) > 1:
            raise DetectError(
                f"{path}: column {name!r} appears {len(fields)} times in the header (fields "
                f"{fields}); rename them so that each is unique"
            )
