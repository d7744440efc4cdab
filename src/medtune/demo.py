"""`medtune demo` (what `make demo` runs): continue pretraining the embedded default model on the shipped demo
text (held-out perplexity before and after), fine-tune that run on the demo dialogues, and print the same
held-out questions answered before and after, greedily, side by side."""

from __future__ import annotations

import sys
import textwrap
import time
from pathlib import Path

from medtune import NOT_MEDICAL_ADVICE

DEMO_RECIPE = "medtune:recipes/sft_demo.yaml"
PT_RECIPE = "medtune:recipes/pt_demo.yaml"


def _answers(spec: str, questions: list[dict], max_new_tokens: int) -> list[tuple[str, bool]]:
    from medtune import chat

    cm = chat.load_chat_model(spec)
    greedy = chat.GenerationSettings(temperature=0.0, max_new_tokens=max_new_tokens, repetition_penalty=1.1)
    out = []
    for q in questions:
        out.append(chat.generate(cm, [{"role": "user", "content": q["question"]}], greedy))
    return out


def _show(text: str, stopped: bool) -> str:
    body = textwrap.shorten(" ".join(text.split()), width=400, placeholder=" ...")
    return body + ("" if stopped else "  [hit max_new_tokens]")


def main(output_dir: str = "runs/demo-sft", steps: int | None = None, max_new_tokens: int = 96) -> int:
    from medtune import demo_data, runs
    from medtune.config import load_config
    from medtune.stages import pt, sft

    print(f"note: {NOT_MEDICAL_ADVICE}\n")
    started = time.time()
    questions = demo_data.heldout_questions()
    cap = [f"train.max_steps={steps}"] if steps else []
    pt_dir = str(Path(output_dir).parent / (Path(output_dir).name.replace("-sft", "") + "-pt"))
    pt_cfg = load_config(pt.PTConfig, PT_RECIPE, [f"output_dir={pt_dir}", "overwrite=true", *cap])
    cfg = load_config(sft.SFTConfig, DEMO_RECIPE,
                      [f"output_dir={output_dir}", "overwrite=true", f"model.name_or_path={pt_dir}", *cap])

    print(f"[1/4] answering {len(questions)} held-out questions with the default model (before)")
    before = _answers("default", questions, max_new_tokens)
    print(f"[2/4] LoRA continued pretraining on the demo text ({PT_RECIPE})")
    pt_run = pt.run(pt_cfg)
    print(f"[3/4] LoRA fine-tuning of that run on the demo dialogues ({DEMO_RECIPE})")
    run_dir = sft.run(cfg)
    print("[4/4] answering the same questions with the tuned model (after)")
    after = _answers(str(run_dir), questions, max_new_tokens)

    lines = ["# medtune demo: before and after PT + SFT", "", f"> {NOT_MEDICAL_ADVICE}", ""]
    for q, b, a in zip(questions, before, after):
        lines += [f"## {q['question']}", "", f"- **before:** {_show(*b)}", f"- **after:** {_show(*a)}", ""]
    stopped_before = sum(s for _, s in before)
    stopped_after = sum(s for _, s in after)
    manifest = runs.read_manifest(run_dir)
    m = manifest["metrics"]
    pm = runs.read_manifest(pt_run)
    lines += [
        f"Continued pretraining ({pt_run}): held-out perplexity on {pm['data_stats']['val_documents']} demo documents "
        f"{pm['metrics'].get('eval_perplexity_before', float('nan')):.2f} -> {pm['metrics'].get('eval_perplexity', float('nan')):.2f} "
        f"in {pm['metrics']['steps']} steps ({pm['metrics']['train_runtime_s']} s).",
        f"Answers that ended with the end-of-turn token: before {stopped_before}/{len(questions)}, "
        f"after {stopped_after}/{len(questions)} (max_new_tokens={max_new_tokens}).",
        f"Held-out loss on {manifest['data_stats']['val_examples']} demo dialogues: {m.get('eval_loss', float('nan')):.3f}; "
        f"training took {m['train_runtime_s']} s for {m['steps']} steps.",
    ]
    report = "\n".join(lines) + "\n"
    runs.atomic_write_text(Path(run_dir) / "demo.md", report)
    print("\n" + report)
    print(f"demo finished in {time.time() - started:.0f} s; report: {Path(run_dir) / 'demo.md'}; "
          f"chat with it: medtune chat {run_dir}", file=sys.stderr)
    return 0
