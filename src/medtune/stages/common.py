"""What the training stages (pt, sft, rm, dpo, ppo, grpo) share: the lines each `run` used to write out.

- `TrainConfig` and `trainer_arguments` / `training_arguments`: the recipe's optimisation settings and their one
  mapping to transformers' TrainingArguments (which TRL's configs extend);
- `split_validation`: the held-out examples; `fitted_pairs`: preference pairs made to fit, then split (rm, dpo);
- `system_prompt_format`: what `data.system_prompt` means (unset: the template's own; "": none at all);
- `PromptData` and `read_prompt_files`: the prompt files of the RL stages; `reward_run`: the one check of a
  `medtune rm` run used as a reward;
- the run's start and end: `manifest`, `parameter_counts`, `begin`, `train`, `failed_on_error`, `finish`,
  `save_tensors`, and the stage-side checkpoint helpers (`checkpoint_step`, `trim_event_logs`).

runs.py keeps the run folder itself (where it is, replacing, the manifest file); this module keeps what a stage
does with it. Each stage's `run` still reads top to bottom: config -> run folder -> data -> model -> train -> save.
"""

from __future__ import annotations

import contextlib
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional, Union

from medtune import runs
from medtune.config import above, at_least, one_of
from medtune.errors import ConfigError, MedtuneError

# transformers' SchedulerType values, listed here so a recipe is checked without importing transformers
SCHEDULERS = ("linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup",
              "inverse_sqrt", "reduce_lr_on_plateau", "cosine_with_min_lr", "cosine_warmup_with_min_lr",
              "warmup_stable_decay")


@dataclass
class TrainConfig:
    """Optimisation. `batch_size` counts rows (packed rows hold several examples). `bf16`: auto uses bf16
    autocast where the CPU/GPU supports it. `max_steps` > 0 overrides `epochs`."""

    learning_rate: float = field(default=2e-4, metadata=above(0))
    epochs: float = field(default=1.0, metadata=above(0))
    max_steps: int = field(default=-1, metadata=at_least(-1))
    batch_size: int = field(default=4, metadata=at_least(1))
    grad_accum: int = field(default=1, metadata=at_least(1))
    warmup: float = field(default=0.03, metadata=at_least(0))
    weight_decay: float = field(default=0.0, metadata=at_least(0))
    scheduler: str = field(default="cosine", metadata=one_of(*SCHEDULERS))
    max_grad_norm: float = field(default=1.0, metadata=at_least(0))
    bf16: Union[Literal["auto"], bool] = "auto"
    fp16: bool = False
    gradient_checkpointing: bool = False
    logging_steps: int = field(default=10, metadata=at_least(1))
    save_steps: int = field(default=200, metadata=at_least(1))
    save_total_limit: int = field(default=2, metadata=at_least(1))
    eval_steps: int = field(default=0, metadata=at_least(0))
    keep_checkpoints: bool = False
    seed: int = field(default=42, metadata=at_least(0))


def bf16_wanted(setting) -> bool:
    """`auto`: bf16 autocast on a GPU that has bf16. Not on CPU: measured slower than fp32 on an AVX-512-bf16
    Xeon (matmul 165 vs 325 GFLOP/s; docs/benchmarks.md)."""
    import torch

    if setting != "auto":
        return bool(setting)
    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def trainer_arguments(t: TrainConfig, run_dir: Path, has_val: bool) -> dict:
    """`t` as keyword arguments of transformers' TrainingArguments (TRL's DPO/ORPO/CPO/GRPO/RLOO configs extend
    it): checkpoints in RUN/checkpoints, TensorBoard logs, held-out evaluation every `eval_steps` when there is
    held-out data. Activation checkpointing goes by its current name (`gradient_checkpointing=` is deprecated)."""
    import torch

    eval_steps = t.eval_steps if has_val and t.eval_steps > 0 else None
    return dict(
        output_dir=str(Path(run_dir) / "checkpoints"),
        per_device_train_batch_size=t.batch_size,
        per_device_eval_batch_size=t.batch_size,
        gradient_accumulation_steps=t.grad_accum,
        learning_rate=t.learning_rate,
        num_train_epochs=t.epochs,
        max_steps=t.max_steps,
        warmup_steps=t.warmup,
        weight_decay=t.weight_decay,
        lr_scheduler_type=t.scheduler,
        max_grad_norm=t.max_grad_norm,
        bf16=bf16_wanted(t.bf16),
        fp16=t.fp16,
        activation_checkpointing=t.gradient_checkpointing,
        logging_steps=t.logging_steps,
        logging_first_step=True,
        save_strategy="steps",
        save_steps=t.save_steps,
        save_total_limit=t.save_total_limit,
        eval_strategy="steps" if eval_steps else "no",
        eval_steps=eval_steps,
        seed=t.seed,
        data_seed=t.seed,
        use_cpu=not torch.cuda.is_available(),
        report_to=["tensorboard"],
        disable_tqdm=False,
    )


