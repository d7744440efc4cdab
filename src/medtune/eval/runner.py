"""`medtune eval`: score a model (or run folder) on benchmark tasks, general text and generation health, and
write results.json, results.md and an HTML report into an eval folder.

Reads top to bottom: resolve task files and load every item (bad files stop here, before the model loads)
-> load the model once -> per task: prompts -> log-likelihood or generation -> metrics -> general-text
perplexity -> health -> write results and report.
"""

from __future__ import annotations

import json
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from medtune import NOT_MEDICAL_ADVICE, runs
from medtune.config import SEED_LIMIT, above, at_least, between, one_of
from medtune.errors import MedtuneError
from medtune.eval import scoring, tasks

DEMO_EXAM = "medtune:demo/exam.jsonl"
GENERATE_INSTRUCTION = {"en": "Answer with the letter of the correct option.", "zh": "请只回答正确选项的字母。"}


@dataclass
class EvalSettings:
    """What `medtune eval` runs. `files` maps a task to its file or folder (else found under `data_dir`);
    `general_tasks` are scored like `tasks` but reported as general ability (forgetting). A pipeline's eval
    step and a merge sweep build it with `config.from_dict` (same key, type and range checks as a recipe)."""

    tasks: list[str] = field(default_factory=list)
    general_tasks: list[str] = field(default_factory=list)
    data_dir: str | None = None
    files: dict[str, str] = field(default_factory=dict)
    setting: str = "reasoning_required"
    shots: int = field(default=0, metadata=at_least(0))
    limit: int = field(default=0, metadata=at_least(0))
    seed: int = field(default=0, metadata=between(0, SEED_LIMIT))
    mode: str = field(default="loglik", metadata=one_of("loglik", "generate"))
    batch_size: int = field(default=8, metadata=at_least(1))
    precision: str = field(default="auto", metadata=one_of("auto", "fp32", "bf16"))  # loglik: bf16 + fp32 re-check
    generate_batch_size: int = field(default=16, metadata=at_least(1))
    max_new_tokens: int = field(default=32, metadata=at_least(1))
    general_text: list[str] = field(default_factory=list)
    text_mode: str = field(default="line", metadata=one_of("line", "paragraph"))
    health: bool = False
    prompts: str | None = None
    health_repetition_penalty: float = field(default=1.1, metadata=above(0))
    health_max_new_tokens: int = field(default=512, metadata=at_least(1))
    health_langs: list[str] = field(default_factory=list)
    template: str | None = None
    trust_remote_code: bool = False
    enable_thinking: bool | None = None  # generate mode, thinking templates; the answer after </think> is scored
    safety: bool = False  # the safety prompts and rubrics (eval/safety.py, docs/safety.md)
    safety_prompts: str | None = None
    safety_langs: list[str] = field(default_factory=list)
    safety_max_new_tokens: int = field(default=256, metadata=at_least(1))
    judge: str | None = None  # an OpenAI-compatible base URL that grades the safety answers too
    judge_model: str | None = None


def task_file(name: str, s: EvalSettings) -> str:
    from medtune.data import resolve_path

    if name in s.files:
        return str(resolve_path(s.files[name]))
    if s.data_dir:
        return str(tasks.find_task_file(name, s.data_dir))
    if name in ("mcq", "mcq_cloze"):
        return str(resolve_path(DEMO_EXAM))
    raise MedtuneError(f"no file for task {name}", hint=f"pass --data-dir DIR (with {tasks.get_task(name).folder}/ in it) "
                       f"or --file {name}=PATH")


def _shots(items, k: int, seed: int, item_index: int):
    """k solved examples from the same file, never the item itself (seeded per item)."""
    pool = [i for i in range(len(items)) if i != item_index]
    return [items[i] for i in random.Random(seed * 7919 + item_index).sample(pool, min(k, len(pool)))]


def _generate_prompt(task, item, lang: str) -> str:
    text = tasks.TASKS["mcq"].prompt(item) if task.cloze else task.prompt(item)
    if item.choice_labels == list(tasks.PUBMEDQA_LABELS):
        return text.removesuffix("Answer:").rstrip() + "\nAnswer yes, no or maybe."
    return text.removesuffix("Answer:").removesuffix("答案：").rstrip() + "\n" + GENERATE_INSTRUCTION[lang]


