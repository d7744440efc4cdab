"""PPO: tune a policy to earn more reward from a `medtune rm` reward model, without drifting far from
where it started (RLHF, Ouyang et al. 2022).

Reads top to bottom: config -> run folder -> prompts (checked) -> policy (usually an SFT run) + LoRA +
value head, reference, reward model -> for each step: rollout (sample answers; log-probs, reference
log-probs and values; reward-model score) -> per-token rewards with a KL penalty -> GAE advantages ->
clipped policy and value updates over mini-batches -> log, checkpoint -> save -> manifest.

TRL removed its PPO trainer from the stable API, so this file is a compact implementation of the usual
recipe (as in TRL's former PPOTrainer and the "N implementation details of RLHF with PPO" write-up):

- policy: the model with a LoRA adapter; the reference is the same network with the adapter switched off
  (no second copy in memory); the value head is one linear layer on the policy's last hidden state, so
  policy and value share the body;
- reward per token: -kl_coef * (log pi(a) - log pi_ref(a)), plus the reward model's score (normalised with
  the statistics the RM run recorded) on the last token of the answer; answers cut at `max_new_tokens`
  may be penalised (`missing_eos_penalty`);
- advantages: GAE(gamma, lambda) over answer tokens, whitened over the batch;
- losses: clipped surrogate policy loss, clipped value loss (weight `vf_coef`);
- optimisation through accelerate, so DDP across GPUs is `accelerate launch -m medtune ppo RECIPE`.

The file is longer than the Trainer-based stages' (about 540 lines) because it holds that implementation:
the maths (whiten, token_rewards, gae, ppo_losses), rollouts, checkpoints and `ppo_step`; `run` reads like
theirs.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Literal, Union

from medtune import models, runs
from medtune.config import above, at_least, check
from medtune.data import preference, templates
from medtune.errors import ConfigError, MedtuneError
from medtune.models import LoraConfig, ModelConfig
from medtune.stages import common


@dataclass
class PromptData(common.PromptData):
    """Prompts to answer during training: `path`, `truncation`, `max_samples` and `system_prompt` as in
    stages/common.py PromptData, and

    max_prompt_length: longest prompt in tokens, template and assistant header included.
    """

    max_prompt_length: int = field(default=256, metadata=at_least(1))


@dataclass
class SamplingConfig:
    """How answers are sampled during rollouts. temperature 0 = greedy (no exploration; not advised)."""

    max_new_tokens: int = field(default=64, metadata=at_least(1))
    min_new_tokens: int = field(default=1, metadata=at_least(0))
    temperature: float = field(default=1.0, metadata=at_least(0))
    top_p: float = field(default=1.0, metadata=check(lambda v: 0 < v <= 1, "in (0, 1]"))
    top_k: int = field(default=0, metadata=at_least(0))
    repetition_penalty: float = field(default=1.0, metadata=above(0))


@dataclass
class PPOTrainConfig:
    """Optimisation. One step = one rollout of `batch_size` prompts, then `ppo_epochs` passes over it in
    mini-batches of `mini_batch_size`.

    kl_coef: weight of the per-token KL penalty against the reference (higher = stay closer).
    gamma, lam: GAE discount and lambda. clip_range / clip_range_value: PPO clipping of the policy ratio
      and of the value change. vf_coef: weight of the value loss.
    normalize_reward: divide the RM score's deviation from its training mean by its training spread
      (from the RM run's `reward_stats`), so kl_coef means the same for every reward model.
    missing_eos_penalty: subtracted from the score of an answer that did not end its turn (0 = off).
    """

    steps: int = field(default=20, metadata=at_least(1))
    batch_size: int = field(default=8, metadata=at_least(1))
    mini_batch_size: int = field(default=4, metadata=at_least(1))
    ppo_epochs: int = field(default=2, metadata=at_least(1))
    learning_rate: float = field(default=1e-4, metadata=above(0))
    max_grad_norm: float = field(default=1.0, metadata=at_least(0))
    kl_coef: float = field(default=0.05, metadata=at_least(0))
    gamma: float = field(default=1.0, metadata=check(lambda v: 0 <= v <= 1, "between 0 and 1"))
    lam: float = field(default=0.95, metadata=check(lambda v: 0 <= v <= 1, "between 0 and 1"))
    clip_range: float = field(default=0.2, metadata=above(0))
    clip_range_value: float = field(default=0.2, metadata=above(0))
    vf_coef: float = field(default=0.1, metadata=at_least(0))
    normalize_reward: bool = True
    missing_eos_penalty: float = field(default=0.0, metadata=at_least(0))
    bf16: Union[Literal["auto"], bool] = "auto"
    logging_steps: int = field(default=1, metadata=at_least(1))
    save_steps: int = field(default=10, metadata=at_least(1))
    keep_checkpoints: bool = False
    seed: int = field(default=42, metadata=at_least(0))


@dataclass
class PPOConfig:
    """`medtune ppo RECIPE [key=value ...]`: `model` is the policy to tune (usually an SFT run),
    `reward_model` a run folder written by `medtune rm`."""

    stage: ClassVar[str] = "ppo"
    model: ModelConfig = field(default_factory=ModelConfig)
    reward_model: str = ""
    data: PromptData = field(default_factory=PromptData)
    lora: LoraConfig = field(default_factory=LoraConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    train: PPOTrainConfig = field(default_factory=PPOTrainConfig)
    output_dir: str = field(default="runs/ppo", metadata=check(lambda v: v.strip() != "", "a folder name"))
    resume: bool = False
    overwrite: bool = False


# ---------------------------------------------------------------------------------------------- data


def read_prompts(cfg: PPOConfig) -> tuple[list[dict], list[dict]]:
    """Every prompt of every file, checked before any model loads. Returns (prompts, fingerprints)."""
    from medtune.data import formats

    prompts, fingerprints = [], []
    for p, found in common.read_prompt_files(cfg.data):
        fingerprints.append({**formats.fingerprint(p), "records": len(found)})
        prompts.extend(found)
    for item in prompts:
        item["prompt"] = common.with_system_prompt(item["prompt"], cfg.data.system_prompt)
    return prompts, fingerprints


def check_settings(cfg: PPOConfig) -> None:
    """Settings that cannot work together; raised before anything is read or loaded."""
    t = cfg.train
    if cfg.lora.method != "lora":
        raise MedtuneError(f"ppo trains a LoRA policy (lora.method={cfg.lora.method})", where="lora.method",
                           hint="use lora.method=lora: the reference is the policy with its adapter switched off")
    if t.batch_size % t.mini_batch_size:
        raise ConfigError(f"train.batch_size={t.batch_size} is not a multiple of train.mini_batch_size="
                          f"{t.mini_batch_size}", where="train.mini_batch_size")


def validate(cfg: PPOConfig) -> list[str]:
    """`medtune validate`: the prompt files, and the reward model when it exists (a recipe may be checked
    before the runs it builds on are trained)."""
    prompts, fingerprints = read_prompts(cfg)
    lines = [f"data ok: {f['path']}: {f['records']} prompts" for f in fingerprints]
    if cfg.reward_model and not Path(cfg.reward_model).exists():
        return lines + [f"note: reward model {cfg.reward_model} does not exist yet; train it with `medtune rm` first"]
    common.reward_run(cfg.reward_model)
    return lines + [f"reward model ok: {cfg.reward_model}"]


# ------------------------------------------------------------------------------------ the PPO maths


def whiten(x, mask, shift_mean: bool = True):
    """(x - mean) / std over the masked entries."""
    import torch

    n = mask.sum().clamp(min=1)
    mean = (x * mask).sum() / n
    var = (((x - mean) * mask) ** 2).sum() / n
    out = (x - mean) * torch.rsqrt(var + 1e-8)
    return out if shift_mean else out + mean


def token_rewards(scores, logps, ref_logps, mask, kl_coef: float):
    """Per-token rewards: -kl_coef * (log pi - log pi_ref) on each answer token, plus each row's score on
    its last answer token. Returns (rewards, per-token KL)."""
    import torch

    kl = (logps - ref_logps) * mask
    rewards = -kl_coef * kl
    last = (mask * torch.arange(mask.shape[1], device=mask.device)).argmax(dim=1)
    rewards[torch.arange(mask.shape[0]), last] += scores
    return rewards, kl


def gae(rewards, values, mask, gamma: float, lam: float):
    """Generalised advantage estimation over the masked (answer) positions of each row; the value after the
    last answer token is 0. Returns (advantages, returns), zero outside the mask."""
    import torch

    advantages = torch.zeros_like(rewards)
    last_gae = torch.zeros(rewards.shape[0], device=rewards.device)
    width = rewards.shape[1]
    for t in reversed(range(width)):
        next_mask = mask[:, t + 1] if t + 1 < width else torch.zeros_like(last_gae)
        next_value = values[:, t + 1] * next_mask if t + 1 < width else torch.zeros_like(last_gae)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        last_gae = delta + gamma * lam * last_gae * next_mask
        advantages[:, t] = last_gae * mask[:, t]
    return advantages, (advantages + values) * mask


def ppo_losses(logps, old_logps, advantages, values, old_values, returns, mask, clip_range, clip_range_value):
    """Clipped surrogate policy loss and clipped value loss (means over answer tokens), with diagnostics."""
    import torch

    n = mask.sum().clamp(min=1)
    ratio = torch.exp(logps - old_logps)
    pg = torch.max(-advantages * ratio, -advantages * torch.clamp(ratio, 1 - clip_range, 1 + clip_range))
    pg_loss = (pg * mask).sum() / n
    v_clipped = old_values + torch.clamp(values - old_values, -clip_range_value, clip_range_value)
    vf = 0.5 * torch.max((values - returns) ** 2, (v_clipped - returns) ** 2)
    vf_loss = (vf * mask).sum() / n
    with torch.no_grad():
        clipfrac = (((ratio - 1).abs() > clip_range).float() * mask).sum() / n
        approx_kl = (0.5 * (logps - old_logps) ** 2 * mask).sum() / n
    return pg_loss, vf_loss, {"clipfrac": float(clipfrac), "approx_kl": float(approx_kl)}


# --------------------------------------------------------------------------------------------- model


def _policy_with_value(policy):
    import torch

    class PolicyWithValue(torch.nn.Module):
        """The LoRA policy and a value head on its last hidden state: forward -> (logits, values)."""

        def __init__(self, policy):
            super().__init__()
            self.policy = policy
            hidden = policy.get_input_embeddings().weight.shape[1]
            self.value_head = torch.nn.Linear(hidden, 1)
            torch.nn.init.zeros_(self.value_head.weight)
            torch.nn.init.zeros_(self.value_head.bias)

        def forward(self, input_ids, attention_mask):
            out = self.policy(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True,
                              use_cache=False)
            values = self.value_head(out.hidden_states[-1].float()).squeeze(-1)
            return out.logits, values

    return PolicyWithValue(policy)


def answer_logps(logits, seqs):
    """log pi(token) of every next token: position p holds the log-prob of seqs[:, p + 1]."""
    import torch

    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    return logp.gather(-1, seqs[:, 1:, None]).squeeze(-1)


def entropy(logits, mask):
    import torch

    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    ent = -(logp.exp() * logp).sum(-1)
    return float((ent * mask).sum() / mask.sum().clamp(min=1))


# ------------------------------------------------------------------------------------------ rollouts


def rollout(model, tokenizer, prompts: list[dict], stop_ids: list[int], s: SamplingConfig, device):
    """Sample one answer per prompt. Returns (right-padded prompt+answer ids, attention mask, answer mask
    aligned with next-token positions, answer texts, ended-with-stop flags)."""
    import torch

    policy = model.policy
    pad = tokenizer.pad_token_id
    width = max(len(p["ids"]) for p in prompts)
    ids = torch.full((len(prompts), width), pad, dtype=torch.long)
    attn = torch.zeros_like(ids)
    for i, p in enumerate(prompts):  # left-padded for generation
        ids[i, width - len(p["ids"]):] = torch.tensor(p["ids"])
        attn[i, width - len(p["ids"]):] = 1
    greedy = s.temperature == 0
    gen_kwargs = dict(max_new_tokens=s.max_new_tokens, min_new_tokens=s.min_new_tokens, do_sample=not greedy,
                      repetition_penalty=s.repetition_penalty, eos_token_id=stop_ids, pad_token_id=pad)
    if not greedy:
        gen_kwargs.update(temperature=s.temperature, top_p=s.top_p, top_k=s.top_k)
    was_training = policy.training
    policy.eval()
    with torch.no_grad():
        out = policy.generate(input_ids=ids.to(device), attention_mask=attn.to(device), **gen_kwargs)
    policy.train(was_training)
    answers, ended = [], []
    for row in out[:, width:].tolist():
        cut = next((k for k, t in enumerate(row) if t in stop_ids), None)
        answers.append(row[: cut + 1] if cut is not None else row)
        ended.append(cut is not None)
    seqs = [p["ids"] + a for p, a in zip(prompts, answers)]
    full = max(len(x) for x in seqs)
    seq = torch.full((len(seqs), full), pad, dtype=torch.long)
    mask = torch.zeros_like(seq)
    action = torch.zeros((len(seqs), full - 1))
    for i, (p, a) in enumerate(zip(prompts, answers)):
        seq[i, : len(p["ids"]) + len(a)] = torch.tensor(p["ids"] + a)
        mask[i, : len(p["ids"]) + len(a)] = 1
        action[i, len(p["ids"]) - 1: len(p["ids"]) - 1 + len(a)] = 1  # logits at p-1 predict token p
    texts = [tokenizer.decode([t for t in a if t not in stop_ids], skip_special_tokens=True) for a in answers]
    return seq, mask, action, texts, ended


def load_reward(run: str, rm_manifest: dict, device) -> tuple:
    """(reward model, its tokenizer, its chat format, its reward_stats): what `score_answers` needs."""
    rm = models.load_reward_model(run, device=str(device))
    rm_fmt = templates.resolve_format(rm.tokenizer, rm_manifest.get("model", {}).get("template") or "auto")
    return rm.model.requires_grad_(False), rm.tokenizer, rm_fmt, rm_manifest.get("reward_stats")


def score_answers(reward, prompts, texts, cfg: PPOConfig, ended) -> tuple[list[float], list[float]]:
    """(raw RM scores, scores used as reward: normalised, minus the missing-EOS penalty)."""
    rm_model, rm_tok, rm_fmt, stats = reward
    seqs = []
    for p, text in zip(prompts, texts):
        prompt_ids, answer_ids = preference.encode_pair(rm_tok, rm_fmt, p["prompt"], text if text.strip() else " ")
        seqs.append(prompt_ids + answer_ids)
    raw = models.score_sequences(rm_model, seqs, rm_tok.pad_token_id, batch_size=len(seqs))
    used = []
    for r, e in zip(raw, ended):
        v = (r - stats["mean"]) / max(stats["std"], 1e-6) if cfg.train.normalize_reward and stats else r
        used.append(v - (cfg.train.missing_eos_penalty if not e else 0.0))
    return raw, used


def ppo_step(model, optimizer, accelerator, tokenizer, batch: list[dict], stop_ids, reward, cfg: PPOConfig) -> dict:
    """One PPO step on `batch` prompts: sample an answer to each and score it, per-token rewards with the KL
    penalty, GAE advantages, then `ppo_epochs` passes of clipped policy and value updates over mini-batches.
    Returns the step's metrics."""
    import torch

    t, device = cfg.train, accelerator.device
    unwrapped = accelerator.unwrap_model(model)
    seq, attn, action, texts, ended = rollout(unwrapped, tokenizer, batch, stop_ids, cfg.sampling, device)
    seq, attn, action = seq.to(device), attn.to(device), action.to(device)
    raw, used = score_answers(reward, batch, texts, cfg, ended)
    with torch.no_grad():
        logits, values = model(seq, attn)
        old_logps = answer_logps(logits, seq)
        old_values = values[:, :-1]
        ent = entropy(logits, action)
        with unwrapped.policy.disable_adapter():
            ref_logps = answer_logps(unwrapped.policy(input_ids=seq, attention_mask=attn, use_cache=False).logits, seq)
        rewards, kl = token_rewards(torch.tensor(used, device=device), old_logps, ref_logps, action, t.kl_coef)
        advantages, returns = gae(rewards, old_values * action, action, t.gamma, t.lam)
        advantages = whiten(advantages, action) * action
    del logits
    parts = {"pg_loss": [], "vf_loss": [], "clipfrac": [], "approx_kl": []}
    for _ in range(t.ppo_epochs):
        order = torch.randperm(len(batch)).tolist()
        for k in range(0, len(batch), t.mini_batch_size):
            idx = order[k: k + t.mini_batch_size]
            logits, values = model(seq[idx], attn[idx])
            pg_loss, vf_loss, diag = ppo_losses(
                answer_logps(logits, seq[idx]), old_logps[idx], advantages[idx], values[:, :-1],
                old_values[idx], returns[idx], action[idx], t.clip_range, t.clip_range_value)
            accelerator.backward(pg_loss + t.vf_coef * vf_loss)
            if t.max_grad_norm:
                accelerator.clip_grad_norm_(model.parameters(), t.max_grad_norm)
            optimizer.step()
            optimizer.zero_grad()
            for key, value in (("pg_loss", pg_loss.detach().item()), ("vf_loss", vf_loss.detach().item()), *diag.items()):
                parts[key].append(value)
    return {
        "reward": sum(raw) / len(raw),
        "reward_used": sum(used) / len(used),
        "kl": float(kl.sum(1).mean()),
        "entropy": ent,
        "response_length": float(action.sum(1).mean()),
        "ended_share": sum(ended) / len(ended),
        **{k: sum(v) / len(v) for k, v in parts.items()},
    }


def run_metrics(history: list[dict], started: float) -> dict:
    """The run's figures: reward at the start and the end (each a mean over up to 5 steps), KL, answers."""
    k = max(1, min(5, len(history) // 4))
    first, last = history[:k], history[-k:]
    mean = lambda rows, key: sum(r[key] for r in rows) / len(rows)  # noqa: E731
    return {"steps": len(history), "reward_first": mean(first, "reward"), "reward_last": mean(last, "reward"),
            "kl_last": mean(last, "kl"), "kl_max": max(r["kl"] for r in history),
            "response_length_last": mean(last, "response_length"), "ended_share_last": mean(last, "ended_share"),
            "train_runtime_s": round(time.time() - started, 1), "averaged_over_steps": k}


class StepLog:
    """Each step's metrics: TensorBoard (RUN/logs, as in the Trainer-based stages), a JSON line every
    `logging_steps`, and the progress bar. Rank 0 only writes."""

    def __init__(self, run_dir: Path, t: PPOTrainConfig, start_step: int, main: bool):
        from tqdm.auto import tqdm

        self.t, self.main, self.writer = t, main, None
        self.bar = tqdm(total=t.steps, initial=start_step, desc="ppo", unit="step", disable=not main)
        if main:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(run_dir / "logs"))

    def __call__(self, step: int, metrics: dict) -> None:
        if self.writer is not None:
            for key, value in metrics.items():
                if key != "step":
                    self.writer.add_scalar(f"ppo/{key}", value, step)
        if step % self.t.logging_steps == 0 or step == self.t.steps:
            self.bar.set_postfix(reward=f"{metrics['reward']:.3f}", kl=f"{metrics['kl']:.3f}")
            if self.main:
                self.bar.write(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in metrics.items()}))
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()
        if self.writer is not None:
            self.writer.close()


