"""Preference pairs and RL prompts longer than the limits are cut, not dropped (issue 20): the prompt loses its
start (or end), the answers their end but never their end-of-turn tokens, both answers keep the same prompt,
and `drop` still does what it always did."""

import json

import pytest

from medtune.config import load_config
from medtune.data import preference, templates
from medtune.stages import dpo, grpo, ppo, rm
from tiny import save_tiny, tiny_llama, tiny_tokenizer

QUESTION_END = "What should I take?"
LONG_QUESTION = "Case: " + "The patient has a fever and a cough. " * 30 + QUESTION_END  # ~300 tokens
LONG_ANSWER = "Take paracetamol and rest. " * 40  # ~240 tokens


def tok_fmt(chat_template=None):
    tok = tiny_tokenizer() if chat_template is None else tiny_tokenizer(chat_template)
    return tok, templates.resolve_format(tok)


def pair(prompt, chosen="Rest and water.", rejected="Hello, how are you?", source="t.jsonl:1"):
    if isinstance(prompt, str):
        prompt = [{"role": "user", "content": prompt}]
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected, "source": source}


def fit(pairs, tok, fmt, **limits):
    stats = {}
    return preference.fit_pairs(pairs, tok, fmt, stats, **{"max_length": 96, **limits}), stats


def im_end(tok):
    return tok.convert_tokens_to_ids("<|im_end|>")


# ------------------------------------------------------------------------------------------ the cut itself


def test_a_long_prompt_loses_its_start_and_the_answers_stay_whole():
    tok, fmt = tok_fmt()
    system = {"role": "system", "content": "Be brief."}
    original = pair([system, {"role": "user", "content": LONG_QUESTION}])
    (got,), stats = fit([original], tok, fmt)
    question = got["prompt"][-1]["content"]
    assert got["prompt"][0] == system  # the system message fits, so it stays
    assert question.endswith(QUESTION_END) and not question.startswith("Case:")
    assert LONG_QUESTION.endswith(question) and len(question) < len(LONG_QUESTION) / 2
    # the answers are the very tokens the uncut pair had
    for key in ("chosen", "rejected"):
        assert got[key] == original[key]
        assert got[f"{key}_ids"] == preference.encode_pair(tok, fmt, original["prompt"], original[key])[1]
    # the cut prompt is an ordinary dialogue: role markers whole, ending with the assistant header
    text = tok.decode(got["prompt_ids"])
    assert text.startswith("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n")
    assert text.endswith(QUESTION_END + "<|im_end|>\n<|im_start|>assistant\n")
    assert got["prompt_ids"] == preference.encode_pair(tok, fmt, got["prompt"], got["chosen"])[0]
    assert len(got["prompt_ids"]) + len(got["rejected_ids"]) <= 96
    assert (stats["kept_whole"], stats["prompt_cut"], stats["answer_cut"], stats["dropped_too_long"]) == (0, 1, 0, 0)
    assert stats["tokens_before"]["max"] > 300 and stats["tokens_after"]["max"] <= 96


def test_keep_start_keeps_the_start_of_the_question():
    tok, fmt = tok_fmt()
    (got,), _ = fit([pair(LONG_QUESTION)], tok, fmt, truncation="keep_start")
    question = got["prompt"][-1]["content"]
    assert question.startswith("Case: The patient") and not question.endswith(QUESTION_END)
    assert LONG_QUESTION.startswith(question)


def test_earlier_turns_go_before_the_question_is_cut():
    tok, fmt = tok_fmt()
    history = [{"role": "user", "content": LONG_QUESTION}, {"role": "assistant", "content": "Rest."},
               {"role": "user", "content": "Fever again?"}, {"role": "assistant", "content": "Water."},
               {"role": "user", "content": "And for the cough?"}]
    (got,), stats = fit([pair(history)], tok, fmt)
    assert got["prompt"] == history[2:]  # the latest turns, whole; the prompt still starts with a user turn
    assert stats["prompt_cut"] == 1


def test_a_system_message_that_would_crowd_out_the_question_goes():
    tok, fmt = tok_fmt()
    prompt = [{"role": "system", "content": "Be careful. " * 25}, {"role": "user", "content": LONG_QUESTION}]
    (got,), _ = fit([pair(prompt)], tok, fmt)
    assert [m["role"] for m in got["prompt"]] == ["user"] and got["prompt"][0]["content"].endswith(QUESTION_END)


