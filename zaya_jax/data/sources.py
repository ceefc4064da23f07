"""Random-access document sources (grain's `RandomAccessDataSource` protocol: `__len__`, `__getitem__`).

Text sources (`JsonlSource`, `TextSource`, `ParquetSource`, `GeneratedTextSource`) return one document per
index as a `str`; `ProblemSource` returns corpus records (dicts) for SFT, RL and evaluation. File sources
index their files once on construction (byte offsets, or the text column for Parquet), so a malformed
record is reported before training starts, with its file and line/row; `skip_malformed=True` drops such
records instead and counts them in `num_skipped` (`skipped` lists (file, line/row) pairs).
"""

from __future__ import annotations

import glob
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from zaya_jax.data import corpus


class DataError(ValueError):
  """Malformed input data (bad JSON, missing or non-string text field, null Parquet value)."""


class SourceConfigError(ValueError):
  """A source description that cannot be built (unknown kind or key, no matching file)."""


def _json_object(line: str | bytes) -> tuple[dict | None, str | None]:
  """(record, None) for a line holding a JSON object, else (None, why it is not one)."""
  try:
    record = json.loads(line)
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    return None, f"invalid JSON ({e})"
  if not isinstance(record, dict):
    return None, f"expected a JSON object, got {type(record).__name__}"
  return record, None


def iter_jsonl(path: str, error: type[Exception] = DataError) -> Iterator[tuple[str, int, dict]]:
  """("file:line", line number, record) per non-blank line of a JSONL file of objects; a line that is not valid
  JSON, or not an object, raises `error` naming the file and line."""
  with open(path, encoding="utf-8") as f:
    for line_number, line in enumerate(f, start=1):
      if not line.strip():
        continue
      where = f"{path}:{line_number}"
      record, problem = _json_object(line)
      if problem is not None:
        raise error(f"{where}: {problem}")
      yield where, line_number, record


def expand_paths(paths: str | Sequence[str]) -> list[str]:
  """A path, glob, or list of them -> sorted existing files; each pattern must match something."""
  patterns = [paths] if isinstance(paths, str) else list(paths)
  if not patterns:
    raise SourceConfigError("no paths given")
  files = []
  for pattern in patterns:
    matches = sorted(glob.glob(pattern))
    if not matches:
      raise SourceConfigError(f"no file matches {pattern!r}")
    files.extend(m for m in matches if os.path.isfile(m))
  return files


class _LineIndexedSource:
  """Documents addressed as (file, byte offset, byte length); reads with a seek, holds no open handles."""

  def __init__(self):
    self._files: list[str] = []
    self._file_ids: list[int] = []
    self._offsets: list[int] = []
    self._lengths: list[int] = []
    self.skipped: list[tuple[str, int]] = []

  def _finalize(self) -> None:
    # numpy arrays: 8 bytes per document instead of a Python int object each.
    self._file_ids = np.asarray(self._file_ids, np.int32)
    self._offsets = np.asarray(self._offsets, np.int64)
    self._lengths = np.asarray(self._lengths, np.int64)

  @property
  def num_skipped(self) -> int:
    return len(self.skipped)

  def __len__(self) -> int:
    return len(self._offsets)

  def _read(self, index: int) -> bytes:
    if not -len(self) <= index < len(self):
      raise IndexError(f"index {index} out of range for {len(self)} documents")
    with open(self._files[self._file_ids[index]], "rb") as f:
      f.seek(int(self._offsets[index]))
      return f.read(int(self._lengths[index]))


class JsonlSource(_LineIndexedSource):
  """JSON Lines files; document = the string `record[text_field]`. Blank lines are not records."""

  def __init__(self, paths: str | Sequence[str], text_field: str = "text", skip_malformed: bool = False):
    super().__init__()
    self.text_field = text_field
    self._files = expand_paths(paths)
    for file_id, path in enumerate(self._files):
      offset = 0
      with open(path, "rb") as f:
        for line_number, line in enumerate(f, start=1):
          if line.strip():
            problem = self._problem(line)
            if problem is None:
              self._file_ids.append(file_id)
              self._offsets.append(offset)
              self._lengths.append(len(line))
            elif skip_malformed:
              self.skipped.append((path, line_number))
            else:
              raise DataError(f"{path}:{line_number}: {problem} (set skip_malformed=True to skip such lines)")
          offset += len(line)
    self._finalize()

  def _problem(self, line: bytes) -> str | None:
    """Why the line is not a usable record, or None."""
    record, problem = _json_object(line)
    if problem is not None:
      return problem
    if self.text_field not in record:
      return f"missing field {self.text_field!r}"
    if not isinstance(record[self.text_field], str):
      return f"field {self.text_field!r} is {type(record[self.text_field]).__name__}, not a string"
    return None

  def __getitem__(self, index: int) -> str:
    return json.loads(self._read(index))[self.text_field]

  def __repr__(self) -> str:
    return f"JsonlSource({len(self._files)} files, {len(self)} docs, text_field={self.text_field!r})"


