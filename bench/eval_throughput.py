#!/usr/bin/env python
"""Log-likelihood evaluation speed: medtune's scorer against lm-evaluation-harness and a naive baseline.

All three score the same items with the same model, in fp32, in the same run, zero-shot with the harness's
prompts (PubMedQA: choices " yes"/" no"/" maybe"; MedMCQA: " A".." D"):

  harness    lm-evaluation-harness (`pip install -e .[bench]`) with a local task YAML that this script writes
             into a temporary folder: the items, already rendered with medtune's prompts, as a local JSONL file
             (no hub). The model is the same local Hugging Face folder medtune loads (for `default`, the
             embedded GGUF de-quantised to fp32 once by `medtune`). Timed at batch 1 and at each size of
             --harness-batch-sizes; the best is the one compared.
  medtune    `scoring.loglik_scores` (eval/scoring.py says how it is fast).
  baseline   `scoring.loglik_reference`: one full forward of context + choice per (item, choice) pair, batch 1,
             on the first --baseline-limit items (its rate is what the table shows).

Printed per task: items/s of each, medtune / harness-best, each one's accuracy (they must be identical, and
so must every prediction), the largest log-likelihood difference, and medtune's share of the compute bound:
forward FLOPs of the scored tokens (context tokens, choice tokens after the first, the LM head where it runs)
divided by the fp32 matmul rate measured in this run. The machine, torch threads and the command are printed;
never compare figures across machines.

    make bench-eval                                  # both tasks, all items (tens of minutes on 2 cores)
    python bench/eval_throughput.py --limit 20       # a quick check
    python bench/eval_throughput.py --tasks pubmedqa --harness-batch-sizes 1,4,8,16 --json figures.json
    python bench/eval_throughput.py --no-harness     # medtune against the baseline only (no lm-eval needed)
    python bench/eval_throughput.py --health         # the 40 health prompts: one at a time against batched
    python bench/eval_throughput.py --levers --limit 50 --tasks pubmedqa   # each speed lever on its own

With --health the script times `eval --health`'s generation instead (greedy, repetition penalty 1.1, up to 512
new tokens, as `medtune eval --health`): one prompt at a time (`chat.complete`, what it did before) against
`health.replies` at each of --health-batch-sizes, and counts the replies that differ from the one-at-a-time ones,
with where each first differs and the gap between the two best logits there (a near-tie that the batch's
different summation order can flip).

Exit status: 0 when every prediction is identical (harness, medtune, baseline), 1 otherwise; with the shared
data folder missing it says so and exits 0 (nothing to measure).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
FILES = {"pubmedqa": SHARED / "pubmedqa" / "pqal_trainval.json", "medmcqa": SHARED / "medmcqa" / "dev_sample300.jsonl"}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="default", help="default, a model folder or a .gguf file")
    p.add_argument("--tasks", default="pubmedqa,medmcqa", help="comma-separated: pubmedqa, medmcqa")
    p.add_argument("--file", action="append", default=[], metavar="TASK=PATH", help="another file for a task")
    p.add_argument("--limit", type=int, default=0, help="a seeded sample of N items per task (0 = all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=8, help="medtune's batch size (default 8)")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"],
                   help="also time medtune's bf16 pass with the fp32 check (auto: on a CPU with native bf16, as eval)")
    p.add_argument("--harness-batch-sizes", default="1,8,16", help="the harness's batch sizes to time (default 1,8,16)")
    p.add_argument("--no-harness", action="store_true", help="skip lm-evaluation-harness")
    p.add_argument("--baseline-limit", type=int, default=50, help="items the naive baseline scores (0 = skip it)")
    p.add_argument("--json", help="also write the figures here")
    p.add_argument("--health", action="store_true", help="time the health check's generation instead")
    p.add_argument("--levers", action="store_true", help="time each scoring lever on its own instead (docs/eval.md)")
    p.add_argument("--health-batch-sizes", default="16,40", help="--health: batch sizes to time (default 16,40)")
    p.add_argument("--max-new-tokens", type=int, default=512, help="--health: reply length cap (default 512)")
    a = p.parse_args(argv)
    if a.health:
        return bench_health(a)
    files = dict(FILES)
    for spec in a.file:
        name, _, path = spec.partition("=")
        files[name] = Path(path)
    names = [t.strip() for t in a.tasks.split(",") if t.strip()]
    missing = [n for n in names if n not in files or not Path(files[n]).is_file()]
    if missing:
        print(f"skipped: no data for {', '.join(missing)} (expected {', '.join(str(files.get(n)) for n in missing)}; "
              "the shared data folder ../shared/data is not here)")
        return 0
    harness_sizes = [int(x) for x in a.harness_batch_sizes.split(",") if x.strip()]
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")

    import torch

    from medtune import models
    from medtune.eval import scoring, tasks

    folder = models.resolve(a.model)  # the local HF folder both medtune and the harness load
    loaded = models.load(models.ModelConfig(name_or_path=a.model))
    model, tok = loaded.model.float().eval(), loaded.tokenizer
    rate = matmul_rate()
    fast, rate16 = None, 0.0
    if a.precision != "fp32" and (a.precision == "bf16" or scoring.native_bf16_cpu()):
        fast, rate16 = scoring.bf16_copy(model), matmul_rate(dtype=torch.bfloat16)
    print(f"model {a.model} ({folder}), fp32; torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{cpu_name()}, {os.cpu_count()} CPUs; fp32 matmul rate measured now: {rate / 1e9:.0f} GFLOP/s"
          + (f", bf16 {rate16 / 1e9:.0f} GFLOP/s" if fast is not None else ""))
    print("command: python bench/eval_throughput.py " + " ".join(sys.argv[1:] if argv is None else argv))

    figures = {"model": a.model, "threads": torch.get_num_threads(), "cpu": cpu_name(),
               "matmul_gflops": rate / 1e9, "tasks": {}}
    ok = True
    with tempfile.TemporaryDirectory(prefix="medtune-bench-eval-") as tmp:
        for name in names:
            items = tasks.load_task(name, files[name], limit=a.limit, seed=a.seed)
            task = tasks.get_task(name)
            requests = [scoring.Request(task.prompt(it), task.continuations(it)) for it in items]
            if a.levers:
                figures["tasks"][name] = bench_levers(name, requests, model, tok)
                continue
            f, same = bench_task(name, items, requests, model, tok, folder, rate, a, harness_sizes, Path(tmp), fast, rate16)
            figures["tasks"][name] = f
            ok = ok and same
    if a.json:
        Path(a.json).write_text(json.dumps(figures, indent=2))
    return 0 if ok else 1


def bench_task(name, items, requests, model, tok, folder, rate, a, harness_sizes, tmp: Path, fast=None, rate16=0.0):
    from medtune.eval import scoring

    encoded = [scoring.encode_pair(tok, r.context, r.continuations[0])[0] for r in requests]
    lengths = [len(c) for c in encoded]
    print(f"\n{name}: {len(items)} items, context {min(lengths)}-{max(lengths)} tokens (mean {sum(lengths) / len(lengths):.0f})")
    gold = [it.answer for it in items]
    rows = {}  # scorer -> (items/s, accuracy, predictions, scores)

    scoring.loglik_scores(model, tok, requests[:2], batch_size=2)  # warm-up (allocations, kernels)
    t0 = time.perf_counter()
    ours = scoring.loglik_scores(model, tok, requests, batch_size=a.batch_size)
    rows["medtune"] = _row(len(items) / (time.perf_counter() - t0), ours, gold)
    check = None
    if fast is not None:  # what `medtune eval` does by default on a CPU with native bf16 (--precision auto)
        scoring.loglik_scores(fast, tok, requests[:2], batch_size=2)
        t0 = time.perf_counter()
        checked, check = scoring.loglik_checked(model, fast, tok, requests, batch_size=a.batch_size, seed=a.seed)
        rows["medtune bf16+check"] = _row(len(items) / (time.perf_counter() - t0), checked, gold)
        print(f"bf16 + fp32 check: {check.calibration_items} calibration items, largest bf16 error on a choice gap "
              f"{check.max_error:.3f} nats -> margin {check.margin:.3f}; {check.rechecked} items "
              f"({100 * check.rechecked / len(items):.0f}%) re-scored in fp32")

    if not a.no_harness:
        for bs in harness_sizes:
            speed, scores = run_harness(name, items, requests, folder, bs, tmp)
            rows[f"harness bs{bs}"] = _row(speed, scores, gold)

    n_base = min(a.baseline_limit, len(items))
    if n_base:
        t0 = time.perf_counter()
        ref = scoring.loglik_reference(model, tok, requests[:n_base])
        rows["baseline"] = _row(n_base / (time.perf_counter() - t0), ref, gold[:n_base])

    flops = scored_flops(model, tok, requests, scoring)
    bound = rate / (flops / len(items))  # items/s if every scored FLOP ran at the measured matmul rate
    harness_rows = [k for k in rows if k.startswith("harness")]
    best = max(harness_rows, key=lambda k: rows[k][0]) if harness_rows else None
    norm = {k: _norm_preds(v[3], requests) for k, v in rows.items()}
    print(f"{'scorer':18s} {'items/s':>8s} {'accuracy':>9s}  vs medtune (fp32)")
    for k, (speed, acc, preds, scores) in rows.items():
        n = len(preds)
        same = preds == rows["medtune"][2][:n] and norm[k] == norm["medtune"][:n]
        diff = max(abs(x - y) for s1, s2 in zip(scores, ours[:n]) for x, y in zip(s1, s2))
        note = "" if k == "medtune" else f"  predictions (acc and acc_norm) {'identical' if same else 'DIFFER'}, largest log-likelihood difference {diff:.1e}"
        note += f" (first {n} items)" if n < len(items) else ""
        print(f"{k:18s} {speed:8.2f} {acc:9.4f}{note}")
    f = {"items": len(items), "mean_context_tokens": sum(lengths) / len(lengths), "medtune_batch_size": a.batch_size,
         "compute_bound_items_per_s": bound, "medtune_share_of_bound": rows["medtune"][0] / bound,
         "rows": {k: {"items_per_s": v[0], "accuracy": v[1], "items": len(v[2]),
                      "same_predictions": v[2] == rows["medtune"][2][:len(v[2])] and norm[k] == norm["medtune"][:len(v[2])],
                      "max_loglik_difference": max(abs(x - y) for s1, s2 in zip(v[3], ours) for x, y in zip(s1, s2))}
                  for k, v in rows.items()}}
    print(f"compute bound {bound:.2f} items/s ({flops / len(items) / 1e9:.3g} GFLOP per item): medtune at "
          f"{100 * f['medtune_share_of_bound']:.0f}% of it")
    if check is not None:
        # bf16 pass at the bf16 matmul rate, the re-scored items at the fp32 rate
        bound16 = 1 / ((1 / (rate16 / (flops / len(items)))) + (check.rechecked + check.calibration_items) / len(items) / bound)
        f["bf16_check"] = dataclasses.asdict(check) | {"compute_bound_items_per_s": bound16,
                                                       "share_of_bound": rows["medtune bf16+check"][0] / bound16}
        print(f"bf16+check bound {bound16:.2f} items/s (bf16 matmul rate {rate16 / 1e9:.0f} GFLOP/s for the bf16 pass, "
              f"fp32 for the re-scored items): at {100 * f['bf16_check']['share_of_bound']:.0f}% of it")
    if best:
        f["harness_best"] = best
        for mine in [k for k in rows if k.startswith("medtune")]:
            tag = "" if mine == "medtune" else "_bf16_check"
            f[f"ratio_medtune{tag}_over_harness_best"] = rows[mine][0] / rows[best][0]
            f[f"ratio_medtune{tag}_over_harness_bs1"] = rows[mine][0] / rows[harness_rows[0]][0]
            print(f"ratio {mine} / harness best ({best}): {rows[mine][0] / rows[best][0]:.2f}x; "
                  f"{mine} / {harness_rows[0]}: {rows[mine][0] / rows[harness_rows[0]][0]:.2f}x")
    if "baseline" in rows:
        f["ratio"] = rows["medtune"][0] / rows["baseline"][0]
        print(f"ratio medtune / baseline: {f['ratio']:.2f}x")
    same = all(v["same_predictions"] for v in f["rows"].values())
    accuracies = {k: v["accuracy"] for k, v in f["rows"].items() if v["items"] == len(items)}
    print(f"identical predictions: {same}; accuracy " + ", ".join(f"{k} {v:.4f}" for k, v in accuracies.items()))
    return f, same


def bench_levers(name, requests, model, tok) -> dict:
    """items/s of each way to run the contexts, on the same items, each against the previous release's path."""
    import copy
    import itertools

    import torch

    from medtune.data import packing
    from medtune.eval import scoring

    encoded = [scoring._encode(tok, r) for r in requests]
    if not all(len(c) == 1 for _, conts in encoded for c in conts):
        print(f"\n{name}: skipped, the levers are timed on one-token choices and this tokenizer splits some")
        return {}
    order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i][0]))
    first = [[c[0] for c in conts] for _, conts in encoded]

    def left_padded(bs, keep):  # the previous release: left padding, attention mask, KV cache kept
        out = [None] * len(encoded)
        for k in range(0, len(order), bs):
            idx = order[k:k + bs]
            ctxs = [encoded[i][0] for i in idx]
            w = max(map(len, ctxs))
            ids = torch.tensor([[0] * (w - len(c)) + c for c in ctxs])
            mask = torch.tensor([[0] * (w - len(c)) + [1] * len(c) for c in ctxs])
            extra = {"logits_to_keep": 1} if keep else {}
            logits = model(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0),
                           use_cache=True, **extra).logits
            last = torch.log_softmax(logits[:, -1].float(), -1)
            for b, i in enumerate(idx):
                out[i] = last[b, first[i]].tolist()
        return out

    def packed(row_tokens):  # several contexts in one row, positions restarting: block-diagonal attention
        out = [None] * len(encoded)
        lengths = [len(c) for c, _ in encoded]
        for group in packing.best_fit_decreasing(lengths, max(row_tokens, max(lengths))):
            ids = torch.tensor([sum((encoded[i][0] for i in group), [])])
            pos = torch.tensor([sum((list(range(lengths[i])) for i in group), [])])
            ends = [e - 1 for e in itertools.accumulate(lengths[i] for i in group)]
            last = torch.log_softmax(model(input_ids=ids, position_ids=pos, use_cache=False,
                                           logits_to_keep=torch.tensor(ends)).logits[0].float(), -1)
            for k, i in enumerate(group):
                out[i] = last[k, first[i]].tolist()
        return out

    half = copy.deepcopy(model).to(torch.bfloat16)
    threads = torch.get_num_threads()

    def one_thread(bs):
        torch.set_num_threads(1)
        try:
            return scoring.loglik_scores(model, tok, requests, batch_size=bs)
        finally:
            torch.set_num_threads(threads)

    variants = {
        "left-padded, mask, full head, cache (previous release), batch 8": lambda: left_padded(8, False),
        "  + head at the last position only": lambda: left_padded(8, True),
        "  + right padding, no mask (medtune now), batch 1": lambda: scoring.loglik_scores(model, tok, requests, batch_size=1),
        "  medtune now, batch 4": lambda: scoring.loglik_scores(model, tok, requests, batch_size=4),
        "  medtune now, batch 8": lambda: scoring.loglik_scores(model, tok, requests, batch_size=8),
        "  medtune now, batch 16": lambda: scoring.loglik_scores(model, tok, requests, batch_size=16),
        "  medtune now, batch 8, 1 thread": lambda: one_thread(8),
        "packed rows of 1024 tokens, head at the ends": lambda: packed(1024),
        "packed rows of 2048 tokens, head at the ends": lambda: packed(2048),
        "medtune now in bf16, batch 8": lambda: scoring.loglik_scores(half, tok, requests, batch_size=8),
    }
    print(f"\n{name}: {len(requests)} items, each lever alone (torch {threads} threads)")
    print(f"{'variant':66s} {'items/s':>8s}  predictions vs fp32 reference")
    reference = scoring.loglik_scores(model, tok, requests[:2], batch_size=2)  # warm-up
    reference = None
    rows = {}
    with torch.no_grad():
        for label, run in variants.items():
            t0 = time.perf_counter()
            scores = run()
            speed = len(requests) / (time.perf_counter() - t0)
            reference = reference or scores
            changed = sum(scoring.choose(x) != scoring.choose(y) for x, y in zip(scores, reference))
            diff = max(abs(u - v) for x, y in zip(scores, reference) for u, v in zip(x, y))
            rows[label.strip()] = {"items_per_s": speed, "predictions_changed": changed, "max_loglik_difference": diff}
            print(f"{label:66s} {speed:8.2f}  {changed} changed, largest log-likelihood difference {diff:.1e}")
    return {"items": len(requests), "levers": rows}


