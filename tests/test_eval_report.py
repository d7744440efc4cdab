"""Evaluation reports: HTML/Markdown/PNG output and the terminal comparison table (medtune.eval.report)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from medtune import NOT_MEDICAL_ADVICE
from medtune.errors import MedtuneError
from medtune.eval import report

EVIL = "sft <script>alert(1)</script>"


def write_json(path: Path, data) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def make_run(folder: Path, stage: str, chain_base: str, *, evals: bool) -> Path:
    history = [{"step": s, "loss": 3.0 - 0.2 * s, "learning_rate": 1e-4, "grad_norm": 1.0} for s in range(1, 6)]
    if evals:
        history += [{"step": 0, "eval_loss": 3.1}, {"step": 5, "eval_loss": 2.4, "eval_perplexity": 11.02}]
    write_json(folder / "medtune.json", {
        "stage": stage, "status": "completed", "model": {"spec": chain_base, "base": "tiny-base"},
        "metrics": {"train_loss": 2.4, "steps": 5, "eval_loss": 2.4, "eval_perplexity": 11.02},
        "history": history,
    })
    return folder


def result(label: str, tasks: dict, **extra) -> dict:
    return {"kind": "eval", "model": f"runs/{label}", "label": label, "created": "2026-11-22T08:00:00Z",
            "settings": {"mode": "loglik", "shots": 0, "limit": 100, "seed": 0, "batch_size": 8},
            "tasks": tasks, **extra}


def health(repetition: float) -> dict:
    flagged = repetition > 0.2
    return {"summary": {
        "flags": {"repetition": flagged, "not_stopping": False},
        "checks": {
            "repetition": {"value": repetition, "threshold": 0.2, "rule": "mean_repeat_4gram > 0.2",
                           "flagged": flagged},
            "not_stopping": {"value": 0.9, "threshold": 0.5, "rule": "stopped_share < 0.5", "flagged": False},
        },
        "stopped_share": 0.9, "mean_length_tokens": 120.0}}


ACC = {"base": {"pubmedqa": 0.55, "medmcqa": 0.31, "mmlu_medical": 0.40},
       "sft": {"pubmedqa": 0.58, "medmcqa": 0.35, "mmlu_medical": 0.38}}
PPL = {"base": 25.3, "sft": 21.1}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("report")
    pt = make_run(tmp / "runs" / "demo-pt", "pt", "tiny-base", evals=True)
    sft = make_run(tmp / "runs" / "demo-sft", "sft", str(tmp / "runs" / "demo-pt"), evals=False)
    dirs = []
    for key, label in (("base", "demo-pt"), ("sft", EVIL)):
        a = ACC[key]
        tasks = {
            "pubmedqa": {"n": 100, "accuracy": a["pubmedqa"], "ci95": [a["pubmedqa"] - 0.1, a["pubmedqa"] + 0.1],
                         "macro_f1": 0.41, "domain": "medical", "unparseable": 0, "seconds": 12.3,
                         "by_subject": {"": {"n": 100, "accuracy": a["pubmedqa"]}}},
            "medmcqa": {"n": 300, "accuracy": a["medmcqa"], "ci95": [a["medmcqa"] - 0.05, a["medmcqa"] + 0.05],
                        "domain": "medical", "by_subject": {"Anatomy": {"n": 20, "accuracy": 0.3},
                                                            "Pharmacology": {"n": 30, "accuracy": 0.4}}},
            "mmlu_medical": {"n": 50, "accuracy": a["mmlu_medical"], "ci95": [0.27, 0.54], "domain": "general"},
        }
        chain = [str(pt)] if key == "base" else [str(pt), str(sft)]
        data = result(label, tasks, model_run={"stage": "pt" if key == "base" else "sft", "base": "tiny-base",
                                               "chain": chain},
                      perplexity={"general.txt": {"documents": 66, "tokens": 20000, "perplexity": PPL[key],
                                                  "domain": "general"}},
                      health=health(0.05 if key == "base" else 0.35))
        dirs.append(write_json(tmp / "evals" / key / "results.json", data).parent)
    paths = report.write_report(dirs, tmp / "out")
    return {"dirs": dirs, "paths": paths, "tmp": tmp,
            "html": paths["html"].read_text(encoding="utf-8"), "md": paths["md"].read_text(encoding="utf-8")}


def test_files_and_pngs(built):
    out = built["tmp"] / "out"
    assert built["paths"]["html"] == out / "report.html" and built["paths"]["md"] == out / "report.md"
    names = {p.name for p in built["paths"]["plots"]}
    assert names == {"accuracy.png", "loss_curves.png", "perplexity.png"}
    for p in built["paths"]["plots"]:
        assert p.read_bytes().startswith(b"\x89PNG")
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary files left


def test_html_self_contained_and_content(built):
    text = built["html"]
    assert text.count("data:image/png;base64,") == 3
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*https?://""", text, re.I)
    assert "<script" not in text.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "demo-pt" in text
    assert NOT_MEDICAL_ADVICE in text
    assert text.index(NOT_MEDICAL_ADVICE) < text.index("<h2>")  # at the top
    for key in ("base", "sft"):
        for acc in ACC[key].values():
            assert f"{100 * acc:.1f}%" in text
    delta = f"{100 * (ACC['sft']['pubmedqa'] - ACC['base']['pubmedqa']):+.1f} pp"
    assert delta == "+3.0 pp" and delta in text
    assert "<details>" in text and "Pharmacology" in text  # subject breakdown collapsed
    assert 'class="flag"' in text and "0.35 FLAG" in text  # flagged health cell highlighted
    assert "domain: medical" in text and "general" in text
    assert "11.02" in text  # eval perplexity of the runs


