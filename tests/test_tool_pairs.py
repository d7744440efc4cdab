"""Preference pairs that hold tool calls (issue 18 item 2): a prompt dialogue with OpenAI tool_calls / tool messages
and a `tools` list, answers that may be an assistant turn of calls; checked as tool dialogues are, rendered by
the template (the tokenizer's own with tools=, or chatml_tools), and trained by rm and dpo."""

import json

import pytest

from medtune.cli import main
from medtune.data import preference, templates
from medtune.errors import DataError
from test_tools import OWN_TEMPLATE, TOOLS
from tiny import save_tiny, tiny_tokenizer

RESULT = '{"drug": "paracetamol", "range": "500-1000 mg"}'
CALLED = [{"role": "user", "content": "Dose of paracetamol?"},
          {"role": "assistant", "content": "", "tool_calls": [
              {"id": "c1", "type": "function", "function": {"name": "dose_range", "arguments": '{"drug": "paracetamol"}'}}]},
          {"role": "tool", "tool_call_id": "c1", "content": RESULT}]


def call(drug):
    return [{"role": "assistant", "content": "", "tool_calls": [
        {"type": "function", "function": {"name": "dose_range", "arguments": {"drug": drug}}}]}]


def answered_record(**changes):
    """The tool has answered: the chosen answer uses its result, the rejected one ignores it."""
    record = {"prompt": CALLED, "chosen": [{"role": "assistant", "content": "500-1000 mg at a time."}],
              "rejected": "Take as much as you like.", "tools": TOOLS}
    return {**record, **changes}


def call_record(**changes):
    """The chosen answer calls the tool; the rejected one guesses without calling it."""
    record = {"prompt": [{"role": "user", "content": "Dose of ibuprofen?"}], "chosen": call("ibuprofen"),
              "rejected": [{"role": "assistant", "content": "About 2 g."}], "tools": TOOLS}
    return {**record, **changes}


def write(path, *records):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


def test_tool_pairs_load_in_one_form(tmp_path):
    answered, called, both, implicit = preference.load_pairs(write(
        tmp_path / "p.jsonl", answered_record(), call_record(),
        call_record(rejected=call("paracetamol")),
        {"chosen": [*CALLED, {"role": "assistant", "content": "500-1000 mg."}],
         "rejected": [*CALLED, {"role": "assistant", "content": "Any amount."}], "tools": TOOLS}))
    assert [m["role"] for m in answered["prompt"]] == ["user", "assistant", "tool"]  # ends with the tool result
    assert answered["prompt"][1]["tool_calls"][0]["function"]["arguments"] == {"drug": "paracetamol"}  # JSON parsed
    assert answered["chosen"] == "500-1000 mg at a time." and answered["tools"] == TOOLS
    assert called["chosen"] == {"role": "assistant", "content": "", "tool_calls": call("ibuprofen")[0]["tool_calls"]}
    assert called["rejected"] == "About 2 g."
    assert both["rejected"]["tool_calls"][0]["function"]["arguments"] == {"drug": "paracetamol"}
    assert implicit["prompt"] == answered["prompt"] and implicit["rejected"] == "Any amount."
    # two identical calls carry no preference: dropped and counted, as identical text answers are
    stats = {}
    assert preference.load_pairs(write(tmp_path / "same.jsonl", call_record(rejected=call("ibuprofen"))), stats=stats) == []
    assert stats["identical_dropped"] == 1
    # MedicalGPT's conversations shape with function_call / observation turns in the prompt
    sharegpt = {"conversations": [{"from": "human", "value": "Dose of paracetamol?"},
                                  {"from": "function_call", "value": '{"name": "dose_range", "arguments": {"drug": "paracetamol"}}'},
                                  {"from": "observation", "value": RESULT}],
                "chosen": "500-1000 mg at a time.", "rejected": "Take as much as you like.",
                "tools": json.dumps([TOOLS[0]["function"]])}
    pair = preference.load_pairs(write(tmp_path / "s.jsonl", sharegpt))[0]
    assert [m["role"] for m in pair["prompt"]] == ["user", "assistant", "tool"] and pair["tools"] == TOOLS
    # RL prompts do not take tools yet: said in one line
    with pytest.raises(DataError, match="PPO and GRPO prompts cannot hold tools"):
        preference.load_prompts(tmp_path / "p.jsonl")


