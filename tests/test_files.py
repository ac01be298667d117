"""The toolkit's own file writers (mro/files.py) under faults: a torn last line."""

import json

from mro.files import append_jsonl, read_jsonl, torn_path


def test_an_append_after_a_torn_last_line_starts_on_a_fresh_line(tmp_path, capsys):
  path = tmp_path / "res.jsonl"
  path.write_text('{"setting_id": "a"}\n{"setting_id": "torn", "accur')
  append_jsonl(path, [{"setting_id": "b"}])
  assert [r["setting_id"] for r in read_jsonl(path)] == ["a", "b"]
  assert path.read_text().splitlines() == ['{"setting_id": "a"}', '{"setting_id": "b"}']
  assert torn_path(path).read_text() == '{"setting_id": "torn", "accur\n'
  err = capsys.readouterr().err
  assert "torn" in err and str(torn_path(path)) in err
  append_jsonl(path, [{"setting_id": "c"}])  # a whole file: nothing more set aside
  assert [r["setting_id"] for r in read_jsonl(path)] == ["a", "b", "c"]
  assert torn_path(path).read_text().count("\n") == 1


def test_a_file_that_is_one_torn_fragment_keeps_only_the_new_record(tmp_path):
  path = tmp_path / "gens.jsonl"
  path.write_bytes(b'{"x": "\xc3')  # cut inside a UTF-8 character, no newline at all
  append_jsonl(path, [{"x": 1}])
  assert path.read_text() == '{"x": 1}\n'
  assert torn_path(path).read_bytes() == b'{"x": "\xc3\n'


def test_a_whole_last_record_without_its_newline_is_kept(tmp_path):
  path = tmp_path / "res.jsonl"
  path.write_text('{"a": 1}\n{"a": 2}')
  append_jsonl(path, [{"a": 3}])
  assert [r["a"] for r in read_jsonl(path)] == [1, 2, 3]
  assert not torn_path(path).exists()
  assert json.loads(path.read_text().splitlines()[1]) == {"a": 2}
