"""The run folder: `medtune runs` lists every folder and never fails as a whole for one bad one."""

import json
import os

from medtune import listing, runs
from medtune.cli import main


def manifest(folder, **fields):
    folder.mkdir(parents=True, exist_ok=True)
    data = {"stage": "sft", "status": "completed", "model": {"base": "/m/tiny", "weights": "/m/tiny"},
            "metrics": {"eval_loss": 1.5}, "updated": "2026-01-01T00:00:00+00:00", **fields}
    (folder / runs.MANIFEST).write_text(json.dumps(data))
    return folder


def test_runs_lists_corrupt_and_empty_folders_beside_the_good_ones(tmp_path, capsys):
    root = tmp_path / "runs"
    manifest(root / "good")
    (root / "torn").mkdir(parents=True)
    (root / "torn" / runs.MANIFEST).write_text('{"stage": "sft", "stat')  # cut short
    (root / "alist").mkdir()
    (root / "alist" / runs.MANIFEST).write_text("[1, 2]")  # JSON, but not a manifest
    manifest(root / "oddtypes", model="tiny", metrics=[1], data={"path": 3}, updated=7)  # wrong types inside
    (root / "binary").mkdir()
    (root / "binary" / runs.MANIFEST).write_bytes(b"\xff\xfe\x00")
    (root / "emptied").mkdir()
    (root / "emptied" / ".save.tmp").mkdir()  # only a hidden leftover: nothing of a run
    (root / "chain" / "step1").mkdir(parents=True)  # an empty folder one level down
    manifest(root / "chain" / "step2")
    (root / "report").mkdir()
    (root / "report" / "report.html").write_text("<html>")  # not a run, not empty: not listed
    (root / "ev").mkdir()
    (root / "ev" / "results.json").write_text("{oops")
    (root / "steps" / "0-tiny").mkdir(parents=True)  # a pipeline's eval step: its evaluations are below it
    (root / "steps" / "results.json").write_text(json.dumps({"evaluations": [str(root / "steps" / "0-tiny")]}))
    (root / "steps" / "0-tiny" / "results.json").write_text(json.dumps({"kind": "eval", "tasks": {"mcq": {"accuracy": 0.5}}}))

    rows = {r["path"]: r for r in listing.list_runs(root)}
    status = {str(p.relative_to(root)): rows[str(p)]["status"] for p in map(type(root), rows)}
    assert status == {"good": "completed", "chain/step2": "completed", "torn": "corrupt", "alist": "corrupt",
                      "oddtypes": "corrupt", "binary": "corrupt", "emptied": "empty", "chain/step1": "empty",
                      "ev": "corrupt", "steps/0-tiny": "completed"}
    assert "not valid JSON" in rows[str(root / "torn")]["note"]
    assert main(["runs", str(root)]) == 0
    out = capsys.readouterr().out
    assert "corrupt" in out and "empty" in out and "eval_loss=1.5" in out
    assert all(name in out for name in ("good", "torn", "emptied", "step1", "ev"))


def test_every_file_and_folder_of_a_run_has_the_ordinary_mode(tmp_path):
    """medtune.json and other atomically written files came out 0600 (mkstemp's) beside 0644 weights."""
    import os
    import stat

    from medtune.config import load_config
    from medtune.stages import sft
    from tiny import save_tiny

    model = save_tiny(tmp_path / "tiny")
    data = tmp_path / "d.jsonl"
    data.write_text('{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}\n' * 4)
    out = sft.run(load_config(sft.SFTConfig, None, [f"model.name_or_path={model}", f"data.path={data}",
                                                    f"output_dir={tmp_path / 'run'}", "train.max_steps=2",
                                                    "train.batch_size=2", "train.keep_checkpoints=true",
                                                    "train.save_steps=1", "train.bf16=false"]))
    umask = os.umask(0)
    os.umask(umask)
    modes = {}
    for path in [out, *out.rglob("*")]:
        modes[str(path.relative_to(out))] = stat.S_IMODE(path.stat().st_mode)
    files = {p: m for p, m in modes.items() if (out / p).is_file()}
    folders = {p: m for p, m in modes.items() if (out / p).is_dir()}
    assert {"medtune.json", "adapter_model.safetensors", "adapter_config.json"} <= set(files)
    assert {p: oct(m) for p, m in files.items() if m != 0o666 & ~umask} == {}
    assert set(folders.values()) == {0o777 & ~umask}, folders
    assert not [p for p in modes if p != "." and (p.startswith(".") or "/." in p)]  # no temporary left


