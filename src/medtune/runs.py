"""The run folder: weights, tokenizer, checkpoints/, logs/ and `medtune.json`, the manifest that says what
was trained, from what, on what data, with which libraries, and with what result.

Later stages, `chat`, `eval` and `serve` take just the folder. Files are written to a temporary name and
renamed, so an interrupted or failed run never leaves a half-written file, and never touches another run.
Folders are replaced the same way: a training run's folder through `prepare` + `replaces_on_success` (the
earlier run kept aside), and other outputs (merges, evaluations, sweeps) through `new_folder`, `files_into`
and `replaced_in_place`: a failed attempt leaves the earlier folder as it was. Listing runs: listing.py.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import platform
import shutil
import sys
import tempfile
from importlib import metadata
from pathlib import Path

from medtune.errors import MedtuneError

MANIFEST = "medtune.json"
LIBRARIES = ("medtune", "torch", "transformers", "peft", "accelerate", "tokenizers", "safetensors", "trl", "datasets")


def is_main_process() -> bool:
    """False in every process but global rank 0 of a distributed launch (torchrun / accelerate launch set
    RANK): only rank 0 writes the run folder's files, so parallel workers never race on them."""
    return os.environ.get("RANK", "0") == "0"


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def library_versions() -> dict:
    out = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def ordinary_mode(folder: bool = False) -> int:
    """The mode `open()` (or `mkdir`) gives a new file (folder) here: 0666 (0777) less the umask. Temporary
    files and folders made by `tempfile` are owner-only (0600/0700); they get this before they are renamed into
    place, so every file of a run shares one mode."""
    umask = None
    try:  # Linux states it; changing the umask to read it would race with other threads
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                umask = int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    if umask is None:
        umask = os.umask(0o022)
        os.umask(umask)
    return (0o777 if folder else 0o666) & ~umask


def temporary_file(path, suffix: str = "") -> tuple[int, str]:
    """(fd, name) of a new temporary file beside `path` (same file system, so `os.replace` onto `path` is
    atomic) with the mode an ordinary new file gets."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.fchmod(fd, ordinary_mode())
    return fd, tmp


def temporary_folder(parent, prefix: str) -> Path:
    """A new temporary folder `parent/PREFIX...` with an ordinary folder's mode (it may be renamed into place)."""
    tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    os.chmod(tmp, ordinary_mode(folder=True))
    return tmp


def ordinary_modes(path) -> None:
    """Give `path` (a file, or a folder and everything in it) the modes ordinary new files and folders get here.
    safetensors writes owner-only (0600) files, and tempfile makes 0600/0700 ones; a run's files share one mode."""
    path = Path(path)
    items = [path, *path.rglob("*")] if path.is_dir() else [path]
    for item in items:
        if not item.is_symlink():
            os.chmod(item, ordinary_mode(folder=item.is_dir()))


