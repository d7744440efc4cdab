"""Scoring: the fast log-likelihood path equals the one-forward-per-choice reference, answers are read from
free text in English and Chinese, metrics are right, and `medtune eval` writes its results."""

import json
from pathlib import Path

import pytest
import torch

from medtune.eval import runner, scoring, tasks
from tiny import save_tiny, tiny_llama, tiny_tokenizer

FIXTURES = Path(__file__).parent / "fixtures" / "eval"


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return save_tiny(tmp_path_factory.mktemp("m") / "tiny", hidden=64)


def test_encode_pair_follows_the_harness():
    tok = tiny_tokenizer()
    ctx, cont = scoring.encode_pair(tok, "Answer: ", "yes")  # trailing space moves to the continuation
    assert tok.decode(ctx) == "Answer:" and tok.decode(cont) == " yes"
    ctx2, cont2 = scoring.encode_pair(tok, "Answer:", " yes")
    assert (ctx, cont) == (ctx2, cont2)


@pytest.mark.parametrize("batch_size", [1, 2, 5])
def test_shared_context_scores_equal_one_forward_per_choice(batch_size):
    tok = tiny_tokenizer()
    model = tiny_llama(tok, hidden=64)
    items = tasks.load_task("mcq", FIXTURES / "mcq" / "test.jsonl") + tasks.load_task("pubmedqa", FIXTURES / "pubmedqa" / "ori_pqal.json")
    reqs = []
    for it in items:
        task = tasks.get_task("pubmedqa" if it.choice_labels == ["yes", "no", "maybe"] else "mcq")
        reqs.append(scoring.Request(task.prompt(it), task.continuations(it)))
    reqs.append(scoring.Request("Chest pain. Best first step:", [" call an ambulance", " rest", " drink water now"]))
    fast = scoring.loglik_scores(model, tok, reqs, batch_size=batch_size)
    ref = scoring.loglik_reference(model, tok, reqs)
    assert any(len(scoring.encode_pair(tok, r.context, c)[1]) > 1 for r in reqs for c in r.continuations)
    for f, r in zip(fast, ref):
        assert f == pytest.approx(r, abs=1e-3)
        assert scoring.choose(f) == scoring.choose(r)


def one_token_requests(tok):
    """Contexts from 3 to ~120 tokens whose choices are one token each (the tiny tokenizer is per character, so
    the choices carry no leading space): the fast path's right padding spans a wide range in one batch."""
    body = "The patient reports chest pain radiating to the left arm, sweating and nausea since this morning. "
    reqs = [scoring.Request(body[:n] + "\nAnswer:", list("ABCD")) for n in (0, 5, 17, 40, 64, 90, 1, 33, 97, 8)]
    reqs.append(scoring.Request("Is it serious? Answer:", ["y", "n", "m"]))
    assert all(len(scoring.encode_pair(tok, r.context, c)[1]) == 1 for r in reqs for c in r.continuations)
    return reqs


@pytest.mark.parametrize("batch_size", [1, 3, 16])
def test_one_token_fast_path_equals_one_forward_per_choice(batch_size):
    tok = tiny_tokenizer()
    model = tiny_llama(tok, hidden=64)
    reqs = one_token_requests(tok)
    fast = scoring.loglik_scores(model, tok, reqs, batch_size=batch_size)
    ref = scoring.loglik_reference(model, tok, reqs)
    for f, r in zip(fast, ref):
        assert f == pytest.approx(r, abs=1e-4)
        assert scoring.choose(f) == scoring.choose(r)
    assert len({tuple(round(x, 3) for x in f) for f in fast}) > len(fast) // 2  # the contexts really differ


