"""Prompt-completion data (TRL's plain-text form): the contract, `data from-benchmark --form prompt_completion`,
and SFT on it: plain text, the loss on the completion only, tokenised as the log-likelihood scorer splits a context
and its continuation."""

import json
import random
from pathlib import Path

import pytest
import torch

from medtune import runs
from medtune.cli import main
from medtune.config import load_config
from medtune.data import formats, templates
from medtune.errors import DataError
from medtune.eval import scoring, tasks
from medtune.stages import sft
from margins import SEED, below, lr, train_seed
from tiny import save_tiny, tiny_llama, tiny_tokenizer

FIXTURES = Path(__file__).parent / "fixtures" / "eval"


def _write(path, records) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)) + "\n" for r in records),
                    encoding="utf-8")
    return path


def _stats():
    return dict.fromkeys(["dropped_too_long", "truncated_to_whole_turns", "dropped_no_target"], 0)


# ------------------------------------------------------------------------------------------- the contract


def test_a_prompt_completion_file_loads_and_validates(tmp_path, capsys):
    path = _write(tmp_path / "pc.jsonl", [{"prompt": "Question: Is it?\nAnswer:", "completion": " yes"},
                                         {"prompt": "问题：是吗？\n答案：", "completion": "是", "id": "x"}])
    assert formats.detect_format(path) == formats.PROMPT_COMPLETION
    records = formats.load_sft_records(path)
    assert [r["completion"] for r in records] == [" yes", "是"]
    assert records[1]["source"] == f"{path}:2"
    summary = formats.validate_file(path)
    assert summary["format"] == "prompt_completion" and summary["records"] == 2
    assert summary["languages"] == {"en": 1, "zh": 1, "other": 0}
    assert main(["data", "validate", str(path)]) == 0
    assert "2 records, format prompt_completion" in capsys.readouterr().out


@pytest.mark.parametrize("bad, field, words", [
    ({"prompt": "Q:"}, None, "keys [prompt] in a prompt-completion file"),
    ({"prompt": "Q:", "completion": "  "}, "completion", "is empty"),
    ({"prompt": "", "completion": " yes"}, "prompt", "is empty"),
    ({"prompt": "Q:", "completion": 1}, "completion", "must be a string, got number"),
    ({"prompt": [{"role": "user", "content": "Q"}], "completion": [{"role": "assistant", "content": "A"}]},
     "prompt", "conversational prompt-completion"),
    ({"messages": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}]}, None,
     "a messages record in a prompt-completion file"),
    ("[1, 2]", None, "must be a JSON object"),
])
def test_a_bad_record_is_one_line_naming_file_line_and_field(tmp_path, capsys, bad, field, words):
    path = _write(tmp_path / "pc.jsonl", [{"prompt": "Q: a\nAnswer:", "completion": " no"}, bad])
    with pytest.raises(DataError) as caught:
        formats.load_sft_records(path)
    assert caught.value.line == 2 and caught.value.field == field and words in str(caught.value)
    assert main(["data", "validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"pc.jsonl:2" in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_dialogue_readers_refuse_prompt_completion_records_in_one_line(tmp_path):
    path = _write(tmp_path / "pc.jsonl", [{"prompt": "Q:", "completion": " yes"}])
    with pytest.raises(DataError, match="prompt-completion records are not dialogues"):
        formats.load_dialogues(path)
    mixed = _write(tmp_path / "mixed.jsonl", [{"messages": [{"role": "user", "content": "Q"},
                                                            {"role": "assistant", "content": "A"}]},
                                              {"prompt": "Q:", "completion": " yes"}])
    with pytest.raises(DataError, match="mixed formats") as caught:
        formats.load_sft_records(mixed)
    assert caught.value.line == 2


def test_from_benchmark_writes_the_harness_prompt_and_the_gold_continuation(tmp_path):
    src = FIXTURES / "pubmedqa" / "ori_pqal.json"
    items = tasks.load_task("pubmedqa", src)
    out = tmp_path / "pc.jsonl"
    assert main(["data", "from-benchmark", "pubmedqa", str(src), str(out), "--form", "prompt_completion"]) == 0
    records = formats.load_sft_records(out)
    assert [r["prompt"] for r in records] == [tasks.prompt("pubmedqa", it) for it in items]
    assert [r["completion"] for r in records] == [" " + tasks.PUBMEDQA_LABELS[it.answer] for it in items]
    assert records[0]["prompt"].startswith("Abstract: ") and records[0]["prompt"].endswith("\nAnswer:")
    long = tmp_path / "long.jsonl"
    assert main(["data", "from-benchmark", "pubmedqa", str(src), str(long), "--form", "prompt_completion",
                 "--long-answer"]) == 0
    for r, it in zip(formats.load_sft_records(long), items):  # the scored continuation first, then the conclusion
        assert r["completion"] == " " + tasks.PUBMEDQA_LABELS[it.answer] + "\n" + it.explanation.strip()
    # a lettered task: the letter, as the scorer's continuation
    mcq = tasks.load_task("medmcqa", FIXTURES / "medmcqa" / "dev.json")
    recs = tasks.to_prompt_completion_records("medmcqa", mcq)
    assert [r["completion"] for r in recs] == [" " + "ABCD"[it.answer] for it in mcq]
    assert main(["data", "from-benchmark", "pubmedqa", str(src), str(tmp_path / "x.jsonl"), "--long-answer"]) == 2


# ------------------------------------------------------------------------------------------- encoding


@pytest.mark.parametrize("prompt, completion", [
    ("Abstract: Fever and cough.\nQuestion: Is it flu?\nAnswer:", " yes"),
    ("Abstract: Fever and cough.\nQuestion: Is it flu?\nAnswer: ", "maybe"),  # the harness moves the space
    ("Question: Chest pain?\nAnswer:", " no\nCall an ambulance now."),  # a long answer after the label
    ("问题：胸痛？\n答案：", "是"),
])
def test_labels_mask_the_prompt_and_train_the_completion_as_the_scorer_splits_them(prompt, completion):
    tok = tiny_tokenizer()
    ex = sft.encode_prompt_completion(tok, prompt, completion)
    ctx, cont = scoring.encode_pair(tok, prompt, completion)
    n = len(ctx)
    assert ex["labels"][:n] == [-100] * n  # nothing of the prompt is trained
    assert ex["input_ids"][n:] == cont + [tok.eos_token_id] and ex["labels"][n:] == cont + [tok.eos_token_id]
    # plain text: the whole is the text's own tokens (no chat template, no special tokens but the final end)
    assert ex["input_ids"][:-1] == tok(prompt + completion, add_special_tokens=False)["input_ids"]
    assert "<|im_start|>" not in tok.decode(ex["input_ids"])
    # what the loss sees on the completion is exactly what the scorer sums for that continuation
    model = tiny_llama(tok, seed=SEED)
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=torch.tensor([ex["input_ids"]])).logits[0].float(), -1)
    trained = sum(logp[i - 1, t].item() for i, t in enumerate(ex["labels"]) if t != -100 and i < len(ex["labels"]) - 1)
    (scored,) = scoring.loglik_reference(model, tok, [scoring.Request(prompt, [completion])])
    assert trained == pytest.approx(scored[0], abs=1e-4)


