"""Customer upload parsing: every problem names file, 1-based row and field."""

from __future__ import annotations

import json
import os

import pytest

from ussafety.data import Example, UploadError, load_upload, write_upload


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _problems(err: UploadError):
    return [(p.row, p.field) for p in err.problems]


def test_jsonl_ok(tmp_path):
    f = _jsonl(
        tmp_path / "up.jsonl", [{"prompt": "a", "response": "b"}, {"instruction": "Add", "input": "1+1", "output": "2"}]
    )
    rows = load_upload(f)
    assert [(r.prompt, r.response) for r in rows] == [("a", "b"), ("Add\n\n1+1", "2")]
    assert rows[1].row == 1 and rows[1].source == "upload/up.jsonl" and len(rows[0].sha256) == 64
    assert rows[1].meta == {"line": 2, "format": "jsonl", "schema": "alpaca"}


def test_bad_utf8_reports_line_and_offset(tmp_path):
    f = tmp_path / "up.jsonl"
    good = json.dumps({"prompt": "a", "response": "b"}).encode() + b"\n"
    f.write_bytes(good + b'{"prompt": "caf\xe9", "response": "x"}\n')
    with pytest.raises(UploadError) as e:
        load_upload(f)
    err = e.value
    assert err.file == str(f) and err.row == 2 and err.line == 2
    assert f"byte offset {len(good) + 15}" in str(err) and "up.jsonl" in str(err)


def test_bad_json_line(tmp_path):
    f = tmp_path / "up.jsonl"
    f.write_text('{"prompt": "a", "response": "b"}\n\n{"prompt": "c", "response": }\n', encoding="utf-8")
    with pytest.raises(UploadError) as e:
        load_upload(f)
    assert e.value.row == 2 and e.value.line == 3 and "invalid JSON" in str(e.value)


def test_missing_and_empty_fields_all_collected(tmp_path):
    f = _jsonl(
        tmp_path / "up.jsonl",
        [
            {"prompt": "ok", "response": "ok"},
            {"prompt": "no answer"},
            {"prompt": "   ", "response": "x"},
            {"prompt": "p", "response": 5},
            ["not", "an", "object"],
        ],
    )
    with pytest.raises(UploadError) as e:
        load_upload(f)
    err = e.value
    assert _problems(err) == [(2, "response"), (3, "prompt"), (4, "response"), (5, None)]
    assert (err.row, err.field) == (2, "response")
    text = str(err)
    assert "4 problems" in text and "row 2" in text and "field 'response': is missing" in text
    assert "field 'prompt': is empty" in text and "must be a string, got int" in text
    assert all(str(f) in line for line in text.splitlines())


def test_duplicate_names_both_rows(tmp_path):
    row = {"prompt": "p", "response": "r"}
    f = _jsonl(tmp_path / "up.jsonl", [row, {"prompt": "q", "response": "r"}, row])
    with pytest.raises(UploadError) as e:
        load_upload(f)
    p = e.value.problems[0]
    assert (p.row, p.other_row) == (3, 1) and "duplicate of row 1" in str(e.value)


def test_too_long(tmp_path):
    f = _jsonl(tmp_path / "up.jsonl", [{"prompt": "p", "response": "x" * 101}])
    with pytest.raises(UploadError) as e:
        load_upload(f, max_chars=100)
    assert _problems(e.value) == [(1, "response")] and "101 characters" in str(e.value)
    assert len(load_upload(f)) == 1  # default limit is 20_000


def test_chat_format_and_wrong_role(tmp_path):
    good = {
        "messages": [
            {"role": "system", "content": "S"},
            {"role": "user", "content": "u1"},
            {"role": "assistant", "content": "a1"},
            {"role": "user", "content": "u2"},
            {"role": "assistant", "content": "a2"},
        ]
    }
    f = _jsonl(tmp_path / "chat.jsonl", [good])
    (ex,) = load_upload(f)
    assert (ex.system, ex.prompt, ex.response) == ("S", "u2", "a2")
    assert ex.history == ({"role": "user", "content": "u1"}, {"role": "assistant", "content": "a1"})
    assert ex.messages() == good["messages"]

    bad = _jsonl(
        tmp_path / "bad.jsonl",
        [
            good,
            {"messages": [{"role": "human", "content": "hi"}, {"role": "assistant", "content": "yo"}]},
            {"messages": [{"role": "user", "content": "hi"}]},
            {
                "messages": [
                    {"role": "user", "content": "hi"},
                    {"role": "system", "content": "S"},
                    {"role": "assistant", "content": ""},
                ]
            },
            {"messages": []},
        ],
    )
    with pytest.raises(UploadError) as e:
        load_upload(bad)
    assert _problems(e.value) == [
        (2, "messages[0].role"),
        (3, "messages[0].role"),
        (4, "messages[2].content"),
        (5, "messages"),
    ]
    assert "unknown role 'human'" in str(e.value)
    assert "last message must be from the assistant" in str(e.value)