@pytest.mark.parametrize("record, field, message", [
    (call_record(chosen=[{"role": "assistant", "content": "", "tool_calls": [
        {"type": "function", "function": {"name": "lab_lookup", "arguments": {}}}]}]),
     "chosen[0].tool_calls[0]", "calls tool 'lab_lookup', which the record does not declare"),
    (call_record(rejected=[{"role": "assistant", "content": "", "tool_calls": [
        {"type": "function", "function": {"name": "dose_range", "arguments": "[1]"}}]}]),
     "rejected[0].tool_calls[0].arguments", "must be a JSON object, got array"),
    (call_record(chosen=[{"role": "assistant", "content": "", "tool_calls": [
        {"type": "function", "function": {"name": "dose_range", "arguments": "drug=x"}}]}]),
     "chosen[0].tool_calls[0].arguments", "is not valid JSON"),
    (answered_record(prompt=CALLED[:2]), "prompt[1]", "1 tool call(s) get no result"),
    (answered_record(prompt=[CALLED[0], CALLED[2]]), "prompt[1]", "a tool result with no tool call before it"),
    (answered_record(prompt=[CALLED[0], {"role": "assistant", "content": "Let me check."}]), "prompt[1]",
     "the prompt must end with a user turn or a tool result"),
    (answered_record(tools=[]), "prompt[1].tool_calls[0]", "declares no tools"),
    (answered_record(tools="[{oops"), "tools", "is not valid JSON"),
    (call_record(chosen=[{"role": "assistant", "content": ""}]), "chosen[0]", "empty assistant turn"),
])
def test_a_bad_tool_pair_is_one_line_naming_its_line_and_field(tmp_path, record, field, message):
    path = write(tmp_path / "p.jsonl", answered_record(), record)
    with pytest.raises(DataError) as caught:
        preference.load_pairs(path)
    assert caught.value.line == 2 and caught.value.field == field and message in caught.value.message


def trained_text(tok, ids):
    return tok.decode(ids, skip_special_tokens=False)


@pytest.mark.parametrize("which", ["own", "chatml_tools"])
def test_chosen_and_rejected_render_differently_where_their_calls_differ(tmp_path, which):
    tok = tiny_tokenizer(OWN_TEMPLATE if which == "own" else None)
    fmt = templates.resolve_format(tok, "auto" if which == "own" else "chatml_tools")
    answered, called, both = preference.load_pairs(write(
        tmp_path / "p.jsonl", answered_record(), call_record(), call_record(rejected=call("paracetamol"))))
    # the answer after a tool result: the prompt holds the call, the result and the declared tools, untrained
    p_c, a_c = preference.encode_pair(tok, fmt, answered["prompt"], answered["chosen"], answered["tools"])
    p_r, a_r = preference.encode_pair(tok, fmt, answered["prompt"], answered["rejected"], answered["tools"])
    assert p_c == p_r and a_c != a_r
    prompt = trained_text(tok, p_c)
    assert RESULT in prompt and '"dose_range"' in prompt.split("<|im_end|>")[0] and '"paracetamol"' in prompt
    assert trained_text(tok, a_c) == "500-1000 mg at a time.<|im_end|>"
    # a call against a guess: the chosen answer is the call markup with its end token
    p_c, a_c = preference.encode_pair(tok, fmt, called["prompt"], called["chosen"], called["tools"])
    p_r, a_r = preference.encode_pair(tok, fmt, called["prompt"], called["rejected"], called["tools"])
    assert p_c == p_r
    assert trained_text(tok, a_c) == '<tool_call>\n{"name": "dose_range", "arguments": {"drug": "ibuprofen"}}\n</tool_call><|im_end|>'
    assert trained_text(tok, a_r) == "About 2 g.<|im_end|>"
    # prompt + answer is the template's own rendering of the whole dialogue, token for token (up to the answer's
    # end-of-turn token: what follows it is the template's and untrained)
    real = tok.apply_chat_template([*called["prompt"], called["chosen"]], tools=called["tools"], chat_template=fmt.jinja,
                                   tokenize=False)
    assert trained_text(tok, p_c + a_c) == real.rstrip("\n")
    # two calls that differ only in their arguments: the answers differ there and nowhere else
    _, b_c = preference.encode_pair(tok, fmt, both["prompt"], both["chosen"], both["tools"])
    _, b_r = preference.encode_pair(tok, fmt, both["prompt"], both["rejected"], both["tools"])
    head = next(i for i, (x, y) in enumerate(zip(b_c, b_r)) if x != y)
    tail = next(i for i, (x, y) in enumerate(zip(reversed(b_c), reversed(b_r))) if x != y)
    assert trained_text(tok, b_c).replace("ibuprofen", "paracetamol") == trained_text(tok, b_r)
    assert '"arguments": {"drug": ' in trained_text(tok, b_c[:head])  # the same up to the argument's value
    assert '}\n</tool_call><|im_end|>' in trained_text(tok, b_c[len(b_c) - tail:])  # and the same after it


