"""Reward modelling: learn a scalar score that ranks the preferred answer of each pair above the other.

Reads top to bottom: config -> run folder -> preference pairs (checked) -> model + scalar head (+ LoRA)
-> Trainer with the pairwise loss -> train (or resume) -> pairwise metrics -> save -> manifest.

The reward model is the causal LM itself, loaded with AutoModelForCausalLM (or the model's remote code),
plus `reward_head`, a linear layer from the last hidden state to one number, read at the last token of
prompt + answer (the answer's end-of-turn token). No sequence-classification class is needed, so every
architecture that generates text can be a reward model. With LoRA the head trains in full and is saved in
the adapter; `reward_head.safetensors` beside it holds the head alone for `load_reward_model`.

Loss per pair: -log sigmoid(r_chosen - r_rejected - margin) + centering * (r_chosen + r_rejected)^2.
The second term (off by default) keeps rewards near zero, so a later PPO run gets rewards of a steady
scale. Metrics: pairwise accuracy, mean margin, reward mean and spread, on held-out pairs.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from medtune import models, runs
from medtune.config import at_least, check
from medtune.data import preference, templates
from medtune.data.preference import PreferenceData
from medtune.models import LoraConfig, ModelConfig
from medtune.stages import common
from medtune.stages.common import TrainConfig


@dataclass
class RMConfig:
    """`medtune rm RECIPE [key=value ...]`; `medtune rm score RUN FILE` scores answers with a trained one.

    margin: subtracted from r_chosen - r_rejected inside the loss: the model must prefer by at least this much.
    centering: weight of the reward-centering term (r_chosen + r_rejected)^2 (0 = off; 0.01 is typical).
    """

    stage: ClassVar[str] = "rm"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: PreferenceData = field(default_factory=PreferenceData)
    lora: LoraConfig = field(default_factory=LoraConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(learning_rate=1e-4, batch_size=4))
    margin: float = field(default=0.0, metadata=at_least(0))
    centering: float = field(default=0.0, metadata=at_least(0))
    output_dir: str = field(default="runs/rm", metadata=check(lambda v: v.strip() != "", "a folder name"))
    resume: bool = False
    overwrite: bool = False


# ---------------------------------------------------------------------------------------------- data


def validate(cfg) -> list[str]:
    """`medtune validate`: check every preference file; lines to print."""
    pairs, fingerprints, stats = preference.read_pair_files(cfg.data)
    return [f"data ok: {f['path']}: {f['records']} pairs" for f in fingerprints] + (
        [f"note: {stats['identical_dropped']} pairs with identical answers dropped"] if stats["identical_dropped"] else [])


def encode_pairs(pairs, tokenizer, fmt, max_length: int, stats: dict, *, max_prompt_length: int | None = None,
                 max_answer_length: int | None = None, truncation: str = "keep_end") -> list[dict]:
    """Pairs -> {"chosen_ids", "rejected_ids"} (prompt + answer + end-of-turn each), made to fit max_length by
    `truncation` (preference.fit_pairs: cut, or dropped); what happened is counted in `stats`."""
    return pair_rows(preference.fit_pairs(pairs, tokenizer, fmt, stats, max_length=max_length, truncation=truncation,
                                          max_prompt_length=max_prompt_length, max_answer_length=max_answer_length))


def pair_rows(fitted: list[dict]) -> list[dict]:
    """Fitted pairs (preference.fit_pairs) -> {"chosen_ids", "rejected_ids"}: prompt + answer + end-of-turn each."""
    return [{"chosen_ids": f["prompt_ids"] + f["chosen_ids"], "rejected_ids": f["prompt_ids"] + f["rejected_ids"]}
            for f in fitted]


class PairCollator:
    """A batch of B pairs -> input_ids / attention_mask of 2B rows (chosen first, then rejected), right-padded."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, rows: list[dict]) -> dict:
        ids, mask = models.pad_right([r["chosen_ids"] for r in rows] + [r["rejected_ids"] for r in rows], self.pad_id)
        return {"input_ids": ids, "attention_mask": mask}


# ------------------------------------------------------------------------------------------- metrics


def pair_loss(r_chosen, r_rejected, margin: float = 0.0, centering: float = 0.0):
    import torch.nn.functional as F

    loss = -F.logsigmoid(r_chosen - r_rejected - margin).mean()
    if centering:
        loss = loss + centering * ((r_chosen + r_rejected) ** 2).mean()
    return loss


def score_rows(model, rows: list[dict], pad_id: int, batch_size: int = 8):
    """(chosen rewards, rejected rewards) of encoded pairs."""
    return (models.score_sequences(model, [r["chosen_ids"] for r in rows], pad_id, batch_size),
            models.score_sequences(model, [r["rejected_ids"] for r in rows], pad_id, batch_size))


