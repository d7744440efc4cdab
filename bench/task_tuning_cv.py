"""Task tuning on PubMedQA, measured by k-fold cross-validation on the 500 labelled items (never a test split).

    .venv/bin/python bench/task_tuning_cv.py                                  # 5 folds, the shipped recipe
    .venv/bin/python bench/task_tuning_cv.py --set train.epochs=3 --json cv-epochs3.json   # one lever
    .venv/bin/python bench/task_tuning_cv.py --run-folds 1 --limit-train 40 --limit-eval 30 --mcq-limit 50  # a check
    .venv/bin/python bench/task_tuning_cv.py --demo runs/demo-tasks            # `make demo-tasks`

The folds are stratified by label (yes/no/maybe) and seeded. For each fold the embedded model (or --set
model.name_or_path=...) is task-tuned with the recipe (default recipes/task_tuning_pubmedqa.yaml) on the other
folds, then the held-out fold is scored with medtune's log-likelihood scorer (the harness prompt, " yes"/" no"/
" maybe" continuations): accuracy, macro-F1 and the answer distribution. The MedMCQA sample (300 items) is scored
before and after tuning (forgetting). Rows: the majority answer of the training folds, the untuned model, the tuned
model, and with --average ALPHA the tuned model averaged with the base (merge average). Per row: mean over folds
with a 95% t interval, and the pooled held-out accuracy with a Wilson interval.

Levers: --set KEY=VALUE (any sft recipe key: train.epochs, train.learning_rate, lora.method=full, lora.r, ...),
--form (prompt_completion: the harness's own text with the loss on the answer; messages: chat dialogues),
--long-answer (the long answer after the label), --balance (up-sample the classes to equal counts), --average.

--demo OUT: one held-out fold; default vs tuned vs averaged evaluated with `medtune eval`'s runner, the comparison
table printed and the HTML report written (eval/report.py). Data is read from ../shared/data (relative to the
repository) or --data-dir; nothing is downloaded; without the data the demo says so and exits 0.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
RECIPE = REPO / "recipes" / "task_tuning_pubmedqa.yaml"
PUBMEDQA = "pubmedqa/pqal_trainval.json"
MEDMCQA = "medmcqa/dev_sample300.jsonl"
LABELS = ("yes", "no", "maybe")


# --------------------------------------------------------------------------------------------- folds and data


def stratified_folds(labels: list, k: int, seed: int) -> list[list[int]]:
    """k disjoint folds covering every index, each label spread evenly over them (seeded shuffle per label;
    each label's remainder continues where the previous label's stopped, so fold sizes differ by at most one)."""
    by_label: dict = {}
    for i, y in enumerate(labels):
        by_label.setdefault(y, []).append(i)
    rng = random.Random(seed)
    folds: list[list[int]] = [[] for _ in range(k)]
    dealt = 0
    for y in sorted(by_label, key=str):
        idx = by_label[y][:]
        rng.shuffle(idx)
        for j, i in enumerate(idx):
            folds[(dealt + j) % k].append(i)
        dealt += len(idx)
    return [sorted(f) for f in folds]


def balanced(records: list[dict], labels: list[int], seed: int) -> list[dict]:
    """Every class up-sampled (seeded copies) to the largest class's count, then shuffled."""
    rng = random.Random(seed)
    by_label: dict = {}
    for r, y in zip(records, labels):
        by_label.setdefault(y, []).append(r)
    target = max(len(v) for v in by_label.values())
    out = []
    for group in by_label.values():
        out += group + [rng.choice(group) for _ in range(target - len(group))]
    rng.shuffle(out)
    return out


def training_records(items, form: str, long_answer: bool, balance: bool, seed: int) -> list[dict]:
    from medtune.eval import tasks

    if form == "prompt_completion":
        records = tasks.to_prompt_completion_records("pubmedqa", items, long_answer=long_answer)
    else:
        records = tasks.to_sft_records("pubmedqa", items)
    return balanced(records, [it.answer for it in items], seed) if balance else records


def write_jsonl(path: Path, records: list[dict]) -> Path:
    from medtune.runs import atomic_write_text

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    return path


# --------------------------------------------------------------------------------------------- statistics