def test_chosen_and_rejected_share_the_same_cut_prompt():
    tok, fmt = tok_fmt()
    long_pair = pair(LONG_QUESTION, chosen=LONG_ANSWER, rejected="Hello.")
    (got,), stats = fit([long_pair], tok, fmt, max_length=128)
    assert stats["prompt_cut"] == 1 and stats["answer_cut"] == 1
    rows = rm.encode_pairs([long_pair], tok, fmt, 128, {})
    n = len(got["prompt_ids"])
    assert rows[0]["chosen_ids"][:n] == rows[0]["rejected_ids"][:n] == got["prompt_ids"]
    assert rows[0]["chosen_ids"][n:] == got["chosen_ids"] and rows[0]["rejected_ids"][n:] == got["rejected_ids"]
    # the default split: the prompt keeps half of max_length when the answer is longer than the rest
    assert n <= 64 and max(len(r) for r in rows[0].values()) <= 128


def test_a_cut_answer_keeps_its_start_and_its_end_of_turn_tokens():
    tok, fmt = tok_fmt()
    (got,), stats = fit([pair("Fever?", chosen=LONG_ANSWER)], tok, fmt, max_length=64)
    assert stats["answer_cut"] == 1 and stats["prompt_cut"] == 0
    assert LONG_ANSWER.startswith(got["chosen"]) and len(got["chosen"]) < len(LONG_ANSWER)
    assert got["chosen_ids"][-1] == im_end(tok) and im_end(tok) not in got["chosen_ids"][:-1]
    assert len(got["prompt_ids"]) + len(got["chosen_ids"]) <= 64
    assert got["rejected"] == "Hello, how are you?"  # the short answer is untouched

    (capped,), _ = fit([pair("Fever?", chosen=LONG_ANSWER)], tok, fmt, max_length=64, max_answer_length=10)
    assert len(capped["chosen_ids"]) <= 10 and capped["chosen_ids"][-1] == im_end(tok)


