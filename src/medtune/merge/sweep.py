"""The averaging sweep: average a tuned model with its base at several alphas, evaluate each, choose one by a
stated rule (`choose_alpha`), and write sweep.json, sweep.md and a plot of domain skill against general
ability. Also the evaluation-based score a greedy soup uses (`accuracy_score`). Guide: docs/merge.md.

The sweep's folder is written in place (its models and evaluations record their own paths) through
`runs.replaced_in_place`: an earlier folder (overwrite) is kept aside until the whole sweep has finished, and
put back if it fails.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from dataclasses import replace
from pathlib import Path
from typing import Callable

from medtune import runs
from medtune.errors import MedtuneError
from medtune.merge.methods import average_folders, check_alpha, materialise, origin
from medtune.merge.weights import SHARD_BYTES

DEFAULT_ALPHAS = (0.0, 0.25, 0.5, 0.75, 1.0)


def choose_alpha(table: list[dict], *, max_general_drop: float = 1.0, max_perplexity_increase: float = 0.05) -> float:
    """The sweep's rule. The reference is the row with alpha 0 (the base model). A row is admissible when
    its general accuracy (mean over general tasks) is at most `max_general_drop` accuracy points (percentage
    points, 1.0 = 0.01) below the reference's, and its general perplexity (mean over general text files) at most
    `max_perplexity_increase` (relative, 0.05 = 5%) above the reference's; each test applies when measured.
    Chosen: the admissible row with the highest domain accuracy; ties go to the smaller alpha (nearer the base).
    Sets each row's `admissible` and returns the chosen alpha.
    """
    ref = next((row for row in table if row["alpha"] == 0), None)
    if ref is None:
        raise MedtuneError("the sweep table has no alpha 0 row (the reference)")
    for row in table:
        ok = True
        if ref.get("general_accuracy") is not None:
            ok &= (ref["general_accuracy"] - row["general_accuracy"]) * 100 <= max_general_drop + 1e-9
        if ref.get("general_perplexity") is not None:
            ok &= row["general_perplexity"] <= ref["general_perplexity"] * (1 + max_perplexity_increase) + 1e-12
        row["admissible"] = bool(ok)
    admissible = [row for row in table if row["admissible"]]  # the reference always is
    return max(admissible, key=lambda row: (row["domain_accuracy"], -row["alpha"]))["alpha"]


def _alpha_name(alpha: float) -> str:
    return f"alpha-{alpha:g}"


def sweep(base, tuned, out_dir, alphas=DEFAULT_ALPHAS, *, domain_tasks=("mcq",), general_tasks=(), general_text=(),
          eval_settings=None, limit: int = 0, max_general_drop: float = 1.0, max_perplexity_increase: float = 0.05,
          keep_models: bool = True, overwrite: bool = False, shard_bytes: int = SHARD_BYTES,
          trust_remote_code: bool = False) -> tuple[list[dict], float]:
    """Average `base` and `tuned` at each alpha, evaluate each, and choose an alpha by `choose_alpha`'s rule.

    alphas: values in [0, 1]; 0 (the reference) is always added. Each model goes to out_dir/alpha-X, its
      evaluation to out_dir/eval/alpha-X.
    domain_tasks: the medical tasks (mean accuracy = the domain score; default the generic `mcq`, whose file
      defaults to the demo exam). general_tasks: tasks scored as general ability (mean accuracy), and/or
      general_text: text files whose perplexity measures general ability. At least one general measure.
    eval_settings: a medtune.eval.runner.EvalSettings for everything else (files, data_dir, shots, mode,
      batch_size); its tasks, general tasks, texts and health are replaced by the arguments here.
    limit: a seeded sample of N items per task (0 = all), to keep a sweep small.
    keep_models: False keeps only the chosen alpha's folder (the others are removed once evaluated).
    Writes out_dir/sweep.json, sweep.md and tradeoff.png; returns (table, chosen alpha).
    """
    from medtune.eval import runner, tasks
    from medtune.data import formats, resolve_path

    values = sorted({0.0, *(check_alpha(a, "alpha") for a in alphas)})
    settings = replace(eval_settings or runner.EvalSettings(), tasks=list(domain_tasks),
                       general_tasks=list(general_tasks), general_text=[str(p) for p in general_text],
                       limit=limit or (eval_settings.limit if eval_settings else 0), health=False)
    if not settings.tasks:
        raise MedtuneError("the sweep needs at least one domain task", hint="e.g. --tasks mcq")
    if not (settings.general_tasks or settings.general_text):
        raise MedtuneError("the sweep needs a general measure to weigh forgetting against",
                           hint="pass --general-tasks TASKS and/or --general-text FILE")
    overlap = set(settings.tasks) & set(settings.general_tasks)
    if overlap:
        raise MedtuneError(f"task {sorted(overlap)[0]} is both a domain and a general task",
                           hint="one task name, one file: use perplexity on general text, or another task")
    for name in settings.tasks + settings.general_tasks:  # every file is checked before any model is written
        tasks.load_task(name, runner.task_file(name, settings), setting=settings.setting, limit=settings.limit,
                        seed=settings.seed)
    for path in settings.general_text:
        formats.load_texts(resolve_path(path), mode=settings.text_mode)

    out_dir = Path(out_dir)
    with runs.replaced_in_place(out_dir, overwrite=overwrite, inputs=[base, tuned]):
        table, chosen, result = _sweep(base, tuned, out_dir, values, settings, max_general_drop=max_general_drop,
                                       max_perplexity_increase=max_perplexity_increase, keep_models=keep_models,
                                       shard_bytes=shard_bytes, trust_remote_code=trust_remote_code)
    _sweep_summary(result, out_dir)
    return table, chosen


def _sweep(base, tuned, out_dir: Path, values: list[float], settings, *, max_general_drop: float,
           max_perplexity_increase: float, keep_models: bool, shard_bytes: int, trust_remote_code: bool):
    """The sweep's models, evaluations, rule, plot and records, written into `out_dir`."""
    from medtune.eval import runner

    with runs.scratch_folder(out_dir / "inputs") as work:
        base_dir = materialise(base, work, "base", trust_remote_code=trust_remote_code)
        tuned_dir = materialise(tuned, work, "tuned", trust_remote_code=trust_remote_code)
        inputs = {"base": origin(base, base_dir), "tuned": origin(tuned, tuned_dir)}

        def write(alpha):
            return average_folders(base_dir, tuned_dir, out_dir / _alpha_name(alpha), alpha, alpha, None,
                                   layered=False, inputs=inputs, overwrite=False, shard_bytes=shard_bytes, quiet=True)

        table = []
        for alpha in values:
            model_dir = write(alpha)
            print(f"\nsweep: alpha {alpha:g} -> {model_dir}", file=sys.stderr)
            eval_dir = runner.evaluate(str(model_dir), settings, str(out_dir / "eval" / _alpha_name(alpha)))
            table.append(_row(alpha, model_dir, eval_dir, settings))
            if not keep_models:
                shutil.rmtree(model_dir)
        chosen = choose_alpha(table, max_general_drop=max_general_drop,
                              max_perplexity_increase=max_perplexity_increase)
        if not keep_models:
            write(chosen)
    for row in table:
        row["chosen"] = row["alpha"] == chosen
        row["model"] = str(out_dir / _alpha_name(row["alpha"])) if keep_models or row["chosen"] else None
    rule = {"reference_alpha": 0.0, "max_general_drop": max_general_drop,
            "max_perplexity_increase": max_perplexity_increase,
            "text": _rule_text(max_general_drop, max_perplexity_increase)}
    _plot(table, out_dir / "tradeoff.png", max_general_drop, max_perplexity_increase)
    result = {"kind": "merge-sweep", "created": runs.now(), "inputs": inputs, "alphas": values,
              "domain_tasks": settings.tasks, "general_tasks": settings.general_tasks,
              "general_text": settings.general_text, "limit": settings.limit, "rule": rule, "table": table,
              "chosen": chosen, "chosen_model": str(out_dir / _alpha_name(chosen)), "plot": "tradeoff.png",
              "libraries": runs.library_versions()}
    runs.write_json(out_dir / "sweep.json", result)
    runs.atomic_write_text(out_dir / "sweep.md", _sweep_markdown(result))
    return table, chosen, result


