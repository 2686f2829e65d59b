"""Numeric CSV tables for the command line, with errors that point at the cell.

A table is comma-separated numbers, one row per line, with an optional header row
(the first non-blank row, when any of its cells is not a number). The file is read as
UTF-8, and a leading byte-order mark (as spreadsheet programs write) is dropped, so it
can neither turn the first data row into a header nor hide a header name. Blank lines
are skipped. Every problem raises :class:`TableError` (a ValueError) whose message
names the file, the line (1-based, as an editor shows it) and the column (1-based, with
its header name when there is a header), e.g.

    data.csv: line 7, column 3 ('petal width'): 'abc' is not a number
"""
import codecs
import csv
import io
import warnings

import numpy as np


class TableError(ValueError):
    """A CSV file that is not a table of finite numbers; the message says where."""


class Table:
    """A numeric table read from ``path``.

    values : (n_rows, n_columns) float64, every value finite
    header : list of n_columns str, or None
    lines : list of n_rows int, the file line of each row (1-based; found only when
        asked for, by ``where``)
    """

    def __init__(self, path, values, header, text, lines=None):
        self.path, self.values, self.header = path, values, header
        self._text, self._lines = text, lines

    @property
    def lines(self):
        if self._lines is None:
            rows = [line for line, _ in _rows(self.path, self._text)]
            self._lines = rows[1:] if self.header is not None else rows
        return self._lines

    def where(self, row, column):
        """"PATH: line L, column C ('name')" for ``values[row, column]``."""
        return _where(self.path, self.lines[row], column, self.header)


def _where(path, line, column, header):
    text = f"{path}: line {line}, column {column + 1}"
    if header is not None and column < len(header):
        text += f" ({header[column]!r})"
    return text


def _decode(path, data):
    """The file's text: UTF-8, a leading byte-order mark dropped."""
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8):]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        start = data.rfind(b"\n", 0, exc.start) + 1
        line = data.count(b"\n", 0, exc.start) + 1
        column = data.count(b",", start, exc.start)
        raise TableError(f"{_where(path, line, column, None)}: not UTF-8 text (byte "
                         f"0x{data[exc.start]:02x}); save the file as UTF-8") from None


def _number(path, line, column, header, cell):
    text = cell.strip()
    try:
        value = float(text)
    except ValueError:
        what = "an empty value" if not text else f"{text!r}"
        raise TableError(f"{_where(path, line, column, header)}: {what} is not a "
                         "number") from None
    if not np.isfinite(value):
        raise TableError(f"{_where(path, line, column, header)}: {text!r} is not a "
                         "finite number (NaN or infinity)")
    return value


def _rows(path, text):
    """(line, cells) of every non-blank row of the CSV ``text``; the csv module's own
    errors (a NUL byte, a huge quoted field) located."""
    reader = csv.reader(io.StringIO(text, newline=""))
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise TableError(f"{path}: line {reader.line_num}: not a CSV row "
                             f"({exc})") from None
        if any(c.strip() for c in cells):
            yield reader.line_num, cells


def _parse(path, text, header, width, first_line):
    """(values, lines), cell by cell: slow, but names the line and column of the first
    cell that is not a finite number, or of a row of the wrong length."""
    rows, lines = [], []
    for line, cells in _rows(path, text):
        if header is not None and line == first_line:
            continue
        if len(cells) != width:
            raise TableError(f"{path}: line {line}: {len(cells)} values, but line "
                             f"{first_line} has {width}")
        rows.append([_number(path, line, j, header, c) for j, c in enumerate(cells)])
        lines.append(line)
    if not rows:
        raise TableError(f"{path}: no data rows (only the header on line {first_line})")
    return np.array(rows, dtype=np.float64), lines


def _parse_fast(text, header, width, first_line):
    """The values by numpy's parser (about 20 times faster than ``_parse``), or None
    when it fails or finds anything but finite numbers, for ``_parse`` to locate."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            values = np.loadtxt(io.StringIO(text), delimiter=",", quotechar='"',
                                comments=None, ndmin=2, dtype=np.float64,
                                skiprows=first_line if header is not None else 0)
    except ValueError:
        return None
    if values.shape[0] == 0 or values.shape[1] != width or not np.isfinite(values).all():
        return None
    return values


def read_csv(path):
    """The :class:`Table` in the CSV file ``path``. Raises TableError (saying where)
    for text that is not UTF-8, an empty file, a header without data rows, rows of
    different lengths, and cells that are not finite numbers; OSError when the file
    cannot be read."""
    with open(path, "rb") as f:
        text = _decode(path, f.read())
    first = next(_rows(path, text), None)
    if first is None:
        raise TableError(f"{path}: empty file")
    first_line, cells = first
    try:
        [float(c) for c in cells]
        header = None
    except ValueError:
        header = [c.strip() for c in cells]
    values = _parse_fast(text, header, len(cells), first_line)
    if values is not None:
        return Table(path, values, header, text)
    values, lines = _parse(path, text, header, len(cells), first_line)
    return Table(path, values, header, text, lines)