def t_interval(values: list[float], level: float = 0.95) -> list[float]:
    """Mean +- t quantile x standard error over folds; [mean, mean] for a single fold."""
    from scipy import stats

    mean = statistics.fmean(values)
    if len(values) < 2:
        return [mean, mean]
    half = stats.t.ppf((1 + level) / 2, len(values) - 1) * statistics.stdev(values) / len(values) ** 0.5
    return [mean - half, mean + half]


def wilson(correct: int, n: int, level: float = 0.95) -> list[float]:
    from scipy import stats

    if n == 0:
        return [0.0, 0.0]
    ci = stats.binomtest(correct, n).proportion_ci(confidence_level=level, method="wilson")
    return [float(ci.low), float(ci.high)]


def fold_metrics(gold: list[int], pred: list[int]) -> dict:
    from medtune.eval import scoring

    counts = Counter(pred)
    return {"n": len(gold), "correct": sum(g == p for g, p in zip(gold, pred)),
            "accuracy": sum(g == p for g, p in zip(gold, pred)) / max(1, len(gold)),
            "macro_f1": scoring.macro_f1(gold, pred, len(LABELS)),
            "answers": {lab: counts.get(k, 0) / max(1, len(pred)) for k, lab in enumerate(LABELS)}}


def summarise(name: str, folds: list[dict], mcq: list[float | None]) -> dict:
    """One table row: mean and t interval over folds, pooled accuracy with its Wilson interval, answer shares."""
    n = sum(f["n"] for f in folds)
    correct = sum(f["correct"] for f in folds)
    answers = {lab: sum(f["answers"][lab] * f["n"] for f in folds) / max(1, n) for lab in LABELS}
    mcq = [m for m in mcq if m is not None]
    return {"row": name, "folds": len(folds), "accuracy": statistics.fmean(f["accuracy"] for f in folds),
            "accuracy_ci95": t_interval([f["accuracy"] for f in folds]),
            "macro_f1": statistics.fmean(f["macro_f1"] for f in folds),
            "macro_f1_ci95": t_interval([f["macro_f1"] for f in folds]),
            "pooled_accuracy": correct / max(1, n), "pooled_wilson95": wilson(correct, n), "n": n, "answers": answers,
            "medmcqa": statistics.fmean(mcq) if mcq else None}


def table(rows: list[dict]) -> str:
    lines = ["| row | accuracy (mean, 95% t over folds) | macro-F1 (mean, 95% t) | pooled accuracy (Wilson 95%) | "
             "answers yes/no/maybe | MedMCQA |", "|---|---|---|---|---|---|"]
    for r in rows:
        a, f, w = r["accuracy_ci95"], r["macro_f1_ci95"], r["pooled_wilson95"]
        mcq = "-" if r["medmcqa"] is None else f"{r['medmcqa']:.1%}"
        shares = "/".join(f"{r['answers'][lab]:.0%}" for lab in LABELS)
        lines.append(f"| {r['row']} | {r['accuracy']:.1%} [{a[0]:.1%}, {a[1]:.1%}] | {r['macro_f1']:.3f} "
                     f"[{f[0]:.3f}, {f[1]:.3f}] | {r['pooled_accuracy']:.1%} [{w[0]:.1%}, {w[1]:.1%}] (n={r['n']}) | "
                     f"{shares} | {mcq} |")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------- model steps


def score(model: str, tasks_items: dict, batch_size: int) -> dict:
    """{task: predictions} of a model on each task's items, by `medtune eval`'s log-likelihood path."""
    from medtune import chat
    from medtune.eval import runner

    cm = chat.load_chat_model(model)
    settings = runner.EvalSettings(batch_size=batch_size)
    out = {}
    for name, items in tasks_items.items():
        if items:
            _, rows = runner.score_task(cm, name, items, settings, domain="medical")
            out[name] = [r["pred"] for r in rows]
    del cm
    return out


def train(args, items, work: Path, name: str = "run") -> Path:
    from medtune.config import load_config
    from medtune.stages import sft

    data = write_jsonl(work / "train.jsonl", training_records(items, args.form, args.long_answer, args.balance, args.seed))
    overrides = [*args.set, f"data.path={data}", f"output_dir={work / name}", "overwrite=true"]
    return sft.run(load_config(sft.SFTConfig, str(args.recipe), overrides))