def bench_health(a) -> int:
    import torch

    from medtune import chat
    from medtune.eval import health

    prompts = health.load_prompts()
    if a.limit:
        prompts = prompts[:a.limit]
    cm = chat.load_chat_model(a.model)
    settings = health.health_settings(chat.GenerationSettings(max_new_tokens=a.max_new_tokens, repetition_penalty=1.1))
    conversations = [[{"role": "user", "content": p["prompt"]}] for p in prompts]
    print(f"health check: {len(prompts)} prompts, greedy, repetition penalty 1.1, up to {a.max_new_tokens} new tokens; "
          f"model {a.model}; torch {torch.__version__}, {torch.get_num_threads()} threads, {cpu_name()}, {os.cpu_count()} CPUs")
    print("command: python bench/eval_throughput.py " + " ".join(sys.argv[1:]))
    chat.complete(cm, conversations[0][:1], dataclasses.replace(settings, max_new_tokens=2))  # warm-up
    t0 = time.perf_counter()
    alone = [chat.complete(cm, c, settings) for c in conversations]
    t_alone = time.perf_counter() - t0
    tokens = sum(len(r.token_ids) for r in alone)
    figures = {"prompts": len(prompts), "tokens": tokens, "one_at_a_time_s": t_alone, "batched": {}}
    print(f"{'generation':14s} {'seconds':>8s} {'tokens/s':>9s} {'speed-up':>9s}  replies differing from one at a time")
    print(f"{'one at a time':14s} {t_alone:8.1f} {tokens / t_alone:9.1f} {1:9.2f}")
    for bs in [int(x) for x in a.health_batch_sizes.split(",") if x.strip()]:
        t0 = time.perf_counter()
        batched = health.replies(cm, conversations, settings, batch_size=bs, progress=False)
        t = time.perf_counter() - t0
        differ = [(k, first_difference(r.token_ids, b.token_ids)) for k, (r, b) in enumerate(zip(alone, batched))
                  if r.token_ids != b.token_ids]
        gaps = [logit_gap(cm, conversations[k], alone[k].token_ids[:at]) for k, at in differ]
        figures["batched"][bs] = {"seconds": t, "speed_up": t_alone / t, "differing": len(differ),
                                  "first_difference": [{"prompt": k, "token": at, "top2_logit_gap": g}
                                                       for (k, at), g in zip(differ, gaps)]}
        detail = "; ".join(f"#{k} from token {at} (top-2 logit gap {g:.3f})" for (k, at), g in zip(differ, gaps))
        print(f"{'batch ' + str(bs):14s} {t:8.1f} {sum(len(b.token_ids) for b in batched) / t:9.1f} {t_alone / t:9.2f}  "
              f"{len(differ)} of {len(prompts)}{': ' + detail if detail else ''}")
    if a.json:
        Path(a.json).write_text(json.dumps(figures, indent=2))
    return 0


