"""Preference optimisation without a reward model: DPO and its relatives, on TRL's trainers.

Reads top to bottom: config -> run folder -> preference pairs (checked) -> model (the policy to tune,
usually an SFT run) -> TRL trainer for the chosen loss -> train (or resume) -> held-out margins -> save ->
manifest.

Losses (`loss`):
- `dpo`   -log sigmoid(beta * (chosen log-ratio - rejected log-ratio)), ratios against the reference (TRL
          DPOTrainer, loss_type sigmoid)
- `ipo`   squared distance of the (per-token) log-ratio difference from 1/(2 beta) (TRL DPOTrainer)
- `hinge` max(0, 1 - beta * log-ratio difference) (TRL DPOTrainer)
- `orpo`  SFT loss on the chosen answer plus beta * odds-ratio loss; no reference model (TRL experimental
          ORPOTrainer)
- `simpo` -log sigmoid(beta * (mean chosen log-prob - mean rejected log-prob) - gamma); no reference
          (TRL experimental CPOTrainer with loss_type simpo and cpo_alpha 0)

With LoRA the reference of dpo/ipo/hinge is the same network with the adapter switched off: no second
copy in memory. With full fine-tuning it is a frozen copy, unless `precompute_ref` computes the
reference log-probabilities once before training (then no copy is kept at all).

Every TRL import is inside this file, because TRL renames and moves things between releases.
"""

from __future__ import annotations

import copy
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Literal

from medtune import models, runs
from medtune.config import above, at_least, check
from medtune.data import preference
from medtune.data.preference import PreferenceData
from medtune.errors import MedtuneError
from medtune.models import LoraConfig, ModelConfig
from medtune.stages import common
from medtune.stages.common import TrainConfig

LOSSES = ("dpo", "ipo", "hinge", "orpo", "simpo")
USES_REFERENCE = ("dpo", "ipo", "hinge")


@dataclass
class DPOConfig:
    """`medtune dpo RECIPE [key=value ...]`.

    loss: dpo, ipo, hinge, orpo or simpo (see the module docstring).
    beta: dpo/hinge: how far the policy may move from the reference (higher = less; 0.1 is usual);
      ipo: the regulariser tau; orpo: the weight lambda of the odds-ratio term (0.1); simpo: the reward scale
      (2.0 is usual; the paper uses 2-10).
    simpo_gamma: simpo's target reward margin (0.5).
    sft_weight: dpo/ipo/hinge: weight of a next-token loss on the chosen answer added to the preference loss (TRL's
      "sft" loss term, as in RPO); 0 (the default) = off. It keeps the policy writing answers like the chosen ones
      instead of drifting to whatever lowers the rejected answers most (docs/dpo.md).
    precompute_ref: dpo/ipo/hinge: compute the reference log-probabilities once before training.
    """

    stage: ClassVar[str] = "dpo"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: PreferenceData = field(default_factory=PreferenceData)
    lora: LoraConfig = field(default_factory=LoraConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(learning_rate=5e-5, batch_size=4))
    loss: Literal["dpo", "ipo", "hinge", "orpo", "simpo"] = "dpo"
    beta: float = field(default=0.1, metadata=above(0))
    simpo_gamma: float = 0.5
    sft_weight: float = field(default=0.0, metadata=at_least(0))
    precompute_ref: bool = False
    output_dir: str = field(default="runs/dpo", metadata=check(lambda v: v.strip() != "", "a folder name"))
    resume: bool = False
    overwrite: bool = False


def validate(cfg: DPOConfig) -> list[str]:
    """`medtune validate`: check every preference file; lines to print."""
    pairs, fingerprints, stats = preference.read_pair_files(cfg.data)
    return [f"data ok: {f['path']}: {f['records']} pairs" for f in fingerprints]


# ---------------------------------------------------------------------------------------------- data


def encode(pairs, tokenizer, fmt, max_length: int, stats: dict, *, max_prompt_length: int | None = None,
           max_answer_length: int | None = None, truncation: str = "keep_end") -> list[dict]:
    """Pairs with their token ids (prompt, chosen answer, rejected answer), made to fit max_length by
    `truncation` (preference.fit_pairs: cut, or dropped); the texts are the cut ones TRL will see."""
    return preference.fit_pairs(pairs, tokenizer, fmt, stats, max_length=max_length, truncation=truncation,
                                max_prompt_length=max_prompt_length, max_answer_length=max_answer_length)


def trl_rows(encoded: list[dict], tokenizer, loss: str, as_text: bool = False) -> list[dict]:
    """Rows in TRL's preference contract. DPOTrainer gets the conversational form (it renders the model's
    chat template itself); the experimental ORPO/CPO trainers, and every trainer when the pairs hold tool calls
    (`as_text`: a dataset table cannot hold calls whose arguments differ in shape, and the text is exactly what
    our template encoding trained on), get the text our template encoding decodes to, each answer ending at its
    end-of-turn token, so they do not append a second end-of-sequence token."""
    if loss in USES_REFERENCE and not as_text:
        return [{"prompt": e["prompt"], "chosen": [{"role": "assistant", "content": e["chosen"]}],
                 "rejected": [{"role": "assistant", "content": e["rejected"]}]} for e in encoded]

    def text(ids):
        return tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)

    return [{"prompt": text(e["prompt_ids"]), "chosen": text(e["chosen_ids"]), "rejected": text(e["rejected_ids"])}
            for e in encoded]