def _lang(item) -> str:
    from medtune.data.formats import CJK

    return "zh" if len(CJK.findall(item.question)) > len(item.question) * 0.2 else "en"


def score_task(cm, name: str, items, s: EvalSettings, *, domain: str, encoded: dict | None = None,
               fast_models: dict | None = None) -> tuple[dict, list[dict]]:
    """Metrics for one task and one row per item (prediction, scores or answer text). `encoded` caches the
    tokenised requests by (tokenizer fingerprint, task), so models that share a tokenizer tokenise once;
    `fast_models` holds the model's bf16 copy once made (`_fast_model`)."""
    from tqdm import tqdm

    task = tasks.get_task(name)
    started = time.time()
    rows = []
    if s.mode == "loglik":
        bar = tqdm(total=len(items), desc=name, unit="item", file=sys.stderr)
        requests = [scoring.Request(task.few_shot_prompt(_shots(items, s.shots, s.seed, i), it) if s.shots else task.prompt(it),
                                    task.continuations(it)) for i, it in enumerate(items)]
        key = (scoring.tokenizer_fingerprint(cm.tokenizer), name)
        cache = encoded if encoded is not None and key[0] is not None else {}
        if key not in cache:
            cache[key] = scoring.encode_requests(cm.tokenizer, requests)
        fast = _fast_model(cm, s, len(items), fast_models)
        if fast is None:
            scores = scoring.loglik_scores(cm.model, cm.tokenizer, requests, batch_size=s.batch_size,
                                           progress=bar.update, encoded=cache[key])
            precision = {"precision": str(cm.model.dtype).removeprefix("torch.")}
        else:
            scores, check = scoring.loglik_checked(cm.model, fast, cm.tokenizer, requests, batch_size=s.batch_size,
                                                   progress=bar.update, encoded=cache[key], seed=s.seed)
            precision = check.as_dict()
        preds = [scoring.choose(sc) for sc in scores]
        norm = [scoring.choose(sc, r.continuations, normalise=True) for sc, r in zip(scores, requests)]
        for it, sc, p in zip(items, scores, preds):
            rows.append({"id": it.id, "gold": it.answer, "pred": p, "scores": [round(x, 4) for x in sc]})
        bar.close()
    else:
        from medtune import chat
        from medtune.data import templates
        from medtune.eval import health

        greedy = chat.GenerationSettings(temperature=0.0, max_new_tokens=s.max_new_tokens, repetition_penalty=1.0,
                                         enable_thinking=s.enable_thinking)
        conversations = [[{"role": "user", "content": _generate_prompt(task, it, _lang(it))}] for it in items]
        preds, norm = [], None
        for it, reply in zip(items, health.replies(cm, conversations, greedy, batch_size=s.generate_batch_size, desc=name)):
            pred = scoring.extract_choice(templates.strip_reasoning(reply.text), it.choice_labels, it.choices)
            preds.append(pred)
            rows.append({"id": it.id, "gold": it.answer, "pred": pred, "answer": reply.text, "stopped": reply.stopped})
    metrics = scoring.task_metrics(items, preds, seed=s.seed, f1=name == "pubmedqa")
    if norm is not None:
        metrics["accuracy_norm"] = sum(p == it.answer for p, it in zip(norm, items)) / len(items)
    if s.mode == "loglik":
        metrics.pop("unparseable")
        metrics["precision"] = precision
    metrics.update(domain=domain, seconds=round(time.time() - started, 1),
                   items_per_second=round(len(items) / max(1e-9, time.time() - started), 2))
    return metrics, rows


AUTO_BF16_ITEMS = 100  # below this many items, the calibration sample would cost more than bf16 saves


def _fast_model(cm, s: EvalSettings, n_items: int, made: dict | None):
    """The bf16 copy that `scoring.loglik_checked` scores with, or None for the model's own precision.
    `precision`: fp32 never; bf16 whenever the model is fp32; auto when the model is fp32 on a CPU with native
    bf16 (there a bf16 forward is about twice as fast; elsewhere it is emulated) and the task has at least
    AUTO_BF16_ITEMS items. A GPU model already runs in its own (usually bf16) precision."""
    import torch

    fp32 = cm.model.dtype == torch.float32
    if s.precision == "fp32" or not fp32:
        return None
    if s.precision == "auto" and not (cm.model.device.type == "cpu" and scoring.native_bf16_cpu()
                                      and n_items >= AUTO_BF16_ITEMS):
        return None
    made = made if made is not None else {}
    if "bf16" not in made:
        made["bf16"] = scoring.bf16_copy(cm.model)
    return made["bf16"]