def test_mixed_one_and_many_token_items_keep_their_order():
    tok = tiny_tokenizer()
    model = tiny_llama(tok, hidden=64)
    single = one_token_requests(tok)
    many = [scoring.Request("Chest pain. Best first step:", [" call an ambulance", " rest"]),
            scoring.Request("Fever in a newborn:", [" urgent", " wait"])]
    reqs = [single[0], many[0], *single[1:5], many[1], *single[5:]]
    fast = scoring.loglik_scores(model, tok, reqs, batch_size=4)
    ref = scoring.loglik_reference(model, tok, reqs)
    for f, r in zip(fast, ref):
        assert f == pytest.approx(r, abs=1e-4)


def test_fast_path_without_logits_to_keep_gives_the_same_scores(monkeypatch):
    tok = tiny_tokenizer()
    model = tiny_llama(tok, hidden=64)
    reqs = one_token_requests(tok)
    kept = scoring.loglik_scores(model, tok, reqs, batch_size=4)
    monkeypatch.setattr(scoring, "_accepts", lambda m, name: False)  # a model whose forward has no logits_to_keep
    full = scoring.loglik_scores(model, tok, reqs, batch_size=4)
    for a, b in zip(kept, full):
        assert a == pytest.approx(b, abs=1e-5)


def checked_requests(tok):
    many = [scoring.Request("Chest pain. Best first step:", [" call an ambulance", " rest", " wait"]),
            scoring.Request("Fever in a newborn:", [" urgent review", " wait"])]
    return one_token_requests(tok) * 3 + many


def _decisions(scores, reqs):
    return ([scoring.choose(s) for s in scores],
            [scoring.choose(s, r.continuations, normalise=True) for s, r in zip(scores, reqs)])


def test_bf16_with_the_fp32_check_keeps_every_fp32_decision():
    tok = tiny_tokenizer()
    model = tiny_llama(tok, hidden=64).float().eval()
    reqs = checked_requests(tok)
    exact = scoring.loglik_scores(model, tok, reqs, batch_size=4)
    scores, check = scoring.loglik_checked(model, scoring.bf16_copy(model), tok, reqs, batch_size=4, calibration=6)
    assert _decisions(scores, reqs) == _decisions(exact, reqs)
    assert check.calibration_items == 6 and 0 < check.max_error < 1 and check.margin >= max(0.25, 2 * check.max_error)
    assert next(model.parameters()).dtype == torch.float32  # the fp32 model is left as it was
    # an item kept from the bf16 pass leads by at least the margin; a re-scored one carries fp32's scores
    for s, e, r in zip(scores, exact, reqs):
        top = sorted(s, reverse=True)
        if s != pytest.approx(e, abs=1e-4):
            assert top[0] - top[1] >= check.margin


def test_the_margin_decides_what_is_re_scored():
    tok = tiny_tokenizer()
    model = tiny_llama(tok, hidden=64).float().eval()
    reqs = checked_requests(tok)
    fast = scoring.bf16_copy(model)
    exact = scoring.loglik_scores(model, tok, reqs, batch_size=4)
    every, check = scoring.loglik_checked(model, fast, tok, reqs, calibration=2, min_margin=1e9)
    assert check.rechecked == len(reqs) - 2
    for a, b in zip(every, exact):
        assert a == pytest.approx(b, abs=1e-4)
    bare, check = scoring.loglik_checked(model, fast, tok, reqs, calibration=0, min_margin=0.0, safety=0.0)
    assert check.rechecked == 0 and check.calibration_items == 0
    assert max(abs(x - y) for a, b in zip(bare, exact) for x, y in zip(a, b)) > 1e-3  # bf16 really scored these


@pytest.mark.parametrize("precision,expected", [("bf16", "bf16 with fp32 re-check"), ("fp32", "float32"),
                                                ("auto", "float32")])  # auto: the fixtures have under 100 items
def test_eval_records_the_precision_it_scored_in(tiny_model, tmp_path, precision, expected):
    s = runner.EvalSettings(tasks=["mcq"], data_dir=str(FIXTURES), precision=precision)
    r = json.loads((runner.evaluate(str(tiny_model), s, str(tmp_path / "ev")) / "results.json").read_text())
    assert r["tasks"]["mcq"]["precision"]["precision"] == expected
    if precision == "bf16":
        assert r["tasks"]["mcq"]["precision"]["rechecked"] + r["tasks"]["mcq"]["precision"]["calibration_items"] <= r["tasks"]["mcq"]["n"]