def test_a_multi_token_end_of_turn_sequence_is_never_split():
    # a template that closes the assistant turn with text before its control token: "\n\n<|im_end|>"
    template = ("{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '\n\n<|im_end|>\n' }}"
                "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
    tok, fmt = tok_fmt(template)
    whole = preference.encode_pair(tok, fmt, [{"role": "user", "content": "Fever?"}], LONG_ANSWER)[1]
    end = tok("\n\n<|im_end|>", add_special_tokens=False)["input_ids"]
    assert len(end) >= 2 and whole[-len(end):] == end
    for limit in (40, 41, 42, 43):
        (got,), _ = fit([pair("Fever?", chosen=LONG_ANSWER)], tok, fmt, max_length=64, max_answer_length=limit)
        assert got["chosen_ids"][-len(end):] == end and len(got["chosen_ids"]) <= limit


def test_drop_keeps_todays_behaviour():
    tok, fmt = tok_fmt()
    pairs = [pair("Fever?", source="t:1"), pair(LONG_QUESTION, source="t:2"),
             pair("Cough?", chosen=LONG_ANSWER, source="t:3"), pair("Chest pain?", chosen="Call an ambulance.", source="t:4")]
    got, stats = fit(pairs, tok, fmt, truncation="drop")
    # the rule before issue 20: a pair is kept, untouched, when prompt + its longer answer fit max_length
    old = []
    for p in pairs:
        prompt_ids, c = preference.encode_pair(tok, fmt, p["prompt"], p["chosen"])
        _, r = preference.encode_pair(tok, fmt, p["prompt"], p["rejected"])
        if len(prompt_ids) + max(len(c), len(r)) <= 96:
            old.append({**p, "prompt_ids": prompt_ids, "chosen_ids": c, "rejected_ids": r})
    assert got == old and [g["source"] for g in got] == ["t:1", "t:4"]
    assert (stats["kept_whole"], stats["prompt_cut"], stats["answer_cut"], stats["dropped_too_long"]) == (2, 0, 0, 2)
    kept, _ = fit(pairs, tok, fmt)
    assert len(kept) == 4  # the default cuts them instead
    # at the boundary: a pair exactly max_length long stays, one token over goes
    length = len(got[1]["prompt_ids"]) + max(len(got[1]["chosen_ids"]), len(got[1]["rejected_ids"]))
    assert len(fit(pairs[3:], tok, fmt, truncation="drop", max_length=length)[0]) == 1
    assert fit(pairs[3:], tok, fmt, truncation="drop", max_length=length - 1)[0] == []


def test_rl_prompts_are_cut_to_the_prompt_limit():
    tok, fmt = tok_fmt()
    rows = [{"prompt": [{"role": "user", "content": LONG_QUESTION}], "answer": "B", "source": "q:1"},
            {"prompt": [{"role": "user", "content": "Fever?"}], "answer": "A", "source": "q:2"}]
    stats = {}
    got = preference.fit_prompts(rows, tok, fmt, stats, max_length=48)
    assert [g["answer"] for g in got] == ["B", "A"]  # the reward's fields travel with the cut prompt
    assert got[0]["prompt"][0]["content"].endswith(QUESTION_END) and len(got[0]["prompt_ids"]) <= 48
    assert got[0]["prompt_ids"] == templates.encode_dialogue(tok, fmt, got[0]["prompt"], add_generation_prompt=True).input_ids
    assert tok.decode(got[0]["prompt_ids"]).endswith("<|im_start|>assistant\n")
    assert (stats["kept_whole"], stats["prompt_cut"], stats["dropped_too_long"]) == (1, 1, 0)
    dropped = {}
    assert [g["source"] for g in preference.fit_prompts(rows, tok, fmt, dropped, max_length=48, truncation="drop")] == ["q:2"]
    assert dropped["dropped_too_long"] == 1


# ------------------------------------------------------------------------------------------ loss masks


def test_rm_rows_end_at_the_end_of_turn_token_where_the_reward_is_read():
    tok, fmt = tok_fmt()
    rows = rm.encode_pairs([pair(LONG_QUESTION, chosen=LONG_ANSWER)], tok, fmt, 80, {})
    batch = rm.PairCollator(tok.pad_token_id)(rows)
    last = batch["attention_mask"].sum(dim=1) - 1  # where models.sequence_rewards reads the reward
    assert batch["input_ids"].shape[1] <= 80
    assert batch["input_ids"][range(2), last].tolist() == [im_end(tok), im_end(tok)]


def test_trl_sees_the_cut_pair_with_its_completion_mask_on_the_answer(tmp_path):
    tok, fmt = tok_fmt()
    cfg = load_config(dpo.DPOConfig, None, [f"output_dir={tmp_path / 'x'}", "data.max_length=96", "data.path=x"])
    encoded = dpo.encode([pair(LONG_QUESTION, chosen=LONG_ANSWER)] * 2, tok, fmt, 96, {})
    trainer = dpo.trl_trainer(cfg, tiny_llama(tok), tok, dpo.trl_rows(encoded, tok, "dpo"), [], tmp_path / "x", [])
    row, ours = trainer.train_dataset[0], encoded[0]
    assert row["prompt_ids"] == ours["prompt_ids"]  # TRL re-renders the cut prompt to the same tokens
    assert row["chosen_ids"][: len(ours["chosen_ids"])] == ours["chosen_ids"]  # (plus ChatML's newline after im_end)
    assert row["rejected_ids"][: len(ours["rejected_ids"])] == ours["rejected_ids"]
    batch = trainer.data_collator([row])
    mask = batch["completion_mask"][0].tolist()
    n = len(row["prompt_ids"])
    assert mask[:n] == [0] * n and mask[n: n + len(ours["chosen_ids"])] == [1] * len(ours["chosen_ids"])
    # nothing cut by TRL: the chosen sequence still ends with the end-of-turn token and its newline
    assert batch["input_ids"][0][n + len(ours["chosen_ids"]) - 1] == im_end(tok)


# ------------------------------------------------------------------------------------------ options


def write_pairs(path, n=24, long_every=3):
    """Short pairs, and every `long_every`-th one far longer than 64 tokens (a long case or a long answer)."""
    records = []
    for i in range(n):
        long = i % long_every == 0
        records.append({"prompt": (LONG_QUESTION if i % 2 else "Fever?") if long else f"Question {i}?",
                        "chosen": (LONG_ANSWER if not i % 2 else "Rest.") if long else "Call an ambulance now.",
                        "rejected": f"Hello, how are you {i}?"})
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


@pytest.mark.parametrize("override, names", [
    ("data.truncation=foo", "data.truncation"),
    ("data.max_prompt_length=0", "data.max_prompt_length"),
    ("data.max_prompt_length=80", "data.max_prompt_length"),  # not below data.max_length=64
    ("data.max_answer_length=-3", "data.max_answer_length"),
    ("data.max_answer_length=64", "data.max_answer_length"),
])
@pytest.mark.parametrize("stage", ["rm", "dpo"])
def test_bad_limits_are_one_config_error_line(tmp_path, capsys, stage, override, names):
    from medtune.cli import main

    data = write_pairs(tmp_path / "p.jsonl")
    code = main([stage, f"data.path={data}", "data.max_length=64", override, f"output_dir={tmp_path / 'r'}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and names in err[0] and "Traceback" not in err[0], err
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("stage, cls", [("ppo", ppo.PPOConfig), ("grpo", grpo.GRPOConfig)])
def test_rl_stages_take_the_truncation_option(stage, cls):
    from medtune.errors import ConfigError

    assert load_config(cls, None, []).data.truncation == "keep_end"
    assert load_config(cls, None, ["data.truncation=drop"]).data.truncation == "drop"
    with pytest.raises(ConfigError, match="data.truncation"):
        load_config(cls, None, ["data.truncation=middle"])


def test_data_stats_shows_what_rm_and_dpo_would_do(tmp_path, capsys):
    from medtune.cli import main
    from medtune.data import stats

    data = write_pairs(tmp_path / "p.jsonl")
    tok, fmt = tok_fmt()
    summary = stats.write_stats([data], tmp_path / "s", tokenizer=tok, max_length=64)
    s = summary["files"][0]
    assert s["kind"] == "preference" and s["examples"] == 24
    expected = {}
    preference.fit_pairs(preference.load_pairs(data), tok, fmt, expected, max_length=64)
    assert {k: s["truncation"][k] for k in expected} == expected
    assert s["truncation"]["dropped_too_long"] == 0 and s["truncation"]["kept_whole"] == 16
    assert s["over_max_length"] == 8  # what `drop` would lose
    assert "16 whole" in stats.format_table(summary)
    assert main(["data", "stats", str(data), "--tokenizer", "none", "--max-prompt-length", "0",
                 "--out", str(tmp_path / "s2")]) == 2
    assert "--max-prompt-length" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------ a whole run


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return save_tiny(tmp_path_factory.mktemp("m") / "tiny", hidden=32, seed=0)


def test_an_rm_run_on_long_pairs_uses_every_pair(tiny_model, tmp_path, capsys):
    data = write_pairs(tmp_path / "p.jsonl")
    common = [f"model.name_or_path={tiny_model}", f"data.path={data}", "data.max_length=64", "data.val_size=4",
              "train.max_steps=2", "train.batch_size=4"]
    out = rm.run(load_config(rm.RMConfig, None, [*common, f"output_dir={tmp_path / 'keep'}"]))
    s = json.loads((out / "medtune.json").read_text())["data_stats"]
    assert s["train_pairs"] + s["val_pairs"] == 24 and s["dropped_too_long"] == 0
    assert s["truncation"] == "keep_end" and s["prompt_cut"] == 4 and s["answer_cut"] == 4 and s["kept_whole"] == 16
    assert s["tokens_before"]["max"] > 200 and s["tokens_after"]["max"] <= 64
    printed = capsys.readouterr().out
    assert "16 whole, 4 with the prompt cut, 4 with an answer cut, 0 dropped as too long" in printed

    out = rm.run(load_config(rm.RMConfig, None, [*common, "data.truncation=drop", f"output_dir={tmp_path / 'drop'}"]))
    s = json.loads((out / "medtune.json").read_text())["data_stats"]
    assert s["train_pairs"] + s["val_pairs"] == 16 and s["dropped_too_long"] == 8
