"""The run folder: `medtune runs` lists every folder and never fails as a whole for one bad one."""

import json

from medtune import runs
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

    rows = {r["path"]: r for r in runs.list_runs(root)}
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
    done = out / "checkpoints" / "checkpoint-2"
    done.mkdir()
    (done / "trainer_state.json").write_text("{}")
    _, _, checkpoint = runs.start(out, resume=True, overwrite=False)
    assert checkpoint == done
    said = capsys.readouterr().out
    assert "checkpoint-5 is incomplete" in said and f"resuming from {done} (step 2)" in said