def training_arguments(t: TrainConfig, run_dir: Path, has_val: bool):
    """TrainingArguments for the stages on transformers' own Trainer (pt, sft, rm): `trainer_arguments`, plus the
    held-out evaluation once before training, eval loss only, and every column left to the stage's collator."""
    from transformers import TrainingArguments

    args = trainer_arguments(t, run_dir, has_val)
    return TrainingArguments(
        **args,
        eval_on_start=bool(args["eval_steps"]),
        prediction_loss_only=True,  # eval loss only: never gather vocabulary-wide logits over the eval set
        remove_unused_columns=False,
        dataloader_num_workers=0,
        use_cache=False,
    )


def split_validation(examples: list, val_size: float, seed: int):
    """(train, held-out): `val_size` as a share (0 < x < 1) or a count (x >= 1) of `examples`, drawn with `seed`."""
    if val_size <= 0:
        return examples, []
    n_val = int(val_size) if val_size >= 1 else max(1, round(len(examples) * val_size))
    if n_val >= len(examples):
        raise MedtuneError(f"data.val_size={val_size} leaves no training examples", hint="lower data.val_size")
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    val = set(order[:n_val])
    return [e for i, e in enumerate(examples) if i not in val], [e for i, e in enumerate(examples) if i in val]


# -------------------------------------------------------------------------------------- system prompt


def with_system_prompt(messages: list[dict], system_prompt: str | None) -> list[dict]:
    """`messages` with `system_prompt` as a first system message when it has none (and a prompt is set)."""
    if system_prompt and messages[0]["role"] != "system":
        return [{"role": "system", "content": system_prompt}, *messages]
    return messages


def system_prompt_format(tokenizer, fmt, system_prompt: str | None, setting: str = "data.system_prompt"):
    """What `setting` means for a run, the same in every stage. Returns (the chat format to train with, the
    system prompt a dialogue without one gets, for the manifest's `default_system_prompt`):
    unset (None): the template's own behaviour, which may insert a default (SmolLM2's); "": no system prompt
    at all: the default is taken out of the template (installed in the tokenizer, so the saved run, TRL's
    rendering, chat, serve and eval all go without it); any other text: that system message."""
    from medtune.data import templates

    default = templates.default_system_prompt(tokenizer, fmt)
    if system_prompt is None:
        return fmt, default
    if system_prompt:
        return fmt, system_prompt
    plain = templates.without_default_system(tokenizer, fmt)
    if plain is None:
        print(f'warning: {setting} is "" but the chat template\'s default system prompt ({default!r}) cannot be taken '
              f"out of it: dialogues without a system message get it (set {setting} to replace it)")
        return fmt, None
    if plain is not fmt:  # the tokenizer carries the edited template, saved with the run: name it as its own
        templates.install_format(tokenizer, plain)
        plain = templates.ChatFormat("tokenizer", None, plain.special)
        print(f'note: {setting} is "": the chat template\'s default system prompt ({default!r}) is taken out of the '
              "run's template")
    return plain, None


# -------------------------------------------------------------------------------- prompts and rewards


@dataclass
class PromptData:
    """Prompt files of the RL stages (ppo's and grpo's `data` sections add their own keys to these).

    path: one file or a list: prompt-only records {"prompt": "..." or [messages]} or preference files (their
      prompts are used; docs/data-formats.md).
    truncation: a longer prompt is cut (keep_end, default: earlier turns go first, then the start of the
      question's text; the system message stays while it fits; keep_start: the question keeps its start) or
      dropped (drop); counted in the summary and data_stats. See data/preference.py cut_prompt.
    max_samples: use only the first N prompts of each file (0 = all).
    system_prompt: a system message added to prompts that have none. Unset (null): the chat template's own
      behaviour (SmolLM2's inserts its default prompt); "": none at all (the default taken out of the run's
      template; docs/templates.md).
    """

    path: list[str] = field(default_factory=list)
    truncation: Literal["drop", "keep_end", "keep_start"] = "keep_end"
    max_samples: int = field(default=0, metadata=at_least(0))
    system_prompt: Optional[str] = None