def test_markdown_rows(built):
    md = built["md"]
    assert NOT_MEDICAL_ADVICE in md
    row = next(line for line in md.splitlines() if line.startswith("| pubmedqa |"))
    assert "55.0% [45.0, 65.0] n=100" in row and "58.0% [48.0, 68.0] n=100" in row and "+3.0 pp" in row
    assert any(line.startswith("| general.txt |") and "25.30" in line and "-4.20" in line for line in md.splitlines())
    assert "&lt;script&gt;" in md and "<script" not in md
    assert "](accuracy.png)" in md and "](loss_curves.png)" in md and "data:image" not in md


def test_compare_table(built):
    results = [report.load_results(d) for d in built["dirs"]]
    text = report.compare_table(results)
    assert "delta (last - first)" in text and "lower is better" in text
    assert "[domain: medical]" in text and "[general]" in text
    assert text.index("[domain: medical]") < text.index("[general]")
    for name in ACC["base"]:
        line = next(line for line in text.splitlines() if line.strip().startswith(name))
        a, b = ACC["base"][name], ACC["sft"][name]
        assert f"{100 * a:.1f}%" in line and f"{100 * b:.1f}%" in line
        assert line.rstrip().endswith(f"{100 * (b - a):+.1f} pp")
    line = next(line for line in text.splitlines() if line.strip().startswith("general.txt"))
    assert line.rstrip().endswith(f"{PPL['sft'] - PPL['base']:+.2f}")
    mean_base = (ACC["base"]["pubmedqa"] + ACC["base"]["medmcqa"]) / 2
    mean_sft = (ACC["sft"]["pubmedqa"] + ACC["sft"]["medmcqa"]) / 2
    line = next(line for line in text.splitlines() if "mean of 2 tasks" in line)
    assert f"{100 * mean_base:.1f}%" in line and line.rstrip().endswith(f"{100 * (mean_sft - mean_base):+.1f} pp")
    line = next(line for line in text.splitlines() if line.strip().startswith("repetition"))
    assert "0.05 ok" in line and "0.35 FLAG" in line
    # one model: no delta column
    single = report.compare_table(results[:1])
    assert "delta (last" not in single and "55.0% [45.0, 65.0] n=100" in single


def test_load_results_errors(tmp_path):
    with pytest.raises(MedtuneError, match="no evaluation results"):
        report.load_results(tmp_path / "missing")
    with pytest.raises(MedtuneError, match="no evaluation results"):
        report.load_results(tmp_path)  # a folder without results.json
    bad = tmp_path / "bad" / "results.json"
    bad.parent.mkdir()
    bad.write_text("{not json", encoding="utf-8")
    with pytest.raises(MedtuneError, match="not valid JSON"):
        report.load_results(bad.parent)
    write_json(bad, {"kind": "sft"})
    with pytest.raises(MedtuneError, match="not a medtune evaluation"):
        report.load_results(bad)
    write_json(bad, {"kind": "eval", "tasks": [1, 2]})
    with pytest.raises(MedtuneError, match="'tasks' must be"):
        report.load_results(bad)
    with pytest.raises(MedtuneError):
        report.write_report([], tmp_path / "out")