@pytest.mark.parametrize("text,labels,expected", [
    ("The answer is C.", "ABCD", 2), ("C. Metformin", "ABCD", 2), ("答案：C", "ABCD", 2), ("Answer: (B)", "ABCD", 1),
    ("选B，因为……", "ABCD", 1), ("b) the liver", "ABCD", 1), ("The correct option is D", "ABCD", 3),
    ("Metformin is first-line.", "ABCD", 2), ("I am not sure.", "ABCD", None), ("A or B", "ABCD", None),
    ("Yes, it does.", ["yes", "no", "maybe"], 0), ("Maybe; the evidence is mixed.", ["yes", "no", "maybe"], 2),
    ("否。", ["yes", "no", "maybe"], 1), ("", "ABCD", None),
])
def test_extract_choice(text, labels, expected):
    choices = ["Insulin", "Aspirin", "Metformin", "Warfarin"] if labels == "ABCD" else ["yes", "no", "maybe"]
    assert scoring.extract_choice(text, list(labels), choices) == expected


def test_metrics():
    assert scoring.macro_f1([0, 0, 1, 2], [0, 1, 1, 2], 3) == pytest.approx((2 / 3 + 2 / 3 + 1) / 3)
    correct = [True] * 60 + [False] * 40
    lo, hi = scoring.bootstrap_ci(correct, seed=1)
    assert lo < 0.6 < hi and 0.45 < lo and hi < 0.75
    assert scoring.bootstrap_ci(correct, seed=1) == (lo, hi)
    items = tasks.load_task("mcq", FIXTURES / "mcq" / "test.jsonl")
    m = scoring.task_metrics(items, [it.answer for it in items[:-1]] + [None], f1=True)
    assert m["accuracy"] == pytest.approx((len(items) - 1) / len(items)) and m["unparseable"] == 1
    assert sum(s["n"] for s in m["by_subject"].values()) == len(items)


def test_text_perplexity_scores_each_document_alone():
    tok = tiny_tokenizer()
    model = tiny_llama(tok)
    docs = ["The patient has a fever.", "Chest pain is an emergency: call an ambulance."]
    got = scoring.text_perplexity(model, tok, docs)
    total, count = 0.0, 0
    with torch.no_grad():
        for d in docs:
            ids = tok(d)["input_ids"] + [tok.eos_token_id]
            out = model(input_ids=torch.tensor([ids]), labels=torch.tensor([ids]))
            total += out.loss.item() * (len(ids) - 1)
            count += len(ids) - 1
    assert got["tokens"] == count and got["loss"] == pytest.approx(total / count, rel=1e-4)


def test_eval_writes_results_for_loglik_and_generate(tiny_model, tmp_path):
    general = tmp_path / "general.txt"
    general.write_text("Paris is the capital of France.\nWater boils at 100 degrees.\n")
    s = runner.EvalSettings(tasks=["mcq", "pubmedqa"], general_tasks=["mmlu_medical"], data_dir=str(FIXTURES),
                            general_text=[str(general)], shots=1)
    out = runner.evaluate(str(tiny_model), s, str(tmp_path / "ev"))
    r = json.loads((out / "results.json").read_text())
    assert set(r["tasks"]) == {"mcq", "pubmedqa", "mmlu_medical"}
    assert r["tasks"]["mmlu_medical"]["domain"] == "general" and "macro_f1" in r["tasks"]["pubmedqa"]
    assert r["perplexity"]["general.txt"]["tokens"] > 0
    rows = [json.loads(line) for line in (out / "items.jsonl").read_text().splitlines()]
    assert len(rows) == sum(t["n"] for t in r["tasks"].values())
    assert (out / "report.html").read_text().count("data:image/png;base64,") >= 1
    s = runner.EvalSettings(tasks=["mcq"], data_dir=str(FIXTURES), mode="generate", max_new_tokens=8)
    gen = runner.evaluate(str(tiny_model), s, str(tmp_path / "gen"))
    r = json.loads((gen / "results.json").read_text())
    assert r["settings"]["mode"] == "generate" and r["tasks"]["mcq"]["n"] == len(rows_of(gen))
    assert all("answer" in row for row in rows_of(gen))

    from medtune.cli import main

    assert main(["eval", "--compare", str(out), str(gen), "-o", str(tmp_path / "cmp")]) == 0
    html = (tmp_path / "cmp" / "report.html").read_text()
    assert "mcq" in html and "data:image/png;base64," in html