def atomic_write_text(path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = temporary_file(path)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_json(path, data) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def read_manifest(run_dir) -> dict | None:
    path = Path(run_dir) / MANIFEST
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise MedtuneError(f"run manifest is not valid JSON: {exc}", where=str(path)) from None


def check_output_dir(output_dir, *, resume: bool, overwrite: bool) -> None:
    """Raise if `output_dir` may not be written (a finished run is never overwritten silently); touches nothing."""
    out = Path(output_dir)
    if out.exists() and not out.is_dir():
        raise MedtuneError("output_dir is a file, not a folder", where=str(out), hint="choose another output_dir")
    manifest = read_manifest(out)
    if manifest and manifest.get("status") == "completed" and not overwrite:
        raise MedtuneError(
            "a completed run is already in this folder",
            where=str(out),
            hint="choose another output_dir, or pass overwrite=true to replace it",
        )
    if out.exists() and any(out.iterdir()) and manifest is None and not overwrite:
        raise MedtuneError(
            "output folder exists and is not a medtune run",
            where=str(out),
            hint="choose another output_dir, or pass overwrite=true",
        )


_SET_ASIDE: dict[str, Path] = {}  # run folder -> the earlier run moved aside while a new one replaces it


def aside_folder(output_dir) -> Path:
    """Where `overwrite=true` keeps the run it replaces until the new one completes: `.NAME.replaced` beside it."""
    out = Path(output_dir)
    return out.parent / f".{out.name}.replaced"


def prepare(output_dir, *, resume: bool, overwrite: bool) -> Path:
    """Check `output_dir` and create it. Call once the inputs are known to be good. With overwrite, what is in
    it is not deleted but moved aside (`aside_folder`): `complete` deletes it once the new run has completed, and
    a stage's `run` decorated with `replaces_on_success` puts it back if the new run fails (an error, Ctrl-C).
    After kill -9 it stays aside until the new run completes (resume=true) or is started again.
    In a distributed launch only rank 0 checks and moves the folder; the others only make sure it exists."""
    out = Path(output_dir)
    if not is_main_process():
        out.mkdir(parents=True, exist_ok=True)
        return out
    check_output_dir(output_dir, resume=resume, overwrite=overwrite)
    if overwrite and out.exists() and not resume:
        aside = aside_folder(out)
        if aside.exists():  # an earlier overwrite was killed: the run it replaces still waits there; this is its attempt
            shutil.rmtree(out)
        else:
            os.replace(out, aside)
        _SET_ASIDE[str(out.resolve())] = aside
    out.mkdir(parents=True, exist_ok=True)
    return out


def replaces_on_success(run):
    """Decorates a stage's `run(cfg, ...)`: if it fails (an error, Ctrl-C) the run folder is as it was before:
    the run that overwrite=true moved aside is put back (the failed attempt removed), and a folder this call
    created that holds nothing (LoRA could not be applied, the model did not load) is removed. A new run that
    failed in training keeps its folder (failed, with its checkpoints: resume=true continues it)."""
    import functools

    @functools.wraps(run)
    def wrapper(cfg, *args, **kwargs):
        out = Path(cfg.output_dir)
        existed = out.exists()
        try:
            return run(cfg, *args, **kwargs)
        except BaseException:
            if is_main_process():
                _undo(out, existed)
            raise

    return wrapper


def _undo(out: Path, existed: bool) -> None:
    aside = _SET_ASIDE.pop(str(out.resolve()), None)
    if aside is not None and aside.exists():
        shutil.rmtree(out, ignore_errors=True)
        os.replace(aside, out)
        print(f"note: this run failed; the run it was to replace is back in {out}", file=sys.stderr)
    elif not existed and out.is_dir() and not any(out.iterdir()):
        out.rmdir()


# ------------------------------------------------------------------------------ outputs other than runs


def check_new_folder(out, *, overwrite: bool, inputs=()) -> None:
    """Refuse a file, one of the `inputs` (paths), or an existing non-empty folder (unless overwrite)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise MedtuneError("output path is a file, not a folder", where=str(out), hint="choose a new folder")
    resolved = out.resolve()
    for spec in inputs:
        p = Path(str(spec))
        if p.exists() and p.resolve() == resolved:
            raise MedtuneError("the output folder is one of the inputs", where=str(out), hint="choose a new folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise MedtuneError("output folder exists and is not empty", where=str(out),
                           hint="choose a new folder, or pass --overwrite to replace it")


@contextlib.contextmanager
def new_folder(out, *, overwrite: bool = False, inputs=()):
    """Check `out` (`check_new_folder`) and yield a temporary folder beside it to write into; on success it
    becomes `out`, replacing an earlier folder only then (overwrite). On any failure (an error, Ctrl-C) the
    temporary folder is removed and `out` is as it was."""
    out = Path(out)
    check_new_folder(out, overwrite=overwrite, inputs=inputs)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_folder(out.parent, f".{out.name}.")
    old = None
    try:
        yield tmp
        ordinary_modes(tmp)  # safetensors writes its shards owner-only
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old.", dir=out.parent))
            os.replace(out, old / "previous")  # keep the old folder until the new one is in place
        try:
            os.replace(tmp, out)
        except BaseException:
            if old is not None:
                os.replace(old / "previous", out)
            raise
    finally:
        for leftover in (tmp, old):
            if leftover is not None and leftover.exists():
                shutil.rmtree(leftover, ignore_errors=True)


@contextlib.contextmanager
def replaced_in_place(out, *, overwrite: bool = False, inputs=()):
    """Check `out` as `new_folder` does, and yield `out` itself to write in (for outputs whose files record
    their own paths, such as a merge sweep's models and evaluations). An earlier folder waits in
    `aside_folder(out)` until the block succeeds; on failure what the block wrote is removed and the earlier
    folder put back. After kill -9 the earlier folder stays aside until an attempt succeeds."""
    out = Path(out)
    check_new_folder(out, overwrite=overwrite, inputs=inputs)
    aside = aside_folder(out)
    if out.exists():
        if aside.exists():  # an attempt was killed: its folder is partial, the one it replaces still waits aside
            shutil.rmtree(out)
        else:
            os.replace(out, aside)
    try:
        out.mkdir(parents=True)
        yield out
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)
        if aside.exists():
            os.replace(aside, out)
            print(f"note: this attempt failed; the folder it was to replace is back in {out}", file=sys.stderr)
        raise
    shutil.rmtree(aside, ignore_errors=True)


@contextlib.contextmanager
def files_into(folder, *, replaces=()):
    """Yield a temporary folder inside `folder` (made if missing) to write files into; on success each of them
    is renamed into `folder`, replacing one of the same name, and the folder's other files stay, but for the
    names in `replaces` (files an earlier write may have left that this one did not write: they are removed).
    On failure nothing in `folder` has changed (and a folder this call made is removed)."""
    folder = Path(folder)
    made = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    tmp = temporary_folder(folder, ".write.")
    try:
        yield tmp
        ordinary_modes(tmp)
        for name in replaces:
            if not (tmp / name).exists() and (folder / name).is_file():
                (folder / name).unlink()
        for item in tmp.iterdir():
            target = folder / item.name
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            os.replace(item, target)
    except BaseException:
        if made:
            shutil.rmtree(folder, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def scratch_folder(beside):
    """A hidden scratch folder beside the path `beside` (work files of a merge), removed afterwards."""
    beside = Path(beside)
    beside.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{beside.name}.work.", dir=beside.parent))
    try:
        yield work
    finally:
        shutil.rmtree(work, ignore_errors=True)


def start(output_dir, *, resume: bool, overwrite: bool) -> tuple[Path, dict | None, Path | None]:
    """Check a training stage's output folder, touching nothing: returns (run folder, the manifest already
    there or None, the checkpoint to resume from or None). An unfinished run needs resume or overwrite.
    In a distributed launch the checks are rank 0's: the others would otherwise find the manifest rank 0 has
    just written and refuse it as an unfinished run."""
    run_dir = Path(output_dir)
    if not is_main_process():
        return run_dir, None if overwrite and not resume else read_manifest(run_dir), last_checkpoint(run_dir) if resume else None
    check_output_dir(output_dir, resume=resume, overwrite=overwrite)
    previous = None if overwrite and not resume else read_manifest(run_dir)
    checkpoint = last_checkpoint(run_dir) if resume else None
    if previous and previous.get("status") != "completed" and not resume and not overwrite:
        raise MedtuneError("an unfinished run is in this folder", where=str(run_dir),
                           hint="pass resume=true to continue it, or overwrite=true to start again")
    if resume:
        _say_where_resume_starts(run_dir, checkpoint)
    return run_dir, previous, checkpoint


def _say_where_resume_starts(run_dir: Path, checkpoint: Path | None) -> None:
    """resume=true says what it continues from, and which checkpoints it passes over (cut off while written)."""
    for p, problem in incomplete_checkpoints(run_dir):
        print(f"note: {p} is incomplete ({problem}); skipped")
    if checkpoint is not None:
        print(f"resuming from {checkpoint} (step {checkpoint.name.split('-')[-1]})")
    elif (run_dir / "checkpoints").is_dir() and any((run_dir / "checkpoints").glob("checkpoint-*")):
        print(f"note: no complete checkpoint in {run_dir / 'checkpoints'}: the run starts from step 0")


def refuse_changed_data(run_dir, previous: dict | None, checkpoint, fingerprints) -> None:
    """A run resumes only on the data it started with (same files, sizes and hashes)."""
    if checkpoint is not None and previous and previous.get("data") != fingerprints:
        raise MedtuneError("the data changed since this run started, so it cannot resume where it stopped",
                           where=str(run_dir), hint="restore the original data files, or pass overwrite=true to start again")


def model_record(model_cfg, loaded, template: str | None) -> dict:
    """The manifest's `model` block: what was asked for, the folder the new weights apply to (the last run of
    the chain, or the base), the original base, and the chat template trained with."""
    return {"spec": model_cfg.name_or_path, "weights": loaded.chain[-1] if loaded.chain else loaded.base,
            "base": loaded.base, "template": template}


def train(trainer, run_dir, manifest: dict, checkpoint, started: float) -> dict:
    """`trainer.train()`, from `checkpoint` when resuming; any failure (an error, Ctrl-C) is recorded in the
    manifest as `failed` before it propagates. Returns {train_loss, steps, train_runtime_s}."""
    import time

    keep_short_runs_training(trainer)
    checkpoints_in_ordinary_modes(trainer)
    try:
        result = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    except BaseException:
        manifest["status"] = "failed"
        write_manifest(run_dir, manifest)
        raise
    return {"train_loss": result.training_loss, "steps": result.global_step,
            "train_runtime_s": round(time.time() - started, 1)}


def keep_short_runs_training(trainer, setting: str = "train.warmup") -> None:
    """Warm-up never swallows a whole short run: when `setting` asks for as many warm-up steps as the run has
    (a one-step smoke run with warmup 0.03 rounds up to 1 step, trained at rate 0), warm up over one step fewer,
    so the last step trains at the full rate, and say so naming `setting`. A scheduler this cannot shorten gets
    a warning instead. Add to a transformers Trainer before `train()`."""
    import functools

    from transformers import TrainerCallback

    class ShortRunWarmup(TrainerCallback):
        def on_train_begin(self, args, state, control, lr_scheduler=None, optimizer=None, **kwargs):
            steps = state.max_steps
            warm = args.get_warmup_steps(steps)
            if steps < 1 or warm < steps or lr_scheduler is None:
                return
            sched = getattr(lr_scheduler, "scheduler", lr_scheduler)  # accelerate may wrap it
            lambdas = getattr(sched, "lr_lambdas", None)
            if not lambdas:  # no warm-up in this scheduler (reduce_lr_on_plateau)
                return
            shortened = False
            for i, f in enumerate(lambdas):
                if isinstance(f, functools.partial) and f.keywords.get("num_warmup_steps", 0) >= steps:
                    lambdas[i] = functools.partial(f.func, *f.args, **{**f.keywords, "num_warmup_steps": steps - 1})
                    shortened = True
            if not shortened:
                print(f"warning: {setting}={args.warmup_steps:g} warms up over {warm} steps, the whole {steps}-step "
                      f"run: it trains at a reduced rate throughout (lower {setting})")
                return
            groups = getattr(optimizer, "param_groups", None) or sched.optimizer.param_groups
            for group, base, f in zip(groups, sched.base_lrs, lambdas):
                group["lr"] = base * f(sched.last_epoch)
            sched._last_lr = [group["lr"] for group in groups]
            if is_main_process():
                print(f"note: {setting}={args.warmup_steps:g} would warm up over {warm} steps, the whole {steps}-step "
                      f"run; warming up over {steps - 1} instead, so the last step trains at the full rate")

    trainer.add_callback(ShortRunWarmup())


def checkpoints_in_ordinary_modes(trainer) -> None:
    """Each checkpoint a transformers Trainer saves gets the ordinary file modes (its safetensors are 0600)."""
    from transformers import TrainerCallback

    class OrdinaryModes(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if state.is_world_process_zero and folder.is_dir():
                ordinary_modes(folder)

    trainer.add_callback(OrdinaryModes())


# what a Trainer (or ppo.save_checkpoint) writes as a checkpoint's weights: adapter, full model, or shards
WEIGHT_FILES = ("adapter_model.safetensors", "model.safetensors", "model.safetensors.index.json",
                "adapter_model.bin", "pytorch_model.bin", "pytorch_model.bin.index.json")


def _safetensors_problem(path: Path) -> str | None:
    """Why a .safetensors file is not whole (None: its header reads and the file holds every byte it lists)."""
    try:
        with open(path, "rb") as f:
            size = int.from_bytes(f.read(8), "little")
            header = json.loads(f.read(size)) if 0 < size < 100_000_000 else None
        ends = [v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"] if isinstance(header, dict) else None
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        ends = None
    if ends is None:
        return f"{path.name} does not read as safetensors"
    if path.stat().st_size < 8 + size + max(ends, default=0):
        return f"{path.name} is cut off"
    return None


def checkpoint_problem(folder) -> str | None:
    """Why the `checkpoint-N` folder cannot be resumed from, in a few words; None when it is complete: its
    trainer_state.json (written last) parses, and its weights are there and whole (an index's shards too)."""
    folder = Path(folder)
    state = folder / "trainer_state.json"
    if not state.is_file():
        return "no trainer_state.json: interrupted while it was written"
    try:
        if not isinstance(json.loads(state.read_text(encoding="utf-8")), dict):
            raise ValueError
    except (OSError, ValueError):
        return "its trainer_state.json does not parse: cut off while it was written"
    weights = [folder / name for name in WEIGHT_FILES if (folder / name).is_file()]
    for index in [w for w in weights if w.name.endswith(".index.json")]:
        try:
            shards = set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values())
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return f"its {index.name} does not parse"
        missing = sorted(s for s in shards if not (folder / s).is_file())
        if missing:
            return f"its weights are incomplete ({missing[0]} is missing)"
        weights += [folder / s for s in shards]
    if not weights and not any(folder.glob("pytorch_model_fsdp_*")) and not any(folder.glob("global_step*")):
        return "no weights in it"
    for w in weights:
        problem = _safetensors_problem(w) if w.suffix == ".safetensors" else None
        if problem:
            return problem
    return None


