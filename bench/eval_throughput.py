#!/usr/bin/env python
"""Log-likelihood evaluation speed: medtune's scorer against the one-forward-per-choice baseline.

Both score the same PubMedQA items (zero-shot, the lm-evaluation-harness prompt, choices " yes"/" no"/
" maybe") with the same model in the same run:

  baseline   `scoring.loglik_reference`: one full forward of context + choice per (item, choice) pair,
             batch 1, no cache (what a naive harness loop does).
  medtune    `scoring.loglik_scores`: items sorted by context length and batched (left padding); each
             context runs once with a KV cache; a choice's first token is read off the context's last
             position; longer choices run only their remaining tokens on the cached context.

Prints items/s for each, the ratio, both accuracies and the largest difference between their log-likelihoods;
the predictions must be identical. The machine's state is printed too; never compare runs across machines.

    python bench/eval_throughput.py                     # 100 PubMedQA items from ../shared, default model
    python bench/eval_throughput.py --n 20 --batch-size 4
    python bench/eval_throughput.py --model PATH --file pqal.json --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="default")
    p.add_argument("--file", default=str(SHARED / "pubmedqa" / "pqal_trainval.json"))
    p.add_argument("--n", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="also write the figures here")
    a = p.parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    import torch

    from medtune import models
    from medtune.eval import scoring, tasks

    items = tasks.load_task("pubmedqa", a.file, limit=a.n, seed=a.seed)
    task = tasks.get_task("pubmedqa")
    requests = [scoring.Request(task.prompt(it), task.continuations(it)) for it in items]
    loaded = models.load(models.ModelConfig(name_or_path=a.model))
    model, tok = loaded.model.eval(), loaded.tokenizer
    ctx_tokens = [len(scoring.encode_pair(tok, r.context, r.continuations[0])[0]) for r in requests]
    print(f"{len(items)} PubMedQA items, context {min(ctx_tokens)}-{max(ctx_tokens)} tokens (mean {sum(ctx_tokens) / len(ctx_tokens):.0f}); "
          f"model {a.model}; torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}")

    scoring.loglik_scores(model, tok, requests[:2], batch_size=2)  # warm-up (allocations, kernels)
    t0 = time.perf_counter()
    ours = scoring.loglik_scores(model, tok, requests, batch_size=a.batch_size)
    t_ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    ref = scoring.loglik_reference(model, tok, requests)
    t_ref = time.perf_counter() - t0

    pred_ours = [scoring.choose(s) for s in ours]
    pred_ref = [scoring.choose(s) for s in ref]
    acc_ours = sum(p == it.answer for p, it in zip(pred_ours, items)) / len(items)
    acc_ref = sum(p == it.answer for p, it in zip(pred_ref, items)) / len(items)
    diff = max(abs(x - y) for so, sr in zip(ours, ref) for x, y in zip(so, sr))
    figures = {
        "items": len(items), "batch_size": a.batch_size,
        "baseline_items_per_s": len(items) / t_ref, "medtune_items_per_s": len(items) / t_ours,
        "ratio": t_ref / t_ours, "accuracy_baseline": acc_ref, "accuracy_medtune": acc_ours,
        "same_predictions": pred_ours == pred_ref, "max_loglik_difference": diff,
    }
    print(f"{'scorer':10s} {'items/s':>8s} {'accuracy':>9s}")
    print(f"{'baseline':10s} {figures['baseline_items_per_s']:8.2f} {acc_ref:9.4f}")
    print(f"{'medtune':10s} {figures['medtune_items_per_s']:8.2f} {acc_ours:9.4f}")
    print(f"ratio medtune / baseline: {figures['ratio']:.2f}x; identical predictions: {figures['same_predictions']}; "
          f"largest log-likelihood difference {diff:.2e}")
    if a.json:
        Path(a.json).write_text(json.dumps(figures, indent=2))
    return 0 if figures["same_predictions"] else 1


if __name__ == "__main__":
    sys.exit(main())