def test_csv(tmp_path):
    f = tmp_path / "up.csv"
    f.write_text('prompt,response\n"Hello, you","multi\nline"\nq,a\n', encoding="utf-8")
    rows = load_upload(f)
    assert [(r.prompt, r.response) for r in rows] == [("Hello, you", "multi\nline"), ("q", "a")]
    assert rows[1].meta == {"line": 4, "format": "csv", "schema": "prompt_response"}

    bad = tmp_path / "bad.csv"
    bad.write_text("prompt,response\nq,a\n,a2\nq3\n", encoding="utf-8")
    with pytest.raises(UploadError) as e:
        load_upload(bad)
    assert _problems(e.value) == [(2, "prompt"), (3, None)] and e.value.problems[0].line == 3

    chat = tmp_path / "chat.csv"
    msgs = json.dumps([{"role": "user", "content": "u"}, {"role": "assistant", "content": "a"}])
    chat.write_text("messages\n" + '"' + msgs.replace('"', '""') + '"\n', encoding="utf-8")
    assert load_upload(chat)[0].response == "a"

    nohead = tmp_path / "nohead.csv"
    nohead.write_text("question,answer\nq,a\n", encoding="utf-8")
    with pytest.raises(UploadError, match="header"):
        load_upload(nohead)


def test_json_list_rows_and_lines(tmp_path):
    f = tmp_path / "up.json"
    f.write_text('[\n  {"prompt": "a", "response": "b"},\n  {"prompt": "c"}\n]\n', encoding="utf-8")
    with pytest.raises(UploadError) as e:
        load_upload(f)
    assert (e.value.row, e.value.line, e.value.field) == (2, 3, "response")
    f.write_text('[{"prompt": "a", "response": "b"}, {"prompt": "c", "response": "d",}]', encoding="utf-8")
    with pytest.raises(UploadError, match="invalid JSON") as e:
        load_upload(f)
    assert e.value.row == 2
    f.write_text('{"data": []}', encoding="utf-8")  # .json starting with '{' is read as JSONL
    with pytest.raises(UploadError, match="needs prompt/response"):
        load_upload(f)


def test_empty_files(tmp_path):
    cases = [("e.jsonl", ""), ("w.jsonl", "\n  \n"), ("e.json", "[]"), ("e.csv", "prompt,response\n")]
    for name, content in cases:
        f = tmp_path / name
        f.write_text(content, encoding="utf-8")
        with pytest.raises(UploadError, match="empty|no data rows") as e:
            load_upload(f)
        assert e.value.file == str(f)


def test_problem_cap(tmp_path):
    f = _jsonl(tmp_path / "up.jsonl", [{"prompt": f"p{i}"} for i in range(30)])
    with pytest.raises(UploadError) as e:
        load_upload(f, max_problems=5)
    assert len(e.value.problems) == 5 and e.value.total == 30 and "25 more" in str(e.value)


def test_load_never_writes(tmp_path):
    f = _jsonl(tmp_path / "up.jsonl", [{"prompt": "a", "response": "b"}])
    before = sorted(os.listdir(tmp_path))
    load_upload(f)
    assert sorted(os.listdir(tmp_path)) == before


def test_write_upload_roundtrip_and_atomic(tmp_path, monkeypatch):
    rows = [
        Example("p", "r"),
        Example(
            "u2", "a2", history=({"role": "user", "content": "u1"}, {"role": "assistant", "content": "a1"}), system="S"
        ),
    ]
    out = write_upload(rows, tmp_path / "sub" / "up.jsonl")
    back = load_upload(out)
    assert [(r.prompt, r.response, r.history, r.system) for r in back] == [
        (r.prompt, r.response, r.history, r.system) for r in rows
    ]

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        write_upload([Example("x", "y")], out)
    assert load_upload(out)[0].prompt == "p"  # old file intact
    assert os.listdir(out.parent) == ["up.jsonl"]  # no temp file left
    with pytest.raises(ValueError, match="no response"):
        write_upload([Example("x")], tmp_path / "other.jsonl")
    assert not (tmp_path / "other.jsonl").exists()