@dataclass
class Inputs:
    """What an evaluation reads before any model loads, shared by every model of one run: the items of each task
    (one `--limit` sample), general texts, health prompts, the prepared safety run, and the tokenised requests
    of each task per tokenizer (`encoded`, filled as models are scored)."""

    items: dict  # task -> (domain, path, items)
    texts: dict
    prompts: list | None
    safety_run: object | None
    encoded: dict = field(default_factory=dict)  # (tokenizer fingerprint, task) -> scoring.encode_requests(...)


def read_inputs(s: EvalSettings) -> Inputs:
    """Check the settings and read every file (bad files stop here, before any model loads)."""
    from medtune.data import formats, resolve_path

    if s.mode not in ("loglik", "generate"):
        raise MedtuneError(f"unknown mode {s.mode!r}", hint="choose loglik or generate")
    if not (s.tasks or s.general_tasks or s.general_text or s.health or s.safety):
        raise MedtuneError("nothing to evaluate", hint="pass --tasks, --general-text, --health or --safety")
    loaded_items = {}
    for name, domain in [(t, "medical") for t in s.tasks] + [(t, "general") for t in s.general_tasks]:
        path = task_file(name, s)
        loaded_items[name] = (domain, path, tasks.load_task(name, path, setting=s.setting, limit=s.limit, seed=s.seed))
    texts = {p: formats.load_texts(resolve_path(p), mode=s.text_mode) for p in s.general_text}
    prompts = None
    if s.health:
        from medtune.eval import health

        prompts = health.load_prompts(s.prompts, langs=s.health_langs)
    safety_run = None
    if s.safety or s.judge:
        from medtune.eval import safety

        safety_run = safety.prepare(s)  # prompts read and the judge reached before the model loads
    return Inputs(loaded_items, texts, prompts, safety_run)


def _label(model: str) -> str:
    from medtune import models

    return Path(models.resolve(model)).name if model != "default" else "default"


def _output_folder(model: str, output_dir: str | None) -> Path:
    out = Path(output_dir or f"runs/eval-{_label(model)}")
    if (out / runs.MANIFEST).is_file() or (out.exists() and not out.is_dir()):
        raise MedtuneError("this folder holds a training run (or is a file), not an evaluation", where=str(out),
                           hint="pass another --output-dir")
    return out


def evaluate_models(model_specs: list[str], s: EvalSettings, output_dir: str | None = None) -> list[Path]:
    """Evaluate several models in one run on the same items: files are read, `--limit` sampled and requests
    tokenised once (per tokenizer), then each model is loaded in turn. Each model's results go to
    `output_dir/<its name>` (default runs/eval-<its name>). Returns the folders in model order."""
    labels = [_label(m) for m in model_specs]
    twice = sorted({x for x in labels if labels.count(x) > 1})
    if twice:
        raise MedtuneError(f"two models have the same name {twice[0]!r}, so their results would share a folder",
                           hint="evaluate them in separate runs with their own --output-dir")
    outs = [_output_folder(m, str(Path(output_dir) / label) if output_dir else None) for m, label in zip(model_specs, labels)]
    inputs = read_inputs(s)
    folders = [evaluate(m, s, str(out), inputs=inputs) for m, out in zip(model_specs, outs)]
    if inputs.safety_run is not None:
        from medtune.eval import safety

        safety.flag_regressions(folders)  # each later model against the first (the base)
    return folders


