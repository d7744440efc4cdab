"""On-policy distillation: a student learns a teacher's next-token distributions on its own samples.

Reads top to bottom: config -> run folder -> dialogues -> student (+ template, LoRA) and teacher -> prompts and
answers encoded -> TRL's GKD trainer -> train (or resume) -> held-out KL to the teacher -> save -> manifest.

Each step, with probability `lmbda`, the student samples answers to the batch's prompts and is trained on
them (on-policy); otherwise it is trained on the dataset's own answers. The loss at every answer token is the
generalized Jensen-Shannon divergence between teacher and student distributions (TRL GKDTrainer; Agarwal et
al. 2024): `beta` 0 is the forward KL(teacher || student), 1 the reverse KL, in between a mix. Teacher and
student must share a vocabulary (the same tokenizer family). The teacher may be a folder, a run or a hub id.

Every TRL import is inside this file, because TRL renames and moves things between releases.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Optional

from medtune import models, runs
from medtune.config import above, at_least, check, one_of
from medtune.data import formats, templates
from medtune.errors import ConfigError, MedtuneError
from medtune.models import LoraConfig, ModelConfig
from medtune.stages import common
from medtune.stages.common import TrainConfig

_SHARE = check(lambda v: 0 <= v <= 1, "between 0 and 1")


@dataclass
class DistillData:
    """Prompts (and reference answers, for the off-policy steps): dialogue files in any SFT format.

    path: one file or a list; the last assistant turn of each dialogue is what the student answers.
    max_length: longest prompt + answer in tokens; longer dialogues are dropped (counted in the summary).
    val_size: held-out share (0 < x < 1) or count (x >= 1) on which the KL to the teacher is measured.
    max_samples: use only the first N dialogues of each file (0 = all).
    system_prompt: a system message added to dialogues that have none. Unset: the chat template's own behaviour;
      "": none at all (the template's default is taken out, as in sft).
    """

    path: list[str] = field(default_factory=list)
    format: str = field(default="auto", metadata=one_of("auto", *formats.FORMATS))
    max_length: int = field(default=512, metadata=at_least(8))
    val_size: float = field(default=0.1, metadata=at_least(0))
    max_samples: int = field(default=0, metadata=at_least(0))
    system_prompt: Optional[str] = None


@dataclass
class DistillConfig:
    """`medtune distill RECIPE [key=value ...]`.

    model: the student (LoRA by default). teacher: the teacher (a folder, a run folder or a hub id; its own
      dtype and trust_remote_code; the student's chat template is used for both).
    lmbda: share of steps trained on the student's own samples (1 = fully on-policy, 0 = the dataset's answers).
    beta: 0 = forward KL(teacher || student), 1 = reverse KL, in between the generalized JSD.
    temperature: sampling temperature of the student's answers. max_new_tokens: their length limit.
    """

    stage: ClassVar[str] = "distill"
    model: ModelConfig = field(default_factory=ModelConfig)
    teacher: ModelConfig = field(default_factory=lambda: ModelConfig(name_or_path="none"))
    data: DistillData = field(default_factory=DistillData)
    lora: LoraConfig = field(default_factory=LoraConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(learning_rate=1e-4))
    lmbda: float = field(default=0.5, metadata=_SHARE)
    beta: float = field(default=0.5, metadata=_SHARE)
    temperature: float = field(default=0.9, metadata=above(0))
    max_new_tokens: int = field(default=128, metadata=at_least(1))
    output_dir: str = field(default="runs/distill", metadata=check(lambda v: v.strip() != "", "a folder name"))
    resume: bool = False
    overwrite: bool = False


def read_data(cfg: DistillConfig):
    """Every dialogue of `data.path` (checked against the contract) and the files' fingerprints."""
    from medtune.data import resolve_path

    if cfg.teacher.name_or_path == "none":
        raise ConfigError("distillation needs a teacher", where="teacher.name_or_path",
                          hint="a model folder, a run folder or a hub id with the student's vocabulary")
    if not cfg.data.path:
        raise ConfigError("no prompts to distil on", where="data.path", hint="set data.path to dialogue files")
    dialogues, fingerprints = [], []
    for p in [resolve_path(x) for x in ([cfg.data.path] if isinstance(cfg.data.path, str) else cfg.data.path)]:
        records = formats.load_dialogues(p, cfg.data.format)[: cfg.data.max_samples or None]
        fingerprints.append({**formats.fingerprint(p), "records": len(records)})
        dialogues.extend(records)
    return dialogues, fingerprints


def validate(cfg: DistillConfig) -> list[str]:
    """`medtune validate`: the data files, and the teacher's config and tokenizer when it is a folder already
    there (a run that an earlier step writes, or a hub id, is checked when the run starts); lines to print."""
    dialogues, fingerprints = read_data(cfg)
    lines = [f"data ok: {f['path']}: {f['records']} dialogues" for f in fingerprints]
    if Path(cfg.teacher.name_or_path).exists():
        return lines + ["teacher " + models.check_model(cfg.teacher)]
    return lines + [f"teacher not checked: {cfg.teacher.name_or_path} is no folder here (yet); it loads when the run starts"]


def encode(dialogues, tokenizer, fmt, data: DistillData, stats: dict) -> list[dict]:
    """Each dialogue as its prompt (everything before the last assistant turn, generation prompt included) and
    the full sequence whose labels are that last turn (its end-of-turn token included)."""
    out = []
    for d in dialogues:
        try:
            enc = templates.encode_dialogue(tokenizer, fmt, common.with_system_prompt(d["messages"], data.system_prompt))
        except MedtuneError as exc:
            raise MedtuneError(exc.message, where=d.get("source"), hint=exc.hint) from None
        end = enc.turn_ends[-1]
        start = max(i for i in range(end) if not enc.assistant_mask[i]) + 1  # the last turn's first token
        if end > data.max_length:
            stats["dropped_too_long"] += 1
            continue
        ids = enc.input_ids[:end]
        out.append({"input_ids": ids, "labels": [-100] * start + ids[start:], "prompt_ids": ids[:start]})
    return out


def collate(pad_id: int):
    """Batches as GKDTrainer reads them: left-padded sequences, labels and prompts (it samples from prompts)."""
    import torch

    def left(rows, value):
        width = max(len(r) for r in rows)
        return torch.tensor([[value] * (width - len(r)) + list(r) for r in rows], dtype=torch.long)

    def fn(batch):
        ids, prompts = [b["input_ids"] for b in batch], [b["prompt_ids"] for b in batch]
        return {"input_ids": left(ids, pad_id), "attention_mask": left([[1] * len(x) for x in ids], 0),
                "labels": left([b["labels"] for b in batch], -100), "prompts": left(prompts, pad_id),
                "prompt_attention_mask": left([[1] * len(x) for x in prompts], 0)}

    return fn


def teacher_kl(student, teacher, examples: list[dict], pad_id: int, batch_size: int = 8) -> float:
    """Mean KL(teacher || student) per answer token over `examples`: how far the student's next-token
    distributions are from the teacher's where it answers (0 = the same)."""
    import torch

    device = student.get_input_embeddings().weight.device
    total, count = 0.0, 0
    with models.evaluating(student):
        for i in range(0, len(examples), batch_size):
            chunk = examples[i: i + batch_size]
            ids, mask = models.pad_right([e["input_ids"] for e in chunk], pad_id)
            labels, _ = models.pad_right([e["labels"] for e in chunk], -100)
            ids, mask, keep = ids.to(device), mask.to(device), (labels[:, 1:] != -100).to(device)
            s = torch.log_softmax(student(input_ids=ids, attention_mask=mask).logits[:, :-1].float(), -1)[keep]
            t = torch.log_softmax(teacher(input_ids=ids, attention_mask=mask).logits[:, :-1].float(), -1)[keep]
            total += float((t.exp() * (t - s)).sum())
            count += int(keep.sum())
    return total / max(count, 1)


def load_teacher(cfg: DistillConfig, tokenizer, device: str):
    """The teacher, frozen, in eval mode, its embeddings sized to the student's tokenizer (template tokens)."""
    teacher = models.load(cfg.teacher, device=device)
    student_vocab, teacher_vocab = tokenizer.get_vocab(), teacher.tokenizer.get_vocab()
    if any(student_vocab.get(tok) != i for tok, i in teacher_vocab.items()):
        raise MedtuneError("the teacher's tokenizer is not the student's: distillation compares distributions over "
                           "one vocabulary", where="teacher.name_or_path",
                           hint="choose a teacher of the student's family (the same tokenizer)")
    if teacher.model.get_input_embeddings().weight.shape[0] < len(tokenizer):
        teacher.model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    return teacher, teacher.model.to(device).eval().requires_grad_(False)


def trl_trainer(cfg: DistillConfig, model, teacher, tokenizer, train_rows, run_dir: Path, callbacks):
    from datasets import Dataset

    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    from trl.experimental.gkd import GKDConfig, GKDTrainer

    args = GKDConfig(**common.trainer_arguments(cfg.train, run_dir, has_val=False), lmbda=cfg.lmbda, beta=cfg.beta,
                     temperature=cfg.temperature, max_new_tokens=cfg.max_new_tokens, dataset_num_proc=None,
                     max_length=cfg.data.max_length + cfg.max_new_tokens)
    return GKDTrainer(model=model, teacher_model=teacher, args=args, train_dataset=Dataset.from_list(train_rows),
                      data_collator=collate(tokenizer.pad_token_id), processing_class=tokenizer,
                      callbacks=list(callbacks or []))


@runs.replaces_on_success
def run(cfg: DistillConfig, callbacks=None) -> Path:
    """Distil the teacher into the student per `cfg`; returns the run folder."""
    started = time.time()
    run_dir, previous, checkpoint = runs.start(cfg.output_dir, resume=cfg.resume, overwrite=cfg.overwrite)
    dialogues, fingerprints = read_data(cfg)
    runs.refuse_changed_data(run_dir, previous, checkpoint, fingerprints)
    loaded, fmt = models.load_for_training(cfg.model, cfg.lora.method, cfg.train.seed)
    model, tokenizer = loaded.model, loaded.tokenizer
    device = str(model.get_input_embeddings().weight.device)
    teacher_loaded, teacher = load_teacher(cfg, tokenizer, device.split(":")[0])

    fmt, default_system = common.system_prompt_format(tokenizer, fmt, cfg.data.system_prompt)
    stats = {"dialogues": len(dialogues), "dropped_too_long": 0}
    examples = encode(dialogues, tokenizer, fmt, cfg.data, stats)
    if not examples:
        raise MedtuneError(f"no dialogue fits data.max_length={cfg.data.max_length}", hint="raise data.max_length")
    train_ex, val_ex = common.split_validation(examples, cfg.data.val_size, cfg.train.seed)
    stats.update(train_examples=len(train_ex), val_examples=len(val_ex))
    models.check_lora_targets(model, cfg.lora)
    run_dir = runs.prepare(cfg.output_dir, resume=cfg.resume, overwrite=cfg.overwrite)

    # the student stops sampling where a turn ends under its template
    model.generation_config.eos_token_id = templates.generation_stop_ids(tokenizer, fmt)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.config.use_cache = False
    pad_id = tokenizer.pad_token_id
    before = (previous or {}).get("heldout_kl_before")
    if val_ex and before is None:
        before = teacher_kl(model, teacher, val_ex, pad_id, cfg.train.batch_size)
    model = models.apply_lora(model, cfg.lora, gradient_checkpointing=cfg.train.gradient_checkpointing)
    manifest = common.manifest("distill", cfg, previous, loaded, fmt.name, fingerprints, stats,
                               teacher=runs.model_record(cfg.teacher, teacher_loaded, fmt.name),
                               default_system_prompt=default_system, heldout_kl_before=before,
                               parameters=common.parameter_counts(model))
    common.begin(run_dir, manifest, checkpoint, resume=cfg.resume)

    trainer = trl_trainer(cfg, model, teacher, tokenizer, train_ex, run_dir, callbacks)
    metrics = common.train(trainer, run_dir, manifest, checkpoint, started)
    if val_ex:
        metrics.update(heldout_kl_before=before, heldout_kl_after=teacher_kl(trainer.model, teacher, val_ex, pad_id,
                                                                             cfg.train.batch_size))
    history = [{k: h[k] for k in ("step", "loss", "learning_rate", "grad_norm") if k in h}
               for h in trainer.state.log_history if "loss" in h]
    common.finish(run_dir, manifest, trainer.model, tokenizer, keep_checkpoints=cfg.train.keep_checkpoints,
                  summary=lambda: _summary(run_dir, manifest), metrics=metrics, history=history)
    return run_dir


def _summary(run_dir: Path, manifest: dict) -> None:
    s, m = manifest["data_stats"], manifest["metrics"]
    print(f"\ndistill finished in {m['train_runtime_s']} s, {m['steps']} steps")
    print(f"  data: {s['train_examples']} train / {s['val_examples']} held-out dialogues; "
          f"dropped {s['dropped_too_long']} too long")
    if "heldout_kl_after" in m:
        print(f"  held-out KL(teacher || student) per answer token: {m['heldout_kl_before']:.4f} -> "
              f"{m['heldout_kl_after']:.4f}")
    kind = "LoRA adapter" if manifest["adapter"] else "full weights"
    print(f"  wrote {kind}, tokenizer and medtune.json to {run_dir}")
    print(f"  next: medtune chat {run_dir}")