def first_difference(x: list[int], y: list[int]) -> int:
    return next((i for i, (p, q) in enumerate(zip(x, y)) if p != q), min(len(x), len(y)))


def logit_gap(cm, conversation, prefix: list[int]) -> float:
    """The gap between the two best raw logits (no penalty) after the prompt and `prefix`, run alone."""
    import torch

    from medtune.data import templates

    ids = templates.encode_dialogue(cm.tokenizer, cm.fmt, conversation, add_generation_prompt=True).input_ids + prefix
    with torch.no_grad():
        logits = cm.model(input_ids=torch.tensor([ids]), use_cache=False, logits_to_keep=1).logits[0, -1].float()
    top = logits.topk(2).values
    return float(top[0] - top[1])


def _norm_preds(scores, requests):
    from medtune.eval import scoring

    return [scoring.choose(sc, r.continuations, normalise=True) for sc, r in zip(scores, requests)]


def _row(speed, scores, gold):
    from medtune.eval import scoring

    preds = [scoring.choose(s) for s in scores]
    return speed, sum(p == g for p, g in zip(preds, gold)) / len(gold), preds, scores


def run_harness(name, items, requests, folder, batch_size, tmp: Path):
    """(items/s, per-item choice log-likelihoods) from lm-evaluation-harness on the same rendered items."""
    try:
        from lm_eval.evaluator import evaluate
        from lm_eval.models.huggingface import HFLM
        from lm_eval.tasks import TaskManager
    except ImportError:
        sys.exit("lm-evaluation-harness is not installed: pip install -e '.[bench]' (or pass --no-harness)")
    import logging

    logging.getLogger("lm-eval").setLevel(logging.WARNING)
    logging.getLogger("lm_eval").setLevel(logging.WARNING)
    task_name = f"medtune_bench_{name}"
    data = tmp / f"{name}.jsonl"
    # the continuation is target_delimiter (" ") + choice: the same strings medtune scores
    data.write_text("".join(json.dumps({"text": r.context, "choices": [c[1:] for c in r.continuations], "gold": it.answer},
                                       ensure_ascii=False) + "\n" for r, it in zip(requests, items)))
    assert all(c.startswith(" ") for r in requests for c in r.continuations)
    (tmp / f"{task_name}.yaml").write_text(
        f"task: {task_name}\n"
        "dataset_path: json\n"
        f"dataset_kwargs:\n  data_files:\n    test: {json.dumps(str(data))}\n"
        "test_split: test\n"
        "output_type: multiple_choice\n"
        "doc_to_text: text\n"
        "doc_to_choice: choices\n"
        "doc_to_target: gold\n"
        "target_delimiter: \" \"\n"
        "metric_list:\n  - metric: acc\n    aggregation: mean\n    higher_is_better: true\n")
    manager = TaskManager(include_path=str(tmp), include_defaults=False)
    lm = HFLM(pretrained=str(folder), dtype="float32", device="cpu", batch_size=batch_size)
    evaluate(lm=lm, task_dict=manager.load([task_name]), limit=2, bootstrap_iters=0,
                               verbosity="WARNING")  # warm-up
    task_dict = manager.load([task_name])
    t0 = time.perf_counter()
    out = evaluate(lm=lm, task_dict=task_dict, log_samples=True, bootstrap_iters=0, verbosity="WARNING")
    speed = len(items) / (time.perf_counter() - t0)
    scores = [None] * len(items)
    for sample in out["samples"][task_name]:
        scores[sample["doc_id"]] = [float(r[0][0]) for r in sample["resps"]]
    return speed, scores