def _mean(values):
    values = list(values)
    return sum(values) / len(values) if values else None


def _row(alpha: float, model_dir: Path, eval_dir: Path, settings) -> dict:
    result = json.loads((Path(eval_dir) / "results.json").read_text(encoding="utf-8"))
    domain = {t: result["tasks"][t]["accuracy"] for t in settings.tasks}
    general = {t: result["tasks"][t]["accuracy"] for t in settings.general_tasks}
    perplexity = {name: p["perplexity"] for name, p in result.get("perplexity", {}).items()}
    return {"alpha": alpha, "model": str(model_dir), "eval": str(eval_dir), "domain": domain,
            "domain_accuracy": _mean(domain.values()), "general": general, "general_accuracy": _mean(general.values()),
            "perplexity": perplexity, "general_perplexity": _mean(perplexity.values())}


def _rule_text(max_general_drop: float, max_perplexity_increase: float) -> str:
    return (f"Reference: alpha 0 (the base). Admissible: general accuracy at most {max_general_drop:g} accuracy "
            f"point(s) below "
            f"the reference's and general perplexity at most {max_perplexity_increase:.0%} above it (each where "
            "measured). Chosen: the admissible alpha with the highest domain accuracy; ties go to the smaller alpha.")


def _fmt(value, spec=".3f"):
    return "—" if value is None else format(value, spec)


