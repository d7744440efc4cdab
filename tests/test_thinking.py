"""Thinking models: an assistant's reasoning (`reasoning_content` or a leading <think> block) is rendered by
templates that know thinking, trained or masked as data.reasoning says, switched by enable_thinking at
inference, and left out of answer extraction."""

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from medtune.data import formats, templates
from medtune.eval import scoring
from medtune.serve.app import ChatRequest, Server, ServeSettings
from medtune.stages import sft
from tiny import tiny_tokenizer

# Written for this test in the manner of Qwen3's own template: reasoning from `reasoning_content` (or a
# </think> split of the content), shown only for the assistant turns after the last user message; with
# enable_thinking false the reply opens with an empty block.
QWEN3_LIKE = (
    "{%- set ns = namespace(last=-1) -%}"
    "{%- for m in messages -%}{%- if m.role == 'user' -%}{%- set ns.last = loop.index0 -%}{%- endif -%}{%- endfor -%}"
    "{%- for m in messages -%}"
    "{%- if m.role == 'assistant' -%}"
    "{%- set content = m.content -%}{%- set thought = '' -%}"
    "{%- if m.reasoning_content is string -%}{%- set thought = m.reasoning_content -%}"
    "{%- elif '</think>' in content -%}{%- set thought = content.split('</think>')[0].split('<think>')[-1] -%}"
    "{%- set content = content.split('</think>')[-1] -%}{%- endif -%}"
    "{{- '<|im_start|>assistant\\n' -}}"
    "{%- if loop.index0 > ns.last -%}{{- '<think>\\n' + thought.strip('\\n') + '\\n</think>\\n\\n' -}}{%- endif -%}"
    "{{- content.lstrip('\\n') + '<|im_end|>\\n' -}}"
    "{%- else -%}{{- '<|im_start|>' + m.role + '\\n' + m.content + '<|im_end|>\\n' -}}{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}"
    "{%- if enable_thinking is defined and enable_thinking is false -%}{{- '<think>\\n\\n</think>\\n\\n' -}}{%- endif -%}"
    "{%- endif -%}"
)

REASONING = "Fever plus stiff neck: think of meningitis."
ANSWER = "Go to an emergency department now."


def qwen3_tokenizer():
    tok = tiny_tokenizer(QWEN3_LIKE)
    tok.add_special_tokens({"additional_special_tokens": ["<think>", "</think>"]}, replace_extra_special_tokens=False)
    return tok


def trained_text(tok, enc) -> str:
    return tok.decode([t for t, m in zip(enc.input_ids, enc.assistant_mask) if m], skip_special_tokens=False)


def dialogue(form="field"):
    if form == "field":
        last = {"role": "assistant", "content": ANSWER, "reasoning_content": REASONING}
    else:
        last = {"role": "assistant", "content": f"<think>\n{REASONING}\n</think>\n\n{ANSWER}"}
    return [{"role": "user", "content": "Fever and a stiff neck?"}, last]


def test_a_template_that_knows_thinking_renders_reasoning_trained_or_masked():
    tok = qwen3_tokenizer()
    fmt = templates.resolve_format(tok, "auto")
    assert fmt.thinking
    trained = templates.encode_dialogue(tok, fmt, dialogue(), reasoning="train")
    masked = templates.encode_dialogue(tok, fmt, dialogue(), reasoning="mask")
    assert trained.input_ids == masked.input_ids  # the same tokens; only the loss differs
    text = tok.decode(trained.input_ids, skip_special_tokens=False)
    assert text.endswith(f"<|im_start|>assistant\n<think>\n{REASONING}\n</think>\n\n{ANSWER}<|im_end|>\n")
    assert trained_text(tok, trained) == f"<think>\n{REASONING}\n</think>\n\n{ANSWER}<|im_end|>"
    assert trained_text(tok, masked) == f"{ANSWER}<|im_end|>"
    # the masked span is exactly the reasoning with its markers: the first trained token follows </think>
    close = tok.convert_tokens_to_ids("</think>")
    first = masked.assistant_mask.index(True)
    assert close in masked.input_ids[:first] and not any(masked.assistant_mask[:first])
    # a <think> block in the content is the same message as reasoning_content
    inline = templates.encode_dialogue(tok, fmt, dialogue("inline"), reasoning="mask")
    assert inline.input_ids == masked.input_ids and inline.assistant_mask == masked.assistant_mask