def pair_metrics(chosen: list[float], rejected: list[float], margin: float = 0.0, centering: float = 0.0) -> dict:
    """Pairwise accuracy (ties count as wrong), mean margin, reward mean and spread, and the loss."""
    import torch

    c, r = torch.tensor(chosen), torch.tensor(rejected)
    both = torch.cat([c, r])
    return {
        "accuracy": float((c > r).float().mean()),
        "margin": float((c - r).mean()),
        "reward_mean": float(both.mean()),
        "reward_std": float(both.std()) if len(both) > 1 else 0.0,
        "chosen_mean": float(c.mean()),
        "rejected_mean": float(r.mean()),
        "loss": float(pair_loss(c, r, margin, centering)),
        "pairs": len(chosen),
    }


def _trainer_class():
    from transformers import Trainer

    from medtune.models import sequence_rewards

    class RewardTrainer(Trainer):
        """Pairwise loss; `evaluate` reports pairwise metrics on the held-out pairs."""

        def __init__(self, *args, margin=0.0, centering=0.0, pair_collator=None, **kw):
            super().__init__(*args, **kw)
            self.margin, self.centering, self.pair_collator = margin, centering, pair_collator

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            rewards = sequence_rewards(model, inputs["input_ids"], inputs["attention_mask"])
            n = rewards.shape[0] // 2
            loss = pair_loss(rewards[:n], rewards[n:], self.margin, self.centering)
            return (loss, {"rewards": rewards}) if return_outputs else loss

        def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix="eval"):
            rows = eval_dataset if eval_dataset is not None else self.eval_dataset
            chosen, rejected = score_rows(self.model, list(rows), self.pair_collator.pad_id, self.args.per_device_eval_batch_size)
            metrics = {f"{metric_key_prefix}_{k}": v for k, v in pair_metrics(chosen, rejected, self.margin, self.centering).items()}
            self.log(metrics)
            return metrics

    return RewardTrainer


# --------------------------------------------------------------------------------------------- train


@runs.replaces_on_success
def run(cfg: RMConfig, callbacks=None) -> Path:
    """Train a reward model per `cfg`; returns the run folder."""
    started = time.time()
    run_dir, previous, checkpoint = runs.start(cfg.output_dir, resume=cfg.resume, overwrite=cfg.overwrite)
    pairs, fingerprints, stats = preference.read_pair_files(cfg.data)
    runs.refuse_changed_data(run_dir, previous, checkpoint, fingerprints)
    loaded, fmt = models.load_for_training(cfg.model, cfg.lora.method, cfg.train.seed)
    model, tokenizer = loaded.model, loaded.tokenizer
    fmt, system_prompt = common.system_prompt_format(tokenizer, fmt, cfg.data.system_prompt)

    train_pairs, val_pairs = common.fitted_pairs(cfg.data, pairs, tokenizer, fmt, stats, cfg.train.seed)
    train_rows, val_rows = pair_rows(train_pairs), pair_rows(val_pairs)
    run_dir = runs.prepare(cfg.output_dir, resume=cfg.resume, overwrite=cfg.overwrite)

    model.config.use_cache = False
    models.add_reward_head(model, seed=cfg.train.seed)
    model = models.apply_lora(model, cfg.lora, gradient_checkpointing=cfg.train.gradient_checkpointing)
    manifest = common.manifest(
        "rm", cfg, previous, loaded, fmt.name, fingerprints, stats, default_system_prompt=system_prompt,
        parameters=common.parameter_counts(model),
        reward_head={"file": models.REWARD_HEAD_FILE, "read_at": "last token of prompt + answer"})
    common.begin(run_dir, manifest, checkpoint, resume=cfg.resume)

    collator = PairCollator(tokenizer.pad_token_id)
    trainer = _trainer_class()(
        model=model,
        args=common.training_arguments(cfg.train, run_dir, bool(val_rows)),
        train_dataset=train_rows,
        eval_dataset=val_rows or None,
        data_collator=collator,
        callbacks=list(callbacks or []),
        margin=cfg.margin, centering=cfg.centering, pair_collator=collator,
    )
    before = trainer.evaluate() if val_rows and not trainer.args.eval_on_start and checkpoint is None else None
    metrics = common.train(trainer, run_dir, manifest, checkpoint, started)
    history = [h for h in trainer.state.log_history if "loss" in h or "eval_accuracy" in h]
    evals = [h for h in history if "eval_accuracy" in h]
    if val_rows:
        metrics.update(trainer.evaluate())
        first = (before or (evals[0] if evals else None))
        if first:
            metrics["eval_accuracy_before"] = first["eval_accuracy"]
            metrics["eval_margin_before"] = first["eval_margin"]
    # reward scale on (up to 512) training pairs, for PPO to normalise rewards with
    c, r = score_rows(trainer.model, train_rows[:512], tokenizer.pad_token_id, cfg.train.batch_size)
    train_scores = pair_metrics(c, r)
    manifest["reward_stats"] = {"mean": train_scores["reward_mean"], "std": train_scores["reward_std"],
                                "train_accuracy": train_scores["accuracy"], "pairs": train_scores["pairs"]}

    common.save_tensors(run_dir / models.REWARD_HEAD_FILE, reward_head(trainer.model).state_dict())
    common.finish(run_dir, manifest, trainer.model, tokenizer, keep_checkpoints=cfg.train.keep_checkpoints,
                  summary=lambda: _summary(run_dir, manifest), metrics=metrics,
                  history=[{k: h[k] for k in ("step", "loss", "eval_accuracy", "eval_margin", "eval_loss",
                                              "learning_rate", "grad_norm") if k in h} for h in history])
    return run_dir


