"""`medtune demo` runs the shipped demo pipeline end to end (here on a tiny model, capped at 2 steps per stage):
PT -> SFT -> DPO -> average with the starting model -> evaluation of the start and the average; it writes the
before/after table, the answers side by side and the HTML report, and `--resume` skips what is finished."""

import html
import json
from pathlib import Path

from medtune import demo, demo_data, runs
from medtune.cli import main as cli_main
from tiny import save_tiny


def test_demo_runs_the_whole_chain_and_resumes(tmp_path, capsys):
    model = save_tiny(tmp_path / "tiny", hidden=64)
    out = tmp_path / "demo"
    assert demo.main(output_dir=str(out), max_steps=2, model=str(model)) == 0

    record = json.loads((out / "pipeline.json").read_text())
    assert [(s["name"], s["action"]) for s in record["steps"]] == [
        ("pt", "ran"), ("sft", "ran"), ("dpo", "ran"), ("avg", "ran"), ("eval", "ran")]
    # each stage trained from the one before it, starting from the given model
    assert runs.read_manifest(out / "pt")["model"]["weights"] == str(model.resolve())
    assert runs.read_manifest(out / "sft")["model"]["weights"] == str((out / "pt").resolve())
    assert runs.read_manifest(out / "dpo")["model"]["weights"] == str((out / "sft").resolve())
    for stage in ("pt", "sft", "dpo"):
        assert runs.read_manifest(out / stage)["metrics"]["steps"] == 2
    avg = runs.read_manifest(out / "avg")
    assert avg["method"] == "average" and avg["alpha"] == 0.75

    evals = json.loads((out / "eval" / "results.json").read_text())
    assert evals["models"] == [str(model), str(out / "avg")]
    results = [json.loads((Path(p) / "results.json").read_text()) for p in evals["evaluations"]]
    for r in results:
        assert r["tasks"]["mcq_cloze"]["n"] == 50
        assert r["health"]["summary"]["n"] == len(demo_data.health_prompts()) == 10
        assert len(r["perplexity"]) == 1

    summary = (out / "demo.md").read_text()
    assert "not medical advice" in summary.lower()
    assert "| DPO (demo pairs) |" in summary and "mcq_cloze" in summary
    assert "up to 192 new tokens" in summary
    first = f"{results[0]['tasks']['mcq_cloze']['accuracy']:.2f}"
    last = f"{results[-1]['tasks']['mcq_cloze']['accuracy']:.2f}"
    assert f"{last} vs {first} (n=50;" in summary  # the verdict quotes the measured accuracies
    assert demo_data.heldout_questions()[0]["question"] in summary  # answers side by side

    page = (out / "report" / "report.html").read_text()
    assert "<h2>Answers</h2>" in page and html.escape(demo_data.GENERAL_PROMPTS[0]) in page
    assert page.count("<img") >= 2  # accuracy and perplexity plots at least

    # --resume: every finished step is skipped, the summary is written again from the same results
    capsys.readouterr()
    assert cli_main(["demo", "--output-dir", str(out), "--max-steps", "2", "--model", str(model), "--resume"]) == 0
    record = json.loads((out / "pipeline.json").read_text())
    assert {s["action"] for s in record["steps"]} == {"skipped"}
    assert (out / "demo.md").read_text() == summary


def test_a_missing_model_stops_the_demo_before_anything_is_written(tmp_path, capsys):
    out = tmp_path / "demo"
    assert cli_main(["demo", "--model", str(tmp_path / "no-such-model"), "--output-dir", str(out)]) == 2
    err = capsys.readouterr().err
    assert "no-such-model: model path does not exist" in err and "Traceback" not in err
    assert not out.exists()