def _sweep_markdown(result: dict) -> str:
    from medtune import NOT_MEDICAL_ADVICE

    general = ", ".join(result["general_tasks"] + [f"perplexity on {Path(p).name}" for p in result["general_text"]])
    limit = f" (a sample of {result['limit']} items per task)" if result["limit"] else ""
    lines = [f"# Averaging sweep: {result['inputs']['base']['spec']} -> {result['inputs']['tuned']['spec']}", "",
             f"> {NOT_MEDICAL_ADVICE}", "",
             f"Domain tasks: {', '.join(result['domain_tasks'])}; general: {general}{limit}.", "",
             "| alpha | domain accuracy | general accuracy | general perplexity | admissible | chosen |",
             "|---:|---:|---:|---:|:---:|:---:|"]
    for row in result["table"]:
        lines.append(f"| {row['alpha']:g} | {_fmt(row['domain_accuracy'])} | {_fmt(row['general_accuracy'])} | "
                     f"{_fmt(row['general_perplexity'], '.2f')} | {'yes' if row['admissible'] else 'no'} | "
                     f"{'**chosen**' if row['chosen'] else ''} |")
    lines += ["", f"Rule: {result['rule']['text']}", "",
              f"Chosen: alpha {result['chosen']:g} -> `{result['chosen_model']}`", "",
              "![domain against general score](tradeoff.png)", ""]
    return "\n".join(lines)


def _plot(table: list[dict], path: Path, max_general_drop: float, max_perplexity_increase: float) -> None:
    """Domain accuracy (y) against the general score (x), each point labelled with its alpha; a dashed line
    marks the most forgetting the rule admits."""
    from matplotlib.figure import Figure  # the object API renders with Agg: no pyplot, no display

    by_accuracy = table[0]["general_accuracy"] is not None
    key = "general_accuracy" if by_accuracy else "general_perplexity"
    xs, ys = [row[key] for row in table], [row["domain_accuracy"] for row in table]
    fig = Figure(figsize=(6, 4.5), layout="constrained")
    ax = fig.subplots()
    ax.plot(xs, ys, "-", color="#9ab", zorder=1)
    for row, x, y in zip(table, xs, ys):
        color = "#c03030" if row["chosen"] else ("#4878a8" if row["admissible"] else "#aaaaaa")
        ax.scatter([x], [y], s=60 if row["chosen"] else 36, color=color, zorder=2)
        ax.annotate(f"α={row['alpha']:g}" + (" (chosen)" if row["chosen"] else ""), (x, y),
                    textcoords="offset points", xytext=(6, 4), fontsize=9)
    ref = next(row[key] for row in table if row["alpha"] == 0)
    limit = ref - max_general_drop / 100 if by_accuracy else ref * (1 + max_perplexity_increase)
    ax.axvline(limit, color="#c03030", linestyle="--", linewidth=1, label="most forgetting the rule admits")
    ax.legend(fontsize=8, loc="best")
    if by_accuracy:
        ax.set_xlabel("general accuracy (higher is better)")
    else:
        ax.set_xlabel("general perplexity (lower is better; axis reversed)")
        ax.invert_xaxis()
    ax.set_ylabel("domain accuracy")
    ax.set_title("weight averaging: domain against general (grey: not admissible)", fontsize=10)
    ax.grid(alpha=0.3)
    fd, tmp = runs.temporary_file(path, ".png")
    os.close(fd)
    try:
        fig.savefig(tmp, format="png", dpi=110, metadata={"Software": None})
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _sweep_summary(result: dict, out_dir: Path) -> None:
    print(f"\nmerge sweep: {len(result['table'])} alphas")
    for row in result["table"]:
        general = _fmt(row["general_accuracy"]) if row["general_accuracy"] is not None else \
            f"ppl {_fmt(row['general_perplexity'], '.2f')}"
        mark = "  <- chosen" if row["chosen"] else ("" if row["admissible"] else "  (too much forgetting)")
        print(f"  alpha {row['alpha']:<5g} domain {_fmt(row['domain_accuracy'])}  general {general}{mark}")
    print(f"  chosen alpha {result['chosen']:g}: {result['chosen_model']}")
    print(f"  wrote sweep.json, sweep.md, tradeoff.png and eval/ to {out_dir}")


def accuracy_score(settings, work) -> Callable[[str], float]:
    """A greedy-soup score: mean accuracy of a model folder on `settings.tasks` (evaluations go under `work`)."""
    from medtune.eval import runner

    calls = []

    def score(folder: str) -> float:
        calls.append(folder)
        out = runner.evaluate(folder, replace(settings, general_tasks=[], general_text=[], health=False),
                              str(Path(work) / f"eval-{len(calls)}"))
        result = json.loads((out / "results.json").read_text(encoding="utf-8"))
        return _mean(result["tasks"][t]["accuracy"] for t in settings.tasks)

    return score