def _checkpoints(run_dir) -> list[tuple[int, Path]]:
    """(step, folder) of every `checkpoint-N` folder of the run, oldest first."""
    found = [(int(p.name.split("-")[-1]), p) for p in (Path(run_dir) / "checkpoints").glob("checkpoint-*")
             if p.is_dir() and p.name.split("-")[-1].isdigit()]
    return sorted(found)


def incomplete_checkpoints(run_dir) -> list[tuple[Path, str]]:
    """(folder, what is wrong) of each checkpoint that `last_checkpoint` passes over, oldest first."""
    return [(p, problem) for _, p in _checkpoints(run_dir) if (problem := checkpoint_problem(p))]


def last_checkpoint(run_dir) -> Path | None:
    """The newest complete `checkpoint-N` folder (checkpoint_problem finds nothing wrong with it); newer ones
    cut off by a kill while they were written are skipped (`start` names them)."""
    complete_ones = [p for _, p in _checkpoints(run_dir) if checkpoint_problem(p) is None]
    return complete_ones[-1] if complete_ones else None


def write_manifest(run_dir, manifest: dict) -> None:
    if not is_main_process():
        return
    manifest = dict(manifest)
    manifest["updated"] = now()
    write_json(Path(run_dir) / MANIFEST, manifest)