def test_earlier_turns_lose_their_reasoning_as_the_template_decides():
    tok = qwen3_tokenizer()
    fmt = templates.resolve_format(tok, "auto")
    messages = [{"role": "user", "content": "Q1"},
                {"role": "assistant", "content": "A1", "reasoning_content": "old thought"},
                {"role": "user", "content": "Q2"},
                {"role": "assistant", "content": "A2", "reasoning_content": "new thought"}]
    enc = templates.encode_dialogue(tok, fmt, messages, reasoning="train")
    text = tok.decode(enc.input_ids, skip_special_tokens=False)
    assert "old thought" not in text and "new thought" in text
    assert trained_text(tok, enc) == "A1<|im_end|><think>\nnew thought\n</think>\n\nA2<|im_end|>"


@pytest.mark.parametrize("name", ["qwen3", "qwen3_nothink"])
def test_named_fallbacks_qwen3_and_qwen3_nothink(name):
    tok = tiny_tokenizer(chat_template=None)
    fmt = templates.resolve_format(tok, name)
    assert templates.install_format(tok, fmt) == 2  # <think> and </think> become tokens
    trained = templates.encode_dialogue(tok, fmt, dialogue(), reasoning="train")
    masked = templates.encode_dialogue(tok, fmt, dialogue(), reasoning="mask")
    text = tok.decode(trained.input_ids, skip_special_tokens=False)
    prompt = tok.decode(templates.encode_dialogue(tok, fmt, dialogue()[:1], add_generation_prompt=True).input_ids,
                        skip_special_tokens=False)
    off = tok.decode(templates.encode_dialogue(tok, fmt, dialogue()[:1], add_generation_prompt=True,
                                               enable_thinking=False).input_ids, skip_special_tokens=False)
    assert trained_text(tok, masked) == f"{ANSWER}<|im_end|>"
    assert off.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    if name == "qwen3":
        assert f"<think>\n{REASONING}\n</think>\n\n{ANSWER}" in text
        assert trained_text(tok, trained) == f"<think>\n{REASONING}\n</think>\n\n{ANSWER}<|im_end|>"
        assert prompt.endswith("<|im_start|>assistant\n")  # thinking on: the model opens its own block
    else:  # no thinking: the reasoning is dropped, the answer follows an empty block in training and at inference
        assert REASONING not in text and f"<think>\n\n</think>\n\n{ANSWER}" in text
        assert trained_text(tok, trained) == f"{ANSWER}<|im_end|>"
        assert prompt == off


def test_a_template_without_thinking_keeps_the_block_in_the_answer_trained_or_masked():
    tok = tiny_tokenizer()  # ChatML, which knows nothing of reasoning
    fmt = templates.resolve_format(tok, "auto")
    assert not fmt.thinking
    trained = templates.encode_dialogue(tok, fmt, dialogue(), reasoning="train")
    masked = templates.encode_dialogue(tok, fmt, dialogue(), reasoning="mask")
    assert trained.input_ids == masked.input_ids
    assert f"<think>\n{REASONING}\n</think>\n\n{ANSWER}" in tok.decode(trained.input_ids)
    assert trained_text(tok, trained) == f"<think>\n{REASONING}\n</think>\n\n{ANSWER}<|im_end|>"
    assert trained_text(tok, masked) == f"{ANSWER}<|im_end|>"


def test_data_reasoning_setting_reaches_the_labels(tmp_path):
    path = tmp_path / "think.jsonl"
    path.write_text(json.dumps({"messages": dialogue()}, ensure_ascii=False) + "\n"
                    + json.dumps({"messages": dialogue("inline")}, ensure_ascii=False) + "\n")
    dialogues = formats.load_dialogues(path)
    assert dialogues[0]["messages"] == dialogues[1]["messages"]  # reasoning_content folds into a <think> block
    tok = qwen3_tokenizer()
    fmt = templates.resolve_format(tok, "auto")
    out = {}
    for setting in ("train", "mask"):
        stats = {"dropped_too_long": 0, "truncated_to_whole_turns": 0, "dropped_no_target": 0}
        data = sft.DataConfig(max_length=512, reasoning=setting)
        ex = sft.encode_examples(dialogues, tok, fmt, data, stats)[0]
        out[setting] = tok.decode([t for t in ex["labels"] if t != -100], skip_special_tokens=False)
    assert out["train"] == f"<think>\n{REASONING}\n</think>\n\n{ANSWER}<|im_end|>"
    assert out["mask"] == f"{ANSWER}<|im_end|>"
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"messages": [{"role": "user", "content": "q"},
                                            {"role": "assistant", "content": "a", "reasoning_content": 3}]}) + "\n")
    with pytest.raises(Exception, match=r"messages\[1\]\.reasoning_content"):
        formats.load_dialogues(bad)


