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

import numpy as np


class TableError(ValueError):
    """A CSV file that is not a table of finite numbers; the message says where."""


class Table:
    """A numeric table read from ``path``.

    values : (n_rows, n_columns) float64, every value finite
    header : list of n_columns str, or None
    lines : list of n_rows int, the file line of each row (1-based)
    """

    def __init__(self, path, values, header, lines):
        self.path, self.values, self.header, self.lines = path, values, header, lines

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


def _rows(path, reader):
    """The reader's rows, its own errors (a NUL byte, a huge quoted field) located."""
    while True:
        try:
            yield next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise TableError(f"{path}: line {reader.line_num}: not a CSV row "
                             f"({exc})") from None


def read_csv(path):
    """The :class:`Table` in the CSV file ``path``. Raises TableError (saying where)
    for text that is not UTF-8, an empty file, a header without data rows, rows of
    different lengths, and cells that are not finite numbers; OSError when the file
    cannot be read."""
    with open(path, "rb") as f:
        text = _decode(path, f.read())
    reader = csv.reader(io.StringIO(text, newline=""))
    header, width, first_line = None, None, None
    rows, lines = [], []
    for cells in _rows(path, reader):
        line = reader.line_num
        if not any(c.strip() for c in cells):
            continue   # blank line
        if width is None:
            width, first_line = len(cells), line
            try:
                [float(c) for c in cells]
            except ValueError:
                header = [c.strip() for c in cells]
                continue
        if len(cells) != width:
            raise TableError(f"{path}: line {line}: {len(cells)} values, but line "
                             f"{first_line} has {width}")
        rows.append([_number(path, line, j, header, c) for j, c in enumerate(cells)])
        lines.append(line)
    if width is None:
        raise TableError(f"{path}: empty file")
    if not rows:
        raise TableError(f"{path}: no data rows (only the header on line {first_line})")
    return Table(path, np.array(rows, dtype=np.float64), header, lines)