def to_plain(cfg) -> dict:
    """A config dataclass as plain JSON-able data (what the manifest records as the resolved config)."""
    import dataclasses

    return dataclasses.asdict(cfg)


def save_weights(run_dir, model, tokenizer) -> None:
    """Save weights (adapter or full) and tokenizer into `run_dir` via a temporary folder, file by file
    renamed into place, so a crash never leaves a half-written weight file in the run folder."""
    if not is_main_process():
        return
    with files_into(run_dir) as tmp:
        kwargs = {}
        if hasattr(model, "peft_config") and any(
                getattr(c, "trainable_token_indices", None) for c in model.peft_config.values()):
            # new vocabulary trains as PEFT trainable tokens, saved with the adapter; loading resizes the base
            # first (models.load), so the whole embedding matrix need not be stored again
            kwargs["save_embedding_layers"] = False
        model.save_pretrained(tmp, **kwargs)
        tokenizer.save_pretrained(tmp)


def remove_checkpoints(run_dir) -> None:
    """Delete RUN/checkpoints, renamed away first so that no half-deleted checkpoint is ever found."""
    checkpoints = Path(run_dir) / "checkpoints"
    if not is_main_process() or not checkpoints.exists():
        return
    gone = Path(run_dir) / ".checkpoints.removed"
    shutil.rmtree(gone, ignore_errors=True)
    os.replace(checkpoints, gone)
    shutil.rmtree(gone, ignore_errors=True)


def complete(run_dir, manifest: dict, *, keep_checkpoints: bool, **fields) -> None:
    """The end of a training run, once its weights are saved: mark the manifest completed with its finish time
    and `fields` (metrics, history, ...), then drop the step checkpoints (unless kept). In that order: a kill in
    between leaves a completed run with its checkpoints, never an unfinished run without them."""
    manifest.update(status="completed", finished=now(), **fields)
    write_manifest(run_dir, manifest)
    if not keep_checkpoints:
        remove_checkpoints(run_dir)
    if is_main_process():  # the run it replaced (overwrite=true) is no longer needed
        _SET_ASIDE.pop(str(Path(run_dir).resolve()), None)
        shutil.rmtree(aside_folder(run_dir), ignore_errors=True)
