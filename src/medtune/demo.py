"""`medtune demo` (what `make demo` runs): the whole chain on the embedded default model, sized for a laptop CPU.

It runs the pipeline `medtune:recipes/pipeline_demo.yaml`: continued pretraining on the shipped demo text, SFT
on the demo dialogues, a short DPO on the demo preference pairs, averaging with the untouched default, then an
evaluation of the default and the averaged model (demo exam, general-text perplexity, generation
health). It ends with a before/after table, the answers side by side, `demo.md` and the HTML report.

A demo starts afresh by default; `--resume` continues an interrupted one (finished steps are skipped).
"""

from __future__ import annotations

import json
import sys
import textwrap
import time
from pathlib import Path

from medtune import NOT_MEDICAL_ADVICE

PIPELINE_RECIPE = "medtune:recipes/pipeline_demo.yaml"
TASK = "mcq_cloze"


def _recipe(output_dir: Path, max_steps: int | None, model: str) -> dict:
    """The shipped demo pipeline with its output folder filled in, `model` in place of the embedded default
    (as the first step's model, the averaging base and the "before" column), and optionally a step cap."""
    from medtune.config import read_yaml

    recipe = read_yaml(PIPELINE_RECIPE)
    recipe["output_dir"] = str(output_dir)
    recipe["steps"][0]["model"] = model
    for step in recipe["steps"]:
        if step["run"] == "average":
            step["base"] = model
        if step["run"] == "eval":
            step["models"] = [model if m == "default" else m for m in step["models"]]
    if max_steps:
        for step in recipe["steps"]:
            if step["run"] in ("pt", "sft", "dpo"):
                step.setdefault("set", {})
                step["set"]["train.max_steps"] = min(max_steps, step["set"].get("train.max_steps", max_steps))
    return recipe


def _short(text: str, width: int = 300) -> str:
    return textwrap.shorten(" ".join(text.split()), width=width, placeholder=" ...")


def _fmt(x, digits: int = 3) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def _stage_lines(out: Path) -> list[str]:
    """One line per training step: what it trained and the held-out figure it moved."""
    from medtune import runs

    lines = []
    pt = (runs.read_manifest(out / "pt") or {}).get("metrics", {})
    sft = (runs.read_manifest(out / "sft") or {}).get("metrics", {})
    dpo = (runs.read_manifest(out / "dpo") or {}).get("metrics", {})
    avg = runs.read_manifest(out / "avg") or {}
    lines.append(f"| PT (demo text) | held-out perplexity | {_fmt(pt.get('eval_perplexity_before'), 2)} | "
                 f"{_fmt(pt.get('eval_perplexity'), 2)} | {pt.get('steps', '-')} | {pt.get('train_runtime_s', '-')} |")
    lines.append(f"| SFT (demo dialogues) | held-out loss | {_fmt(sft.get('eval_loss_before'))} | "
                 f"{_fmt(sft.get('eval_loss'))} | {sft.get('steps', '-')} | {sft.get('train_runtime_s', '-')} |")
    lines.append(f"| DPO (demo pairs) | held-out log-prob margin (chosen - rejected) | "
                 f"{_fmt(dpo.get('heldout_logp_margin_before'), 1)} | {_fmt(dpo.get('heldout_logp_margin_after'), 1)} | "
                 f"{dpo.get('steps', '-')} | {dpo.get('train_runtime_s', '-')} |")
    alpha = avg.get("alpha", "-")
    lines.append(f"| average with the starting model | alpha (weight of the DPO run) | | {alpha} | | |")
    return lines


def _answers(results: list[dict], labels: list[str]) -> list[str]:
    """The health prompts answered by the first and the last model, side by side (markdown)."""
    first, last = results[0].get("health") or {}, results[-1].get("health") or {}
    lines = []
    for a, b in zip(first.get("responses", []), last.get("responses", [])):
        lines += [f"**{a['prompt']}**", ""]
        for label, r in ((labels[0], a), (labels[-1], b)):
            tail = "" if r.get("stopped") else "  [hit the token limit]"
            lines.append(f"- *{label}:* {_short(r['response'])}{tail}")
        lines.append("")
    return lines


def main(output_dir: str = "runs/demo", max_steps: int | None = None, resume: bool = False,
         model: str = "default") -> int:
    from medtune import models, pipeline, runs
    from medtune.eval import report

    print(f"note: {NOT_MEDICAL_ADVICE}\n")
    started = time.time()
    models.resolve(model)  # a model that does not exist stops the demo before it writes anything
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    recipe_path = out / "pipeline_recipe.yaml"
    runs.atomic_write_text(recipe_path, json.dumps(_recipe(out, max_steps, model), indent=2) + "\n")  # JSON is YAML
    first = None if resume else pipeline.load(recipe_path)[1][0].name
    pipeline.run(recipe_path, from_step=first)

    record = json.loads((out / "eval" / "results.json").read_text())
    results = [report.load_results(d) for d in record["evaluations"]]
    labels = [r["label"] for r in results]
    html = report.write_report(record["evaluations"], out / "report", title="medtune demo: before and after")

    acc = [((r.get("tasks") or {}).get(TASK) or {}).get("accuracy") for r in results]
    n = ((results[0].get("tasks") or {}).get(TASK) or {}).get("n", "?")
    verdict = ("beats" if acc[-1] > acc[0] else "does NOT beat") if None not in (acc[0], acc[-1]) else "?"
    start = labels[0]
    gen = ((results[0].get("health") or {}).get("settings") or {})
    lines = ["# medtune demo: before and after", "", f"> {NOT_MEDICAL_ADVICE}", "",
             f"{'SmolLM2-135M-Instruct (the embedded default)' if model == 'default' else model} -> continued "
             "pretraining -> SFT -> DPO -> averaged with the starting model. Every figure below was measured in "
             "this run.", "",
             "## Training", "", "| step | held-out figure | before | after | steps | seconds |", "|---|---|---|---|---|---|",
             *_stage_lines(out), "",
             "## Evaluation", "",
             "Demo exam: held-out multiple-choice questions, each option scored as a continuation (`mcq_cloze`). "
             "General text: 24 non-medical paragraphs (`medtune:demo/general.txt`). Health: the 6 held-out "
             "questions and 4 general requests, answered greedily (repetition penalty "
             f"{gen.get('repetition_penalty', '?')}, up to {gen.get('max_new_tokens', '?')} new tokens).",
             "", "```",
             report.compare_table(results), "```", "",
             f"Demo exam: the final model ({labels[-1]}) {verdict} the starting model ({start}): "
             f"{_fmt(acc[-1], 2)} vs {_fmt(acc[0], 2)} (n={n}; the 95% intervals are in the table and the report).",
             "",
             f"## Answers: {start} and {labels[-1]} side by side", "", *_answers(results, labels)]
    text = "\n".join(lines) + "\n"
    runs.atomic_write_text(out / "demo.md", text)
    print("\n" + text)
    print(f"demo finished in {time.time() - started:.0f} s. Written:\n"
          f"  {out / 'demo.md'}   this summary\n"
          f"  {html['html']}   the HTML report (plots, per-task intervals, loss curves)\n"
          f"  {out / 'pipeline.json'}   every step, its folder and key metrics\n"
          f"  {out}/pt, sft, dpo, avg   the run folders; chat with the final model: medtune chat {out / 'avg'}",
          file=sys.stderr)
    return 0