# --------------------------------------------------------------------------------------- checkpoints


def save_checkpoint(run_dir: Path, step: int, model, optimizer, history: list, sampler: random.Random) -> Path:
    """checkpoints/checkpoint-N, the name `runs.start` resumes from: adapter, value head, optimizer, RNG states
    and trainer_state.json (step, history, sampler); written to a temporary folder and renamed, so a crash
    never leaves half a checkpoint."""
    import torch

    final = run_dir / "checkpoints" / f"checkpoint-{step}"
    tmp = run_dir / "checkpoints" / f".checkpoint-{step}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model.policy.save_pretrained(tmp)
    common.save_tensors(tmp / "value_head.safetensors", model.value_head.state_dict())
    torch.save({"optimizer": optimizer.state_dict(), "torch_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}, tmp / "state.pt")
    (tmp / "trainer_state.json").write_text(json.dumps({"step": step, "history": history,
                                                        "sampler": repr(sampler.getstate())}))
    runs.ordinary_modes(tmp)
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    return final


def load_checkpoint(path: Path, model, optimizer, sampler: random.Random) -> tuple[int, list]:
    import ast

    import torch
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    set_peft_model_state_dict(model.policy, load_file(str(path / "adapter_model.safetensors")))
    model.value_head.load_state_dict(load_file(str(path / "value_head.safetensors")))
    state = torch.load(path / "state.pt", weights_only=False)
    optimizer.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["torch_rng"])
    if state["cuda_rng"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    meta = json.loads((path / "trainer_state.json").read_text())
    sampler.setstate(ast.literal_eval(meta["sampler"]))
    return meta["step"], meta["history"]


# --------------------------------------------------------------------------------------------- train


@runs.replaces_on_success
def run(cfg: PPOConfig, callbacks=None) -> Path:
    """Train per `cfg`; returns the run folder. `callbacks`: functions called as f(step, metrics) after each
    step (and its checkpoint)."""
    import torch
    from accelerate import Accelerator
    from transformers import set_seed

    started = time.time()
    run_dir, previous, checkpoint = runs.start(cfg.output_dir, resume=cfg.resume, overwrite=cfg.overwrite)
    check_settings(cfg)
    prompts, fingerprints = read_prompts(cfg)
    rm_manifest = common.reward_run(cfg.reward_model)
    runs.refuse_changed_data(run_dir, previous, checkpoint, fingerprints)

    t = cfg.train
    accelerator = Accelerator(cpu=not torch.cuda.is_available(),
                              mixed_precision="bf16" if common.bf16_wanted(t.bf16) else "no")
    device = accelerator.device
    loaded, fmt = models.load_for_training(cfg.model, cfg.lora.method, t.seed, device=str(device))
    policy, tokenizer = loaded.model, loaded.tokenizer
    fmt, system_prompt = common.system_prompt_format(tokenizer, fmt, cfg.data.system_prompt)
    stop_ids = templates.generation_stop_ids(tokenizer, fmt)
    reward = load_reward(cfg.reward_model, rm_manifest, device)

    stats = {"prompts": len(prompts)}
    fitted = preference.fit_prompts(prompts, tokenizer, fmt, stats, max_length=cfg.data.max_prompt_length,
                                    truncation=cfg.data.truncation)
    items = [{**p, "ids": p["prompt_ids"]} for p in fitted]
    if not items:
        raise MedtuneError(f"no prompt fits data.max_prompt_length={cfg.data.max_prompt_length}",
                           hint="raise data.max_prompt_length, or use data.truncation=keep_end")
    stats["used"] = len(items)
    if accelerator.is_main_process:
        print(f"data: {preference.fit_summary(stats, 'prompts')}")
    run_dir = runs.prepare(cfg.output_dir, resume=cfg.resume, overwrite=cfg.overwrite)

    policy.config.use_cache = True  # generation is most of a PPO step; training forwards pass use_cache=False
    set_seed(t.seed)
    model = _policy_with_value(models.apply_lora(policy, cfg.lora)).to(device)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=t.learning_rate)
    sampler = random.Random(t.seed)
    start_step, history = load_checkpoint(checkpoint, model, optimizer, sampler) if checkpoint else (0, [])
    model, optimizer = accelerator.prepare(model, optimizer)
    unwrapped = accelerator.unwrap_model(model)
    manifest = common.manifest(
        "ppo", cfg, previous, loaded, fmt.name, fingerprints, stats, default_system_prompt=system_prompt,
        parameters=common.parameter_counts(unwrapped),
        reward_model={"path": str(Path(cfg.reward_model).resolve()), "reward_stats": rm_manifest.get("reward_stats")})
    common.begin(run_dir, manifest, checkpoint, resume=cfg.resume)

    log = StepLog(run_dir, t, start_step, accelerator.is_main_process)
    with common.failed_on_error(run_dir, manifest), contextlib.closing(log):
        for step in range(start_step + 1, t.steps + 1):
            batch = [items[sampler.randrange(len(items))] for _ in range(t.batch_size)]
            metrics = {"step": step, **ppo_step(model, optimizer, accelerator, tokenizer, batch, stop_ids, reward, cfg)}
            history.append(metrics)
            log(step, metrics)
            if accelerator.is_main_process and step % t.save_steps == 0 and step < t.steps:
                save_checkpoint(run_dir, step, unwrapped, optimizer, history, sampler)
            for fn in callbacks or []:
                fn(step, metrics)

    common.save_tensors(run_dir / "value_head.safetensors", unwrapped.value_head.state_dict())
    common.finish(run_dir, manifest, unwrapped.policy, tokenizer, keep_checkpoints=t.keep_checkpoints,
                  summary=lambda: _summary(run_dir, manifest), metrics=run_metrics(history, started), history=history)
    return run_dir


def _summary(run_dir: Path, manifest: dict) -> None:
    m, s = manifest["metrics"], manifest["data_stats"]
    print(f"\nppo finished in {m['train_runtime_s']} s, {m['steps']} steps; {s['used']} prompts")
    print(f"  {preference.fit_summary(s, 'prompts')}")
    print(f"  reward (RM score, mean of {m['averaged_over_steps']} steps): {m['reward_first']:.3f} -> {m['reward_last']:.3f}; "
          f"KL to the reference {m['kl_last']:.3f} (max {m['kl_max']:.3f}); "
          f"answers that ended their turn {m['ended_share_last']:.0%}")
    print(f"  wrote LoRA adapter, value head, tokenizer and medtune.json to {run_dir}")
    print(f"  next: medtune chat {run_dir}")
