"""bench/task_tuning_cv.py: stratified folds that never mix held-out and training items, the interval arithmetic,
a whole cross-validation and the demo on a tiny model and a small PubMedQA-shaped file (never the shared data)."""

import importlib.util
import json
import random
from collections import Counter
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from margins import SEED
from tiny import save_tiny

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "eval"

spec = importlib.util.spec_from_file_location("task_tuning_cv", ROOT / "bench" / "task_tuning_cv.py")
cv = importlib.util.module_from_spec(spec)
spec.loader.exec_module(cv)


def _pubmedqa(path: Path, counts=(10, 6, 3)) -> Path:
    """A PubMedQA-shaped {PMID: record} file; the answer is written in the abstract (a learnable cue)."""
    rng = random.Random(SEED)
    words = ["fever", "cough", "pain", "rash", "thirst", "patient", "rest", "diabetes"]
    data, pmid = {}, 1000
    for label, n in zip(("yes", "no", "maybe"), counts):
        for _ in range(n):
            pmid += 1
            data[str(pmid)] = {"QUESTION": f"Does {rng.choice(words)} matter?",
                               "CONTEXTS": [" ".join(rng.sample(words, 3)) + f" {label}."],
                               "LABELS": ["BACKGROUND"], "MESHES": [], "YEAR": "2020",
                               "reasoning_required_pred": label, "reasoning_free_pred": label,
                               "final_decision": label, "LONG_ANSWER": f"The answer is {label}."}
    path.write_text(json.dumps(data))
    return path


# ------------------------------------------------------------------------------------------------ folds


@pytest.mark.parametrize("k", [2, 3, 5])
def test_folds_are_disjoint_cover_everything_and_spread_each_label_evenly(k):
    labels = [0] * 276 + [1] * 169 + [2] * 55  # the shared file's yes/no/maybe counts
    random.Random(1).shuffle(labels)
    folds = cv.stratified_folds(labels, k, seed=0)
    flat = [i for f in folds for i in f]
    assert sorted(flat) == list(range(len(labels)))  # disjoint and complete
    assert max(map(len, folds)) - min(map(len, folds)) <= 1
    for y in range(3):
        per_fold = [sum(labels[i] == y for i in f) for f in folds]
        assert max(per_fold) - min(per_fold) <= 1, per_fold
    assert cv.stratified_folds(labels, k, seed=0) == folds
    assert cv.stratified_folds(labels, k, seed=1) != folds


def test_balance_upsamples_every_class_to_the_largest():
    records = [{"id": i} for i in range(10)]
    labels = [0] * 6 + [1] * 3 + [2] * 1
    out = cv.balanced(records, labels, seed=0)
    by = Counter(labels[r["id"]] for r in out)
    assert by == {0: 6, 1: 6, 2: 6}
    assert {r["id"] for r in out} == set(range(10))  # nothing dropped


def test_training_records_in_each_form(tmp_path):
    from medtune.data import formats
    from medtune.eval import tasks

    items = tasks.load_task("pubmedqa", _pubmedqa(tmp_path / "p.json"))
    plain = cv.training_records(items, "prompt_completion", False, False, 0)
    assert [r["completion"] for r in plain] == [" " + tasks.PUBMEDQA_LABELS[it.answer] for it in items]
    long = cv.training_records(items, "prompt_completion", True, False, 0)
    assert all(r["completion"].endswith(it.explanation) for r, it in zip(long, items))
    chat = cv.training_records(items, "messages", False, False, 0)
    path = cv.write_jsonl(tmp_path / "chat.jsonl", chat)
    assert len(formats.load_dialogues(path)) == len(items)  # dialogues sft reads through the chat template
    even = cv.training_records(items, "prompt_completion", False, True, 0)
    assert Counter(r["completion"] for r in even) == {" yes": 10, " no": 10, " maybe": 10}


def test_intervals():
    lo, hi = cv.wilson(55, 100)
    z = 1.959963984540054
    centre, half = (0.55 + z * z / 200) / (1 + z * z / 100), z / (1 + z * z / 100) * (0.55 * 0.45 / 100 + z * z / 40000) ** 0.5
    assert (lo, hi) == pytest.approx((centre - half, centre + half), abs=1e-9)
    lo, hi = cv.t_interval([0.5, 0.6, 0.7])
    assert (lo + hi) / 2 == pytest.approx(0.6) and hi - lo == pytest.approx(2 * 4.302652729911275 * 0.1 / 3 ** 0.5)
    assert cv.t_interval([0.4]) == [0.4, 0.4]


