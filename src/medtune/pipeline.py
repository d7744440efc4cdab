"""`medtune pipeline RECIPE`: run a chain of stages (PT, SFT, RM, DPO, PPO, GRPO, averaging, evaluation),
each in its own run folder under the pipeline's `output_dir`, each taking the previous folder as its model.

    stage: pipeline
    output_dir: runs/chain
    steps:
      - {name: sft, run: sft, recipe: medtune:recipes/sft_demo.yaml, set: {train.max_steps: 10}}
      - {name: dpo, run: dpo, recipe: medtune:recipes/dpo_demo.yaml}          # model: the sft folder
      - {name: avg, run: average, base: default, alpha: 0.5}                  # tuned: the dpo folder
      - {name: eval, run: eval, models: [default, "@avg"], tasks: [mcq], files: {mcq: medtune:demo/exam.jsonl}}

Rerunning is safe: a step whose folder holds a completed run (or, for `eval`, its results) is skipped; a step
that was interrupted (its manifest says running or failed) resumes from its last checkpoint; `--from NAME`
reruns NAME and every later step from scratch. `"@name"` anywhere in a step stands for that earlier step's
folder. `pipeline.json` in `output_dir` records every step, its folder, status and key metrics.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from medtune import config, runs
from medtune.errors import ConfigError, MedtuneError

TRAINING = ("pt", "sft", "rm", "dpo", "ppo", "grpo")
KINDS = (*TRAINING, "average", "merge_lora", "eval")
_STEP_KEYS = {
    "training": {"name", "run", "recipe", "set", "model"},
    "merge_lora": {"name", "run", "model"},
    # an average step's keys are AverageStep's, an eval step's `models` and EvalSettings', checked by from_dict
}


def _share_or_none(v) -> bool:
    return v is None or 0 <= v <= 1


@dataclass
class AverageStep:
    """An `average` step: `medtune merge average BASE TUNED` (tuned: the previous step unless given)."""

    base: str = "default"
    tuned: str | None = None
    alpha: float = field(default=0.5, metadata=config.check(_share_or_none, "between 0 and 1"))
    alpha_lower: float | None = field(default=None, metadata=config.check(_share_or_none, "between 0 and 1"))
    alpha_upper: float | None = field(default=None, metadata=config.check(_share_or_none, "between 0 and 1"))
    split_layer: int | None = field(default=None, metadata=config.check(lambda v: v is None or v >= 0, "at least 0"))


@dataclass
class Step:
    name: str
    run: str
    options: dict = field(default_factory=dict)

    @property
    def group(self) -> str:
        return "training" if self.run in TRAINING else self.run


def load(path) -> tuple[Path, list[Step]]:
    """The pipeline recipe at `path`: (output_dir, steps), every step checked before anything runs."""
    data = config.read_yaml(path)
    extra = set(data) - {"stage", "output_dir", "steps"}
    if extra:
        raise ConfigError(f"unknown key '{sorted(extra)[0]}'", where=str(path), hint="a pipeline has stage, output_dir, steps")
    if data.get("stage", "pipeline") != "pipeline":
        raise ConfigError(f"this recipe is for stage '{data['stage']}', not a pipeline", where=str(path),
                          hint=f"run it with `medtune {data['stage']} {path}`")
    output_dir = Path(str(data.get("output_dir") or "runs/pipeline"))
    raw = data.get("steps")
    if not isinstance(raw, list) or not raw:
        raise ConfigError("no steps", where=f"{path}: field 'steps'", hint="list the steps: - {name: sft, run: sft, recipe: ...}")
    steps, seen = [], set()
    for i, item in enumerate(raw):
        at = f"{path}: field 'steps[{i}]'"
        if not isinstance(item, dict):
            raise ConfigError("a step must be a mapping", where=at, hint="write - {name: sft, run: sft, recipe: ...}")
        name, kind = item.get("name"), item.get("run")
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
            raise ConfigError("each step needs a `name` of letters, digits, '-', '_' or '.'", where=at)
        if name in seen:
            raise ConfigError(f"step name '{name}' is used twice", where=at)
        if kind not in KINDS:
            raise ConfigError(f"unknown run '{kind}'", where=at, hint=f"choose one of: {', '.join(KINDS)}")
        step = Step(name, kind, {k: v for k, v in item.items() if k not in ("name", "run")})
        unknown = set(item) - _STEP_KEYS.get(step.group, set())
        if step.run == "eval":
            eval_settings(step.options, path, step)  # unknown keys, types and ranges, as a recipe's
        elif step.run == "average":
            average_options(step.options, path, step)
        elif unknown:
            raise ConfigError(f"unknown key '{sorted(unknown)[0]}' for a {kind} step", where=at,
                              hint=f"allowed: {', '.join(sorted(_STEP_KEYS[step.group]))}")
        if step.group == "training" and not item.get("recipe"):
            raise ConfigError(f"a {kind} step needs a recipe", where=at, hint="recipe: medtune:recipes/sft_demo.yaml")
        if step.group == "training" and not isinstance(item.get("set", {}), dict):
            raise ConfigError("`set` must be a mapping of dotted keys", where=at, hint="set: {train.max_steps: 10}")
        for value in _strings(item):  # references must name an earlier step
            for ref in re.findall(r"^@([A-Za-z0-9_.-]+)$", value):
                if ref not in seen:
                    raise ConfigError(f"'@{ref}' does not name an earlier step", where=at)
        seen.add(name)
        steps.append(step)
    return output_dir, steps


def check(path) -> tuple[Path, list[Step]]:
    """`load`, then each training step's recipe with its `set` overrides loaded as its stage would load it
    (unknown keys, wrong types and bad values are reported before anything runs)."""
    from medtune.stages import get_stage

    output_dir, steps = load(path)
    for step in steps:
        if step.group == "training":
            overrides = [f"{k}={json.dumps(v)}" for k, v in (step.options.get("set") or {}).items()
                         if not (isinstance(v, str) and v.startswith("@"))]
            config.load_config(get_stage(step.run)[1], step.options["recipe"], overrides, origin=_origin(path, step))
    return output_dir, steps


def _origin(path, step: Step):
    """How a config error names an override a pipeline made: its file, the step and the `set` key (the user
    wrote no `override`), or the key the pipeline itself sets (model, output_dir, resume, overwrite)."""
    given = {str(k) for k in (step.options.get("set") or {})}

    def name(item: str) -> str:
        key = item.split("=", 1)[0].strip()
        if key in given:
            return f"{path}: step '{step.name}': set '{key}'"
        return f"{path}: step '{step.name}': {key} (set by the pipeline)"

    return name


def eval_settings(options: dict, path, step: Step):
    """An eval step's options (all but `models`) as the EvalSettings that `medtune eval` would run; a bad one
    names the pipeline file, the step and the key."""
    from medtune.eval.runner import EvalSettings

    given = {str(k): v for k, v in options.items() if k != "models"}
    return config.from_dict(EvalSettings, given, source=f"{path}: step '{step.name}'")


def average_options(options: dict, path, step: Step) -> AverageStep:
    """An average step's options, checked as a recipe's keys are (naming the pipeline file, step and key)."""
    return config.from_dict(AverageStep, {str(k): v for k, v in options.items()}, source=f"{path}: step '{step.name}'")


def _strings(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


def _resolve(value, folders: dict):
    """Replace "@name" by that step's folder, anywhere in `value`."""
    if isinstance(value, str) and value.startswith("@") and value[1:] in folders:
        return str(folders[value[1:]])
    if isinstance(value, dict):
        return {k: _resolve(v, folders) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve(v, folders) for v in value]
    return value