PAIR = {"prompt": "Is a fever dangerous?", "chosen": "Usually not; see a doctor if it lasts.", "rejected": "No."}


def _stage_args(stage, tmp_path, model):
    """Overrides that get `stage` as far as applying LoRA, on a tiny model and a few records."""
    if stage == "pt":
        data = tmp_path / "t.txt"
        data.write_text("The patient has a fever and a cough.\nRest and drink water.\n" * 4)
    elif stage in ("rm", "dpo"):
        data = tmp_path / "p.jsonl"
        data.write_text((json.dumps(PAIR) + "\n") * 4)
    else:  # grpo: prompts with a keyword reward
        data = tmp_path / "q.jsonl"
        data.write_text((json.dumps({"prompt": "Is a fever dangerous?", "keywords": ["doctor"]}) + "\n") * 4)
    extra = {"grpo": ["rewards=[keyword]"], "pt": [], "rm": [], "dpo": []}[stage]
    return [f"model.name_or_path={model}", f"data.path={data}", "train.max_steps=1", *extra]


import pytest  # noqa: E402


@pytest.mark.parametrize("stage", ["pt", "rm", "dpo", "grpo"])
def test_overwrite_with_bad_lora_targets_keeps_the_completed_run(tmp_path, capsys, stage):
    """The folder was cleared before LoRA was applied, so the error came after the completed run was gone."""
    from tiny import save_tiny

    model = save_tiny(tmp_path / "tiny")
    out = manifest(tmp_path / "run", stage=stage)
    (out / "adapter_model.safetensors").write_bytes(b"the finished weights")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    args = [stage, *_stage_args(stage, tmp_path, model), f"output_dir={out}", "overwrite=true",
            "lora.target_modules=nonexistent_proj"]
    assert main(args) == 2
    assert "lora.target_modules: 'nonexistent_proj' names no module" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert not runs.aside_folder(out).exists()
    new = tmp_path / "new"
    assert main([*args[:-3], f"output_dir={new}", "lora.target_modules=nonexistent_proj"]) == 2
    assert not new.exists()  # a new folder is not left behind empty


def test_resume_says_what_it_resumes_from_and_skips_an_incomplete_checkpoint(tmp_path, capsys):
    """kill -9 while the first checkpoint was written, then resume=true: it silently restarted from step 0."""
    out = manifest(tmp_path / "run", status="running")
    torn = out / "checkpoints" / "checkpoint-5"
    torn.mkdir(parents=True)
    (torn / "model.safetensors").write_bytes(b"half")  # no trainer_state.json: cut off while written
    _, _, checkpoint = runs.start(out, resume=True, overwrite=False)
    assert checkpoint is None
    said = capsys.readouterr().out
    assert "checkpoint-5 is incomplete" in said and "starts from step 0" in said
    done = _checkpoint(out, 2)
    _, _, checkpoint = runs.start(out, resume=True, overwrite=False)
    assert checkpoint == done
    said = capsys.readouterr().out
    assert "checkpoint-5 is incomplete" in said and f"resuming from {done} (step 2)" in said



def _checkpoint(run, step, state="{}", weights=True):
    """A checkpoint folder as a Trainer leaves it: trainer_state.json and the adapter's weights."""
    import torch
    from safetensors.torch import save_file

    folder = run / "checkpoints" / f"checkpoint-{step}"
    folder.mkdir(parents=True)
    if weights:
        save_file({"lora_A": torch.ones(4, 2), "lora_B": torch.zeros(2, 4)}, str(folder / "adapter_model.safetensors"))
    if state is not None:
        (folder / "trainer_state.json").write_text(state)
    return folder