def reward_head(model):
    """The trained reward head of `model` (inside PEFT's wrapper when the run is LoRA)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    head = getattr(base, models.REWARD_HEAD)
    return head.modules_to_save["default"] if hasattr(head, "modules_to_save") else head


def _summary(run_dir: Path, manifest: dict) -> None:
    s, m = manifest["data_stats"], manifest["metrics"]
    print(f"\nrm finished in {m['train_runtime_s']} s, {m['steps']} steps")
    print(f"  data: {s['train_pairs']} train / {s['val_pairs']} held-out pairs; {s['identical_dropped']} with identical"
          f" answers dropped")
    print(f"  {preference.fit_summary(s)}")
    if "eval_accuracy" in m:
        print(f"  held-out pairwise accuracy {m.get('eval_accuracy_before', math.nan):.3f} -> {m['eval_accuracy']:.3f}; "
              f"mean margin {m.get('eval_margin_before', math.nan):.3f} -> {m['eval_margin']:.3f}; "
              f"rewards {m['eval_reward_mean']:.3f} +- {m['eval_reward_std']:.3f}")
    kind = "LoRA adapter + reward head" if manifest["adapter"] else "full weights + reward head"
    print(f"  wrote {kind}, tokenizer and medtune.json to {run_dir}")
    print(f"  next: medtune rm score {run_dir} PAIRS.jsonl, or reward_model: {run_dir} in a PPO/GRPO recipe")


# --------------------------------------------------------------------------------------------- score


def score_file(run: str, path: str, out: str | None = None, batch_size: int = 8) -> dict:
    """`medtune rm score RUN FILE`: rewards for the answers of a preference file (chosen and rejected), or
    of a dialogue file (its last assistant turn). Writes one JSON line per record to `out` if given."""
    import json

    import torch

    from medtune.data import formats, jsonio, resolve_path

    path = resolve_path(path)
    jsonio.require_file(path)
    first = next((rec for _, rec in jsonio.iter_objects(path)), None)
    is_pairs = first is not None and preference.shape_of(first) is not None
    items = preference.load_pairs(path) if is_pairs else formats.load_dialogues(path)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    loaded = models.load_reward_model(run, device=device)
    model, tokenizer = loaded.model, loaded.tokenizer
    manifest = runs.read_manifest(models.resolve(run)) or {}
    fmt = templates.resolve_format(tokenizer, manifest.get("model", {}).get("template") or "auto")
    if is_pairs:
        rows = []
        for pair in items:
            p_c, a_c = preference.encode_pair(tokenizer, fmt, pair["prompt"], pair["chosen"], pair.get("tools"))
            p_r, a_r = preference.encode_pair(tokenizer, fmt, pair["prompt"], pair["rejected"], pair.get("tools"))
            rows.append({"chosen_ids": p_c + a_c, "rejected_ids": p_r + a_r})
        chosen, rejected = score_rows(model, rows, tokenizer.pad_token_id, batch_size)
        records = [{"source": p["source"], "chosen_reward": c, "rejected_reward": r} for p, c, r in zip(items, chosen, rejected)]
        summary = pair_metrics(chosen, rejected)
    else:
        seqs = []
        for d in items:
            p, a = preference.encode_pair(tokenizer, fmt, d["messages"][:-1], d["messages"][-1], d.get("tools"))
            seqs.append(p + a)
        scores = models.score_sequences(model, seqs, tokenizer.pad_token_id, batch_size)
        records = [{"source": d["source"], "reward": s} for d, s in zip(items, scores)]
        t = torch.tensor(scores)
        summary = {"answers": len(scores), "reward_mean": float(t.mean()), "reward_std": float(t.std()) if len(scores) > 1 else 0.0}
    if out:
        runs.atomic_write_text(out, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    return summary
