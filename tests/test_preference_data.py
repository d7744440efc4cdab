"""Preference pairs: every accepted shape reads to the same record; bad records name file, line and field."""

import json

import pytest

from medtune.data import preference, templates
from medtune.errors import DataError
from tiny import tiny_tokenizer


def write(path, records):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


SHAPES = [
    {"conversations": [{"from": "system", "value": "Be brief."}, {"from": "human", "value": "Fever?"}],
     "chosen": "Rest.", "rejected": "Ignore it."},
    {"system": "Be brief.", "question": "Fever?", "response_chosen": "Rest.", "response_rejected": "Ignore it."},
    {"prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Fever?"}],
     "chosen": [{"role": "assistant", "content": "Rest."}], "rejected": [{"role": "assistant", "content": "Ignore it."}]},
    {"chosen": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Fever?"},
                {"role": "assistant", "content": "Rest."}],
     "rejected": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Fever?"},
                  {"role": "assistant", "content": "Ignore it."}]},
]


@pytest.mark.parametrize("record", SHAPES, ids=["medicalgpt", "pairwise", "trl-prompt", "trl-implicit"])
def test_every_shape_reads_to_the_same_pair(tmp_path, record):
    pairs = preference.load_pairs(write(tmp_path / "p.jsonl", [record]))
    assert pairs == [{"prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Fever?"}],
                      "chosen": "Rest.", "rejected": "Ignore it.", "source": f"{tmp_path / 'p.jsonl'}:1"}]


def test_plain_string_prompt_and_multi_turn_history(tmp_path):
    records = [{"prompt": "Fever?", "chosen": "Rest.", "rejected": "No."},
               {"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"},
                                  {"from": "human", "value": "Cough?"}], "chosen": "Water.", "rejected": "Nothing."}]
    pairs = preference.load_pairs(write(tmp_path / "p.jsonl", records))
    assert pairs[0]["prompt"] == [{"role": "user", "content": "Fever?"}]
    assert [m["role"] for m in pairs[1]["prompt"]] == ["user", "assistant", "user"]


def test_identical_answers_are_dropped_and_counted(tmp_path):
    stats = {}
    pairs = preference.load_pairs(write(tmp_path / "p.jsonl", [
        {"prompt": "a?", "chosen": "same", "rejected": "same "}, {"prompt": "b?", "chosen": "x", "rejected": "y"}]),
        stats=stats)
    assert len(pairs) == 1 and stats["identical_dropped"] == 1


@pytest.mark.parametrize("record, line_field, message", [
    ({"prompt": "q?", "chosen": "a"}, "field 'rejected'", "missing"),
    ({"prompt": "q?", "chosen": " ", "rejected": "b"}, "field 'chosen'", "empty answer"),
    ({"question": "q?", "response_chosen": "a", "response_rejected": 3}, "field 'response_rejected'", "must be a string"),
    ({"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}], "chosen": "x", "rejected": "y"},
     "field 'conversations[1].from'", "must end with a user turn"),
    ({"prompt": [{"role": "assistant", "content": "hi"}], "chosen": "x", "rejected": "y"}, "field 'prompt[0].role'",
     "starts with assistant"),
    ({"chosen": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],
      "rejected": [{"role": "user", "content": "other"}, {"role": "assistant", "content": "b"}]},
     "field 'rejected'", "differ before their last turn"),
    ({"prompt": "q?", "chosen": [{"role": "user", "content": "a"}], "rejected": "b"}, "field 'chosen'",
     "one assistant message"),
    ({"input": "q", "output": "a"}, "", "not a preference record"),
])
def test_bad_records_name_file_line_and_field(tmp_path, record, line_field, message):
    path = write(tmp_path / "p.jsonl", [{"prompt": "ok?", "chosen": "a", "rejected": "b"}, record])
    with pytest.raises(DataError) as err:
        preference.load_pairs(path)
    text = str(err.value)
    assert f"p.jsonl:2" in text and line_field in text and message in text


def test_non_utf8_and_empty_files(tmp_path):
    bad = tmp_path / "gbk.jsonl"
    bad.write_bytes(json.dumps({"prompt": "发烧", "chosen": "休息", "rejected": "不用管"}, ensure_ascii=False).encode("gbk"))
    with pytest.raises(DataError, match="UTF-8"):
        preference.load_pairs(bad)
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(DataError, match="no records"):
        preference.load_pairs(tmp_path / "empty.jsonl")


def test_encode_pair_splits_where_sft_trains_the_answer():
    tok = tiny_tokenizer()
    fmt = templates.resolve_format(tok)
    prompt = [{"role": "user", "content": "Fever?"}]
    p, a = preference.encode_pair(tok, fmt, prompt, "Rest.")
    enc = templates.encode_dialogue(tok, fmt, [*prompt, {"role": "assistant", "content": "Rest."}])
    trained = [t for t, m in zip(enc.input_ids, enc.assistant_mask) if m]
    assert a == trained and a[-1] == tok.convert_tokens_to_ids("<|im_end|>")
    assert p + a == enc.input_ids[: len(p) + len(a)]
    assert tok.decode(p).endswith("<|im_start|>assistant\n")


def test_prompt_only_records_keep_their_extra_fields(tmp_path):
    path = write(tmp_path / "q.jsonl", [{"prompt": "Which drug? A. x B. y", "answer": "B"},
                                        {"prompt": "q?", "chosen": "a", "rejected": "b"}])
    prompts = preference.load_prompts(path)
    assert prompts[0]["answer"] == "B" and prompts[0]["prompt"] == [{"role": "user", "content": "Which drug? A. x B. y"}]
    assert prompts[1]["prompt"] == [{"role": "user", "content": "q?"}] and "chosen" not in prompts[1]


def test_medicalgpt_sample_files(shared_data):
    stats = {}
    dpo = preference.load_pairs(shared_data / "medicalgpt" / "dpo_zh_500.jsonl", stats=stats)
    old = preference.load_pairs(shared_data / "medicalgpt" / "reward_test_medical_hist.json")
    assert len(dpo) + stats["identical_dropped"] == 500 and len(old) == 100
    assert all(p["prompt"][-1]["role"] == "user" for p in dpo + old)