def test_resume_skips_every_incomplete_checkpoint_and_names_each_with_what_is_wrong(tmp_path, capsys):
    """A checkpoint whose trainer_state.json does not parse, or whose weights are missing or cut off, is passed
    over (one line each, naming it and why) and the run resumes from the newest complete one; before, a torn
    trainer_state.json was picked and the run refused, and a checkpoint without weights was picked."""
    out = manifest(tmp_path / "run", status="running")
    done = _checkpoint(out, 2, state=json.dumps({"global_step": 2}))
    cut = _checkpoint(out, 3)
    weights = cut / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-5])  # the weights file cut off
    _checkpoint(out, 4, weights=False)  # trainer state, but no weights
    shards = _checkpoint(out, 5, weights=False)
    (shards / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"w": "model-00001-of-00001.safetensors"}}))
    _checkpoint(out, 6, state='{"global_step": 6, "log_hi')  # trainer_state.json cut off while written
    _checkpoint(out, 7, state="[]")  # JSON, but not a trainer state
    assert runs.last_checkpoint(out) == done
    _, _, checkpoint = runs.start(out, resume=True, overwrite=False)
    assert checkpoint == done
    said = capsys.readouterr().out.splitlines()
    skipped = [line for line in said if line.endswith("; skipped")]
    assert [line.split("checkpoint-")[1][0] for line in skipped] == ["3", "4", "5", "6", "7"]
    assert "adapter_model.safetensors is cut off" in skipped[0] and "no weights" in skipped[1]
    assert "model-00001-of-00001.safetensors is missing" in skipped[2]
    assert "trainer_state.json does not parse" in skipped[3] and "trainer_state.json does not parse" in skipped[4]
    assert said[-1] == f"resuming from {done} (step 2)"
    assert [p.name for p, _ in runs.incomplete_checkpoints(out)] == [f"checkpoint-{n}" for n in (3, 4, 5, 6, 7)]


def test_complete_marks_the_run_completed_before_it_removes_the_checkpoints(tmp_path, monkeypatch):
    """A kill between the two steps must leave a completed run with its checkpoints, never an unfinished run whose
    checkpoints are gone (which resume=true would restart from step 0)."""
    out = manifest(tmp_path / "run", status="running")
    _checkpoint(out, 2)
    seen = []
    removing = runs.remove_checkpoints
    monkeypatch.setattr(runs, "remove_checkpoints",
                        lambda run_dir: (seen.append(runs.read_manifest(run_dir)["status"]), removing(run_dir)))
    record = runs.read_manifest(out)
    runs.complete(out, record, keep_checkpoints=False, metrics={"train_loss": 1.0})
    assert seen == ["completed"]
    assert runs.read_manifest(out)["metrics"] == {"train_loss": 1.0}
    assert not (out / "checkpoints").exists() and not (out / ".checkpoints.removed").exists()
    kept = manifest(tmp_path / "kept", status="running")
    _checkpoint(kept, 2)
    runs.complete(kept, runs.read_manifest(kept), keep_checkpoints=True)
    assert runs.read_manifest(kept)["status"] == "completed" and runs.last_checkpoint(kept).name == "checkpoint-2"


# ------------------------------------------------- outputs other than runs: replaced only once complete


def _earlier(folder):
    folder.mkdir(parents=True)
    (folder / "results.json").write_text('{"earlier": true}')
    return folder


def _contents(folder) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _hidden(parent) -> list:
    return [p.name for p in parent.rglob(".*")]


def test_new_folder_is_swapped_in_only_when_the_block_succeeds(tmp_path):
    out = _earlier(tmp_path / "out")
    before = _contents(out)
    from medtune.errors import MedtuneError

    with pytest.raises(MedtuneError, match="not empty"):
        with runs.new_folder(out):
            pass
    with pytest.raises(KeyboardInterrupt):  # Ctrl-C midway, with overwrite: the earlier folder stays
        with runs.new_folder(out, overwrite=True) as tmp:
            (tmp / "results.json").write_text("half")
            raise KeyboardInterrupt
    assert _contents(out) == before and _hidden(tmp_path) == []
    with runs.new_folder(out, overwrite=True) as tmp:
        (tmp / "model.safetensors").write_text("new")
    assert _contents(out) == {"model.safetensors": b"new"} and _hidden(tmp_path) == []