def test_a_test_split_and_missing_data_are_refused_in_one_line(tmp_path, capsys):
    test_file = _pubmedqa(tmp_path / "test_set.json")
    assert cv.main(["--pubmedqa", str(test_file), "--mcq-limit", "0"]) == 2
    err = capsys.readouterr().err
    assert "never give it a test split" in err and len(err.strip().splitlines()) == 1
    assert cv.main(["--data-dir", str(tmp_path / "none"), "--demo", str(tmp_path / "d")]) == 0
    assert "demo-tasks skipped" in capsys.readouterr().out and not (tmp_path / "d").exists()
    assert cv.main(["--data-dir", str(tmp_path / "none")]) == 2
    assert cv.main(["--run-folds", "2", "--set", "train.epochs=zero", "--pubmedqa", str(_pubmedqa(tmp_path / "p.json")),
                    "--mcq-limit", "0", "--work", str(tmp_path / "w")]) == 2
    err = capsys.readouterr().err
    assert "train.epochs" in err and "Traceback" not in err


# ------------------------------------------------------------------------------------------------ end to end


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return save_tiny(tmp_path_factory.mktemp("m") / "tiny", hidden=64, seed=SEED)


def _tiny_sets(model):
    return ["--set", f"model.name_or_path={model}", "--set", "train.max_steps=4", "--set", "train.batch_size=2",
            "--set", "train.bf16=false", "--set", "data.max_length=256", "--set", "train.learning_rate=1e-3"]


@pytest.mark.slow  # tiny tunings, evaluations and merges: about a minute on 2 cores
def test_cross_validation_on_a_tiny_model(tiny_model, tmp_path, capsys):
    data = _pubmedqa(tmp_path / "pqal.json")
    out = tmp_path / "cv.json"
    assert cv.main(["--pubmedqa", str(data), "--medmcqa", str(FIXTURES / "medmcqa" / "dev.json"), "--folds", "3",
                    "--run-folds", "2", "--average", "0.5", "--work", str(tmp_path / "w"), "--json", str(out),
                    *_tiny_sets(tiny_model)]) == 0
    printed = capsys.readouterr().out
    result = json.loads(out.read_text())
    assert [r["row"].split(" ")[0] for r in result["rows"]] == ["majority", "untuned", "tuned", "averaged"]
    assert "| tuned |" in printed and "Wilson" in printed
    gold = json.loads(data.read_text())
    held = [set(f["held_out_ids"]) for f in result["folds"]]
    assert not held[0] & held[1] and all(len(h) in (6, 7) for h in held)
    for k, fold in enumerate(result["folds"]):
        trained = [json.loads(line) for line in (tmp_path / "w" / f"fold{k}" / "train.jsonl").read_text().splitlines()]
        assert len(trained) == fold["train_items"] == 19 - len(held[k])
        prompts = {r["prompt"] for r in trained}
        for pmid in held[k]:  # a held-out item is never trained on
            assert not any(gold[pmid]["CONTEXTS"][0] in p for p in prompts)
        # the majority row predicts the training folds' commonest answer: yes here (10 of 19)
        labels = [gold[p]["final_decision"] for p in fold["held_out_ids"]]
        assert fold["majority"]["accuracy"] == pytest.approx(labels.count("yes") / len(labels))
        assert fold["majority"]["answers"]["yes"] == 1.0
        # the tuned model's weights moved; the averaged one lies halfway
        base = load_file(tiny_model / "model.safetensors")
        tuned = load_file(tmp_path / "w" / f"fold{k}" / "run" / "model.safetensors")
        avg = load_file(tmp_path / "w" / f"fold{k}" / "averaged" / "model.safetensors")
        name = "model.layers.0.mlp.down_proj.weight"
        assert not torch.equal(base[name], tuned[name])
        assert torch.allclose(avg[name], (base[name] + tuned[name]) / 2, atol=1e-6)
    pooled = result["rows"][2]
    lo, hi = pooled["pooled_wilson95"]
    assert lo <= pooled["pooled_accuracy"] <= hi and pooled["n"] == sum(map(len, held))
    assert result["medmcqa_before"] is not None and result["rows"][2]["medmcqa"] is not None


@pytest.mark.slow  # tiny tunings, evaluations and merges: about a minute on 2 cores
def test_demo_tasks_writes_the_table_and_the_report(tiny_model, tmp_path, capsys):
    data = _pubmedqa(tmp_path / "pqal.json")
    out = tmp_path / "demo"
    assert cv.main(["--pubmedqa", str(data), "--medmcqa", str(FIXTURES / "medmcqa" / "dev.json"), "--demo", str(out),
                    *_tiny_sets(tiny_model)]) == 0
    printed = capsys.readouterr().out
    table = (out / "demo-tasks.md").read_text()
    assert "pubmedqa" in table and all(label in table for label in ("tiny", "tuned", "averaged-0.5"))  # base, tuned, averaged
    assert "pubmedqa" in printed
    assert (out / "report" / "report.html").is_file() and (out / "demo-tasks.md").is_file()
    held = json.loads((out / "heldout_pubmedqa.json").read_text())
    trained = (out / "train.jsonl").read_text()
    assert held and not any(record["CONTEXTS"][0] in trained for record in held.values())
    for label in ("default", "tuned", "averaged-0.5"):
        results = json.loads((out / f"eval-{label}" / "results.json").read_text())
        assert results["tasks"]["pubmedqa"]["n"] == len(held) and "medmcqa" in results["tasks"]