def state(folder: Path, step: Step) -> str:
    """completed, partial (started, not finished: resume it) or absent."""
    if step.run == "eval":
        return "completed" if (folder / "results.json").is_file() else ("partial" if folder.exists() else "absent")
    manifest = runs.read_manifest(folder)
    if manifest is None:  # never got as far as its manifest: start it afresh
        return "absent"
    return "completed" if manifest.get("status") == "completed" else "partial"


def _run_step(step: Step, folder: Path, previous: str | None, folders: dict, fresh: bool, path=None) -> None:
    from medtune.stages import get_stage

    opts = _resolve(step.options, folders)
    if step.group == "training":
        module, cls = get_stage(step.run)
        overrides = [f"{k}={json.dumps(v)}" for k, v in (opts.get("set") or {}).items()]
        model = opts.get("model") or previous
        if model:
            overrides.append(f"model.name_or_path={model}")
        overrides += [f"output_dir={folder}", "resume=false" if fresh else "resume=true", f"overwrite={str(fresh).lower()}"]
        module.run(config.load_config(cls, opts["recipe"], overrides, origin=_origin(path, step)))
    elif step.run == "average":
        from medtune import merge

        avg = average_options(opts, path, step)
        tuned = avg.tuned or previous
        if not tuned:
            raise ConfigError("an average step needs `tuned` (or an earlier step)", where=f"{path}: step '{step.name}'")
        merge.average(avg.base, tuned, folder, alpha=avg.alpha, alpha_lower=avg.alpha_lower,
                      alpha_upper=avg.alpha_upper, split_layer=avg.split_layer, overwrite=True)
    elif step.run == "merge_lora":
        from medtune import merge

        merge.merge_lora(opts.get("model") or previous, folder, overwrite=True)
    else:
        from medtune.eval import runner

        settings = eval_settings(opts, path, step)
        targets = opts.get("models") or [previous]
        # evaluated into a fresh temporary folder that then replaces the step's folder: an earlier evaluation
        # stays whole until this one has finished, and no result of another model list is left behind
        tmp = folder.parent / f".{folder.name}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        names = [f"{i}-{Path(str(target)).name}" for i, target in enumerate(targets)]
        for name, target in zip(names, targets):
            runner.evaluate(str(target), settings, str(tmp / name))
        if len(names) > 1:
            from medtune.eval import report

            report.write_report([tmp / n for n in names], str(tmp / "compare"), title=f"medtune pipeline: {step.name}")
        runs.write_json(tmp / "results.json", {"evaluations": [str(folder / n) for n in names],
                                               "models": [str(t) for t in targets]})
        old = folder.parent / f".{folder.name}.old"
        shutil.rmtree(old, ignore_errors=True)
        if folder.exists():
            os.replace(folder, old)
        os.replace(tmp, folder)
        shutil.rmtree(old, ignore_errors=True)
        print(f"{step.name}: {len(names)} evaluation(s) in {folder}: {', '.join(names)}")