def test_minimal_result_renders(tmp_path):
    """Only the required keys: no model_run, perplexity, health, CI, or by_subject; no label either."""
    folder = write_json(tmp_path / "evals" / "hub-model" / "results.json",
                        {"kind": "eval", "model": "some/hub-model",
                         "tasks": {"pubmedqa": {"n": 10, "accuracy": 0.5}}}).parent
    loaded = report.load_results(folder)
    assert loaded["label"] == "some/hub-model"
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "loss_curves.png").write_bytes(b"old")  # stale plot from an earlier report
    paths = report.write_report([folder], tmp_path / "out", title="Tiny & small")
    html_text = paths["html"].read_text(encoding="utf-8")
    assert [p.name for p in paths["plots"]] == ["accuracy.png"]
    assert not (tmp_path / "out" / "loss_curves.png").exists()
    assert "Tiny &amp; small" in html_text and "50.0% n=10" in html_text
    assert "Perplexity" not in html_text and "Training" not in html_text
    assert "| pubmedqa | 50.0% n=10 |" in paths["md"].read_text(encoding="utf-8")
    assert "50.0% n=10" in report.compare_table([loaded])


def test_missing_task_and_repeated_label(tmp_path):
    """A task only one model has shows "—" with no delta; two results with one label stay apart."""
    a = write_json(tmp_path / "a" / "results.json", result("same", {
        "pubmedqa": {"n": 10, "accuracy": 0.5, "domain": "medical"},
        "medqa": {"n": 10, "accuracy": 0.2, "domain": "medical"}})).parent
    b = write_json(tmp_path / "b" / "results.json", result("same", {
        "pubmedqa": {"n": 10, "accuracy": 0.7, "domain": "medical"}})).parent
    text = report.compare_table([report.load_results(a), report.load_results(b)])
    assert "same (2)" in text
    medqa = next(line for line in text.splitlines() if line.strip().startswith("medqa"))
    assert "20.0% n=10" in medqa and "—" in medqa and "pp" not in medqa
    mean = next(line for line in text.splitlines() if "mean of 2 tasks" in line)
    assert "35.0%" in mean and "pp" not in mean  # no mean for the model missing a task
    assert "+20.0 pp" in text


def test_answers_side_by_side_only_for_the_same_prompts(tmp_path):
    """Health answers appear per prompt, one column per model, long ones cut, unfinished ones marked; models
    asked different prompts get no answers table."""
    def answered(label, texts, prompts=("Why sleep?", "Fever <at night>?")):
        h = health(0.0)
        h["responses"] = [{"prompt": p, "response": t, "stopped": not t.endswith("...")} for p, t in zip(prompts, texts)]
        return result(label, {"pubmedqa": {"n": 10, "accuracy": 0.5}}, health=h)

    long = "x" * (report.ANSWER_CHARS + 50)
    a = write_json(tmp_path / "a" / "results.json", answered("base", ["Rest well.", "Loops loops..."])).parent
    b = write_json(tmp_path / "b" / "results.json", answered("tuned", ["Sleep restores.", long])).parent
    md = report.write_report([a, b], tmp_path / "out")["md"].read_text(encoding="utf-8")
    answers = md.split("## Answers", 1)[1].split("## Training", 1)[0]
    assert "| prompt | base | tuned |" in answers
    assert "| Why sleep? | Rest well. | Sleep restores. |" in answers
    assert "Loops loops... [hit the token limit]" in answers and "x" * report.ANSWER_CHARS + " …" in answers
    assert "x" * (report.ANSWER_CHARS + 1) not in answers
    assert "Fever &lt;at night&gt;?" in answers

    c = write_json(tmp_path / "c" / "results.json", answered("other", ["A", "B"], prompts=("P1", "P2"))).parent
    page = report.write_report([a, c], tmp_path / "out2")["html"].read_text(encoding="utf-8")
    assert "<h2>Answers</h2>" not in page and "<h2>Generation health</h2>" in page
