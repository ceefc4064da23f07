"""grain random-access sources: JSONL, text, Parquet and the built-in generator; malformed input."""

import json

import grain
import pytest

from zaya_jax.data import corpus
from zaya_jax.data.sources import (DataError, GeneratedTextSource, JsonlSource, ParquetSource, ProblemSource,
                                   SourceConfigError, TextSource, iter_jsonl, make_source)


def _write_jsonl(path, lines):
  path.write_text("".join(line + "\n" for line in lines))
  return str(path)


def test_jsonl_reads_documents_in_order(tmp_path):
  a = _write_jsonl(tmp_path / "a.jsonl",
                   [json.dumps({"text": "first", "id": 1}), "", json.dumps({"text": "é 🙂"})])
  b = _write_jsonl(tmp_path / "b.jsonl", [json.dumps({"text": "third\nline"})])
  src = JsonlSource(str(tmp_path / "*.jsonl"))
  assert len(src) == 3 and src.num_skipped == 0  # the blank line is not a record
  assert [src[i] for i in range(3)] == ["first", "é 🙂", "third\nline"]
  assert src[-1] == "third\nline"
  assert len(JsonlSource([a, b])) == 3
  ds = grain.MapDataset.source(src).shuffle(seed=1)
  assert sorted(ds[i] for i in range(3)) == sorted(["first", "é 🙂", "third\nline"])
  with pytest.raises(IndexError):
    src[3]


@pytest.mark.parametrize("bad,reason", [
    ("{not json", "invalid JSON"), ('{"body": "x"}', "missing field 'text'"),
    ('{"text": 3}', "field 'text' is int, not a string"), ("[1, 2]", "expected a JSON object")])
def test_jsonl_malformed_line_names_file_and_line(tmp_path, bad, reason):
  path = _write_jsonl(tmp_path / "d.jsonl", ['{"text": "ok"}', "", bad, '{"text": "also ok"}'])
  with pytest.raises(DataError, match=rf"d\.jsonl:3: {reason}"):
    JsonlSource(path)
  src = JsonlSource(path, skip_malformed=True)
  assert [src[i] for i in range(len(src))] == ["ok", "also ok"]
  assert src.num_skipped == 1 and src.skipped == [(path, 3)]


def test_iter_jsonl_counts_file_lines_and_raises_the_callers_error(tmp_path):
  path = _write_jsonl(tmp_path / "e.jsonl", ['{"a": 1}', "", "  ", '{"b": 2}'])
  assert list(iter_jsonl(path)) == [(f"{path}:1", 1, {"a": 1}), (f"{path}:4", 4, {"b": 2})]

  class Custom(ValueError):
    pass

  for bad, reason in [("{nope", "invalid JSON"), ('"text"', "expected a JSON object, got str")]:
    path = _write_jsonl(tmp_path / "f.jsonl", ['{"a": 1}', "", bad])
    with pytest.raises(Custom, match=rf"f\.jsonl:3: {reason}"):
      list(iter_jsonl(path, Custom))


def test_jsonl_custom_field(tmp_path):
  path = _write_jsonl(tmp_path / "c.jsonl", [json.dumps({"content": "x"})])
  assert JsonlSource(path, text_field="content")[0] == "x"


def test_text_source_modes(tmp_path):
  (tmp_path / "a.txt").write_text("line one\n\nline two\r\nline three")
  (tmp_path / "b.txt").write_text("whole\nfile\n")
  by_line = TextSource(str(tmp_path / "a.txt"))
  assert [by_line[i] for i in range(len(by_line))] == ["line one", "line two", "line three"]
  by_file = TextSource(str(tmp_path / "*.txt"), mode="file")
  assert [by_file[i] for i in range(len(by_file))] == ["line one\n\nline two\r\nline three", "whole\nfile\n"]
  (tmp_path / "c.txt").write_bytes(b"good\n\xff\xfe bad\nfine\n")
  with pytest.raises(DataError, match=r"c\.txt:2: not UTF-8"):
    TextSource(str(tmp_path / "c.txt"))
  skipping = TextSource(str(tmp_path / "c.txt"), skip_malformed=True)
  assert [skipping[i] for i in range(len(skipping))] == ["good", "fine"] and skipping.num_skipped == 1
  with pytest.raises(SourceConfigError, match="mode"):
    TextSource(str(tmp_path / "a.txt"), mode="paragraph")


def test_parquet_source(tmp_path):
  pa = pytest.importorskip("pyarrow")
  import pyarrow.parquet as pq
  pq.write_table(pa.table({"text": ["a", None, "c"], "n": [1, 2, 3]}), tmp_path / "x.parquet")
  pq.write_table(pa.table({"text": ["d"]}), tmp_path / "y.parquet")
  with pytest.raises(DataError, match=r"x\.parquet: row 1: null 'text'"):
    ParquetSource(str(tmp_path / "*.parquet"))
  src = ParquetSource(str(tmp_path / "*.parquet"), skip_malformed=True)
  assert [src[i] for i in range(len(src))] == ["a", "c", "d"] and src.num_skipped == 1
  with pytest.raises(DataError, match="no column 'body'"):
    ParquetSource(str(tmp_path / "y.parquet"), text_field="body")
  with pytest.raises(DataError, match="not string"):
    ParquetSource(str(tmp_path / "x.parquet"), text_field="n")
  (tmp_path / "z.parquet").write_text("not parquet")
  with pytest.raises(DataError, match="not a readable Parquet file"):
    ParquetSource(str(tmp_path / "z.parquet"))


def test_problem_and_generated_text_sources():
  problems = ProblemSource(families=["arithmetic", "general"], difficulties=[1, 3], split="heldout", num_records=8)
  assert len(problems) == 8
  assert [(r["family"], r["difficulty"]) for r in (problems[i] for i in range(4))] == [
      ("arithmetic", 1), ("general", 1), ("arithmetic", 3), ("general", 3)]
  assert problems[7] == corpus.make_record("general", 3, 0, 7, "heldout")
  text = GeneratedTextSource(problems, problems_per_document=2)
  assert len(text) == 4
  assert text[1] == corpus.format_record(problems[2]) + "\n\n" + corpus.format_record(problems[3])
  with pytest.raises(IndexError):
    problems[8]


def test_make_source_and_config_errors(tmp_path):
  path = _write_jsonl(tmp_path / "a.jsonl", ['{"text": "hi"}'])
  assert make_source({"kind": "jsonl", "paths": [path]})[0] == "hi"
  generated = make_source({"kind": "generated", "families": ["linear"], "difficulties": [2], "num_records": 6,
                           "problems_per_document": 3})
  assert isinstance(generated, GeneratedTextSource) and len(generated) == 2
  with pytest.raises(SourceConfigError, match="'kind' must be one of"):
    make_source({"kind": "csv", "paths": path})
  with pytest.raises(SourceConfigError, match=r"web: unknown keys \['field'\]"):
    make_source({"kind": "jsonl", "paths": path, "field": "x"}, name="web")
  with pytest.raises(SourceConfigError, match="needs 'paths'"):
    make_source({"kind": "text"})
  with pytest.raises(SourceConfigError, match="no file matches"):
    make_source({"kind": "jsonl", "paths": str(tmp_path / "missing*.jsonl")})
  with pytest.raises(SourceConfigError, match="m: unknown problem family"):
    make_source({"kind": "generated", "families": ["poetry"]}, name="m")
  with pytest.raises(SourceConfigError, match="difficulty"):
    make_source({"kind": "generated", "families": ["linear"], "difficulties": [0]})