class TextSource(_LineIndexedSource):
  """Plain UTF-8 text files: `mode="line"` (each non-blank line a document) or `"file"` (each file one)."""

  MODES = ("line", "file")

  def __init__(self, paths: str | Sequence[str], mode: str = "line", skip_malformed: bool = False):
    super().__init__()
    if mode not in self.MODES:
      raise SourceConfigError(f"text source mode must be one of {self.MODES}, got {mode!r}")
    self.mode = mode
    self._files = expand_paths(paths)
    for file_id, path in enumerate(self._files):
      with open(path, "rb") as f:
        lines = [f.read()] if mode == "file" else f.readlines()
      offset = 0
      for line_number, line in enumerate(lines, start=1):
        if line.strip():
          try:
            line.decode("utf-8")
          except UnicodeDecodeError as e:
            where = path if mode == "file" else f"{path}:{line_number}"
            if not skip_malformed:
              raise DataError(f"{where}: not UTF-8 ({e}) (set skip_malformed=True to skip it)") from e
            self.skipped.append((path, line_number))
          else:
            self._file_ids.append(file_id)
            self._offsets.append(offset)
            self._lengths.append(len(line))
        offset += len(line)
    self._finalize()

  def __getitem__(self, index: int) -> str:
    text = self._read(index).decode("utf-8")
    return text.rstrip("\r\n") if self.mode == "line" else text

  def __repr__(self) -> str:
    return f"TextSource({len(self._files)} files, {len(self)} docs, mode={self.mode!r})"


class ParquetSource:
  """Parquet files; document = the string column `text_field`. Rows are numbered from 0 per file.

  The column is read once into Arrow memory (compact, no Python objects per row); null values are
  malformed records.
  """

  def __init__(self, paths: str | Sequence[str], text_field: str = "text", skip_malformed: bool = False):
    import pyarrow as pa  # optional dependency: only this source needs it
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    self.text_field = text_field
    self.skipped: list[tuple[str, int]] = []
    self._columns, self._file_ids, self._rows = [], [], []
    for file_id, path in enumerate(expand_paths(paths)):
      try:
        schema = pq.read_schema(path)
      except (pa.ArrowInvalid, OSError) as e:
        raise DataError(f"{path}: not a readable Parquet file ({e})") from e
      if text_field not in schema.names:
        raise DataError(f"{path}: no column {text_field!r} (columns: {schema.names})")
      if not (pa.types.is_string(schema.field(text_field).type) or
              pa.types.is_large_string(schema.field(text_field).type)):
        raise DataError(f"{path}: column {text_field!r} has type {schema.field(text_field).type}, not string")
      column = pq.read_table(path, columns=[text_field]).column(text_field).combine_chunks()
      nulls = np.flatnonzero(pc.is_null(column).to_numpy(zero_copy_only=False))
      if len(nulls) and not skip_malformed:
        raise DataError(f"{path}: row {int(nulls[0])}: null {text_field!r} ({len(nulls)} null rows; set "
                        "skip_malformed=True to skip them)")
      self.skipped.extend((path, int(r)) for r in nulls)
      valid = np.setdiff1d(np.arange(len(column)), nulls)
      self._columns.append(column)
      self._file_ids.append(np.full(len(valid), file_id, np.int32))
      self._rows.append(valid.astype(np.int64))
    self._file_ids = np.concatenate(self._file_ids)
    self._rows = np.concatenate(self._rows)

  @property
  def num_skipped(self) -> int:
    return len(self.skipped)

  def __len__(self) -> int:
    return len(self._rows)

  def __getitem__(self, index: int) -> str:
    if not -len(self) <= index < len(self):
      raise IndexError(f"index {index} out of range for {len(self)} documents")
    return self._columns[self._file_ids[index]][int(self._rows[index])].as_py()

  def __repr__(self) -> str:
    return f"ParquetSource({len(self._columns)} files, {len(self)} docs, text_field={self.text_field!r})"


