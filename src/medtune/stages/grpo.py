"""Reinforcement learning on rewards that can be checked: GRPO (and RLOO) on TRL's trainers.

Reads top to bottom: config -> run folder -> prompts (checked; from prompt files or an MCQ benchmark) ->
rewards (checked) -> model (the policy to tune, usually an SFT run) -> TRL trainer -> train (or resume) ->
save -> manifest.

Each step the policy samples `num_generations` answers to each prompt; every answer gets the weighted sum of
the rewards in `rewards`, and its advantage is how much better it did than the other answers to the same
prompt. The policy then raises the probability of the answers with a positive advantage (PPO-style clipped
ratio, `epsilon`), minus `beta` times its KL divergence from the reference. No value model is trained.

Advantages (`advantage`):
- `grpo`  (r - mean of the group) / std of the group (`scale_rewards: group`; `batch` divides by the std of
          the whole batch, `none` does not divide); the KL penalty is a term of the loss (TRL GRPOTrainer)
- `rloo`  r - mean of the group's other answers (REINFORCE leave-one-out); the KL penalty is subtracted from
          the reward before the advantage (TRL RLOOTrainer); `scale_rewards` group/batch normalises the
          advantages of the batch to unit spread, `none` keeps them raw

Rewards (`rewards`, each 0.0 or 1.0 but rm; weighted by `reward_weights`):
- `mcq`      1.0 if medtune.eval.scoring.extract_choice reads the gold option out of the answer ("The answer
             is C", "C. Metformin", "答案：C", "Answer: (C)", or exactly one option text named), else 0.0
- `format`   1.0 if the answer states exactly one of the prompt's option labels as "Answer: X" or "答案：X"
             (see FORMAT_PATTERN), else 0.0; it does not look at whether X is right
- `keyword`  1.0 if the answer contains any of the record's `keywords` (case-insensitive), else 0.0
- `rm`       the score of a `medtune rm` run (`reward_model`) on prompt + answer, encoded with the reward
             model's own template; normalised with its reward_stats (mean 0, std 1) unless rm_normalize=false

The reference is the starting policy: with LoRA, the same network with the adapter switched off (no second
copy in memory). Full fine-tuning is allowed only with beta=0 (no reference at all), because TRL would load
the reference from the hub id or folder in the model's config, which is not the starting point of a chained
run.

Every TRL import is inside this file, because TRL renames and moves things between releases. The file is
longer than the other stages' (about 590 lines) because the rule rewards, their record checks and the
benchmark-to-prompt conversion live beside the stage: nothing else uses them, and each reads on its own.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Literal

from medtune import runs
from medtune.config import above, at_least, check, one_of
from medtune.data import formats, jsonio, preference, templates
from medtune.errors import ConfigError, DataError, MedtuneError
from medtune.eval import tasks
from medtune.models import LoraConfig, ModelConfig
from medtune.stages import common
from medtune.stages.common import SCHEDULERS, TrainConfig

REWARDS = ("mcq", "format", "keyword", "rm")
DEFAULT_WEIGHTS = {"mcq": 1.0, "format": 0.2, "keyword": 1.0, "rm": 1.0}
LOSS_TYPES = ("dapo", "grpo", "dr_grpo", "bnpo")
LETTER_LABELS = list("ABCDEFGHIJ")  # labels of a prompt record that gives a gold letter but no options


@dataclass
class PromptData(common.PromptData):
    """Prompts (the `data` section of a grpo recipe): prompt files, or an MCQ benchmark. Besides `path`,
    `truncation`, `max_samples` and `system_prompt` (stages/common.py PromptData; a prompt record may carry
    "answer": "C", "options": {"A": ..., ...} | [...] and "keywords": [...] as the rewards need them):

    task: instead of path, a benchmark of medtune.eval.tasks (mcq, medmcqa, medqa, medqa_4options, pubmedqa,
      mmlu_medical, cmmlu), turned into prompts that show the question and the lettered options and ask for the
      answer letter; the gold label is the answer.
    task_file: the task's file (or folder for mmlu_medical/cmmlu); task mcq defaults to medtune:demo/exam.jsonl.
    setting: pubmedqa's reasoning_required (abstract shown) or reasoning_free (the conclusion shown).
    max_length: longest prompt in tokens (rendered with the chat template). The answer's length is
      `max_new_tokens`.
    val_size: held-out share (0 < x < 1) or count (x >= 1) of prompts whose mean reward is measured before and
      after training (and every train.eval_steps); 0 for none. Each held-out prompt costs num_generations answers.
    """

    task: str = field(default="", metadata=one_of("", *tasks.TASKS))
    task_file: str = ""
    setting: str = field(default="reasoning_required", metadata=one_of(*tasks.PUBMEDQA_SETTINGS))
    max_length: int = field(default=512, metadata=at_least(8))
    val_size: float = field(default=0.0, metadata=at_least(0))


@dataclass
class GRPOTrainConfig(TrainConfig):
    """Optimisation, as in sft (docs/sft.md), with defaults for RL with LoRA: learning_rate 1e-5, a constant rate
    after warmup, batch_size 8 (answers, not prompts: 2 prompts x 4 answers), a log line every 5 steps."""

    learning_rate: float = field(default=1e-5, metadata=above(0))
    batch_size: int = field(default=8, metadata=at_least(1))
    scheduler: str = field(default="constant_with_warmup", metadata=one_of(*SCHEDULERS))
    logging_steps: int = field(default=5, metadata=at_least(1))


def _rewards_ok(value) -> bool:
    return len(value) > 0 and len(set(value)) == len(value) and all(r in REWARDS for r in value)


@dataclass
class GRPOConfig:
    """`medtune grpo RECIPE [key=value ...]`.

    rewards: the rewards to add up, from mcq, format, keyword and rm (see the module docstring).
    reward_weights: one weight per reward, in order; empty = mcq 1.0, format 0.2, keyword 1.0, rm 1.0.
    reward_model: the `medtune rm` run folder the rm reward scores with.
    rm_normalize: rm: (score - mean) / std with the reward run's reward_stats, so it sits beside 0/1 rewards.
    advantage: grpo (group-normalised, TRL GRPOTrainer) or rloo (leave-one-out, TRL RLOOTrainer).
    num_generations: answers sampled per prompt (the group); train.batch_size * train.grad_accum must be a
      multiple of it. train.batch_size counts answers, not prompts.
    beta: weight of the KL divergence from the reference (0.04 is usual; 0 = no reference; full fine-tuning
      needs 0).
    loss_type: grpo only: dapo (token losses averaged over the batch's tokens), grpo (per answer, then over
      answers; favours short right answers), dr_grpo (divided by a constant, max_new_tokens), bnpo (like dapo,
      over the device's batch).
    scale_rewards: group, batch or none (see the module docstring).
    epsilon: clipping range of the probability ratio of an answer's tokens (0.2).
    num_iterations: optimisation passes over each batch of answers before sampling again (1: on-policy).
    max_new_tokens: longest sampled answer in tokens; longer ones are cut.
    temperature, top_p, top_k, repetition_penalty: sampling (top_k 0 = off; 1.0 = off for the others).
    """

    stage: ClassVar[str] = "grpo"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: PromptData = field(default_factory=PromptData)
    lora: LoraConfig = field(default_factory=LoraConfig)
    train: GRPOTrainConfig = field(default_factory=GRPOTrainConfig)
    rewards: list[str] = field(default_factory=lambda: ["mcq", "format"], metadata=check(
        _rewards_ok, "a list of different rewards from: " + ", ".join(REWARDS)))
    reward_weights: list[float] = field(default_factory=list)
    reward_model: str = ""
    rm_normalize: bool = True
    advantage: Literal["grpo", "rloo"] = "grpo"
    num_generations: int = field(default=4, metadata=at_least(2))
    beta: float = field(default=0.04, metadata=at_least(0))
    loss_type: str = field(default="dapo", metadata=one_of(*LOSS_TYPES))
    scale_rewards: Literal["group", "batch", "none"] = "group"
    epsilon: float = field(default=0.2, metadata=above(0))
    num_iterations: int = field(default=1, metadata=at_least(1))
    max_new_tokens: int = field(default=256, metadata=at_least(1))
    temperature: float = field(default=1.0, metadata=above(0))
    top_p: float = field(default=1.0, metadata=check(lambda v: 0 < v <= 1, "in (0, 1]"))
    top_k: int = field(default=0, metadata=at_least(0))
    repetition_penalty: float = field(default=1.0, metadata=above(0))
    output_dir: str = field(default="runs/grpo", metadata=check(lambda v: v.strip() != "", "a folder name"))
    resume: bool = False
    overwrite: bool = False


# ------------------------------------------------------------------------------------------- checks


def check_settings(cfg: GRPOConfig) -> None:
    """Settings that cannot work together; raised before anything is read or loaded."""
    if cfg.lora.method == "full" and cfg.beta > 0:
        raise ConfigError("full fine-tuning with a KL penalty (beta > 0) has no reference model in medtune",
                          where="beta", hint="use lora.method=lora (the reference is the adapter switched off), "
                                             "or set beta=0")
    generated = cfg.train.batch_size * cfg.train.grad_accum
    if generated % cfg.num_generations:
        raise ConfigError(f"train.batch_size * train.grad_accum = {generated} answers per step is not a multiple of "
                          f"num_generations={cfg.num_generations}", where="train.batch_size",
                          hint="train.batch_size counts answers: make it (times grad_accum) a multiple of "
                               "num_generations")
    if cfg.reward_weights and len(cfg.reward_weights) != len(cfg.rewards):
        raise ConfigError(f"{len(cfg.reward_weights)} reward_weights for {len(cfg.rewards)} rewards",
                          where="reward_weights", hint="give one weight per reward, in the order of `rewards`")
    if cfg.advantage == "rloo" and cfg.loss_type != "dapo":
        raise ConfigError(f"loss_type={cfg.loss_type} applies to advantage=grpo only", where="loss_type",
                          hint="drop loss_type, or use advantage=grpo")
    if "rm" in cfg.rewards:
        if not cfg.reward_model:
            raise ConfigError("the rm reward needs a reward model", where="reward_model",
                              hint="set reward_model to a `medtune rm` run folder")
        common.reward_run(cfg.reward_model)
    elif cfg.reward_model:
        raise ConfigError("reward_model is set but rm is not among the rewards", where="reward_model",
                          hint="add rm to rewards, or drop reward_model")
    if bool(cfg.data.path) == bool(cfg.data.task):
        raise ConfigError("give data.path (prompt files) or data.task (a benchmark), exactly one", where="data")
    if cfg.data.task_file and not cfg.data.task:
        raise ConfigError("data.task_file needs data.task", where="data.task_file", hint="set data.task, e.g. medmcqa")


# ---------------------------------------------------------------------------------------------- data


def _lang(text: str) -> str:
    return "zh" if len(formats.CJK.findall(text)) > len(text) * 0.2 else "en"


INSTRUCTION = {"en": 'Answer with the letter of the correct option, as "Answer: X".',
               "zh": "请给出正确选项的字母，格式为“答案：X”。"}


def mcq_prompt(task: str, item) -> str:
    """A benchmark item as a user turn: (context,) question, lettered options, and what to answer.
    PubMedQA: abstract, question, "Answer yes, no or maybe, as "Answer: yes"."."""
    if item.choice_labels == list(tasks.PUBMEDQA_LABELS):
        return (f"{item.context.strip()}\n\nQuestion: {item.question.strip()}\n"
                'Answer yes, no or maybe, as "Answer: yes", "Answer: no" or "Answer: maybe".')
    lang = "zh" if task == "cmmlu" else _lang(item.question)
    options = "\n".join(f"{label}. {text.strip()}" for label, text in zip(item.choice_labels, item.choices))
    context = f"{item.context.strip()}\n\n" if item.context.strip() else ""
    return f"{context}{item.question.strip()}\n\n{options}\n\n{INSTRUCTION[lang]}"


def _where(source: str) -> tuple[str, int | None]:
    path, _, line = source.rpartition(":")
    return (path, int(line)) if line.isdigit() else (source, None)


def _record_fields(rec: dict, needs: set[str]) -> dict:
    """answer / option_labels / options / keywords of one prompt-file record, checked for the rewards in
    `needs` (the gold answer becomes its option label: "C", or "yes" for yes/no/maybe questions)."""
    path, line = _where(rec["source"])
    labels, options = LETTER_LABELS, []
    if rec.get("options") is not None:
        value = rec["options"]
        if isinstance(value, list):
            if not 2 <= len(value) <= len(LETTER_LABELS) or not all(isinstance(o, str) for o in value):
                raise DataError(path, line, "options", "must be 2 to 10 option texts",
                                'write "options": ["...", "..."]')
            labels, options = LETTER_LABELS[: len(value)], list(value)
        else:
            labels, options = tasks.lettered_options(path, line, value)
    answer = rec.get("answer")
    if answer is not None:
        if isinstance(answer, int) and not isinstance(answer, bool) and options:
            if not 0 <= answer < len(options):
                raise DataError(path, line, "answer", f"index {answer} is out of range 0..{len(options) - 1}",
                                "an index counts from 0")
            answer = labels[answer]
        if not isinstance(answer, str):
            raise DataError(path, line, "answer", f"must be an option letter, got {jsonio.json_type(answer)}",
                            'write "answer": "C"')
        answer = answer.strip()
        if not options and answer.lower() in tasks.PUBMEDQA_LABELS:
            labels, options, answer = list(tasks.PUBMEDQA_LABELS), list(tasks.PUBMEDQA_LABELS), answer.lower()
        elif answer.upper() in labels:  # "c" for option C
            answer = answer.upper()
        if answer not in labels:
            raise DataError(path, line, "answer", f"{answer!r} is not among the options {', '.join(labels)}",
                            "the gold answer is an option letter (A-J), or yes/no/maybe")
    elif "mcq" in needs:
        raise DataError(path, line, "answer", "missing", 'the mcq reward needs the gold option: add "answer": "C"')
    keywords = rec.get("keywords")
    if keywords is not None:
        keywords = [keywords] if isinstance(keywords, str) else keywords
        if not isinstance(keywords, list) or not keywords or not all(isinstance(k, str) and k.strip()
                                                                     for k in keywords):
            raise DataError(path, line, "keywords", "must be a non-empty string or a list of them",
                            'write "keywords": ["ambulance", "emergency"]')
    elif "keyword" in needs:
        raise DataError(path, line, "keywords", "missing",
                        'the keyword reward needs "keywords": ["..."] (any one of them in the answer scores 1)')
    return {"answer": answer or "", "option_labels": list(labels), "options": options, "keywords": list(keywords or [])}


def _fingerprints(path: str, records: int) -> list[dict]:
    p = Path(path)
    if p.is_dir():  # MMLU/CMMLU folders: every CSV that may be read
        return [{**formats.fingerprint(f), "records": None} for f in sorted(p.rglob("*.csv"))]
    return [{**formats.fingerprint(p), "records": records}]


def read_prompts(cfg: GRPOConfig) -> tuple[list[dict], list[dict]]:
    """Every prompt, checked for the rewards in use, before any model loads. Returns (rows, fingerprints);
    a row is {"prompt": [messages], "answer", "option_labels", "options", "keywords", "source"}."""
    from medtune.data import resolve_path

    needs = set(cfg.rewards)
    d = cfg.data
    rows, fingerprints = [], []
    if d.task:
        if "keyword" in needs:
            raise ConfigError("the keyword reward needs prompt files with a keywords field, not a benchmark",
                              where="rewards", hint="use data.path with {\"prompt\", \"keywords\"} records")
        file = d.task_file or ("medtune:demo/exam.jsonl" if d.task == "mcq" else "")
        if not file:
            raise ConfigError(f"data.task={d.task} needs data.task_file", where="data.task_file",
                              hint=f"the {d.task} file, e.g. ../shared/data/{tasks.get_task(d.task).folder}/...")
        path = resolve_path(file)
        items = tasks.load_task(d.task, path, setting=d.setting)
        if d.max_samples:
            items = items[: d.max_samples]
        for it in items:
            rows.append({"prompt": [{"role": "user", "content": mcq_prompt(d.task, it)}],
                         "answer": it.choice_labels[it.answer], "option_labels": list(it.choice_labels),
                         "options": list(it.choices), "keywords": [], "source": it.source})
        fingerprints += _fingerprints(path, len(items))
    else:
        for p, found in common.read_prompt_files(d):
            for rec in found:
                rows.append({"prompt": rec["prompt"], **_record_fields(rec, needs), "source": rec["source"]})
            fingerprints += _fingerprints(p, len(found))
    for row in rows:
        row["prompt"] = common.with_system_prompt(row["prompt"], d.system_prompt)
    return rows, fingerprints


def validate(cfg: GRPOConfig) -> list[str]:
    """`medtune validate`: check the settings and every prompt file; lines to print."""
    check_settings(cfg)
    rows, fingerprints = read_prompts(cfg)
    lines = [f"data ok: {f['path']}: {f['records']} prompts" for f in fingerprints if f["records"] is not None]
    if cfg.data.task and not lines:
        lines = [f"data ok: {cfg.data.task}: {len(rows)} prompts"]
    return lines


# ------------------------------------------------------------------------------------------ rewards

# "Answer: C", "answer:(C)", "ANSWER：yes", "答案：C", "答案: C" -- the label must stand alone (not "Answer: Cough")
FORMAT_PATTERN = re.compile(r"(?:(?<![A-Za-z])answer|答案)\s*[:：]\s*[\(\[（]?\s*([A-Za-z]+)(?![A-Za-z0-9])",
                            re.IGNORECASE)


def completion_text(completion) -> str:
    """The text of one answer as TRL hands it over: a string, or [{"role": "assistant", "content": ...}]."""
    if isinstance(completion, str):
        return completion
    return "".join(m.get("content") or "" for m in completion if isinstance(m, dict))


def mcq_score(text: str, answer: str, labels: list[str], options: list[str]) -> float:
    """1.0 if extract_choice reads the gold label `answer` out of `text`, else 0.0."""
    from medtune.eval.scoring import extract_choice

    if not answer or answer not in labels:
        return 0.0
    pick = extract_choice(text, labels, options if options else [""] * len(labels))
    return 1.0 if pick is not None and labels[pick] == answer else 0.0


def format_score(text: str, labels: list[str]) -> float:
    """1.0 if `text` states exactly one of `labels` as "Answer: X" / "答案：X" (once or repeated), else 0.0.
    Words after "Answer:" that are not labels ("Answer: Cough") are no statement."""
    upper = {lab.upper() for lab in labels}
    stated = {m.group(1).upper() for m in FORMAT_PATTERN.finditer(text)} & upper
    return 1.0 if len(stated) == 1 else 0.0


def keyword_score(text: str, keywords: list[str]) -> float:
    """1.0 if any keyword occurs in `text` (case-insensitive), else 0.0."""
    lowered = text.lower()
    return 1.0 if any(k.lower() in lowered for k in keywords) else 0.0


class Reward:
    """A reward function as TRL calls it: keyword arguments prompts, completions, completion_ids and every
    dataset column by name (lists, one item per answer); returns one float per answer. `__name__` is the
    name TRL logs it under (rewards/<name>/mean)."""

    def __init__(self, name: str):
        if name not in ("mcq", "format", "keyword"):
            raise ValueError(f"not a rule reward: {name}")
        self.__name__ = name

    def __call__(self, prompts, completions, answer=None, option_labels=None, options=None, keywords=None, **_):
        n = len(completions)
        answer, labels = answer or [""] * n, option_labels or [LETTER_LABELS] * n
        options, keywords = options or [[]] * n, keywords or [[]] * n
        texts = [completion_text(c) for c in completions]
        if self.__name__ == "mcq":
            return [mcq_score(t, a, lab, o) for t, a, lab, o in zip(texts, answer, labels, options)]
        if self.__name__ == "format":
            return [format_score(t, lab) for t, lab in zip(texts, labels)]
        return [keyword_score(t, k) for t, k in zip(texts, keywords)]


class RMReward:
    """The rm reward: a `medtune rm` run scores prompt + answer, encoded with its own tokenizer and template
    exactly as it was trained (preference.encode_pair), read at the answer's end-of-turn token. Sequences
    longer than the reward model's data.max_length keep their last tokens."""

    __name__ = "rm"

    def __init__(self, run: str, *, device: str = "cpu", normalize: bool = True, batch_size: int = 8):
        from medtune import models

        manifest = common.reward_run(run)
        loaded = models.load_reward_model(run, device=device)
        self.model, self.tokenizer = loaded.model.requires_grad_(False), loaded.tokenizer
        self.fmt = templates.resolve_format(self.tokenizer, manifest.get("model", {}).get("template") or "auto")
        stats = manifest.get("reward_stats") or {}
        self.mean, self.std = (stats.get("mean", 0.0), stats.get("std", 1.0)) if normalize and stats else (0.0, 1.0)
        self.std = self.std if self.std and self.std > 1e-6 else 1.0
        self.max_length = int(manifest.get("config", {}).get("data", {}).get("max_length") or 1024)
        self.batch_size = batch_size
        self.info = {"run": str(Path(run).resolve()), "template": self.fmt.name, "normalize": normalize and bool(stats),
                     "mean": self.mean, "std": self.std}

    def scores(self, prompts: list[list[dict]], answers: list[str]) -> list[float | None]:
        from medtune import models

        seqs, keep = [], []
        for k, (prompt, answer) in enumerate(zip(prompts, answers)):
            prompt = prompt if isinstance(prompt, list) else [{"role": "user", "content": prompt}]
            try:
                p, a = preference.encode_pair(self.tokenizer, self.fmt, prompt, answer if answer.strip() else " ")
            except MedtuneError:  # e.g. an answer holding medtune's reserved character: no score
                continue
            seqs.append((p + a)[-self.max_length:])
            keep.append(k)
        out: list[float | None] = [None] * len(answers)
        if seqs:
            raw = models.score_sequences(self.model, seqs, self.tokenizer.pad_token_id, self.batch_size)
            for k, r in zip(keep, raw):
                out[k] = (r - self.mean) / self.std
        return out

    def __call__(self, prompts, completions, **_):
        return self.scores(prompts, [completion_text(c) for c in completions])


def reward_functions(cfg: GRPOConfig, device: str) -> tuple[list, list[float]]:
    """The reward callables and their weights, in the order of cfg.rewards."""
    funcs = [RMReward(cfg.reward_model, device=device, normalize=cfg.rm_normalize) if name == "rm" else
             Reward(name) for name in cfg.rewards]
    weights = list(cfg.reward_weights) or [DEFAULT_WEIGHTS[name] for name in cfg.rewards]
    return funcs, [float(w) for w in weights]


# --------------------------------------------------------------------------------------------- train


def trl_rows(rows: list[dict]) -> list[dict]:
    """Rows in TRL's prompt-only conversational form; the other columns reach the rewards by name."""
    return [{"prompt": r["prompt"], "answer": r["answer"], "option_labels": r["option_labels"],
             "options": r["options"], "keywords": r["keywords"]} for r in rows]


def trl_trainer(cfg: GRPOConfig, model, tokenizer, train_rows, val_rows, run_dir: Path, reward_funcs, weights,
                callbacks):
    """The TRL trainer for `cfg.advantage`, its arguments mapped from our recipe."""
    from datasets import Dataset

    from medtune import models

    t = cfg.train
    g = cfg.num_generations
    common_args = dict(
        common.trainer_arguments(t, run_dir, bool(val_rows)),
        per_device_eval_batch_size=g * max(1, -(-t.batch_size // g)), remove_unused_columns=False,
        # sampling and the policy loss
        num_generations=g, max_completion_length=cfg.max_new_tokens, temperature=cfg.temperature, top_p=cfg.top_p,
        top_k=cfg.top_k, repetition_penalty=cfg.repetition_penalty, beta=cfg.beta, epsilon=cfg.epsilon,
        num_iterations=cfg.num_iterations, reward_weights=weights, disable_dropout=True,
    )
    peft_config = models.peft_lora_config(model, cfg.lora) if cfg.lora.method != "full" else None
    if cfg.lora.method == "qlora":
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=t.gradient_checkpointing)
    kwargs = dict(model=model, reward_funcs=reward_funcs, train_dataset=Dataset.from_list(trl_rows(train_rows)),
                  eval_dataset=Dataset.from_list(trl_rows(val_rows)) if val_rows else None,
                  processing_class=tokenizer, peft_config=peft_config, callbacks=list(callbacks or []))
    if cfg.advantage == "rloo":
        from trl import RLOOConfig, RLOOTrainer

        return RLOOTrainer(args=RLOOConfig(**common_args, normalize_advantages=cfg.scale_rewards != "none"), **kwargs)
    from trl import GRPOConfig as TRLGRPOConfig
    from trl import GRPOTrainer

    args = TRLGRPOConfig(**common_args, loss_type=cfg.loss_type, scale_rewards=cfg.scale_rewards)
    return GRPOTrainer(args=args, **kwargs)


EVAL_KEYS = ("eval_reward", "eval_reward_std", "eval_kl", "eval_entropy", "eval_completions/mean_length")
HISTORY_KEYS = ("step", "loss", "reward", "reward_std", "kl", "entropy", "completions/mean_length",
                "completions/clipped_ratio", "frac_reward_zero_std", "learning_rate", "grad_norm")


def history_of(log_history: list[dict], reward_names: list[str]) -> list[dict]:
    """The logged training (and eval) figures worth keeping, per logging step."""
    keys = HISTORY_KEYS + tuple(f"rewards/{n}/mean" for n in reward_names)
    out = []
    for h in log_history:
        if "reward" in h:
            out.append({k: h[k] for k in keys if k in h})
        elif "eval_reward" in h:
            out.append({"step": h.get("step"), **eval_figures(h, reward_names)})
    return out


def eval_figures(metrics: dict, reward_names: list[str]) -> dict:
    """The held-out figures of one TRL evaluation: mean reward (and per reward), KL, entropy, answer length."""
    keys = EVAL_KEYS + tuple(f"eval_rewards/{n}/mean" for n in reward_names)
    return {k: metrics[k] for k in keys if k in metrics}


def summary_metrics(history: list[dict], reward_names: list[str]) -> dict:
    """Reward (and per-reward means) at the first and last logged step, KL at the end and its peak."""
    train = [h for h in history if "reward" in h]
    if not train:
        return {}
    first, last = train[0], train[-1]
    out = {"reward_first": first["reward"], "reward_last": last["reward"]}
    for n in reward_names:
        key = f"rewards/{n}/mean"
        if key in first and key in last:
            out[f"reward_{n}_first"], out[f"reward_{n}_last"] = first[key], last[key]
    kls = [h["kl"] for h in train if "kl" in h and not math.isnan(h["kl"])]
    if kls:
        out.update(kl_last=kls[-1], kl_max=max(kls))
    for key, name in (("entropy", "entropy_last"), ("completions/mean_length", "completion_length_last")):
        if key in last:
            out[name] = last[key]
    return out


@runs.replaces_on_success
def run(cfg: GRPOConfig, callbacks=None) -> Path:
    """Tune a policy on rewards per `cfg`; returns the run folder."""
    import torch

    from medtune import models

    started = time.time()
    run_dir, previous, checkpoint = runs.start(cfg.output_dir, resume=cfg.resume, overwrite=cfg.overwrite)
    check_settings(cfg)
    rows, fingerprints = read_prompts(cfg)
    runs.refuse_changed_data(run_dir, previous, checkpoint, fingerprints)
    loaded, fmt = models.load_for_training(cfg.model, cfg.lora.method, cfg.train.seed)
    model, tokenizer = loaded.model, loaded.tokenizer
    fmt, system_prompt = common.system_prompt_format(tokenizer, fmt, cfg.data.system_prompt)
    # an answer ends at the template's end-of-turn token (TRL stops at every id the generation config names)
    model.generation_config.eos_token_id = templates.generation_stop_ids(tokenizer, fmt)
    padding_side, tokenizer.padding_side = tokenizer.padding_side, "left"  # prompts are left-padded to generate

    stats = {"prompts": len(rows)}
    fitted = preference.fit_prompts(rows, tokenizer, fmt, stats, max_length=cfg.data.max_length,
                                    truncation=cfg.data.truncation)
    fitted = [{k: v for k, v in row.items() if k != "prompt_ids"} for row in fitted]  # TRL renders the prompt itself
    if not fitted:
        raise MedtuneError(f"no prompt fits data.max_length={cfg.data.max_length}",
                           hint="raise data.max_length, or use data.truncation=keep_end")
    print(f"data: {preference.fit_summary(stats, 'prompts')}")
    train_rows, val_rows = common.split_validation(fitted, cfg.data.val_size, cfg.train.seed)
    stats.update(train_prompts=len(train_rows), val_prompts=len(val_rows))
    models.check_lora_targets(model, cfg.lora)  # TRL applies LoRA later, after the run folder is written
    run_dir = runs.prepare(cfg.output_dir, resume=cfg.resume, overwrite=cfg.overwrite)

    reward_funcs, weights = reward_functions(cfg, "cuda" if torch.cuda.is_available() else "cpu")
    manifest = common.manifest(
        "grpo", cfg, previous, loaded, fmt.name, fingerprints, stats, advantage=cfg.advantage,
        default_system_prompt=system_prompt,
        rewards=[{"name": n, "weight": w} for n, w in zip(cfg.rewards, weights)],
        reward_model=next((f.info for f in reward_funcs if isinstance(f, RMReward)), None),
        reference="none (beta=0)" if cfg.beta == 0 else "the starting model with the adapter switched off")
    common.begin(run_dir, manifest, checkpoint, resume=cfg.resume)

    trainer = trl_trainer(cfg, model, tokenizer, train_rows, val_rows, run_dir, reward_funcs, weights, callbacks)
    manifest["parameters"] = common.parameter_counts(trainer.model)
    before = (previous or {}).get("heldout_before")
    if val_rows and before is None:  # the starting policy's mean reward on the held-out prompts
        with common.failed_on_error(run_dir, manifest):
            before = eval_figures(trainer.evaluate(), cfg.rewards)
    manifest["heldout_before"] = before  # kept by a resumed run: the starting policy's, not the checkpoint's
    runs.write_manifest(run_dir, manifest)
    metrics = common.train(trainer, run_dir, manifest, checkpoint, started)

    history = history_of(trainer.state.log_history, cfg.rewards)
    metrics.update(summary_metrics(history, cfg.rewards))
    if val_rows:
        metrics.update(eval_figures(trainer.evaluate(), cfg.rewards))
        if before and "eval_reward" in before:
            metrics["eval_reward_before"] = before["eval_reward"]
    metrics["train_runtime_s"] = round(time.time() - started, 1)
    tokenizer.padding_side = padding_side
    common.finish(run_dir, manifest, trainer.model, tokenizer, keep_checkpoints=cfg.train.keep_checkpoints,
                  summary=lambda: _summary(run_dir, manifest), metrics=metrics, history=history)
    return run_dir


def _summary(run_dir: Path, manifest: dict) -> None:
    s, m = manifest["data_stats"], manifest["metrics"]
    print(f"\ngrpo ({manifest['advantage']}) finished in {m['train_runtime_s']} s, {m['steps']} steps")
    print(f"  data: {s['train_prompts']} train / {s['val_prompts']} held-out prompts")
    print(f"  {preference.fit_summary(s, 'prompts')}")
    rewards = " + ".join(f"{r['weight']:g} * {r['name']}" for r in manifest["rewards"])
    if "reward_first" in m:
        kl = f"; KL {m['kl_last']:.4f} (peak {m['kl_max']:.4f})" if "kl_last" in m else ""
        print(f"  reward ({rewards}): {m['reward_first']:.3f} at the first logged step -> {m['reward_last']:.3f} at the"
              f" last{kl}")
    if "eval_reward" in m:
        print(f"  held-out reward: {m.get('eval_reward_before', math.nan):.3f} -> {m['eval_reward']:.3f}")
    kind = "LoRA adapter" if manifest["adapter"] else "full weights"
    print(f"  wrote {kind}, tokenizer and medtune.json to {run_dir}")
    print(f"  next: medtune chat {run_dir}")