def average(base: str, tuned: Path, alpha: float, out: Path) -> Path:
    from medtune.merge import average as merge_average

    return merge_average(base, str(tuned), out, alpha=alpha, overwrite=True, quiet=True)


# --------------------------------------------------------------------------------------------- the study


def load_data(args):
    from medtune.errors import MedtuneError
    from medtune.eval import tasks

    pubmedqa = Path(args.pubmedqa) if args.pubmedqa else Path(args.data_dir) / PUBMEDQA
    medmcqa = Path(args.medmcqa) if args.medmcqa else Path(args.data_dir) / MEDMCQA
    if "test" in pubmedqa.name.lower():
        raise MedtuneError("cross-validation tunes on this file; never give it a test split", where=str(pubmedqa),
                           hint="pass the labelled train/validation items (pqal_trainval.json)")
    items = tasks.load_task("pubmedqa", pubmedqa)
    mcq = tasks.load_task("medmcqa", medmcqa, limit=args.mcq_limit, seed=args.seed) if args.mcq_limit else []
    return pubmedqa, items, mcq


def base_model(args) -> str:
    model = "default"
    for s in args.set:
        if s.startswith("model.name_or_path="):
            model = s.split("=", 1)[1]
    return model


def cross_validate(args) -> dict:
    _, items, mcq = load_data(args)
    folds = stratified_folds([it.answer for it in items], args.folds, args.seed)
    base = base_model(args)
    work = Path(args.work)
    held_all = sorted(i for f in folds[: args.run_folds] for i in _limited(f, args.limit_eval, args.seed))
    print(f"{len(items)} PubMedQA items in {args.folds} stratified folds; running {args.run_folds}; "
          f"base model {base}", file=sys.stderr)
    before = score(base, {"pubmedqa": [items[i] for i in held_all], "medmcqa": mcq}, args.batch_size)
    untuned_pred = dict(zip(held_all, before["pubmedqa"]))
    mcq_before = _mcq_accuracy(mcq, before.get("medmcqa"))
    per_fold = []
    for k in range(args.run_folds):
        held = _limited(folds[k], args.limit_eval, args.seed)
        train_idx = _limited(sorted(set(range(len(items))) - set(folds[k])), args.limit_train, args.seed)
        gold = [items[i].answer for i in held]
        majority = Counter(items[i].answer for i in train_idx).most_common(1)[0][0]
        started = time.time()
        run_dir = train(args, [items[i] for i in train_idx], work / f"fold{k}")
        train_s = time.time() - started
        after = score(str(run_dir), {"pubmedqa": [items[i] for i in held], "medmcqa": mcq}, args.batch_size)
        record = {"fold": k, "train_items": len(train_idx), "held_out": len(held), "train_seconds": round(train_s, 1),
                  "majority": fold_metrics(gold, [majority] * len(held)),
                  "untuned": fold_metrics(gold, [untuned_pred[i] for i in held]),
                  "tuned": fold_metrics(gold, after["pubmedqa"]),
                  "medmcqa_after": _mcq_accuracy(mcq, after.get("medmcqa")), "held_out_ids": [items[i].id for i in held]}
        if args.average is not None:
            merged = average(base, run_dir, args.average, work / f"fold{k}" / "averaged")
            avg = score(str(merged), {"pubmedqa": [items[i] for i in held], "medmcqa": mcq}, args.batch_size)
            record["averaged"] = fold_metrics(gold, avg["pubmedqa"])
            record["medmcqa_averaged"] = _mcq_accuracy(mcq, avg.get("medmcqa"))
        per_fold.append(record)
        print(f"fold {k}: trained on {len(train_idx)} in {train_s:.0f} s; held-out {len(held)}: "
              f"tuned {record['tuned']['accuracy']:.1%} (macro-F1 {record['tuned']['macro_f1']:.3f}), "
              f"untuned {record['untuned']['accuracy']:.1%}, majority {record['majority']['accuracy']:.1%}",
              file=sys.stderr)
    rows_out = [summarise("majority answer (training folds)", [f["majority"] for f in per_fold], []),
                summarise(f"untuned ({base})", [f["untuned"] for f in per_fold], [mcq_before]),
                summarise("tuned", [f["tuned"] for f in per_fold], [f["medmcqa_after"] for f in per_fold])]
    if args.average is not None:
        rows_out.append(summarise(f"averaged with the base (alpha {args.average:g})", [f["averaged"] for f in per_fold],
                                  [f["medmcqa_averaged"] for f in per_fold]))
    return {"settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "medmcqa_items": len(mcq), "medmcqa_before": mcq_before, "folds": per_fold, "rows": rows_out,
            "train_seconds_per_fold": statistics.fmean(f["train_seconds"] for f in per_fold)}


