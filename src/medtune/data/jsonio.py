"""Reading JSON and JSON Lines files one record at a time, with errors that name the line.

The layer under every data file medtune reads (dialogues, preference pairs, benchmark items, pretraining
text). Text is UTF-8 with an optional BOM (a UTF-16 file is refused with the command that converts it); JSON
Lines are decoded and parsed one line at a time, in constant memory; a JSON array is read whole, then parsed
element by element. A bad record is a DataError naming the file, the line where that record starts, the field
and what to do.

    for line, record in iter_objects(path):          # JSONL or a JSON array; each record a JSON object
        text = get_str(path, line, record, "text", "text")
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

from medtune.errors import DataError

_BOM = b"\xef\xbb\xbf"
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")
_WS = " \t\r\n"

_HINT_JSONL = "each line must be one complete JSON object (JSON Lines); a pretty-printed file must be a JSON array [...]"
_HINT_UTF8 = "save the file as UTF-8, e.g. from GBK with `iconv -f GBK -t UTF-8 IN > OUT`"
_DEEP = "arrays or objects nested too deeply"


# --------------------------------------------------------------------------- files and lines


def require_file(path) -> Path:
    """The path as a Path, or a DataError if it is missing or a directory."""
    p = Path(path)
    if p.is_dir():
        raise DataError(path, None, None, "is a directory, not a file", "pass the data file itself, e.g. data/train.jsonl")
    if not p.is_file():
        raise DataError(path, None, None, "file not found", f"check the path; relative paths start at {os.getcwd()}")
    return p


def open_bytes(path):
    try:
        return open(path, "rb")
    except OSError as e:
        raise DataError(path, None, None, f"cannot read the file: {e.strerror}", "check the file's permissions") from None


def decode_line(path, raw: bytes, line: int, line_offset: int) -> str:
    """One line's bytes as text; a DataError naming the line and byte offset if they are not UTF-8."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        bad = raw[e.start : e.start + 1].hex()
        raise DataError(
            path,
            line,
            None,
            f"not valid UTF-8: byte 0x{bad} at byte {e.start + 1} of the line (offset {line_offset + e.start} in the file)",
            _HINT_UTF8,
        ) from None


def iter_lines(path) -> Iterator[tuple[int, str]]:
    """(line number, text without line terminator) for each line, decoded one line at a time."""
    offset = 0
    with open_bytes(path) as f:
        for line_no, raw in enumerate(f, 1):
            start = offset
            offset += len(raw)
            if line_no == 1 and raw.startswith(_BOM):
                raw, start = raw[len(_BOM) :], start + len(_BOM)
            yield line_no, decode_line(path, raw, line_no, start).rstrip("\r\n")


def first_byte(path) -> tuple[bytes, int]:
    """The first non-whitespace byte of the file (after a UTF-8 BOM) and its line; (b"", 0) if it is blank."""
    line_no = 1
    with open_bytes(path) as f:
        head = f.read(len(_BOM))
        if head != _BOM:
            f.seek(0)
        while chunk := f.read(1 << 16):
            for b in chunk:
                if b == 0x0A:
                    line_no += 1
                elif chr(b) not in _WS:
                    return bytes([b]), line_no
    return b"", 0