def test_replaced_in_place_puts_the_earlier_folder_back_when_the_block_fails(tmp_path):
    out = _earlier(tmp_path / "sweep")
    before = _contents(out)
    with pytest.raises(RuntimeError):
        with runs.replaced_in_place(out, overwrite=True) as folder:
            assert folder == out and not (out / "results.json").exists()  # written in place, the earlier one aside
            (out / "alpha-0").mkdir()
            raise RuntimeError("evaluation failed")
    assert _contents(out) == before and _hidden(tmp_path) == []
    # killed midway (kill -9): the earlier folder still waits aside; the next attempt replaces the partial one
    os.replace(out, runs.aside_folder(out))
    out.mkdir()
    (out / "partial").write_text("cut off")
    with pytest.raises(RuntimeError):
        with runs.replaced_in_place(out, overwrite=True):
            raise RuntimeError("failed again")
    assert _contents(out) == before and _hidden(tmp_path) == []
    with runs.replaced_in_place(out, overwrite=True):
        (out / "sweep.json").write_text("{}")
    assert _contents(out) == {"sweep.json": b"{}"} and _hidden(tmp_path) == []
    with pytest.raises(RuntimeError):  # a new folder: nothing of a failed attempt stays
        with runs.replaced_in_place(tmp_path / "new"):
            (tmp_path / "new" / "x").write_text("x")
            raise RuntimeError
    assert not (tmp_path / "new").exists()


def test_files_into_changes_nothing_unless_every_file_is_written(tmp_path):
    out = _earlier(tmp_path / "ev")
    (out / "notes.txt").write_text("the user's own file")
    (out / "perplexity.png").write_text("an earlier plot")
    before = _contents(out)
    with pytest.raises(OSError):
        with runs.files_into(out, replaces=["perplexity.png"]) as tmp:
            (tmp / "results.json").write_text("new")
            raise OSError("disk full")
    assert _contents(out) == before and _hidden(tmp_path) == []
    with runs.files_into(out, replaces=["perplexity.png"]) as tmp:
        (tmp / "results.json").write_text("new")
    # the new file replaces its namesake, a plot this write did not make goes, the user's own file stays
    assert _contents(out) == {"notes.txt": b"the user's own file", "results.json": b"new"}
    with pytest.raises(OSError):
        with runs.files_into(tmp_path / "fresh"):
            raise OSError
    assert not (tmp_path / "fresh").exists() and _hidden(tmp_path) == []


def test_an_evaluation_that_fails_while_writing_keeps_the_earlier_one(tmp_path, monkeypatch):
    """`medtune eval` wrote results.json into its folder and then the report: a failure in between left the
    earlier evaluation's report beside the new results."""
    from dataclasses import replace

    from medtune.eval import report, runner
    from tiny import save_tiny

    model = save_tiny(tmp_path / "tiny")
    exam = tmp_path / "exam.jsonl"
    exam.write_text("".join(json.dumps({"question": f"Q{i}?", "options": ["fever", "rest"], "answer": i % 2}) + "\n"
                            for i in range(2)))
    settings = runner.EvalSettings(tasks=["mcq"], files={"mcq": str(exam)}, batch_size=2)
    out = runner.evaluate(str(model), settings, str(tmp_path / "ev"))
    (out / "notes.txt").write_text("the user's own file")
    before = _contents(out)
    assert {"results.json", "items.jsonl", "report.html", "notes.txt"} <= set(before)

    def failing_report(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(report, "write_report", failing_report)
    with pytest.raises(OSError, match="disk full"):  # another evaluation (one item): its results differ
        runner.evaluate(str(model), replace(settings, limit=1), str(out))
    assert _contents(out) == before and _hidden(tmp_path) == []
    with pytest.raises(OSError, match="disk full"):
        runner.evaluate(str(model), settings, str(tmp_path / "new"))
    assert not (tmp_path / "new").exists()
    monkeypatch.undo()
    runner.evaluate(str(model), settings, str(out))
    after = _contents(out)
    assert after["notes.txt"] == before["notes.txt"] and json.loads(after["results.json"])["created"]
    assert _hidden(tmp_path) == []
