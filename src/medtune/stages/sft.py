"""Supervised fine-tuning: train a model to answer like the assistant turns of a chat dataset.

Reads top to bottom: config -> run folder -> tokenizer + template -> data (encode, truncate, pack) ->
model (+ LoRA) -> Trainer -> train (or resume) -> save -> manifest.

Loss is on assistant tokens only (every assistant turn), and each assistant turn's end-of-turn token is
trained, so the model learns to stop. Examples longer than `data.max_length` are dropped, or cut back to
their last whole assistant turn (`truncation: turns`); never cut mid-turn; both are counted in the summary.
Prompt-completion records (`{"prompt", "completion"}`, TRL's plain-text form) are trained as plain text with
no chat template, split as the log-likelihood scorer splits context and continuation; the loss is on the
completion and the end-of-text token after it.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Literal, Optional

from medtune import runs
from medtune.config import at_least, check, one_of
from medtune.data import formats, mixing, packing, templates
from medtune.data.mixing import Source
from medtune.errors import ConfigError, MedtuneError
from medtune.models import LoraConfig, ModelConfig
from medtune.stages import common
from medtune.stages.common import TrainConfig


@dataclass
class DataConfig:
    """Training data.

    path: one file or a list of files (messages / ShareGPT / Alpaca dialogues, or prompt-completion records;
      see docs/data-formats.md);
      `medtune:demo/sft.jsonl` names the demo data shipped inside the package.
    format: auto, messages, sharegpt, alpaca or prompt_completion.
    max_length: longest example in tokens (and the packing block size).
    truncation: drop (skip examples longer than max_length) or turns (keep the leading whole turns that fit).
    packing: pack several examples into each row (block-diagonal attention; see data/packing.py).
    val_size: held-out share (0 < x < 1) or count (x >= 1) of examples for eval loss; 0 for none.
    max_samples: use only the first N examples of each file (0 = all).
    system_prompt: a system message added to dialogues that have none. Unset (null): the chat template's own
      behaviour, which may insert its default (SmolLM2: "You are a helpful AI assistant named SmolLM, trained by
      Hugging Face"). "": none at all: the default is taken out of the run's template (docs/templates.md).
    sources: instead of `path`, several files mixed by weight or count, e.g. [{path: medical.jsonl,
      weight: 0.8}, {path: general.jsonl, weight: 0.2}] (replay; see data/mixing.py).
    mix_by: examples or tokens: what the weights and counts measure.
    mix_total: size of the mixture (0 = stop when the first source is used up).
    reasoning: train (default) or mask: whether an assistant's reasoning (`reasoning_content`, or a leading
      <think>...</think> block) is in the loss (docs/thinking.md).
    """

    path: list[str] = field(default_factory=list)
    format: str = field(default="auto", metadata=one_of("auto", *formats.SFT_FORMATS))
    max_length: int = field(default=1024, metadata=at_least(1))
    truncation: Literal["drop", "turns"] = "drop"
    packing: bool = True
    val_size: float = field(default=0.0, metadata=at_least(0))
    max_samples: int = field(default=0, metadata=at_least(0))
    system_prompt: Optional[str] = None
    sources: list[Source] = field(default_factory=list)
    mix_by: Literal["examples", "tokens"] = "examples"
    mix_total: int = field(default=0, metadata=at_least(0))
    reasoning: Literal["train", "mask"] = "train"


@dataclass
class SFTConfig:
    """`medtune sft RECIPE [key=value ...]`. See recipes/ for examples."""

    stage: ClassVar[str] = "sft"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    output_dir: str = field(default="runs/sft", metadata=check(lambda v: v.strip() != "", "a folder name"))
    resume: bool = False
    overwrite: bool = False


# ---------------------------------------------------------------------------------------------- data


def encode_prompt_completion(tokenizer, prompt: str, completion: str) -> dict:
    """A prompt-completion record as plain text: {"input_ids", "labels"}, labels -100 on the prompt. The prompt
    and completion are tokenised as the log-likelihood scorer splits a context and its continuation (so the
    tokens trained are the tokens scored), then the end-of-text token, trained too, so generation stops."""
    from medtune.eval.scoring import encode_pair

    ctx, cont = encode_pair(tokenizer, prompt, completion)
    end = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    return {"input_ids": ctx + cont + end, "labels": [-100] * len(ctx) + cont + end}


def encode_examples(dialogues, tokenizer, fmt, data: DataConfig, stats: dict) -> list[dict]:
    """Dialogues -> {"input_ids", "labels"} with labels = -100 outside assistant turns; counts in `stats`.
    Prompt-completion records go through `encode_prompt_completion` (dropped when longer than max_length)."""
    out = []
    for d in dialogues:
        if "prompt" in d:
            example = encode_prompt_completion(tokenizer, d["prompt"], d["completion"])
            if len(example["input_ids"]) > data.max_length:
                stats["dropped_too_long"] += 1
            else:
                out.append(example)
            continue
        messages = common.with_system_prompt(d["messages"], data.system_prompt)
        try:
            enc = templates.encode_dialogue(tokenizer, fmt, messages, reasoning=data.reasoning, tools=d.get("tools"))
        except MedtuneError as exc:
            raise MedtuneError(exc.message, where=d.get("source"), hint=exc.hint) from None
        ids, mask = enc.input_ids, enc.assistant_mask
        if len(ids) > data.max_length:
            fits = [e for e in enc.turn_ends if e <= data.max_length]
            if data.truncation == "turns" and fits:
                ids, mask = ids[: fits[-1]], mask[: fits[-1]]
                stats["truncated_to_whole_turns"] += 1
            else:
                stats["dropped_too_long"] += 1
                continue
        if not any(mask):
            stats["dropped_no_target"] += 1
            continue
        out.append({"input_ids": ids, "labels": [t if m else -100 for t, m in zip(ids, mask)]})
    return out


def data_sources(data: DataConfig) -> list[Source]:
    """`data.sources`, or every file of `data.path` as one source."""
    if data.sources and data.path:
        raise ConfigError("give data.path or data.sources, not both", where="data")
    if data.sources:
        mixing.check_sources(data.sources)
        return data.sources
    if not data.path:
        raise ConfigError("no training data", where="data.path", hint="set data.path to one or more files")
    return [Source(path=",".join([data.path] if isinstance(data.path, str) else data.path), name="data")]


def read_data(cfg: SFTConfig):
    """Read and validate every data file, before any model is loaded: the first bad record stops the run.
    Returns (dialogues per source, fingerprints)."""
    from medtune.data import resolve_path

    fingerprints, groups = [], []
    for source in data_sources(cfg.data):
        dialogues = []
        for p in [resolve_path(x.strip()) for x in source.path.split(",") if x.strip()]:
            records = formats.load_sft_records(p, cfg.data.format)
            if cfg.data.max_samples:
                records = records[: cfg.data.max_samples]
            fingerprints.append({**formats.fingerprint(p), "records": len(records)})
            dialogues.extend(records)
        groups.append(dialogues)
    return groups, fingerprints


def validate(cfg: SFTConfig) -> list[str]:
    """`medtune validate`: check every data file against the data contract; lines to print."""
    from medtune.data import resolve_path

    lines = []
    for source in data_sources(cfg.data):
        for p in [x.strip() for x in source.path.split(",") if x.strip()]:
            summary = formats.validate_file(resolve_path(p), cfg.data.format)
            lines.append(f"data ok: {p}: {summary['records']} records ({summary['format']})")
    return lines


def prepare_examples(cfg: SFTConfig, groups, tokenizer, fmt):
    """Encode, truncate, mix (when several sources) and split the dialogues. Returns (train, val, stats)."""
    stats = {"dialogues": sum(len(g) for g in groups), "dropped_too_long": 0, "truncated_to_whole_turns": 0,
             "dropped_no_target": 0}
    encoded = [encode_examples(g, tokenizer, fmt, cfg.data, stats) for g in groups]
    if not any(encoded):
        raise MedtuneError(
            f"no example fits data.max_length={cfg.data.max_length}",
            hint="raise data.max_length or use data.truncation=turns",
        )
    if not cfg.data.sources:
        train, val = common.split_validation(encoded[0], cfg.data.val_size, cfg.train.seed)
    else:  # mix, then hold out from the mixture (and drop up-sampled copies of held-out examples)
        sources = data_sources(cfg.data)
        tagged = [[(k, e) for e in exs] for k, exs in enumerate(encoded)]
        mixer_items, _ = mixing.mix_lists(sources, tagged, unit=cfg.data.mix_by, total=cfg.data.mix_total,
                                          seed=cfg.train.seed, size=lambda x: len(x[1]["input_ids"]))
        v = cfg.data.val_size
        n_val = 0 if v <= 0 else int(v) if v >= 1 else max(1, round(len(mixer_items) * v))
        if n_val >= len(mixer_items):
            raise MedtuneError(f"data.val_size={v} leaves no training examples", hint="lower data.val_size")
        train_t, val_t, stats["held_out_copies_removed"] = mixing.hold_out(
            mixer_items, n_val, key=lambda x: tuple(x[1]["input_ids"]))
        counts, tokens = [0] * len(sources), [0] * len(sources)
        for k, e in train_t:
            counts[k] += 1
            tokens[k] += len(e["input_ids"])
        mixer = mixing.Mixer(sources, [], unit=cfg.data.mix_by)
        mixer.passes = _passes(counts, [len(x) for x in encoded])
        mixer.available = [len(x) for x in encoded]
        stats["mixture"] = mixer.report(counts, tokens)
        train, val = [e for _, e in train_t], [e for _, e in val_t]
    stats["train_examples"], stats["val_examples"] = len(train), len(val)
    stats["train_tokens"] = sum(len(e["input_ids"]) for e in train)
    stats["train_target_tokens"] = sum(sum(t != -100 for t in e["labels"]) for e in train)
    return train, val, stats


def _passes(taken: list[int], available: list[int]) -> list[int]:
    return [max(1, -(-t // a)) if a else 0 for t, a in zip(taken, available)]


# --------------------------------------------------------------------------------------------- train


def label_logits_loss(model, inputs: dict, num_items_in_batch=None):
    """Causal-LM loss with the LM head applied only where the next token is a trained label.

    The prompt half of an SFT example needs no logits; skipping the vocabulary projection there (49k wide
    for SmolLM2) saves time and the memory of the full logits tensor. Same value as the model's own loss.
    """
    import torch.nn.functional as F

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    hidden = base.get_decoder()(
        input_ids=inputs["input_ids"], position_ids=inputs.get("position_ids"),
        attention_mask=inputs.get("attention_mask"), use_cache=False,
    ).last_hidden_state
    targets = inputs["labels"][:, 1:]
    keep = targets != -100
    logits = base.get_output_embeddings()(hidden[:, :-1][keep]).float()
    loss = F.cross_entropy(logits, targets[keep], reduction="sum")
    return loss / (num_items_in_batch if num_items_in_batch is not None else keep.sum().clamp(min=1))


def label_logits_supported(model, collator) -> bool:
    """True when `label_logits_loss` equals the model's own loss on a small batch (checked numerically):
    models that post-process logits (soft-capping, scaling) keep the ordinary path."""
    import torch

    if not hasattr(model, "get_decoder") and not hasattr(model, "get_base_model"):
        return False
    was_training = model.training
    model.eval()
    try:
        vocab = model.get_input_embeddings().weight.shape[0]
        g = torch.Generator().manual_seed(0)
        ids = torch.randint(0, vocab, (8,), generator=g).tolist()
        batch = collator([{"input_ids": ids, "labels": [-100] * 3 + ids[3:], "position_ids": list(range(8))}])
        batch = {k: v.to(model.get_input_embeddings().weight.device) for k, v in batch.items()}
        with torch.no_grad():
            ours = label_logits_loss(model, batch)
            theirs = model(**batch, use_cache=False).loss
        return bool(torch.allclose(ours.float(), theirs.float(), atol=1e-4, rtol=1e-4))
    except Exception:
        return False
    finally:
        model.train(was_training)


@runs.replaces_on_success
def run(cfg: SFTConfig, callbacks=None) -> Path:
    """Train per `cfg`; returns the run folder. `callbacks` are extra transformers TrainerCallbacks."""
    from transformers import Trainer

    from medtune import models

    started = time.time()
    run_dir, previous, checkpoint = runs.start(cfg.output_dir, resume=cfg.resume, overwrite=cfg.overwrite)
    groups, fingerprints = read_data(cfg)
    runs.refuse_changed_data(run_dir, previous, checkpoint, fingerprints)
    loaded, fmt = models.load_for_training(cfg.model, cfg.lora.method, cfg.train.seed)
    model, tokenizer = loaded.model, loaded.tokenizer
    fmt, system_prompt = common.system_prompt_format(tokenizer, fmt, cfg.data.system_prompt)

    train_ex, val_ex, stats = prepare_examples(cfg, groups, tokenizer, fmt)
    # only now, with model and data known good, empty (overwrite=true) and create the run folder
    run_dir = runs.prepare(cfg.output_dir, resume=cfg.resume, overwrite=cfg.overwrite)

    use_packing = cfg.data.packing and packing.packing_supported(model)
    if cfg.data.packing and not use_packing:
        print("note: this model does not keep packed sequences apart; training on padded rows instead")
    rows = packing.pack(train_ex, cfg.data.max_length, seed=cfg.train.seed) if use_packing else packing.unpacked(train_ex)
    val_rows = packing.unpacked(val_ex)
    stats["train_rows"] = len(rows)
    collator = packing.Collator(tokenizer.pad_token_id, attention_mask=not use_packing)

    model.config.use_cache = False
    model = models.apply_lora(model, cfg.lora, gradient_checkpointing=cfg.train.gradient_checkpointing)
    manifest = common.manifest(
        "sft", cfg, previous, loaded, fmt.name, fingerprints, stats,
        # what a dialogue without a system message was trained with: the template's default, or none
        default_system_prompt=system_prompt, packing=use_packing, parameters=common.parameter_counts(model))
    common.begin(run_dir, manifest, checkpoint, resume=cfg.resume)

    trainer_cls = _trainer_classes() if label_logits_supported(model, collator) else Trainer
    collator.real_tokens = collator.padded_tokens = 0
    trainer = trainer_cls(
        model=model,
        args=common.training_arguments(cfg.train, run_dir, bool(val_rows)),
        train_dataset=rows,
        eval_dataset=val_rows or None,
        data_collator=collator,
        callbacks=list(callbacks or []),
    )
    metrics = common.train(trainer, run_dir, manifest, checkpoint, started)
    if val_rows:
        metrics.update({k: v for k, v in trainer.evaluate().items() if k == "eval_loss"})
        metrics["eval_perplexity"] = math.exp(min(metrics["eval_loss"], 50))
        first = [h["eval_loss"] for h in trainer.state.log_history if "eval_loss" in h]
        if first and trainer.args.eval_on_start:
            metrics["eval_loss_before"] = first[0]
    history = [
        {k: h[k] for k in ("step", "loss", "eval_loss", "learning_rate", "grad_norm") if k in h}
        for h in trainer.state.log_history
    ]
    common.finish(run_dir, manifest, trainer.model, tokenizer, keep_checkpoints=cfg.train.keep_checkpoints,
                  summary=lambda: _summary(run_dir, manifest, collator), metrics=metrics, history=history)
    return run_dir


def _trainer_classes():
    from transformers import Trainer

    class LabelLogitsTrainer(Trainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            if hasattr(model, "module"):  # DDP/FSDP/DeepSpeed: the wrapper's forward must run to sync gradients
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            loss = label_logits_loss(model, inputs, num_items_in_batch)
            return (loss, {}) if return_outputs else loss

    return LabelLogitsTrainer


def _summary(run_dir: Path, manifest: dict, collator) -> None:
    s, m = manifest["data_stats"], manifest["metrics"]
    losses = [h["loss"] for h in manifest["history"] if "loss" in h]
    print(f"\nsft finished in {m['train_runtime_s']} s, {m['steps']} steps")
    print(f"  data: {s['train_examples']} train / {s['val_examples']} val examples in {s['train_rows']} rows; "
          f"dropped {s['dropped_too_long']} too long, {s['dropped_no_target']} without an assistant turn; "
          f"{s['truncated_to_whole_turns']} cut back to whole turns")
    if "mixture" in s:
        print("  mixture achieved (training examples):")
        for line in mixing.format_report(s["mixture"]).splitlines():
            print("    " + line)
    if collator.padded_tokens:
        print(f"  padding: {1 - collator.real_tokens / collator.padded_tokens:.1%} of batch tokens")
    if losses:
        line = f"  train loss: {losses[0]:.3f} -> {losses[-1]:.3f}"
        if "eval_loss" in m:
            line += f"; held-out loss {m.get('eval_loss_before', float('nan')):.3f} -> {m['eval_loss']:.3f}"
        print(line)
    kind = "LoRA adapter" if manifest["adapter"] else "full weights"
    print(f"  wrote {kind}, tokenizer and medtune.json to {run_dir}; TensorBoard logs in {run_dir / 'logs'}")
    print(f"  next: medtune chat {run_dir}")