# ------------------------------------------------------------------------------------------- metrics


def answer_logps(model, encoded: list[dict], key: str, pad_id: int, batch_size: int = 4) -> list[float]:
    """Sum of log-probabilities of each pair's `key` answer (chosen_ids or rejected_ids) after its prompt."""
    import torch

    device = model.get_input_embeddings().weight.device
    out = []
    with models.evaluating(model):
        for i in range(0, len(encoded), batch_size):
            chunk = encoded[i: i + batch_size]
            ids, mask = models.pad_right([e["prompt_ids"] + e[key] for e in chunk], pad_id)
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device), use_cache=False).logits
            logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
            for j, e in enumerate(chunk):
                start, end = len(e["prompt_ids"]), len(e["prompt_ids"]) + len(e[key])
                targets = ids[j, start:end].to(device)
                out.append(float(logp[j, start - 1: end - 1].gather(-1, targets[:, None]).sum()))
    return out


def margins(model, encoded, pad_id, batch_size) -> tuple[list[float], list[float]]:
    chosen = answer_logps(model, encoded, "chosen_ids", pad_id, batch_size)
    rejected = answer_logps(model, encoded, "rejected_ids", pad_id, batch_size)
    return chosen, rejected


def margin_metrics(before: tuple, after: tuple) -> dict:
    """Held-out, loss-independent: the chosen-minus-rejected log-prob margin before and after training, and
    the share of pairs whose implicit reward (log-ratio to the starting policy) ranks chosen above rejected."""
    (cb, rb), (ca, ra) = before, after
    n = len(cb)
    m_before = sum(c - r for c, r in zip(cb, rb)) / n
    m_after = sum(c - r for c, r in zip(ca, ra)) / n
    wins = sum((c_a - c_b) > (r_a - r_b) for c_a, c_b, r_a, r_b in zip(ca, cb, ra, rb))
    return {"heldout_logp_margin_before": m_before, "heldout_logp_margin_after": m_after,
            "heldout_margin_gain": m_after - m_before, "heldout_reward_accuracy": wins / n,
            "heldout_chosen_logp_change": sum(a - b for a, b in zip(ca, cb)) / n,
            "heldout_rejected_logp_change": sum(a - b for a, b in zip(ra, rb)) / n, "heldout_pairs": n}


# --------------------------------------------------------------------------------------------- train


def trl_trainer(cfg: DPOConfig, model, tokenizer, train_rows, val_rows, run_dir: Path, callbacks):
    """The TRL trainer for `cfg.loss`, its arguments mapped from our recipe."""
    from datasets import Dataset

    t = cfg.train
    common_args = dict(
        common.trainer_arguments(t, run_dir, bool(val_rows)),
        max_length=cfg.data.max_length + 8,  # TRL re-tokenises pairs we already fitted (preference.fit_pairs)
        dataset_num_proc=None,
    )
    peft_config = models.peft_lora_config(model, cfg.lora) if cfg.lora.method != "full" else None
    if cfg.lora.method == "qlora":
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=t.gradient_checkpointing)
    train_ds = Dataset.from_list(train_rows)
    eval_ds = Dataset.from_list(val_rows) if val_rows else None
    kwargs = dict(model=model, train_dataset=train_ds, eval_dataset=eval_ds, processing_class=tokenizer,
                  peft_config=peft_config, callbacks=list(callbacks or []))
    if cfg.loss in USES_REFERENCE:
        from trl import DPOConfig as TRLDPOConfig
        from trl import DPOTrainer

        terms, weights = [{"dpo": "sigmoid"}.get(cfg.loss, cfg.loss)], [1.0]
        if cfg.sft_weight:
            terms, weights = terms + ["sft"], weights + [cfg.sft_weight]
        args = TRLDPOConfig(**common_args, loss_type=terms, loss_weights=weights, beta=cfg.beta,
                            precompute_ref_log_probs=cfg.precompute_ref)
        # full fine-tuning: TRL would reload the reference from the hub id in the config (wrong for a chained
        # run), so hand it a frozen copy of the starting weights
        ref = copy.deepcopy(model).eval().requires_grad_(False) if peft_config is None and not cfg.precompute_ref else None
        return DPOTrainer(args=args, ref_model=ref, **kwargs)
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    if cfg.loss == "orpo":
        from trl.experimental.orpo import ORPOConfig, ORPOTrainer

        return ORPOTrainer(args=ORPOConfig(**common_args, beta=cfg.beta, remove_unused_columns=False), **kwargs)
    from trl.experimental.cpo import CPOConfig, CPOTrainer

    args = CPOConfig(**common_args, loss_type="simpo", cpo_alpha=0.0, beta=cfg.beta, simpo_gamma=cfg.simpo_gamma,
                     remove_unused_columns=False)
    return CPOTrainer(args=args, **kwargs)