def evaluate(model: str, s: EvalSettings, output_dir: str | None = None, *, inputs: Inputs | None = None) -> Path:
    """Run the evaluation; returns the folder holding results.json, results.md and report.html. `inputs`: what
    `read_inputs` read, when several models share it (`evaluate_models`)."""
    from medtune import chat, models
    from medtune.data import formats

    inputs = inputs or read_inputs(s)  # every file is read and checked before the model loads
    loaded_items, texts, prompts, safety_run = inputs.items, inputs.texts, inputs.prompts, inputs.safety_run
    label = _label(model)
    out = _output_folder(model, output_dir)
    print(f"note: {NOT_MEDICAL_ADVICE}", file=sys.stderr)
    cm = chat.load_chat_model(model, template=s.template, trust_remote_code=s.trust_remote_code)
    manifest = runs.read_manifest(models.resolve(model)) if Path(models.resolve(model)).is_dir() else None
    result = {
        "kind": "eval", "model": model, "label": label, "created": runs.now(),
        "settings": {k: v for k, v in vars(s).items() if k not in ("files",)} | {"files": {}},
        "tasks": {}, "libraries": runs.library_versions(),
    }
    if manifest:
        result["model_run"] = {"stage": manifest.get("stage"), "base": manifest.get("model", {}).get("base"),
                               "chain": _chain(model)}
    all_rows, fast_models = {}, {}
    for name, (domain, path, items) in loaded_items.items():
        result["settings"]["files"][name] = {**formats.fingerprint(path), "items": len(items)} if Path(path).is_file() else {"path": path, "items": len(items)}
        metrics, rows = score_task(cm, name, items, s, domain=domain, encoded=inputs.encoded, fast_models=fast_models)
        result["tasks"][name] = metrics
        all_rows[name] = rows
    fast_models.clear()  # the bf16 copy, if one was made, is not needed past scoring
    if texts:
        result["perplexity"] = {}
        for p, docs in texts.items():
            ppl = scoring.text_perplexity(cm.model, cm.tokenizer, docs)
            result["perplexity"][Path(p).name] = {**ppl, "domain": "general", "path": p}
    if prompts is not None:
        from medtune.eval import health

        from medtune.chat import GenerationSettings

        result["health"] = health.run_health(cm, prompts, GenerationSettings(
            temperature=0.0, max_new_tokens=s.health_max_new_tokens, repetition_penalty=s.health_repetition_penalty),
            batch_size=s.generate_batch_size)
    if safety_run is not None:
        result["safety"] = safety_run.run(cm)

    from medtune.eval.report import PLOTS

    with runs.files_into(out, replaces=PLOTS) as tmp:  # an earlier evaluation there stays whole if this one fails
        runs.write_json(tmp / "results.json", result)
        runs.atomic_write_text(tmp / "items.jsonl", "".join(
            json.dumps({"task": t, **r}, ensure_ascii=False) + "\n" for t, rows in all_rows.items() for r in rows))
        written = _reports(tmp, result)
    _summary(result, out, written)
    return out


def _chain(model: str) -> list[str]:
    from medtune import models

    chain, spec = [], models.resolve(model)
    while Path(spec).is_dir():
        m = runs.read_manifest(spec)
        if not m:
            break
        chain.insert(0, spec)
        weights = m.get("model", {}).get("weights")
        if not weights or weights == spec:
            break
        spec = weights
    return chain


def _reports(out: Path, result: dict) -> list[str]:
    from medtune.eval import report

    written = report.write_report([out], out, title=f"medtune eval: {result['label']}")
    return [str(written["html"]), str(written["md"])]


def _summary(result: dict, out: Path, written: list[str]) -> None:
    print(f"\neval of {result['model']} ({result['settings']['mode']}, {result['settings']['shots']}-shot)")
    for name, m in result["tasks"].items():
        lo, hi = m["ci95"]
        extra = f", macro-F1 {m['macro_f1']:.3f}" if "macro_f1" in m else ""
        extra += f", {m['unparseable']} unparseable" if m.get("unparseable") else ""
        print(f"  {name:16s} [{m['domain']}] accuracy {m['accuracy']:.3f} (95% CI {lo:.3f}-{hi:.3f}, n={m['n']}){extra}")
    for name, p in result.get("perplexity", {}).items():
        print(f"  {name:16s} [general] perplexity {p['perplexity']:.2f} over {p['tokens']} tokens")
    if "health" in result:
        flags = result["health"]["summary"]["flags"]
        raised = [k for k, v in flags.items() if v]
        print(f"  health: {'flags raised: ' + ', '.join(raised) if raised else 'no flags'}")
    if "safety" in result:
        from medtune.eval import safety

        print(safety.summary_line(result["safety"]))
    print(f"  wrote results.json, items.jsonl{', ' + ', '.join(Path(w).name for w in written) if written else ''} to {out}")


def compare(paths: list[str]) -> str:
    """Side-by-side table of several eval folders (domain and general results, deltas)."""
    from medtune.eval import report

    return report.compare_table([report.load_results(p) for p in paths])