class ProblemSource:
  """`num_records` corpus records of one split, cycling over families x difficulties.

  Index i is family `families[i % F]` at difficulty `difficulties[(i // F) % D]`, drawn as
  `corpus.make_record(family, difficulty, seed, i, split)`: deterministic, computed on access.
  """

  def __init__(self, families: Sequence[str] = corpus.MATH_FAMILIES,
               difficulties: Sequence[int] = corpus.DIFFICULTIES, split: str = "train", seed: int = 0,
               num_records: int = 100_000, heldout_fraction: float = corpus.DEFAULT_HELDOUT_FRACTION):
    self.families, self.difficulties = tuple(families), tuple(difficulties)
    if not self.families or not self.difficulties:
      raise SourceConfigError("a problem source needs at least one family and one difficulty")
    for family in self.families:  # fail now on a bad family/difficulty/split/fraction/seed, not mid-training
      for difficulty in self.difficulties:
        corpus.make_record(family, difficulty, seed, 0, split, heldout_fraction)
    if num_records <= 0:
      raise SourceConfigError(f"num_records must be positive, got {num_records}")
    self.split, self.seed, self.num_records = split, seed, num_records
    self.heldout_fraction = heldout_fraction

  def __len__(self) -> int:
    return self.num_records

  def __getitem__(self, index: int) -> dict:
    if not 0 <= index < self.num_records:
      raise IndexError(f"index {index} out of range for {self.num_records} records")
    num_families = len(self.families)
    family = self.families[index % num_families]
    difficulty = self.difficulties[(index // num_families) % len(self.difficulties)]
    return corpus.make_record(family, difficulty, self.seed, index, self.split, self.heldout_fraction)

  def __repr__(self) -> str:
    return (f"ProblemSource({self.families}, difficulties={self.difficulties}, split={self.split!r}, "
            f"seed={self.seed}, num_records={self.num_records})")


class GeneratedTextSource:
  """Pretraining documents from a ProblemSource: `problems_per_document` consecutive records, formatted.

  Several problems per document make long, reasoning-dense documents for a long-context phase.
  """

  def __init__(self, problems: ProblemSource, problems_per_document: int = 1):
    if problems_per_document < 1:
      raise SourceConfigError(f"problems_per_document must be >= 1, got {problems_per_document}")
    if len(problems) < problems_per_document:
      raise SourceConfigError(f"{len(problems)} records cannot fill a {problems_per_document}-problem document")
    self.problems, self.problems_per_document = problems, problems_per_document

  def __len__(self) -> int:
    return len(self.problems) // self.problems_per_document

  def __getitem__(self, index: int) -> str:
    if not 0 <= index < len(self):
      raise IndexError(f"index {index} out of range for {len(self)} documents")
    k = self.problems_per_document
    return "\n\n".join(corpus.format_record(self.problems[index * k + j]) for j in range(k))

  def __repr__(self) -> str:
    return f"GeneratedTextSource({self.problems!r}, problems_per_document={self.problems_per_document})"


# Source description (a dict / ConfigDict) -> text source. Keys beyond "kind" are constructor arguments.
_KINDS = {
    "jsonl": (JsonlSource, {"paths", "text_field", "skip_malformed"}),
    "text": (TextSource, {"paths", "mode", "skip_malformed"}),
    "parquet": (ParquetSource, {"paths", "text_field", "skip_malformed"}),
    "generated": (None, {"families", "difficulties", "split", "seed", "num_records", "heldout_fraction",
                         "problems_per_document"}),
}
SOURCE_KINDS = tuple(_KINDS)


def make_source(spec: Mapping[str, Any], name: str = "source"):
  """Builds the text source described by `spec`, e.g. {"kind": "jsonl", "paths": "/data/*.jsonl"}.

  Keys per kind (besides "kind"): jsonl/parquet: paths, text_field="text", skip_malformed=False;
  text: paths, mode="line", skip_malformed=False; generated: families, difficulties, split="train",
  seed=0, num_records=100000, heldout_fraction=0.1, problems_per_document=1.
  """
  spec = dict(spec)
  kind = spec.pop("kind", None)
  if kind not in _KINDS:
    raise SourceConfigError(f"{name}: 'kind' must be one of {SOURCE_KINDS}, got {kind!r}")
  cls, allowed = _KINDS[kind]
  unknown = set(spec) - allowed
  if unknown:
    raise SourceConfigError(f"{name}: unknown keys {sorted(unknown)} for kind {kind!r}; allowed: {sorted(allowed)}")
  if kind != "generated" and "paths" not in spec:
    raise SourceConfigError(f"{name}: kind {kind!r} needs 'paths'")
  try:
    if kind == "generated":
      per_document = spec.pop("problems_per_document", 1)
      return GeneratedTextSource(ProblemSource(**spec), per_document)
    return cls(**spec)
  except (SourceConfigError, corpus.CorpusError) as e:
    raise SourceConfigError(f"{name}: {e}") from e