@runs.replaces_on_success
def run(cfg: DPOConfig, callbacks=None) -> Path:
    """Tune a policy on preference pairs per `cfg`; returns the run folder."""
    started = time.time()
    run_dir, previous, checkpoint = runs.start(cfg.output_dir, resume=cfg.resume, overwrite=cfg.overwrite)
    if cfg.precompute_ref and cfg.loss not in USES_REFERENCE:
        raise MedtuneError(f"loss {cfg.loss} has no reference model, so precompute_ref does not apply",
                           where="precompute_ref", hint="drop precompute_ref, or use loss dpo, ipo or hinge")
    if cfg.sft_weight and cfg.loss not in USES_REFERENCE:
        raise MedtuneError(f"sft_weight adds a next-token term to dpo, ipo or hinge; loss {cfg.loss} "
                           f"{'already has one' if cfg.loss == 'orpo' else 'does not take it'}",
                           where="sft_weight", hint="drop sft_weight, or use loss dpo, ipo or hinge")
    pairs, fingerprints, stats = preference.read_pair_files(cfg.data)
    runs.refuse_changed_data(run_dir, previous, checkpoint, fingerprints)
    loaded, fmt = models.load_for_training(cfg.model, cfg.lora.method, cfg.train.seed)
    model, tokenizer = loaded.model, loaded.tokenizer
    fmt, system_prompt = common.system_prompt_format(tokenizer, fmt, cfg.data.system_prompt)

    train_enc, val_enc = common.fitted_pairs(cfg.data, pairs, tokenizer, fmt, stats, cfg.train.seed)
    models.check_lora_targets(model, cfg.lora)  # TRL applies LoRA later, after the run folder is written
    run_dir = runs.prepare(cfg.output_dir, resume=cfg.resume, overwrite=cfg.overwrite)

    model.config.use_cache = False
    pad_id = tokenizer.pad_token_id
    before = (previous or {}).get("heldout_before")
    if val_enc and before is None:  # the starting policy's held-out log-probs: the reference of the margins
        before = margins(model, val_enc, pad_id, cfg.train.batch_size)
    manifest = common.manifest("dpo", cfg, previous, loaded, fmt.name, fingerprints, stats, loss=cfg.loss,
                               default_system_prompt=system_prompt, heldout_before=before)
    common.begin(run_dir, manifest, checkpoint, resume=cfg.resume)

    as_text = any("tools" in e for e in train_enc + val_enc)  # tool-calling pairs (docs/tools.md)
    trainer = trl_trainer(cfg, model, tokenizer, trl_rows(train_enc, tokenizer, cfg.loss, as_text),
                          trl_rows(val_enc, tokenizer, cfg.loss, as_text), run_dir, callbacks)
    manifest["parameters"] = common.parameter_counts(trainer.model)
    metrics = common.train(trainer, run_dir, manifest, checkpoint, started)
    if val_enc:
        metrics.update({k: v for k, v in trainer.evaluate().items() if isinstance(v, (int, float))})
        metrics.update(margin_metrics(before, margins(trainer.model, val_enc, pad_id, cfg.train.batch_size)))
    keys = ("step", "loss", "rewards/margins", "rewards/accuracies", "logps/chosen", "logps/rejected", "nll_loss",
            "eval_loss", "eval_rewards/margins", "eval_rewards/accuracies", "learning_rate", "grad_norm")
    history = [{k: h[k] for k in keys if k in h} for h in trainer.state.log_history if "loss" in h or "eval_loss" in h]
    common.finish(run_dir, manifest, trainer.model, tokenizer, keep_checkpoints=cfg.train.keep_checkpoints,
                  summary=lambda: _summary(run_dir, manifest), metrics=metrics, history=history)
    return run_dir


def _summary(run_dir: Path, manifest: dict) -> None:
    s, m = manifest["data_stats"], manifest["metrics"]
    print(f"\ndpo ({manifest['loss']}) finished in {m['train_runtime_s']} s, {m['steps']} steps")
    print(f"  data: {s['train_pairs']} train / {s['val_pairs']} held-out pairs; {s['identical_dropped']} with identical"
          f" answers dropped")
    print(f"  {preference.fit_summary(s)}")
    if "heldout_logp_margin_after" in m:
        print(f"  held-out log-prob margin (chosen - rejected): {m['heldout_logp_margin_before']:.3f} -> "
              f"{m['heldout_logp_margin_after']:.3f}; implicit-reward accuracy {m['heldout_reward_accuracy']:.3f}")
    kind = "LoRA adapter" if manifest["adapter"] else "full weights"
    print(f"  wrote {kind}, tokenizer and medtune.json to {run_dir}")
    print(f"  next: medtune chat {run_dir}")