def key_metrics(folder: Path, step: Step) -> dict:
    """A few figures per step for `pipeline.json` and the summary table."""
    if step.run == "eval":
        out = {}
        for sub in json.loads((folder / "results.json").read_text()).get("evaluations", []):
            res = json.loads((Path(sub) / "results.json").read_text())
            for task, m in res.get("tasks", {}).items():
                out[f"{Path(sub).name}:{task}"] = m.get("accuracy")
        return out
    m = (runs.read_manifest(folder) or {}).get("metrics", {})
    keep = ("train_loss", "eval_loss", "eval_perplexity", "eval_accuracy", "heldout_margin_gain", "reward_first",
            "reward_last", "kl_last", "steps", "train_runtime_s")
    return {k: m[k] for k in keep if k in m}


def run(path, *, from_step: str | None = None) -> Path:
    """Run the pipeline at `path`; returns its output folder."""
    output_dir, steps = check(path)
    names = [s.name for s in steps]
    if from_step is not None and from_step not in names:
        raise MedtuneError(f"--from {from_step}: no such step", hint=f"steps: {', '.join(names)}")
    start = names.index(from_step) if from_step else None
    output_dir.mkdir(parents=True, exist_ok=True)
    folders = {s.name: output_dir / s.name for s in steps}
    previous: str | None = None
    record = {"recipe": str(path), "output_dir": str(output_dir), "steps": []}
    started = time.time()
    for i, step in enumerate(steps):
        folder = folders[step.name]
        fresh = start is not None and i >= start
        st = "absent" if fresh else state(folder, step)
        if st == "completed":
            print(f"[{i + 1}/{len(steps)}] {step.name} ({step.run}): already completed in {folder}, skipped")
            action = "skipped"
        else:
            verb = "resuming" if st == "partial" else "running"
            print(f"[{i + 1}/{len(steps)}] {step.name} ({step.run}): {verb} -> {folder}")
            _run_step(step, folder, previous, folders, fresh=fresh or st == "absent", path=path)
            action = "resumed" if st == "partial" else "ran"
        record["steps"].append({"name": step.name, "run": step.run, "folder": str(folder), "action": action,
                                "metrics": key_metrics(folder, step)})
        runs.write_json(output_dir / "pipeline.json", record)
        if step.run != "eval":
            previous = str(folder)
    print(f"\npipeline finished in {time.time() - started:.0f} s; {output_dir / 'pipeline.json'}")
    for s in record["steps"]:
        figures = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in s["metrics"].items())
        print(f"  {s['name']:<12} {s['action']:<8} {figures}")
    return output_dir