def _limited(indices: list[int], limit: int, seed: int) -> list[int]:
    return sorted(random.Random(seed).sample(indices, limit)) if 0 < limit < len(indices) else list(indices)


def _mcq_accuracy(items, preds) -> float | None:
    if not items or preds is None:
        return None
    return sum(p == it.answer for p, it in zip(preds, items)) / len(items)


# --------------------------------------------------------------------------------------------- the demo


def demo(args) -> int:
    """One held-out fold: default vs tuned vs averaged through `medtune eval`'s runner; table and HTML report."""
    from medtune import NOT_MEDICAL_ADVICE
    from medtune.eval import report, runner

    pubmedqa, items, mcq = load_data(args)
    print(f"note: {NOT_MEDICAL_ADVICE}\n", file=sys.stderr)
    out = Path(args.demo)
    folds = stratified_folds([it.answer for it in items], args.folds, args.seed)
    held = _limited(folds[0], args.limit_eval, args.seed)
    train_idx = _limited(sorted(set(range(len(items))) - set(folds[0])), args.limit_train, args.seed)
    raw = json.loads(pubmedqa.read_text(encoding="utf-8"))  # the held-out fold as a PubMedQA file of its own
    held_file = out / "heldout_pubmedqa.json"
    held_file.parent.mkdir(parents=True, exist_ok=True)
    held_file.write_text(json.dumps({items[i].id: raw[items[i].id] for i in held}, ensure_ascii=False))
    started = time.time()
    run_dir = train(args, [items[i] for i in train_idx], out, "tuned")  # folder names are the report's labels
    base = base_model(args)
    alpha = 0.5 if args.average is None else args.average
    merged = average(base, run_dir, alpha, out / f"averaged-{alpha:g}")
    files = {"pubmedqa": str(held_file)}
    general = []
    if mcq:  # the sampled MedMCQA lines as a file of their own (eval's --limit would cut the held-out fold too)
        lines = (Path(args.medmcqa) if args.medmcqa else Path(args.data_dir) / MEDMCQA).read_text(encoding="utf-8").splitlines()
        sample = "".join(lines[int(it.source.rpartition(":")[2]) - 1] + "\n" for it in mcq)
        files["medmcqa"] = str(out / "medmcqa_sample.jsonl")
        Path(files["medmcqa"]).write_text(sample, encoding="utf-8")
        general = ["medmcqa"]
    evals = []
    for label, model in (("default", base), ("tuned", str(run_dir)), (f"averaged-{alpha:g}", str(merged))):
        settings = runner.EvalSettings(tasks=["pubmedqa"], general_tasks=general, files=files, limit=0,
                                       batch_size=args.batch_size)
        evals.append(runner.evaluate(model, settings, str(out / f"eval-{label}")))
    results = [report.load_results(d) for d in evals]
    html = report.write_report(evals, out / "report", title="medtune demo-tasks: PubMedQA task tuning, held-out fold")
    text = (f"# medtune demo-tasks\n\n> {NOT_MEDICAL_ADVICE}\n\nTask-tuned on {len(train_idx)} labelled PubMedQA items "
            f"(recipe {Path(args.recipe).name}), scored on {len(held)} held out (fold 1 of {args.folds}, stratified); "
            f"averaged with the base at alpha {alpha:g}."
            f"{f' MedMCQA ({len(mcq)} items): general ability (forgetting).' if mcq else ''}\n\n```\n"
            f"{report.compare_table(results)}\n```\n")
    (out / "demo-tasks.md").write_text(text, encoding="utf-8")
    print("\n" + text)
    print(f"demo-tasks finished in {time.time() - started:.0f} s: {out / 'demo-tasks.md'}, {html['html']}",
          file=sys.stderr)
    return 0


