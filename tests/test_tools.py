"""Tool calling: OpenAI tool_calls/tool messages and MedicalGPT's ShareGPT function_call/observation turns with
`tools`, checked by the data contract, rendered by a template that knows tools (the tokenizer's own via
apply_chat_template(tools=...), or the chatml_tools fallback), with the loss on calls and answers, never on
tool results."""

import json
from pathlib import Path

import pytest

from medtune.cli import main
from medtune.data import formats, templates
from medtune.errors import DataError, MedtuneError
from medtune.stages import sft
from tiny import tiny_tokenizer

FIXTURE = Path(__file__).parent / "fixtures" / "tools_sharegpt.jsonl"
TOOLS = [{"type": "function", "function": {"name": "dose_range", "description": "usual adult dose",
                                           "parameters": {"type": "object", "properties": {"drug": {"type": "string"}}}}}]
RESULT = '{"drug": "paracetamol", "range": "500-1000 mg"}'


def openai_record(**changes):
    messages = [{"role": "user", "content": "Dose of paracetamol?"},
                {"role": "assistant", "content": "", "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "dose_range",
                                                                  "arguments": '{"drug": "paracetamol"}'}}]},
                {"role": "tool", "tool_call_id": "c1", "content": RESULT},
                {"role": "assistant", "content": "500-1000 mg at a time."}]
    record = {"messages": messages, "tools": TOOLS}
    record.update(changes)
    return record


def write(path, *records):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