def test_answer_extraction_ignores_the_reasoning():
    assert templates.strip_reasoning("<think>\nA looks right... but B?\n</think>\n\nC") == "C"
    assert templates.strip_reasoning("<think>\nstill thinking about A") == ""  # cut off while reasoning
    assert templates.strip_reasoning("The answer is B") == "The answer is B"
    reply = "<think>\nIs it A? No, A is wrong.\n</think>\n\nThe answer is B."
    labels, choices = ["A", "B", "C", "D"], ["rest", "metformin", "surgery", "antibiotics"]
    assert scoring.extract_choice(templates.strip_reasoning(reply), labels, choices) == 1


def test_serve_takes_enable_thinking_from_the_request_or_its_default():
    tok = qwen3_tokenizer()
    cm = SimpleNamespace(tokenizer=tok, fmt=templates.resolve_format(tok, "auto"))
    messages = [{"role": "user", "content": "hi"}]

    def prompt(server, **request):
        req = ChatRequest(messages=messages, **request)
        return tok.decode(server.prompt_ids(messages, req.thinking()), skip_special_tokens=False)

    plain = Server(cm, None, ServeSettings(), {})
    off = Server(cm, None, ServeSettings(enable_thinking=False), {})
    assert prompt(plain).endswith("assistant\n")
    assert prompt(plain, enable_thinking=False).endswith("<think>\n\n</think>\n\n")
    assert prompt(plain, chat_template_kwargs={"enable_thinking": False}).endswith("<think>\n\n</think>\n\n")
    assert prompt(off).endswith("<think>\n\n</think>\n\n")
    assert prompt(off, enable_thinking=True).endswith("assistant\n")


def test_chat_and_eval_take_enable_thinking():
    from medtune.cli import build_parser

    p = build_parser()
    assert p.parse_args(["chat", "m", "--no-enable-thinking"]).enable_thinking is False
    assert p.parse_args(["chat", "m"]).enable_thinking is None
    assert p.parse_args(["eval", "m", "--enable-thinking"]).enable_thinking is True
    assert p.parse_args(["serve", "m", "--no-enable-thinking"]).enable_thinking is False


def test_eval_generate_reads_the_answer_after_the_reasoning(tmp_path, monkeypatch):
    """--mode generate with --no-enable-thinking: the setting reaches generation, and a reply that names a wrong
    letter while reasoning and the gold one after </think> is scored right (the whole reply would not be)."""
    from medtune import chat
    from medtune.cli import main
    from medtune.eval import health
    from tiny import save_tiny

    exam = Path(__file__).resolve().parents[1] / "src" / "medtune" / "assets" / "demo" / "exam.jsonl"
    gold = {json.loads(line)["question"]: json.loads(line)["answer"] for line in exam.read_text().splitlines()}
    model = save_tiny(tmp_path / "m", qwen3_tokenizer())
    seen = []

    def reply_to(messages):
        letter = next(a for q, a in gold.items() if q in messages[-1]["content"])
        wrong = "A" if letter != "A" else "B"
        return f"<think>\nIs it {wrong}? The answer is {wrong}... no.\n</think>\n\nThe answer is {letter}."

    def fake_replies(cm, conversations, settings, **kw):  # the batched generation generate mode goes through
        seen.extend([settings.enable_thinking] * len(conversations))
        return [chat.Reply(reply_to(m), True, []) for m in conversations]

    monkeypatch.setattr(health, "replies", fake_replies)
    out = tmp_path / "eval"
    assert main(["eval", str(model), "--tasks", "mcq", "--file", f"mcq={exam}", "--limit", "5", "--mode", "generate",
                 "--no-enable-thinking", "-o", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["tasks"]["mcq"]["accuracy"] == 1.0 and seen == [False] * 5
    reply = reply_to([{"content": next(iter(gold))}])
    labels = ["A", "B", "C", "D"]
    assert scoring.extract_choice(reply, labels, ["", "", "", ""]) != labels.index(gold[next(iter(gold))])


def test_chat_sends_the_template_the_setting(tmp_path, monkeypatch):
    from medtune import chat
    from medtune.serve import engine
    from tiny import save_tiny

    model = save_tiny(tmp_path / "m", qwen3_tokenizer())
    cm = chat.load_chat_model(str(model))
    prompts = []

    def fake_run(self, prompt_ids, params, on_delta=None):
        prompts.append(cm.tokenizer.decode(prompt_ids, skip_special_tokens=False))
        return SimpleNamespace(delta="ok", finish_reason="stop", token_ids=[])

    monkeypatch.setattr(engine.Engine, "run", fake_run)
    for setting in (None, False):
        chat.complete(cm, [{"role": "user", "content": "hi"}], chat.GenerationSettings(enable_thinking=setting))
    assert prompts[0].endswith("<|im_start|>assistant\n") and prompts[1].endswith("<think>\n\n</think>\n\n")