# --------------------------------------------------------------------------------------------- command line


def parse(argv=None):
    from medtune.config import CommandParser, float_option, int_option

    p = CommandParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipe", default=str(RECIPE), help="an sft recipe (default recipes/task_tuning_pubmedqa.yaml)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="recipe override (repeatable): the lever")
    p.add_argument("--folds", type=int_option(2, 100), default=5, help="k of the k-fold split (default 5)")
    p.add_argument("--run-folds", type=int_option(1, 100), default=None, metavar="N", help="run only the first N folds")
    p.add_argument("--limit-train", type=int_option(0), default=0, metavar="N", help="train on N sampled items per fold (0: all)")
    p.add_argument("--limit-eval", type=int_option(0), default=0, metavar="N", help="score N sampled held-out items per fold (0: all)")
    p.add_argument("--mcq-limit", type=int_option(0), default=300, metavar="N", help="MedMCQA items for forgetting (default 300, 0: none)")
    p.add_argument("--form", default="prompt_completion", choices=["prompt_completion", "messages"], help="training data form")
    p.add_argument("--long-answer", action="store_true", help="prompt_completion: the long answer after the label")
    p.add_argument("--balance", action="store_true", help="up-sample yes/no/maybe to equal counts in training")
    p.add_argument("--average", type=float_option(0, 1), default=None, metavar="ALPHA", help="also score tuned averaged with the base")
    p.add_argument("--seed", type=int_option(0), default=0, help="fold split and sampling seed (default 0)")
    p.add_argument("--batch-size", type=int_option(1), default=8, help="scoring batch size")
    p.add_argument("--data-dir", default=str(SHARED), help="folder holding pubmedqa/ and medmcqa/ (default ../shared/data)")
    p.add_argument("--pubmedqa", metavar="FILE", help="the labelled PubMedQA file (default DATA_DIR/" + PUBMEDQA + ")")
    p.add_argument("--medmcqa", metavar="FILE", help="the MedMCQA sample (default DATA_DIR/" + MEDMCQA + ")")
    p.add_argument("--work", default="runs/task-cv", help="folder for the fold runs (default runs/task-cv)")
    p.add_argument("--json", metavar="FILE", help="write every fold's figures and the summary rows here")
    p.add_argument("--demo", metavar="OUT", help="the demo: one held-out fold, default vs tuned vs averaged, HTML report")
    args = p.parse_args(argv)
    if args.run_folds is None:
        args.run_folds = args.folds
    if args.run_folds > args.folds:
        p.error(f"--run-folds {args.run_folds} is more than --folds {args.folds}")
    if args.long_answer and args.form != "prompt_completion":
        p.error("--long-answer applies to --form prompt_completion")
    return args


def main(argv=None) -> int:
    from medtune.errors import MedtuneError

    args = parse(argv)
    data_given = args.pubmedqa or Path(args.data_dir).joinpath(PUBMEDQA).is_file()
    if not data_given:
        where = Path(args.data_dir) / PUBMEDQA
        if args.demo:
            print(f"demo-tasks skipped: no labelled PubMedQA file at {where} (the shared data folder, ../shared "
                  "relative to the repository); nothing is downloaded. Pass --data-dir or --pubmedqa FILE.")
            return 0
        print(f"error: no labelled PubMedQA file at {where} (pass --data-dir or --pubmedqa FILE)", file=sys.stderr)
        return 2
    try:
        from medtune.config import load_config
        from medtune.stages import sft

        load_config(sft.SFTConfig, str(args.recipe), args.set)  # a bad recipe or --set stops here, before any model loads
        if args.demo:
            return demo(args)
        result = cross_validate(args)
    except MedtuneError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    text = table(result["rows"])
    print(f"\nPubMedQA {args.run_folds} of {args.folds} folds, {result['folds'][0]['train_items']} training items per "
          f"fold, {result['train_seconds_per_fold']:.0f} s training per fold; MedMCQA {result['medmcqa_items']} items\n")
    print(text)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