def scored_flops(model, tok, requests, scoring) -> float:
    """Forward FLOPs medtune must spend: every context token and every choice token after the first through the
    decoder (2 per weight of each linear layer, plus causal attention's 4 x hidden per earlier position per
    layer), and the LM head at each position whose next token is scored."""
    import torch

    cfg = model.config
    head = model.get_output_embeddings()
    head_weights = head.weight.numel() if head is not None else 0
    linear = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear)) - head_weights
    layers, hidden = cfg.num_hidden_layers, cfg.hidden_size
    total = 0.0
    for r in requests:
        ctx, conts = scoring._encode(tok, r)
        tails = [len(c) - 1 for c in conts]
        for n, start in [(len(ctx), 0)] + [(t, len(ctx)) for t in tails if t]:
            attention = 4 * layers * hidden * (n * start + n * (n + 1) / 2)
            total += 2 * linear * n + attention
        total += 2 * head_weights * (1 + sum(tails))
    return total


def matmul_rate(seconds: float = 2.0, dtype=None) -> float:
    """Best FLOP/s (fp32 unless `dtype`) of a (4096 x 576) @ (576 x 1536) product over a few rounds (a decoder
    MLP's shape)."""
    import torch

    a, b = torch.randn(4096, 576, dtype=dtype), torch.randn(576, 1536, dtype=dtype)
    flop = 2 * a.shape[0] * a.shape[1] * b.shape[1]
    best = 0.0
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        t0 = time.perf_counter()
        for _ in range(5):
            torch.mm(a, b)
        best = max(best, 5 * flop / (time.perf_counter() - t0))
    return best


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


if __name__ == "__main__":
    sys.exit(main())
