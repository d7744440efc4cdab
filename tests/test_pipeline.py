"""`medtune pipeline`: steps chain their folders, finished steps are skipped, a step killed with SIGKILL
resumes and the pipeline ends where an uninterrupted one does; `medtune runs` lists what was made."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from medtune import listing, pipeline, runs
from medtune.errors import ConfigError
from test_sft import write_data
from tiny import save_tiny

EXAM = [{"question": "What treats a fever?", "options": {"A": "Paracetamol", "B": "Sugar"}, "answer": "A"},
        {"question": "Chest pain with breathlessness?", "options": {"A": "Wait", "B": "Call an ambulance"}, "answer": "B"}]


def write_recipe(root: Path, model: Path, out: Path, steps_b: int = 60) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    data = write_data(root / "sft.jsonl", n=32)
    exam = root / "exam.jsonl"
    exam.write_text("".join(json.dumps(e) + "\n" for e in EXAM))
    common = {"data.path": [str(data)], "data.val_size": 4, "train.learning_rate": 2e-3, "train.logging_steps": 5}
    recipe = {
        "stage": "pipeline",
        "output_dir": str(out),
        "steps": [
            {"name": "first", "run": "sft", "recipe": "medtune:recipes/sft_demo.yaml", "model": str(model),
             "set": {**common, "train.max_steps": 4, "data.max_length": 128}},
            {"name": "second", "run": "sft", "recipe": "medtune:recipes/sft_demo.yaml",
             "set": {**common, "train.max_steps": steps_b, "train.save_steps": 5, "data.max_length": 128}},
            {"name": "exam", "run": "eval", "models": [str(model), "@second"], "tasks": ["mcq"],
             "files": {"mcq": str(exam)}},
        ],
    }
    path = root / "pipeline.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return save_tiny(tmp_path_factory.mktemp("m") / "tiny", hidden=64)


def test_pipeline_chains_skips_and_reruns_from_a_step(tiny_model, tmp_path, capsys):
    recipe = write_recipe(tmp_path, tiny_model, tmp_path / "out", steps_b=6)
    out = pipeline.run(recipe)
    record = json.loads((out / "pipeline.json").read_text())
    assert [s["action"] for s in record["steps"]] == ["ran", "ran", "ran"]
    second = runs.read_manifest(out / "second")
    assert second["model"]["weights"] == str((out / "first").resolve())  # took the previous step as its model
    exam = json.loads((out / "exam" / "results.json").read_text())
    assert len(exam["evaluations"]) == 2 and (out / "exam" / "compare" / "report.html").is_file()

    finished = runs.read_manifest(out / "first")["finished"]
    pipeline.run(recipe)
    assert [s["action"] for s in json.loads((out / "pipeline.json").read_text())["steps"]] == ["skipped"] * 3
    assert runs.read_manifest(out / "first")["finished"] == finished

    (out / "exam" / "7-from-an-older-recipe").mkdir()  # an evaluation the recipe no longer asks for
    pipeline.run(recipe, from_step="second")
    actions = [s["action"] for s in json.loads((out / "pipeline.json").read_text())["steps"]]
    assert actions == ["skipped", "ran", "ran"]
    assert runs.read_manifest(out / "first")["finished"] == finished
    assert sorted(p.name for p in (out / "exam").iterdir()) == ["0-tiny", "1-second", "compare", "results.json"]
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]  # no temporary folder left
    assert all(Path(e).is_dir() for e in json.loads((out / "exam" / "results.json").read_text())["evaluations"])

    listed = listing.list_runs(out)
    assert {r["stage"] for r in listed} >= {"sft", "eval"}
    assert any(r["parent"] == "first" for r in listed)


def test_a_step_killed_mid_training_resumes_and_ends_like_an_uninterrupted_pipeline(tiny_model, tmp_path):
    straight = pipeline.run(write_recipe(tmp_path / "a", tiny_model, tmp_path / "a" / "out"))

    root = tmp_path / "b"
    recipe = write_recipe(root, tiny_model, root / "out")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    proc = subprocess.Popen([sys.executable, "-m", "medtune", "pipeline", str(recipe)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    ckpt = root / "out" / "second" / "checkpoints"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if any((p / "trainer_state.json").is_file() for p in ckpt.glob("checkpoint-*")):
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the pipeline finished before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert runs.read_manifest(root / "out" / "second")["status"] == "running"  # killed: no chance to say failed
    finished_first = runs.read_manifest(root / "out" / "first")["finished"]

    out = pipeline.run(recipe)
    steps = json.loads((out / "pipeline.json").read_text())["steps"]
    assert [s["action"] for s in steps] == ["skipped", "resumed", "ran"]
    assert runs.read_manifest(out / "first")["finished"] == finished_first  # not run twice
    a = runs.read_manifest(straight / "second")["metrics"]
    b = runs.read_manifest(out / "second")["metrics"]
    assert b["steps"] == a["steps"] == 60
    assert b["eval_loss"] == pytest.approx(a["eval_loss"], abs=1e-4)
    ea, eb = (json.loads((o / "exam" / "1-second" / "results.json").read_text())["tasks"]["mcq"]
              for o in (straight, out))
    assert eb["accuracy"] == ea["accuracy"]


@pytest.mark.parametrize("steps, message", [
    ([], "no steps"),
    ([{"name": "a", "run": "sft"}], "needs a recipe"),
    ([{"name": "a", "run": "bake", "recipe": "x"}], "unknown run 'bake'"),
    ([{"name": "a", "run": "sft", "recipe": "x", "alpha": 1}], "unknown key 'alpha'"),
    ([{"name": "a", "run": "eval", "models": ["@b"]}], "'@b' does not name an earlier step"),
    ([{"name": "a", "run": "eval"}, {"name": "a", "run": "eval"}], "used twice"),
    ([{"name": "a", "run": "sft", "recipe": "medtune:recipes/sft_demo.yaml"},  # a later step's bad override
      {"name": "b", "run": "dpo", "recipe": "medtune:recipes/dpo_demo.yaml", "set": {"train.nope": 1}}],
     r"p\.yaml: step 'b': set 'train\.nope': unknown key 'train\.nope'"),
    # an eval step's options are EvalSettings keys, checked as a recipe's (config.from_dict)
    ([{"name": "exam", "run": "eval", "shotz": 1}], r"p\.yaml: step 'exam': unknown key 'shotz' \(did you mean 'shots'\?\)"),
    ([{"name": "exam", "run": "eval", "batch_size": 0}], r"p\.yaml: step 'exam': field 'batch_size': got 0; it must be at least 1"),
    ([{"name": "exam", "run": "eval", "mode": "guess"}], r"step 'exam': field 'mode': got 'guess'; it must be one of"),
    ([{"name": "exam", "run": "eval", "limit": "ten"}], r"step 'exam': field 'limit': expected an integer, got 'ten'"),
    # so are an average step's (AverageStep)
    ([{"name": "avg", "run": "average", "alpah": 0.5}], r"p\.yaml: step 'avg': unknown key 'alpah' \(did you mean 'alpha'\?\)"),
    ([{"name": "avg", "run": "average", "alpha": "half"}], r"step 'avg': field 'alpha': expected a finite number, got 'half'"),
    ([{"name": "avg", "run": "average", "alpha_upper": 1.5}], r"step 'avg': field 'alpha_upper': got 1\.5; it must be between 0 and 1"),
    ([{"name": "avg", "run": "average", "split_layer": -1}], r"step 'avg': field 'split_layer': got -1; it must be at least 0"),
])
def test_bad_pipeline_recipes_fail_before_anything_runs(tmp_path, steps, message):
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump({"stage": "pipeline", "output_dir": str(tmp_path / "out"), "steps": steps}))
    with pytest.raises(ConfigError, match=message):
        pipeline.run(path)
    assert not (tmp_path / "out").exists()