def test_a_trailing_space_is_not_tokenised_apart_from_the_answer():
    """Tokenising prompt and completion separately would train " " + "fever" where the scorer reads " fever"."""
    tok = tiny_tokenizer()
    ex = sft.encode_prompt_completion(tok, "Answer: ", "fever")
    naive = tok("Answer: ", add_special_tokens=False)["input_ids"] + tok("fever", add_special_tokens=False)["input_ids"]
    whole = tok("Answer: fever", add_special_tokens=False)["input_ids"]
    assert naive != whole  # this tokenizer merges the space into the answer, so the split matters
    assert ex["input_ids"][:-1] == whole


def test_long_records_are_dropped_and_counted_and_dialogues_mix_with_them():
    tok = tiny_tokenizer()
    fmt = templates.resolve_format(tok)
    stats = _stats()
    records = [{"prompt": "Question: Fever?\nAnswer:", "completion": " yes", "source": "a:1"},
               {"prompt": "Question: " + "cough " * 200 + "\nAnswer:", "completion": " no", "source": "a:2"},
               {"messages": [{"role": "user", "content": "Fever?"}, {"role": "assistant", "content": "Rest."}]}]
    out = sft.encode_examples(records, tok, fmt, sft.DataConfig(max_length=64), stats)
    assert len(out) == 2 and stats["dropped_too_long"] == 1
    assert tok.decode([t for t in out[1]["labels"] if t != -100]) == "Rest.<|im_end|>"


# ------------------------------------------------------------------------------------------- training

_WORDS = ["fever", "cough", "pain", "rash", "thirst", "diabetes", "patient", "rest"]


def _task_data(path, n=48):
    """Harness-format records whose answer is read off the abstract: 'ambulance' in it means yes, else no."""
    rng = random.Random(SEED)
    records = []
    for i in range(n):
        words = rng.sample(_WORDS, 4)
        answer = "yes" if i % 2 == 0 else "no"
        abstract = " ".join(words[:2] + (["ambulance"] if answer == "yes" else ["water"]) + words[2:]) + "."
        records.append({"prompt": f"Abstract: {abstract}\nQuestion: Is it an emergency?\nAnswer:",
                        "completion": f" {answer}"})
    return _write(path, records)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return save_tiny(tmp_path_factory.mktemp("m") / "tiny", hidden=64, seed=SEED)


def test_sft_on_prompt_completion_data_lowers_the_completion_loss(tiny_model, tmp_path):
    data = _task_data(tmp_path / "pc.jsonl")
    cfg = load_config(sft.SFTConfig, None, [
        f"model.name_or_path={tiny_model}", f"data.path={data}", f"output_dir={tmp_path / 'run'}",
        "train.batch_size=4", "train.logging_steps=1", "train.bf16=false", "train.max_steps=30",
        f"train.learning_rate={lr(2e-2)}", f"train.seed={train_seed()}", "lora.r=8", "data.val_size=8",
        "train.eval_steps=30",
    ])
    out = sft.run(cfg)
    manifest = runs.read_manifest(out)
    stats = manifest["data_stats"]
    assert stats["train_examples"] == 40 and stats["val_examples"] == 8
    # only the completion (one or two tokens) and the end token are targets, a small share of every example
    assert stats["train_target_tokens"] < stats["train_tokens"] / 4
    losses = [h["loss"] for h in manifest["history"] if "loss" in h]
    below("last / first completion loss", losses[-1] / losses[0], 0.5, losses)
    m = manifest["metrics"]
    below("held-out completion loss after / before", m["eval_loss"] / m["eval_loss_before"], 1.0, m)