def json_type(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    return {str: "string", list: "array", dict: "object"}.get(type(value), type(value).__name__)


# --------------------------------------------------------------------------- JSON records


def iter_jsonl(path) -> Iterator[tuple[int, object]]:
    """(line number, parsed value) for each non-blank line of a JSON Lines file."""
    for line_no, text in iter_lines(path):
        if not text.strip():
            continue
        try:
            value = json.loads(text, strict=False)
        except json.JSONDecodeError as e:
            raise DataError(path, line_no, None, f"invalid JSON: {e.msg} (column {e.colno})", _HINT_JSONL) from None
        except RecursionError:
            raise DataError(path, line_no, None, f"invalid JSON: {_DEEP}", _HINT_JSONL) from None
        yield line_no, value


def read_text(path) -> str:
    """A whole file as text (UTF-8, a BOM dropped); a bad byte is a DataError naming its line and offset."""
    with open_bytes(path) as f:
        data = f.read()
    skip = len(_BOM) if data.startswith(_BOM) else 0
    try:
        return data[skip:].decode("utf-8")
    except UnicodeDecodeError as e:
        bad = skip + e.start
        line_start = data.rfind(b"\n", 0, bad) + 1
        decode_line(path, data[line_start : bad + 1], data.count(b"\n", 0, bad) + 1, line_start)
        raise  # pragma: no cover - decode_line has raised


class _Document:
    """One JSON document read by position: whitespace, the line of a position (counted forward, so reading a
    whole file stays linear), values decoded one at a time, and errors naming their line."""

    def __init__(self, path, text: str, hint: str):
        self.path, self.text, self.hint = path, text, hint
        self.decoder = json.JSONDecoder(strict=False)
        self.newlines_seen, self.counted_to = 0, 0

    def line(self, pos: int) -> int:
        if pos < self.counted_to:
            self.newlines_seen, self.counted_to = 0, 0
        self.newlines_seen += self.text.count("\n", self.counted_to, pos)
        self.counted_to = pos
        return self.newlines_seen + 1

    def skip(self, pos: int) -> int:
        while pos < len(self.text) and self.text[pos] in _WS:
            pos += 1
        return pos

    def at(self, pos: int, char: str) -> bool:
        return pos < len(self.text) and self.text[pos] == char

    def fail(self, pos: int, message: str):
        raise DataError(self.path, self.line(min(pos, len(self.text))), None, f"invalid JSON: {message}", self.hint)

    def after(self, pos: int, close: str, what: str) -> tuple[int, bool]:
        """Past the ',' after an element of `what` (an array, an object), or past its closing `close` (True)."""
        pos = self.skip(pos)
        if self.at(pos, ","):
            return self.skip(pos + 1), False
        if self.at(pos, close):
            return pos + 1, True
        element = "an element" if what == "array" else "a member"
        self.fail(pos, f"expected ',' or '{close}' after {element}" if pos < len(self.text) else
                  f"the {what} is not closed with '{close}'")

    def end(self, pos: int, close: str) -> None:
        if self.skip(pos) < len(self.text):
            self.fail(self.skip(pos), f"extra data after the closing '{close}'")

    def value(self, pos: int) -> tuple[object, int]:
        """The JSON value starting at `pos` and the position after it."""
        try:
            return self.decoder.raw_decode(self.text, pos)
        except json.JSONDecodeError as e:
            self.fail(e.pos, e.msg)
        except RecursionError:
            self.fail(pos, _DEEP)


def iter_json_array(path) -> Iterator[tuple[int, object]]:
    """(line where the element starts, parsed element) for each element of a file holding one JSON array.

    The file is read whole; elements are decoded one by one so each error and record has its own line.
    """
    doc = _Document(path, read_text(path), "the file must be one JSON array of objects [{...}, {...}]")
    pos = doc.skip(doc.skip(0) + 1)  # just after the opening '['
    done = doc.at(pos, "]")
    pos += done
    while not done:
        value, end = doc.value(pos)
        yield doc.line(pos), value
        pos, done = doc.after(end, "]", "array")
    doc.end(pos, "]")


def iter_json_members(path, hint: str) -> Iterator[tuple[int, str, object]]:
    """(line of the key, key, value) for each member of a file holding one JSON object (PubMedQA: PMID -> record);
    `hint` says what the file should look like, in an error."""
    doc = _Document(path, read_text(path), hint)

    def expect(pos: int, char: str, what: str) -> int:
        if not doc.at(pos, char):
            doc.fail(pos, f"expected {what}")
        return doc.skip(pos + 1)

    pos = expect(doc.skip(0), "{", "'{' at the start of the file")
    done = doc.at(pos, "}")
    pos += done
    while not done:
        if not doc.at(pos, '"'):
            doc.fail(pos, "expected a quoted key")
        key, end = doc.value(pos)
        value, end = doc.value(expect(doc.skip(end), ":", "':' after the key"))
        yield doc.line(pos), key, value
        pos, done = doc.after(end, "}", "object")
    doc.end(pos, "}")


def iter_objects(path) -> Iterator[tuple[int, dict]]:
    """(line, record) for each record of a JSONL or JSON-array file; every record must be a JSON object."""
    with open_bytes(path) as f:
        if f.read(2) in _UTF16_BOMS:
            hint = "save the file as UTF-8, e.g. `iconv -f UTF-16 -t UTF-8 IN > OUT`"
            raise DataError(path, 1, None, "the file is UTF-16 text, not UTF-8", hint)
    first, line = first_byte(path)
    if first == b"{":
        records = iter_jsonl(path)
    elif first == b"[":
        records = iter_json_array(path)
    elif first == b"":
        return
    else:
        first = repr(first.decode()) if first < b"\x80" else f"byte 0x{first.hex()}"
        hint = "dialogue files are JSON Lines ({...} per line) or one JSON array [...]"
        raise DataError(path, line, None, f"not JSON Lines or a JSON array: the file starts with {first}", hint)
    for line_no, record in records:
        if not isinstance(record, dict):
            got = json_type(record)
            raise DataError(path, line_no, None, f"a record must be a JSON object, got {got}", "write each record as {...}")
        yield line_no, record


# --------------------------------------------------------------------------- fields of a record


def get_list(path, line, record: dict, field: str, example: str) -> list:
    if field not in record:
        raise DataError(path, line, field, "missing", f"each record needs {example}")
    value = record[field]
    if not isinstance(value, list):
        raise DataError(path, line, field, f"must be an array, got {json_type(value)}", f"each record needs {example}")
    return value


def get_str(path, line, obj: dict, key: str, field: str, *, optional: bool = False) -> str | None:
    if key not in obj or (optional and obj[key] is None):
        if optional:
            return None
        raise DataError(path, line, field, "missing", f"add a string field '{key}'")
    value = obj[key]
    if not isinstance(value, str):
        raise DataError(path, line, field, f"must be a string, got {json_type(value)}", f"'{key}' must be text")
    return value