def read_prompt_files(data: PromptData) -> list[tuple[Path, list[dict]]]:
    """(file, its prompt records) for every file of `data.path`, each record checked (preference.load_prompts:
    {"prompt": [messages], "source", ...the record's other fields}) and cut at `data.max_samples`."""
    from medtune.data import preference, resolve_path

    paths = [data.path] if isinstance(data.path, str) else list(data.path)
    if not paths:
        raise ConfigError("no prompts", where="data.path", hint="set data.path to one or more prompt files")
    out = []
    for p in [Path(resolve_path(x)) for x in paths]:
        found = preference.load_prompts(p)
        out.append((p, found[: data.max_samples] if data.max_samples else found))
    return out


def fitted_pairs(data, pairs: list[dict], tokenizer, fmt, stats: dict, seed: int) -> tuple[list[dict], list[dict]]:
    """The preference pairs made to fit `data.max_length` (preference.fit_pairs: cut per `data.truncation`, or
    dropped; counted in `stats`, which the summary line prints), split into (train, held-out) by `data.val_size`."""
    from medtune.data import preference

    stats["pairs"] = len(pairs)
    fitted = preference.fit_pairs(pairs, tokenizer, fmt, stats, max_length=data.max_length, truncation=data.truncation,
                                  max_prompt_length=data.max_prompt_length, max_answer_length=data.max_answer_length)
    if not fitted:
        raise MedtuneError(f"no pair fits data.max_length={data.max_length}",
                           hint="raise data.max_length, or use data.truncation=keep_end")
    if runs.is_main_process():
        print(f"data: {preference.fit_summary(stats)}")
    train, val = split_validation(fitted, data.val_size, seed)
    stats.update(train_pairs=len(train), val_pairs=len(val))
    return train, val


def reward_run(run: str) -> dict:
    """The manifest of the completed `medtune rm` run `run`, checked without loading it: one clear line for a
    missing setting, a folder that is not a reward-model run, or one that did not complete."""
    if not run:
        raise ConfigError("no reward model", where="reward_model", hint="set reward_model to a `medtune rm` run folder")
    target = Path(os.path.expanduser(run))
    manifest = runs.read_manifest(target) if target.is_dir() else None
    if not manifest or not manifest.get("reward_head"):
        raise MedtuneError("not a reward model run (no reward head)", where=str(run),
                           hint="train one with `medtune rm RECIPE` and pass its folder")
    if manifest.get("status") != "completed":
        raise MedtuneError("the reward model run did not complete", where=str(run),
                           hint="finish it (resume=true) or re-run `medtune rm`")
    return manifest


# ------------------------------------------------------------------------------- the run: start to end


def manifest(stage: str, cfg, previous: dict | None, loaded, template: str | None, data: list, data_stats: dict,
             **fields) -> dict:
    """The run's `medtune.json` as it starts (status running): what is trained (stage, adapter or full
    weights, the model and its template), the resolved config, the data's fingerprints and statistics, the
    library versions, and the stage's own `fields`. A resumed run keeps its creation time."""
    return {
        "stage": stage,
        "status": "running",
        "created": (previous or {}).get("created", runs.now()),
        "adapter": cfg.lora.method != "full",
        "model": runs.model_record(cfg.model, loaded, template),
        "config": runs.to_plain(cfg),
        "data": data,
        "data_stats": data_stats,
        "libraries": runs.library_versions(),
        **fields,
    }


def parameter_counts(model) -> dict:
    """{"trainable", "total"} parameter counts of `model`."""
    params = list(model.parameters())
    return {"trainable": sum(p.numel() for p in params if p.requires_grad), "total": sum(p.numel() for p in params)}


def checkpoint_step(checkpoint) -> int:
    """The step a `checkpoint-N` folder was saved at (0 for None: a run that starts from the beginning)."""
    return int(Path(checkpoint).name.rsplit("-", 1)[-1]) if checkpoint else 0


