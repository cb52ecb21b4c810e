"""Where data records come from: every data field (data.train, data.test) names a source, and each source
yields (where, record) pairs for tether.data's and tether.preferences' validators.

Sources:
- a `.jsonl` file, gzip-compressed or not (recognised by its first two bytes, 1f 8b, whatever its name), and
  any file with a name not listed below: JSON lines, one object per line of UTF-8 text; blank lines ignored.
- a `.json` file: a JSON list of objects, or JSON lines.
- a `.parquet` or `.csv` file, read through the `datasets` library (`pip install 'tether[hf]'`).
- a directory written by `datasets`' `save_to_disk`; for a DatasetDict name the split: `DIR:test`.
- a Hugging Face Hub dataset `owner/name:split` (or `owner/name:config:split`), loaded by
  `datasets.load_dataset`: from the HF cache where it is there (with HF_HUB_OFFLINE=1, only from there).

Where a record is: a JSON-lines record by its line number (`train.jsonl:7: ...`), a record of a table
(parquet, csv, `datasets`, a JSON list) by its 1-based row (`train.parquet:row 7: ...`). A table has every
column in every row, so a null cell counts as a missing column. `columns` renames a source's columns to
tether's ({"prompt": "question"}: the file's "question" is the prompt) before any check.
"""

from __future__ import annotations

import gzip
import json
import re
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tether.errors import DataError

HF_EXTRA = "pip install 'tether[hf]'"
TABLES = {".parquet": "parquet", ".csv": "csv"}  # file suffix -> the `datasets` builder that reads it
HUB_ID = re.compile(r"(?P<name>[\w.-]+/[\w.-]+)(?::(?P<config>[\w.-]+))?:(?P<split>[\w.-]+)")


class Row(int):
    """The 1-based row of a record in a table; it reads 'row 7' in messages (`path:row 7: ...`), where a line
    number reads '7'."""

    def __str__(self) -> str:
        return f"row {int(self)}"

    __repr__ = __str__

    def __format__(self, spec: str) -> str:
        return str(self) if not spec else int.__format__(self, spec)


# ------------------------------------------------------------------------------------------------ JSON lines


def read_lines(path: str | Path) -> Iterator[tuple[int, bytes]]:
    """(line number, raw bytes) of each line of a file, decompressed when it starts with gzip's magic bytes
    (1f 8b) whatever its name; DataError when it cannot be read or its gzip data breaks off."""
    try:
        f = open(path, "rb")
    except OSError as e:
        raise DataError(path, None, f"cannot read: {e.strerror}") from None
    with f:
        compressed = f.read(2) == b"\x1f\x8b"
        f.seek(0)
        lines = gzip.GzipFile(fileobj=f) if compressed else f
        line_no = 0
        try:
            for line_no, raw in enumerate(lines, start=1):
                yield line_no, raw
        except (OSError, EOFError, zlib.error) as e:
            problem = f"corrupt or truncated gzip data ({e})" if compressed else f"cannot read: {e}"
            raise DataError(path, line_no + 1, problem) from None


_BOM = b"\xef\xbb\xbf"
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")  # \ud800..\udfff written as JSON escapes


def decode_line(path, line_no: int, raw: bytes) -> str:
    """A line's bytes as text: UTF-8, a byte-order mark at the start of the file skipped; DataError naming
    the first byte that is not UTF-8."""
    skipped = len(_BOM) if line_no == 1 and raw.startswith(_BOM) else 0
    try:
        return raw[skipped:].decode("utf-8")
    except UnicodeDecodeError as e:
        at = skipped + e.start
        raise DataError(path, line_no, f"byte 0x{raw[at]:02x} at byte {at + 1} is not UTF-8 (tether reads "
                        "UTF-8 text: re-encode the file, e.g. with iconv)") from None


