"""The data contract (medtune.data.formats): every accepted format, every error, convert, texts."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import pytest

from medtune.data.formats import (
    convert_file,
    detect_format,
    fingerprint,
    iter_dialogues,
    iter_texts,
    load_dialogues,
    load_texts,
    validate_file,
)
from medtune.errors import DataError, MedtuneError

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"

QA = [
    {"role": "system", "content": "You are a careful medical assistant."},
    {"role": "user", "content": "I have a fever. What should I do?"},
    {"role": "assistant", "content": "Rest, drink fluids, and see a doctor if it lasts over three days."},
    {"role": "user", "content": "And for a headache?"},
    {"role": "assistant", "content": "Paracetamol can help; seek care if it is sudden and severe."},
]


def write(tmp_path: Path, name: str, content) -> Path:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def jsonl(*records) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)


def msgs(*turns) -> dict:
    return {"messages": [{"role": r, "content": c} for r, c in turns]}


def expect_error(fn, path: Path, line: int | None, field: str | None, *words: str, **kwargs) -> DataError:
    with pytest.raises(DataError) as info:
        fn(path, **kwargs)
    text = str(info.value)
    assert path.name in text
    if line is not None:
        assert f"{path.name}:{line}:" in text and info.value.line == line, text
    if field is not None:
        assert f"field '{field}'" in text, text
    for word in words:
        assert word in text, text
    assert "(" in text and text.endswith(")"), f"no hint: {text}"
    return info.value


# --------------------------------------------------------------------------- each format loads


def sharegpt_record() -> dict:
    names = {"system": "system", "user": "human", "assistant": "gpt"}
    return {"conversations": [{"from": names[m["role"]], "value": m["content"]} for m in QA]}


def alpaca_record() -> dict:
    return {
        "system": QA[0]["content"],
        "history": [[QA[1]["content"], QA[2]["content"]]],
        "instruction": QA[3]["content"],
        "input": "",
        "output": QA[4]["content"],
    }


def test_messages_jsonl_loads(tmp_path):
    path = write(tmp_path, "m.jsonl", jsonl({"messages": QA}, msgs(("user", "Hi"), ("assistant", "Hello"))))
    data = load_dialogues(path)
    assert [d["messages"] for d in data] == [QA, [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]]
    assert [d["source"] for d in data] == [f"{path}:1", f"{path}:2"]
    assert detect_format(path) == "messages"


def test_sharegpt_and_alpaca_map_to_the_same_messages(tmp_path):
    share = write(tmp_path, "s.jsonl", jsonl(sharegpt_record()))
    alpaca_lines = write(tmp_path, "a.jsonl", jsonl(alpaca_record()))
    alpaca_array = write(tmp_path, "a.json", json.dumps([alpaca_record()], indent=2))
    assert load_dialogues(share)[0]["messages"] == QA
    assert load_dialogues(alpaca_lines)[0]["messages"] == QA
    assert load_dialogues(alpaca_array)[0]["messages"] == QA
    assert (detect_format(share), detect_format(alpaca_lines), detect_format(alpaca_array)) == ("sharegpt", "alpaca", "alpaca")


def test_sharegpt_accepts_user_assistant_aliases(tmp_path):
    record = {"conversations": [{"from": "user", "value": "Q"}, {"from": "assistant", "value": "A"}]}
    path = write(tmp_path, "s.jsonl", jsonl(record))
    assert load_dialogues(path)[0]["messages"] == [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}]


def test_alpaca_input_is_appended_to_the_instruction(tmp_path):
    records = [
        {"instruction": "Answer as a doctor.", "input": "I cough at night.", "output": "Could be asthma."},
        {"instruction": "What is HbA1c?", "output": "A blood test for average glucose."},
        {"instruction": "Explain.", "input": None, "output": "OK.", "system": ""},
    ]
    data = load_dialogues(write(tmp_path, "a.jsonl", jsonl(*records)))
    assert data[0]["messages"][0] == {"role": "user", "content": "Answer as a doctor.\n\nI cough at night."}
    assert data[1]["messages"][0] == {"role": "user", "content": "What is HbA1c?"}
    assert data[2]["messages"] == [{"role": "user", "content": "Explain."}, {"role": "assistant", "content": "OK."}]


def test_json_array_sources_are_the_lines_where_records_start(tmp_path):
    text = '[\n  {"instruction": "a", "output": "b"},\n\n  {"instruction": "c",\n   "output": "d"}\n]\n'
    path = write(tmp_path, "a.json", text)
    assert [d["source"] for d in load_dialogues(path)] == [f"{path}:2", f"{path}:4"]


def test_blank_lines_crlf_and_bom_are_fine(tmp_path):
    body = jsonl(msgs(("user", "Q"), ("assistant", "A"))).replace("\n", "\r\n")
    path = write(tmp_path, "m.jsonl", b"\xef\xbb\xbf" + ("\r\n" + body + "\n  \n" + body).encode())
    assert [d["source"] for d in load_dialogues(path)] == [f"{path}:2", f"{path}:5"]


def test_fmt_forces_a_format(tmp_path):
    path = write(tmp_path, "s.jsonl", jsonl(sharegpt_record()))
    assert load_dialogues(path, "sharegpt")[0]["messages"] == QA
    expect_error(load_dialogues, path, 1, "messages", "missing", fmt="messages")
    expect_error(load_dialogues, path, None, None, "unknown format", fmt="chatml")


def test_prompt_only_dialogues_when_no_final_assistant_is_required(tmp_path):
    path = write(tmp_path, "p.jsonl", jsonl(msgs(("system", "Be brief."), ("user", "Q"))))
    assert load_dialogues(path, require_final_assistant=False)[0]["messages"][-1] == {"role": "user", "content": "Q"}
    expect_error(load_dialogues, path, 1, "messages[1].role", "ends with a user turn")
    alpaca = write(tmp_path, "p.json", json.dumps([{"instruction": "Q"}]))
    assert load_dialogues(alpaca, require_final_assistant=False)[0]["messages"] == [{"role": "user", "content": "Q"}]
    expect_error(load_dialogues, alpaca, 1, "output", "missing")


# --------------------------------------------------------------------------- errors: file, line, field, hint

GOOD = msgs(("user", "Q"), ("assistant", "A"))


@pytest.mark.parametrize(
    "bad, field, words",
    [
        ({"foo": 1}, "messages", ["missing"]),
        ({"messages": "hi"}, "messages", ["must be an array, got string"]),
        ({"messages": []}, "messages", ["empty conversation"]),
        ({"messages": ["hi"]}, "messages[0]", ["must be an object"]),
        ({"messages": [{"content": "Q"}]}, "messages[0].role", ["missing"]),
        ({"messages": [{"role": "user"}]}, "messages[0].content", ["missing"]),
        ({"messages": [{"role": "user", "content": 3}]}, "messages[0].content", ["must be a string, got number"]),
        ({"messages": [{"role": "doctor", "content": "Q"}]}, "messages[0].role", ["unknown role 'doctor'", "system, user, assistant"]),
        (msgs(("user", "Q"), ("assistant", "  \n")), "messages[1].content", ["empty assistant turn"]),
        (msgs(("assistant", "A"), ("user", "Q")), "messages[0].role", ["starts with assistant"]),
        (msgs(("system", "S"),), "messages", ["no user turn"]),
        (msgs(("user", "Q"), ("user", "Q2"), ("assistant", "A")), "messages[1].role", ["two user turns in a row"]),
        (msgs(("user", "Q"), ("system", "S"), ("assistant", "A")), "messages[1].role", ["only allowed as the first turn"]),
        (msgs(("user", "Q"), ("assistant", "A"), ("user", "Q2")), "messages[2].role", ["ends with a user turn"]),
    ],
)
def test_messages_errors_name_file_line_and_field(tmp_path, bad, field, words):
    path = write(tmp_path, "bad.jsonl", jsonl(GOOD, GOOD) + "\n" + jsonl(bad))
    expect_error(load_dialogues, path, 4, field, *words)


@pytest.mark.parametrize(
    "bad, field, words",
    [
        ({"conversations": [{"from": "bot", "value": "x"}]}, "conversations[0].from", ["unknown speaker 'bot'", "human, gpt"]),
        ({"conversations": [{"from": "human"}]}, "conversations[0].value", ["missing"]),
        ({"conversations": [{"from": "human", "value": "Q"}, {"from": "gpt", "value": ""}]}, "conversations[1].value", ["empty"]),
        ({"conversations": [{"from": "gpt", "value": "A"}]}, "conversations[0].from", ["starts with assistant"]),
    ],
)
def test_sharegpt_errors_use_sharegpt_field_names(tmp_path, bad, field, words):
    path = write(tmp_path, "bad.jsonl", jsonl(sharegpt_record(), bad))
    expect_error(load_dialogues, path, 2, field, *words)


@pytest.mark.parametrize(
    "bad, field, words",
    [
        ({"instruction": "Q"}, "output", ["missing"]),
        ({"output": "A"}, "instruction", ["missing"]),
        ({"instruction": " ", "input": "", "output": "A"}, "instruction", ["empty user turn"]),
        ({"instruction": "Q", "output": ""}, "output", ["empty assistant turn"]),
        ({"instruction": "Q", "output": ["A"]}, "output", ["must be a string, got array"]),
        ({"instruction": "Q", "output": "A", "history": [["q"]]}, "history[0]", ["[user, assistant] pair"]),
        ({"instruction": "Q", "output": "A", "history": [["q", ""]]}, "history[0][1]", ["empty assistant turn"]),
    ],
)
def test_alpaca_errors_in_a_json_array_give_the_record_line(tmp_path, bad, field, words):
    records = [{"instruction": "Q", "output": "A"}, bad]
    path = write(tmp_path, "bad.json", "[\n" + ",\n".join(json.dumps(r) for r in records) + "\n]\n")
    expect_error(load_dialogues, path, 3, field, *words)


def test_malformed_json_reports_the_json_error(tmp_path):
    path = write(tmp_path, "bad.jsonl", jsonl(GOOD) + '{"messages": [}\n')
    expect_error(load_dialogues, path, 2, None, "invalid JSON", "column")
    array = write(tmp_path, "bad.json", '[\n {"instruction": "Q", "output": "A"},\n {"instruction": "Q" "output": "A"}\n]')
    expect_error(load_dialogues, array, 3, None, "invalid JSON", "delimiter")
    unclosed = write(tmp_path, "open.json", '[\n {"instruction": "Q", "output": "A"}\n')
    expect_error(load_dialogues, unclosed, 3, None, "not closed")
    extra = write(tmp_path, "extra.json", '[{"instruction": "Q", "output": "A"}]\n[]')
    expect_error(load_dialogues, extra, 2, None, "extra data")


def test_a_pretty_printed_object_is_not_jsonl(tmp_path):
    path = write(tmp_path, "one.json", json.dumps(GOOD, indent=2))
    expect_error(load_dialogues, path, 1, None, "invalid JSON", "JSON array")


def test_records_must_be_objects(tmp_path):
    path = write(tmp_path, "bad.jsonl", jsonl(GOOD) + '["user", "Q"]\n')
    expect_error(load_dialogues, path, 2, None, "must be a JSON object, got array")
    array = write(tmp_path, "bad.json", '[\n {"instruction": "Q", "output": "A"},\n "text"\n]')
    expect_error(load_dialogues, array, 3, None, "must be a JSON object, got string")


def test_non_utf8_bytes_name_the_line_and_byte(tmp_path):
    good = jsonl(GOOD).encode()
    path = write(tmp_path, "gbk.jsonl", good + good + '{"messages": [{"role": "user", "content": "发烧"}]}\n'.encode("gbk"))
    err = expect_error(load_dialogues, path, 3, None, "not valid UTF-8", "iconv")
    assert f"byte 0xb7 at byte 44 of the line (offset {2 * len(good) + 43} in the file)" in str(err)
    array = write(tmp_path, "gbk.json", b'[\n{"instruction": "Q", "output": "A"},\n{"instruction": "\xb7\xa2", "output": "A"}]')
    expect_error(load_dialogues, array, 3, None, "not valid UTF-8", "0xb7")


def test_an_unknown_first_record_lists_the_formats(tmp_path):
    path = write(tmp_path, "qa.jsonl", jsonl({"question": "Q", "answer": "A"}, GOOD))
    expect_error(load_dialogues, path, 1, None, "unknown record shape with keys [answer, question]", "ShareGPT", "Alpaca")
    expect_error(detect_format, path, 1, None, "unknown record shape")


def test_mixed_formats_in_one_file(tmp_path):
    path = write(tmp_path, "mixed.jsonl", jsonl(GOOD, sharegpt_record()))
    expect_error(load_dialogues, path, 2, None, "mixed formats", "sharegpt", "line 1 is messages")


@pytest.mark.parametrize("content", ["", "\n \n", "[]", " [ ]\n"])
def test_a_file_without_records(tmp_path, content):
    expect_error(load_dialogues, write(tmp_path, "empty.jsonl", content), None, None, "no records")


def test_not_json_at_all(tmp_path):
    path = write(tmp_path, "data.csv", "\nquestion,answer\n")
    expect_error(load_dialogues, path, 2, None, "starts with 'q'")


def test_missing_file_and_directory(tmp_path):
    expect_error(load_dialogues, tmp_path / "nope.jsonl", None, None, "file not found")
    expect_error(load_dialogues, tmp_path, None, None, "is a directory")
    expect_error(load_texts, tmp_path / "nope.txt", None, None, "file not found")
    expect_error(fingerprint, tmp_path / "nope.txt", None, None, "file not found")


def test_data_error_is_a_medtune_error_with_one_line(tmp_path):
    path = write(tmp_path, "bad.jsonl", jsonl(msgs(("user", "Q"), ("assistant", ""))))
    err = expect_error(load_dialogues, path, 1, "messages[1].content")
    assert isinstance(err, MedtuneError) and err.exit_code == 2 and "\n" not in str(err)
    assert (err.path, err.line, err.field) == (str(path), 1, "messages[1].content")


def test_load_stops_at_the_first_error(tmp_path):
    path = write(tmp_path, "bad.jsonl", jsonl(GOOD, msgs(("user", "")), {"foo": 1}))
    expect_error(load_dialogues, path, 2, "messages[0].content")


# --------------------------------------------------------------------------- validate, convert, fingerprint


def test_validate_summarises(tmp_path):
    records = [{"messages": QA}, msgs(("user", "发烧怎么办？"), ("assistant", "多喝水，注意休息。")), msgs(("user", "Привет"), ("assistant", "Здравствуйте"))]
    path = write(tmp_path, "m.jsonl", jsonl(*records))
    assert validate_file(path) == {
        "path": str(path), "format": "messages", "records": 3, "turns": 8, "system_prompts": 1, "multi_turn": 1,
        "languages": {"en": 1, "zh": 1, "other": 1},
    }
    bad = write(tmp_path, "bad.jsonl", jsonl(GOOD, {"messages": 1}))
    expect_error(validate_file, bad, 2, "messages")


@pytest.mark.parametrize("to", ["messages", "sharegpt", "alpaca"])
def test_convert_round_trips(tmp_path, to):
    src = write(tmp_path, "src.json", json.dumps([alpaca_record(), {"instruction": "发烧？", "output": "多喝水。"}], ensure_ascii=False))
    dst = tmp_path / f"out.{to}.jsonl"
    assert convert_file(src, dst, to=to) == 2
    assert detect_format(dst) == to
    assert [d["messages"] for d in load_dialogues(dst)] == [d["messages"] for d in load_dialogues(src)]
    assert "发烧" in dst.read_text(encoding="utf-8")  # ensure_ascii=False
    back = tmp_path / "back.jsonl"
    assert convert_file(dst, back, to="messages") == 2
    assert [d["messages"] for d in load_dialogues(back)] == [d["messages"] for d in load_dialogues(src)]


def test_convert_to_alpaca_keeps_history_and_prompt_only_dialogues(tmp_path):
    src = write(tmp_path, "m.jsonl", jsonl({"messages": QA}, msgs(("user", "Q"), ("assistant", "A"), ("user", "Q2"))))
    dst = tmp_path / "a.jsonl"
    assert convert_file(src, dst, to="alpaca", require_final_assistant=False) == 2
    first, second = [json.loads(line) for line in dst.read_text(encoding="utf-8").splitlines()]
    assert first == alpaca_record()
    assert second == {"instruction": "Q2", "input": "", "history": [["Q", "A"]]}


def test_convert_leaves_dst_untouched_when_the_source_is_bad(tmp_path):
    dst = write(tmp_path, "out.jsonl", "precious\n")
    bad = write(tmp_path, "bad.jsonl", jsonl(GOOD, {"messages": [{"role": "user", "content": ""}]}))
    expect_error(convert_file, bad, 2, "messages[0].content", dst=dst)
    assert dst.read_text() == "precious\n"
    expect_error(convert_file, bad, None, None, dst=tmp_path / "new.jsonl")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.jsonl", "out.jsonl"]


def test_convert_rejects_bad_targets(tmp_path):
    src = write(tmp_path, "m.jsonl", jsonl(GOOD))
    with pytest.raises(DataError, match="unknown target format"):
        convert_file(src, tmp_path / "o.jsonl", to="chatml")
    with pytest.raises(DataError, match="does not exist"):
        convert_file(src, tmp_path / "no" / "o.jsonl")
    with pytest.raises(DataError, match="is a directory"):
        convert_file(src, tmp_path)


def test_fingerprint(tmp_path):
    import hashlib

    path = write(tmp_path, "m.jsonl", jsonl(GOOD))
    data = path.read_bytes()
    assert fingerprint(path) == {"path": str(path.resolve()), "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}


# --------------------------------------------------------------------------- pretraining text


def test_texts_line_and_paragraph_modes(tmp_path):
    path = write(tmp_path, "t.txt", "First line.\nSecond line.\n\n  \nThird.\r\n\n")
    assert load_texts(path) == ["First line.", "Second line.", "Third."]
    assert load_texts(path, mode="paragraph") == ["First line.\nSecond line.", "Third."]
    expect_error(load_texts, path, None, None, "unknown text mode", mode="page")


def test_texts_jsonl(tmp_path):
    path = write(tmp_path, "t.jsonl", jsonl({"text": "Doc one."}, {"text": "  "}, {"text": "文档二", "id": 2}))
    assert load_texts(path) == ["Doc one.", "文档二"]
    bad = write(tmp_path, "bad.jsonl", jsonl({"text": "a"}, {"body": "b"}))
    expect_error(load_texts, bad, 2, "text", "missing")
    broken = write(tmp_path, "broken.jsonl", jsonl({"text": "a"}) + "{text}\n")
    expect_error(load_texts, broken, 2, None, "invalid JSON")
    wrong = write(tmp_path, "wrong.jsonl", jsonl({"text": 5}))
    expect_error(load_texts, wrong, 1, "text", "must be a string")


def test_texts_errors(tmp_path):
    path = write(tmp_path, "t.txt", "one\ntwo\nthr\xff\xfe\n".encode("latin-1"))
    expect_error(load_texts, path, 3, None, "not valid UTF-8", "byte 4 of the line (offset 11 in the file)")
    expect_error(load_texts, write(tmp_path, "e.txt", "\n\n"), None, None, "no documents")
    expect_error(load_texts, write(tmp_path, "t.csv", "a,b\n"), None, None, "unsupported text file type")


def test_iter_texts_is_a_generator(tmp_path):
    path = write(tmp_path, "t.txt", "a\nb\n")
    texts = iter_texts(path, "line")
    assert inspect.isgenerator(texts)
    assert next(texts) == "a" and list(texts) == ["b"]
    assert inspect.isgenerator(iter_dialogues(path))


def test_iter_texts_streams_before_reaching_a_bad_line(tmp_path):
    path = write(tmp_path, "t.txt", b"good\n\xff\n")
    texts = iter_texts(path)
    assert next(texts) == "good"
    with pytest.raises(DataError, match=r"t\.txt:2"):
        next(texts)


# --------------------------------------------------------------------------- the real shared files


def shared(relative: str) -> Path:
    path = SHARED / relative
    if not path.is_file():
        pytest.skip(f"{path} not present")
    return path


def test_medicalgpt_sharegpt_file_loads_unchanged():
    path = shared("medicalgpt/medical_sft_1K_format.jsonl")
    data = load_dialogues(path)
    assert len(data) == 1000
    assert detect_format(path) == "sharegpt"
    assert all([m["role"] for m in d["messages"]] == ["user", "assistant"] for d in data)
    assert validate_file(path)["languages"]["zh"] == 1000


def test_chatdoctor_alpaca_array_loads_unchanged():
    path = shared("chatdoctor/genmedgpt5k.json")
    data = load_dialogues(path)
    assert len(data) == 5452
    assert detect_format(path) == "alpaca"
    assert data[0]["source"] == f"{path}:2"
    assert data[0]["messages"][0]["content"].startswith("If you are a doctor") and "\n\nDoctor, " in data[0]["messages"][0]["content"]


def test_medicalgpt_pretraining_text_loads():
    assert len(load_texts(shared("medicalgpt/en_article_tail500.txt"))) == 426


def test_the_json_reading_layer_is_public_and_names_lines(tmp_path):
    """data/jsonio.py: what formats, preference, tasks, clean, rm and grpo read files with."""
    from medtune.data import jsonio

    array = tmp_path / "a.json"
    array.write_bytes(b'\xef\xbb\xbf[\n  {"text": "one"},\n\n  {"text": "two",\n   "n": 2}\n]\n')
    assert [(line, r["text"]) for line, r in jsonio.iter_objects(array)] == [(2, "one"), (4, "two")]
    lines = tmp_path / "a.jsonl"
    lines.write_bytes(b'{"text": "ok"}\n\n{"text": 3}\n')
    (line, first), (bad_line, bad) = jsonio.iter_objects(lines)
    assert (line, jsonio.get_str(lines, line, first, "text", "text")) == (1, "ok")
    with pytest.raises(DataError, match=r"a\.jsonl:3: field 'text': must be a string, got number"):
        jsonio.get_str(lines, bad_line, bad, "text", "text")
    text = tmp_path / "t.txt"
    text.write_bytes(b"fine\ncaf\xe9\n")
    with pytest.raises(DataError, match=r"t\.txt:2: not valid UTF-8: byte 0xe9 at byte 4 of the line \(offset 8"):
        list(jsonio.iter_lines(text))
    with pytest.raises(DataError, match="file not found"):
        jsonio.require_file(tmp_path / "missing.jsonl")
    members = tmp_path / "m.json"
    members.write_text('{"1": {"q": "a"},\n\n "2": {"q": "b"}\n}\n')
    assert [(line, key) for line, key, _ in jsonio.iter_json_members(members, "one object")] == [(1, "1"), (3, "2")]
    members.write_text('{"1": {"q": "a"},\n "2" {"q": "b"}}')
    with pytest.raises(DataError, match=r"m\.json:2: invalid JSON: expected ':' after the key \(one object\)"):
        list(jsonio.iter_json_members(members, "one object"))
    assert [jsonio.json_type(v) for v in (None, True, 1.5, "x", [], {})] == [
        "null", "boolean", "number", "string", "array", "object"]