def begin(run_dir: Path, manifest: dict, checkpoint, *, resume: bool) -> None:
    """Write the manifest (status running) and send TensorBoard events to RUN/logs. A resumed run first drops
    the events logged after its checkpoint (they are logged again), so TensorBoard shows one curve."""
    runs.write_manifest(run_dir, manifest)
    os.environ["TENSORBOARD_LOGGING_DIR"] = str(Path(run_dir) / "logs")
    if resume and runs.is_main_process():
        trim_event_logs(Path(run_dir) / "logs", checkpoint_step(checkpoint))


def trim_event_logs(log_dir: Path, last_step: int) -> None:
    """Remove from every TensorBoard event file under `log_dir` the events of steps after `last_step` (each
    file rewritten to a temporary name and renamed). Events of step 0 (run metadata) are kept."""
    from tensorboard.backend.event_processing.event_file_loader import LegacyEventFileLoader
    from tensorboard.summary.writer.record_writer import RecordWriter

    for path in sorted(Path(log_dir).rglob("events.out.tfevents.*")) if Path(log_dir).is_dir() else []:
        try:
            events = list(LegacyEventFileLoader(str(path)).Load())
        except Exception:  # noqa: BLE001 - a file cut off mid-record: keep what reads
            events = []
        kept = [e for e in events if e.step <= last_step]
        if len(kept) == len(events) and events:
            continue
        fd, tmp = runs.temporary_file(path)
        with os.fdopen(fd, "wb") as f:
            writer = RecordWriter(f)
            for e in kept:
                writer.write(e.SerializeToString())
        os.replace(tmp, path)


def whole_run_loss(log_history: list[dict], steps: int) -> float | None:
    """The mean training loss over every step 1..`steps`, from the logged losses (each the mean since the
    previous log), or None when the logs do not reach `steps`."""
    total, last = 0.0, 0
    for h in log_history:
        if "loss" in h and "step" in h and h["step"] > last:
            total += h["loss"] * (h["step"] - last)
            last = h["step"]
    return total / last if last and last == steps else None


def train(trainer, run_dir: Path, manifest: dict, checkpoint, started: float) -> dict:
    """`runs.train` (resume from `checkpoint`; a failure is recorded in the manifest), with the loss logged at
    every checkpoint, so that a resumed run's `train_loss` covers every step, not only those after the resume.
    Returns {train_loss, steps, train_runtime_s}."""
    from transformers import TrainerCallback

    class LogAtCheckpoints(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if control.should_save or state.global_step >= state.max_steps:
                control.should_log = True

    trainer.add_callback(LogAtCheckpoints())
    metrics = runs.train(trainer, run_dir, manifest, checkpoint, started)
    if checkpoint is not None:
        whole = whole_run_loss(trainer.state.log_history, metrics["steps"])
        metrics["train_loss"] = whole if whole is not None else metrics["train_loss"]
    return metrics


@contextlib.contextmanager
def failed_on_error(run_dir: Path, manifest: dict):
    """Any failure inside (an error, Ctrl-C) marks the manifest `failed` before it propagates."""
    try:
        yield
    except BaseException:
        manifest["status"] = "failed"
        runs.write_manifest(run_dir, manifest)
        raise


def save_tensors(path: Path, state_dict: dict) -> None:
    """A state dict (a reward or value head) as safetensors at `path`: written to a temporary name with the
    ordinary file mode and renamed (rank 0 only)."""
    from safetensors.torch import save_file

    if not runs.is_main_process():
        return
    path = Path(path)
    tmp = path.parent / f".{path.name}.tmp"
    save_file({k: v.detach().float().cpu().contiguous() for k, v in state_dict.items()}, str(tmp))
    runs.ordinary_modes(tmp)
    os.replace(tmp, path)


def finish(run_dir: Path, manifest: dict, model, tokenizer, *, keep_checkpoints: bool, summary=None,
           **fields) -> None:
    """The end of a run: save the weights (adapter or full) and tokenizer, mark the manifest completed with
    `fields` (metrics, history, ...), then drop the step checkpoints unless kept (runs.complete), and print
    `summary()` on rank 0."""
    runs.save_weights(run_dir, model, tokenizer)
    runs.complete(run_dir, manifest, keep_checkpoints=keep_checkpoints, **fields)
    if summary is not None and runs.is_main_process():
        summary()