def read_jsonl(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line; DataError on unreadable files, bytes that are not
    UTF-8, bad JSON and lone surrogates."""
    n = 0
    for line_no, raw in read_lines(path):
        text = decode_line(path, line_no, raw)
        if not text.strip():
            continue
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(path, line_no, f"malformed JSON: {e.msg} at column {e.colno}") from None
        if not isinstance(obj, dict):
            raise DataError(path, line_no, f"expected a JSON object, got {type(obj).__name__}")
        if _SURROGATE_ESCAPE.search(text):  # only an escape can make one: UTF-8 bytes never decode to it
            field = lone_surrogate_field(obj)
            if field is not None:
                raise DataError(path, line_no, f"lone surrogate in {field}: an escape \\ud800-\\udfff "
                                "without its other half is no character, and no tokenizer can encode it")
        n += 1
        yield line_no, obj
    if n == 0:
        raise DataError(path, None, "no records")


def _is_surrogate_text(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def lone_surrogate_field(value, where: str = "") -> str | None:
    """Where in a JSON value a string holds a lone surrogate ('messages[0].content', "a key '\\ud800'"), or
    None."""
    if isinstance(value, str):
        return repr(where) if _is_surrogate_text(value) else None
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for k, v in items:
        if isinstance(k, str) and _is_surrogate_text(k):
            return f"a key {k!r}"
        inner = f"{where}[{k}]" if isinstance(k, int) else f"{where}.{k}" if where else k
        found = lone_surrogate_field(v, inner)
        if found is not None:
            return found
    return None




# ------------------------------------------------------------------------------------------------ any source


def read_records(source: str | Path, columns: dict[str, str] | None = None) -> Iterator[tuple[int, dict]]:
    """(line or `Row`, record) of each record of a data source (see the module docstring), its columns
    renamed by `columns` (tether's name -> the source's); DataError naming the source for an unreadable one,
    one without records, and a record without a mapped column."""
    records = _records(str(source))
    n = 0
    for where, obj in records:
        for ours, theirs in (columns or {}).items():
            if theirs not in obj:
                cols = ", ".join(sorted(obj))
                problem = f"missing column {theirs!r}, which data.columns maps to {ours!r} (columns: {cols})"
                raise DataError(source, where, problem)
        if columns:
            values = {ours: obj[theirs] for ours, theirs in columns.items()}
            obj = {k: v for k, v in obj.items() if k not in columns.values()} | values
        n += 1
        yield where, obj
    if n == 0:
        raise DataError(source, None, "no records")


def _records(source: str) -> Iterator[tuple[int, dict[str, Any]]]:
    path = Path(source)
    if path.is_dir():
        return _table(source, _load_from_disk(source, source, None))
    suffix = "".join(path.suffixes[-2:]).lower() if path.suffix.lower() == ".gz" else path.suffix.lower()
    if not path.exists():
        base, sep, split = source.rpartition(":")
        if sep and Path(base).is_dir():
            return _table(source, _load_from_disk(source, base, split))
        hub = HUB_ID.fullmatch(source)
        if hub:
            return _table(source, _load_hub(source, hub["name"], hub["config"], hub["split"]))
        if re.fullmatch(r"[\w.-]+/[\w.-]+", source) and not suffix:
            raise DataError(source, None, "no such file or directory (a Hub dataset is named with its split: "
                            f"{source}:train)")
    if suffix == ".json":
        return _json(source)
    if suffix in TABLES:
        return _table(source, _load_file(source, TABLES[suffix]))
    return read_jsonl(source)


def _json(source: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """A `.json` file: a JSON list of objects (rows), or JSON lines."""
    raw = b"".join(line for _, line in read_lines(source))
    if not raw.removeprefix(_BOM).lstrip().startswith(b"["):
        yield from read_jsonl(source)
        return
    try:
        text = raw.removeprefix(_BOM).decode("utf-8")
    except UnicodeDecodeError as e:
        problem = f"byte 0x{raw[e.start]:02x} is not UTF-8 (tether reads UTF-8 text)"
        raise DataError(source, None, problem) from None
    try:
        items = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(source, e.lineno, f"malformed JSON: {e.msg} at column {e.colno}") from None
    for i, obj in enumerate(items, start=1):
        if not isinstance(obj, dict):
            raise DataError(source, Row(i), f"expected a JSON object, got {type(obj).__name__}")
        field = lone_surrogate_field(obj)
        if field is not None:
            raise DataError(source, Row(i), f"lone surrogate in {field}: no tokenizer can encode it")
        yield Row(i), obj


def _table(source: str, dataset) -> Iterator[tuple[int, dict[str, Any]]]:
    """The rows of a `datasets.Dataset`, null cells left out (a missing column, as in JSON)."""
    for i, row in enumerate(dataset, start=1):
        yield Row(i), {k: v for k, v in row.items() if v is not None}


def _datasets(source: str):
    try:
        import datasets
    except ImportError:
        raise DataError(source, None, f"reading this source needs the datasets package: {HF_EXTRA}") from None
    return datasets


def _one_line(e: Exception) -> str:
    lines = str(e).strip().splitlines()
    return lines[0] if lines else type(e).__name__


def _load_file(source: str, builder: str):
    datasets = _datasets(source)
    try:
        return datasets.load_dataset(builder, data_files=source, split="train")
    except Exception as e:  # noqa: BLE001 -- pyarrow's and pandas' many parse errors, as one line
        raise DataError(source, None, f"cannot read as {builder}: {_one_line(e)}") from None


def _load_from_disk(source: str, directory: str, split: str | None):
    datasets = _datasets(source)
    try:
        data = datasets.load_from_disk(directory)
    except FileNotFoundError as e:
        problem = f"not a directory saved by datasets' save_to_disk ({_one_line(e)})"
        raise DataError(source, None, problem) from None
    if isinstance(data, datasets.DatasetDict):
        if split is None or split not in data:
            example = f"{directory}:{next(iter(data))}"
            problem = f"a DatasetDict of splits {', '.join(data)}: name one, e.g. {example}"
            raise DataError(source, None, problem)
        return data[split]
    if split is not None:
        raise DataError(source, None, f"{directory} holds one Dataset, not splits: name the directory alone")
    return data


def _load_hub(source: str, name: str, config: str | None, split: str):
    datasets = _datasets(source)
    try:
        return datasets.load_dataset(name, config, split=split)
    except ConnectionError as e:
        raise DataError(source, None, f"not in the local Hugging Face cache, and the Hub cannot be reached "
                        f"({_one_line(e)}): load it once where there is network, or check the name") from None
    except Exception as e:  # noqa: BLE001 -- an unknown dataset, config or split: one line
        raise DataError(source, None, f"cannot load the Hub dataset: {_one_line(e)}") from None