def test_several_models_answer_the_same_sample_and_tokenise_once(tmp_path, monkeypatch):
    from medtune.cli import main

    a = save_tiny(tmp_path / "a", hidden=32, seed=1)
    b = save_tiny(tmp_path / "b", hidden=64, seed=2)
    calls = []
    encode = scoring.encode_requests
    monkeypatch.setattr(scoring, "encode_requests", lambda tok, reqs: calls.append(len(reqs)) or encode(tok, reqs))
    s = runner.EvalSettings(tasks=["mcq", "pubmedqa"], data_dir=str(FIXTURES), limit=2, seed=3)
    outs = runner.evaluate_models([str(a), str(b)], s, str(tmp_path / "ev"))
    assert outs == [tmp_path / "ev" / "a", tmp_path / "ev" / "b"]
    ids = [[(r["task"], r["id"]) for r in rows_of(out)] for out in outs]
    assert ids[0] == ids[1] and len(ids[0]) == 4
    assert calls == [2, 2]  # one tokenisation per task, shared by both models (same tokenizer)
    scores = [[r["scores"] for r in rows_of(out)] for out in outs]
    assert scores[0] != scores[1]  # two different models really ran
    # the command line takes several models too; a name used twice is refused before any model loads
    assert main(["eval", str(a), str(b), "--tasks", "mcq", "--data-dir", str(FIXTURES), "--limit", "2",
                 "-o", str(tmp_path / "cli")]) == 0
    assert [r["id"] for r in rows_of(tmp_path / "cli" / "a")] == [r["id"] for r in rows_of(tmp_path / "cli" / "b")]
    (tmp_path / "other").mkdir()
    twin = save_tiny(tmp_path / "other" / "a", hidden=32)
    assert main(["eval", str(a), str(twin), "--tasks", "mcq", "-o", str(tmp_path / "twice")]) == 2


def rows_of(folder):
    return [json.loads(line) for line in (folder / "items.jsonl").read_text().splitlines()]


def test_bad_benchmark_file_stops_before_the_model_loads(tmp_path, capsys):
    from medtune.cli import main

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "Q?", "options": {"A": "x", "B": "y"}, "answer": "E"}\n')
    assert main(["eval", "./no/such/model", "--tasks", "mcq", "--file", f"mcq={bad}", "-o", str(tmp_path / "e")]) == 2
    err = capsys.readouterr().err
    assert "bad.jsonl:1" in err and len(err.strip().splitlines()) == 1
    assert main(["eval", "default", "--tasks", "nosuchtask"]) == 2
    assert "unknown task" in capsys.readouterr().err


def test_from_benchmark_writes_sft_data(tmp_path):
    from medtune.cli import main
    from medtune.data import formats

    out = tmp_path / "pubmedqa_sft.jsonl"
    assert main(["data", "from-benchmark", "pubmedqa", str(FIXTURES / "pubmedqa" / "ori_pqal.json"), str(out)]) == 0
    dialogues = formats.load_dialogues(out)
    assert dialogues and all(d["messages"][-1]["role"] == "assistant" for d in dialogues)