def test_a_call_too_long_for_the_limit_is_dropped_never_cut(tmp_path):
    tok = tiny_tokenizer()
    fmt = templates.resolve_format(tok, "chatml_tools")
    pairs = preference.load_pairs(write(tmp_path / "p.jsonl", call_record(), answered_record()))
    stats = {}
    full = preference.fit_pairs(pairs, tok, fmt, stats, max_length=4096)
    call_ids = len(full[0]["chosen_ids"])
    stats = {}
    fitted = preference.fit_pairs(pairs, tok, fmt, stats, max_length=4096, max_answer_length=call_ids - 1)
    assert stats["dropped_too_long"] == 1 and [f["source"] for f in fitted] == [pairs[1]["source"]]
    assert fitted[0]["chosen"] == pairs[1]["chosen"]  # the text answers fit: nothing cut


def test_dpo_gives_trl_the_text_of_tool_pairs_as_encoded(tmp_path):
    """A dataset table cannot hold calls whose arguments differ in shape: every TRL trainer gets the text our
    template encoding decodes to, the calls in it."""
    from medtune.stages import dpo

    tok = tiny_tokenizer()
    fmt = templates.resolve_format(tok, "chatml_tools")
    pairs = preference.load_pairs(write(tmp_path / "p.jsonl", call_record(), answered_record()))
    encoded = dpo.encode(pairs, tok, fmt, 4096, {})
    rows = dpo.trl_rows(encoded, tok, "dpo", as_text=True)
    assert rows[0]["chosen"].startswith("<tool_call>") and rows[0]["chosen"].endswith("<|im_end|>")
    assert rows[0]["prompt"] == tok.decode(encoded[0]["prompt_ids"], skip_special_tokens=False)
    assert RESULT in rows[1]["prompt"] and rows[1]["rejected"] == "Take as much as you like.<|im_end|>"


@pytest.fixture(scope="module")
def tool_pairs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tool_pairs")
    records = [answered_record(), call_record(), call_record(rejected=call("paracetamol")),
               answered_record(rejected=call("ibuprofen"))] * 2
    return write(folder / "pairs.jsonl", *records)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return save_tiny(tmp_path_factory.mktemp("m") / "tiny", tokenizer=tiny_tokenizer(chat_template=None))


@pytest.mark.parametrize("stage, extra", [("rm", []), ("dpo", []), ("dpo", ["loss=orpo"])])
def test_rm_and_dpo_train_on_tool_pairs(tiny_model, tool_pairs, tmp_path, stage, extra):
    from medtune import runs

    out = tmp_path / stage
    args = [f"model.name_or_path={tiny_model}", "model.template=chatml_tools", f"data.path={tool_pairs}",
            "data.val_size=2", "train.max_steps=2", "train.batch_size=2", "train.bf16=false", f"output_dir={out}", *extra]
    assert main([stage, *args]) == 0
    m = runs.read_manifest(out)
    assert m["status"] == "completed" and m["metrics"]["steps"] == 2 and m["model"]["template"] == "chatml_tools"
    assert m["data_stats"]["train_pairs"] == 6 and m["data_stats"]["val_pairs"] == 2


@pytest.mark.parametrize("stage", ["rm", "dpo"])
def test_bad_tool_pairs_stop_rm_and_dpo_with_one_line(tiny_model, tmp_path, capsys, stage):
    bad = write(tmp_path / "bad.jsonl", answered_record(), call_record(chosen=[{"role": "assistant", "content": "",
                "tool_calls": [{"type": "function", "function": {"name": "lab_lookup", "arguments": {}}}]}]))
    out = tmp_path / "run"
    assert main([stage, f"model.name_or_path={tiny_model}", "model.template=chatml_tools", f"data.path={bad}",
                 f"output_dir={out}"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{bad}:2: field 'chosen[0].tool_calls[0]'" in err and "lab_lookup" in err
    assert "Traceback" not in err and not out.exists()