# Written for this test in the manner of Qwen2.5's template (which transformers' apply_chat_template feeds
# `tools`): functions in the system turn, calls in <tool_call> tags, results as user turns in <tool_response>.
OWN_TEMPLATE = (
    "{%- if tools %}{{- '<|im_start|>system\\nTools:' }}{%- for t in tools %}{{- '\\n' + (t | tojson) }}{%- endfor %}"
    "{{- '<|im_end|>\\n' }}{%- endif %}"
    "{%- for m in messages %}"
    "{%- if m.role == 'assistant' %}{{- '<|im_start|>assistant' }}{%- if m.content %}{{- '\\n' + m.content }}{%- endif %}"
    "{%- for c in m.tool_calls or [] %}{{- '\\n<tool_call>\\n{\"name\": \"' + c.function.name + '\", \"arguments\": ' }}"
    "{{- c.function.arguments | tojson }}{{- '}\\n</tool_call>' }}{%- endfor %}{{- '<|im_end|>\\n' }}"
    "{%- elif m.role == 'tool' %}{{- '<|im_start|>user\\n<tool_response>\\n' + m.content + '\\n</tool_response><|im_end|>\\n' }}"
    "{%- else %}{{- '<|im_start|>' + m.role + '\\n' + m.content + '<|im_end|>\\n' }}{%- endif %}"
    "{%- endfor %}{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


def trained_text(tok, enc):
    return tok.decode([t for t, m in zip(enc.input_ids, enc.assistant_mask) if m], skip_special_tokens=False)


def test_both_shapes_load_as_one_form(tmp_path):
    a = formats.load_dialogues(write(tmp_path / "openai.jsonl", openai_record()))[0]
    assert a["tools"] == TOOLS
    call = a["messages"][1]["tool_calls"][0]
    assert call["function"] == {"name": "dose_range", "arguments": {"drug": "paracetamol"}}  # JSON text parsed
    assert [m["role"] for m in a["messages"]] == ["user", "assistant", "tool", "assistant"]
    dialogues = formats.load_dialogues(FIXTURE)  # MedicalGPT's shape, unchanged
    assert len(dialogues) == 3 and formats.validate_file(FIXTURE)["format"] == "sharegpt"
    first = dialogues[0]
    assert [m["role"] for m in first["messages"]] == ["user", "assistant", "tool", "assistant"]
    assert first["messages"][1]["tool_calls"][0]["function"]["arguments"] == {"drug_a": "华法林", "drug_b": "布洛芬"}
    assert [t["function"]["name"] for t in first["tools"]] == ["drug_interactions", "dose_range"]
    assert dialogues[1]["messages"][0]["role"] == "system" and dialogues[2]["tools"] == []
    # convert keeps the calls, both ways
    for to in ("messages", "sharegpt"):
        out = tmp_path / f"{to}.jsonl"
        assert formats.convert_file(FIXTURE, out, to=to) == 3
        again = formats.load_dialogues(out)
        assert [d["messages"] for d in again] == [d["messages"] for d in dialogues]
        assert [d["tools"] for d in again] == [d["tools"] for d in dialogues]
    with pytest.raises(DataError, match="Alpaca cannot hold"):
        formats.convert_file(FIXTURE, tmp_path / "a.jsonl", to="alpaca")


@pytest.mark.parametrize("change, message", [
    ({"tools": [{"type": "function", "function": {"name": "other"}}]}, "calls tool 'dose_range', which the record does not declare"),
    ({"tools": []}, "declares no tools"),
    ({"tools": "[{oops"}, "field 'tools': is not valid JSON"),
])
def test_data_validate_checks_calls_against_tools(tmp_path, capsys, change, message):
    path = write(tmp_path / "d.jsonl", openai_record(**change))
    assert main(["data", "validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and f"{path}:1" in err


def test_data_validate_checks_arguments_and_that_every_call_gets_its_result(tmp_path, capsys):
    record = openai_record()
    record["messages"][1]["tool_calls"][0]["function"]["arguments"] = "drug=paracetamol"
    assert main(["data", "validate", str(write(tmp_path / "a.jsonl", record))]) == 2
    assert "messages[1].tool_calls[0].arguments': is not valid JSON" in capsys.readouterr().err
    record["messages"][1]["tool_calls"][0]["function"]["arguments"] = "[1, 2]"
    assert main(["data", "validate", str(write(tmp_path / "b.jsonl", record))]) == 2
    assert "must be a JSON object, got array" in capsys.readouterr().err
    no_result = openai_record()
    del no_result["messages"][2]
    assert main(["data", "validate", str(write(tmp_path / "c.jsonl", no_result))]) == 2
    assert "messages[2]'" in (err := capsys.readouterr().err) and "1 tool call(s) get no result before this turn" in err
    stray = openai_record()
    stray["messages"].insert(1, {"role": "tool", "content": "?"})
    assert main(["data", "validate", str(write(tmp_path / "d.jsonl", stray))]) == 2
    assert "a tool result with no tool call before it" in capsys.readouterr().err
    two = openai_record()
    two["messages"][1]["tool_calls"].append(two["messages"][1]["tool_calls"][0])
    assert main(["data", "validate", str(write(tmp_path / "e.jsonl", two))]) == 2
    assert "1 tool call(s) get no result" in capsys.readouterr().err
    sharegpt = {"conversations": [{"from": "human", "value": "q"},
                                  {"from": "function_call", "value": '{"name": "dose_range", "arguments": {}}'},
                                  {"from": "gpt", "value": "a"}], "tools": json.dumps([TOOLS[0]["function"]])}
    assert main(["data", "validate", str(write(tmp_path / "f.jsonl", sharegpt))]) == 2
    assert "conversations[2]'" in capsys.readouterr().err
    assert main(["data", "validate", str(write(tmp_path / "ok.jsonl", openai_record()))]) == 0


@pytest.mark.parametrize("which", ["own", "chatml_tools"])
def test_loss_on_calls_and_answers_never_on_tool_results(which, tmp_path):
    tok = tiny_tokenizer(OWN_TEMPLATE if which == "own" else None)
    fmt = templates.resolve_format(tok, "auto" if which == "own" else "chatml_tools")
    assert fmt.tools
    dialogue = formats.load_dialogues(write(tmp_path / "d.jsonl", openai_record()))[0]
    enc = templates.encode_dialogue(tok, fmt, dialogue["messages"], tools=dialogue["tools"])
    text = tok.decode(enc.input_ids, skip_special_tokens=False)
    trained = trained_text(tok, enc)
    call = '<tool_call>\n{"name": "dose_range", "arguments": {"drug": "paracetamol"}}\n</tool_call><|im_end|>'
    assert trained == call + "500-1000 mg at a time.<|im_end|>"  # the call and the answer, each with its end token
    assert RESULT in text and RESULT not in trained  # the tool result is context only
    assert '"dose_range"' in text.split("<|im_end|>")[0]  # the declared tools are in the prompt
    assert len(enc.turn_ends) == 2
    # the template's own rendering of the real dialogue is what was tokenised, token for token
    real = tok.apply_chat_template(dialogue["messages"], tools=dialogue["tools"], chat_template=fmt.jinja, tokenize=False)
    assert text == real
    # what SFT trains on: the same labels
    stats = {"dropped_too_long": 0, "truncated_to_whole_turns": 0, "dropped_no_target": 0}
    ex = sft.encode_examples([dialogue], tok, fmt, sft.DataConfig(max_length=2048), stats)[0]
    assert tok.decode([t for t in ex["labels"] if t != -100], skip_special_tokens=False) == trained


def test_a_template_without_tools_is_refused_with_what_to_do(tmp_path):
    tok = tiny_tokenizer()  # plain ChatML: no tool calls in it
    dialogue = formats.load_dialogues(write(tmp_path / "d.jsonl", openai_record()))[0]
    with pytest.raises(MedtuneError, match="does not render tool calls.*chatml_tools"):
        templates.encode_dialogue(tok, templates.resolve_format(tok, "auto"), dialogue["messages"], tools=dialogue["tools"])


@pytest.mark.slow
def test_sft_on_the_medicalgpt_shaped_fixture(tmp_path):
    from medtune import runs
    from tiny import save_tiny

    model = save_tiny(tmp_path / "m", tokenizer=tiny_tokenizer(chat_template=None))
    assert main(["sft", f"model.name_or_path={model}", "model.template=chatml_tools", f"data.path={FIXTURE}",
                 "data.max_length=1024", "train.max_steps=2", "train.batch_size=2", "train.bf16=false",
                 f"output_dir={tmp_path / 'run'}"]) == 0
    m = runs.read_manifest(tmp_path / "run")
    assert m["status"] == "completed" and m["data_stats"]["train_examples"] == 3
