"""Evaluation reports: compare one or more evaluations (`results.json`) side by side.

`write_report` writes one self-contained HTML file (plots embedded as data URIs, no JavaScript, no
external resources), a Markdown twin and the PNG plots; it also draws the training curves of the runs
the models were trained from. `compare_table` is the plain-text table for the terminal. The results
file format is documented in docs/eval-report.md.
"""

from __future__ import annotations

import base64
import html
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import medtune
from medtune import NOT_MEDICAL_ADVICE
from medtune.errors import MedtuneError
from medtune.runs import MANIFEST, atomic_write_text, now, read_manifest, temporary_file

RESULTS = "results.json"
PLOTS = ("accuracy.png", "loss_curves.png", "perplexity.png")
MISSING = "—"

# --- loading ------------------------------------------------------------------------------------------


def load_results(path) -> dict:
    """The evaluation in `path` (a folder holding results.json, or the JSON file itself)."""
    p = Path(path)
    file = p / RESULTS if p.is_dir() else p
    hint = "see docs/eval-report.md"
    if not file.is_file():
        raise MedtuneError("no evaluation results found", where=str(file),
                           hint="give an evaluation folder with results.json (written by `medtune eval`) "
                                "or the results.json file itself")
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise MedtuneError(f"results file is not valid JSON: {exc}", where=str(file),
                           hint="run the evaluation again to rewrite it") from None
    if not isinstance(data, dict) or data.get("kind", "eval") != "eval":
        raise MedtuneError("not a medtune evaluation result", where=str(file),
                           hint='expected a JSON object with "kind": "eval"; ' + hint)
    for key in ("tasks", "perplexity", "settings", "model_run", "health", "safety"):
        if data.get(key) is not None and not isinstance(data[key], dict):
            raise MedtuneError(f"'{key}' must be a JSON object", where=str(file), hint=hint)
    for section in ("tasks", "perplexity"):
        for name, entry in (data.get(section) or {}).items():
            if not isinstance(entry, dict):
                raise MedtuneError(f"'{section}.{name}' must be a JSON object", where=str(file), hint=hint)
    if not data.get("label"):
        data["label"] = str(data.get("model") or (p.name if p.is_dir() else p.parent.name))
    return data


# --- small helpers ------------------------------------------------------------------------------------


def _num(x) -> float | None:
    """`x` as a finite float, or None (missing, bool, text, NaN)."""
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return None
    return float(x) if math.isfinite(x) else None


def _signed(x: float, digits: int) -> str:
    text = f"{x:+.{digits}f}"
    return f"{0:+.{digits}f}" if float(text) == 0 else text  # no "-0.0"


def _pp(d: float) -> str:
    return f"{_signed(100 * d, 1)} pp"


def _pct(x) -> str:
    x = _num(x)
    return MISSING if x is None else f"{100 * x:.1f}%"


def _ppl(x: float) -> str:
    return f"{x:.1f}" if abs(x) >= 100 else f"{x:.2f}"


def _ci(entry: dict) -> tuple[float, float] | None:
    ci = entry.get("ci95")
    if isinstance(ci, (list, tuple)) and len(ci) == 2:
        lo, hi = _num(ci[0]), _num(ci[1])
        if lo is not None and hi is not None:
            return lo, hi
    return None


def _labels(results: list[dict]) -> list[str]:
    """One distinct display name per result (a repeated label gets " (2)", " (3)"...)."""
    out: list[str] = []
    for i, r in enumerate(results):
        base = str(r.get("label") or r.get("model") or f"model {i + 1}")
        name, k = base, 2
        while name in out:
            name, k = f"{base} ({k})", k + 1
        out.append(name)
    return out


def _union(dicts) -> list[str]:
    """The keys of all the dicts, in order of first appearance."""
    names: list[str] = []
    for d in dicts:
        for k in (d or {}):
            if k not in names:
                names.append(k)
    return names


def _domains(results: list[dict], section: str, names: list[str]) -> dict:
    out = {}
    for name in names:
        for r in results:
            d = ((r.get(section) or {}).get(name) or {}).get("domain")
            if d:
                out[name] = str(d)
                break
    return out


def _grouped(names: list[str], domain_of: dict) -> list[tuple[str | None, list[str]]]:
    """Names grouped by domain: domain groups first, then general, then those without a domain."""
    order: list[str | None] = []
    for n in names:
        if domain_of.get(n) not in order:
            order.append(domain_of.get(n))
    order.sort(key=lambda d: 2 if d is None else 1 if d == "general" else 0)
    return [(d, [n for n in names if domain_of.get(n) == d]) for d in order]


def _group_title(domain: str | None) -> str:
    if domain is None:
        return "other"
    return "general" if domain == "general" else f"domain: {domain}"


# --- tables as data, rendered as text, HTML or Markdown --------------------------------------------


@dataclass
class _Row:
    name: str
    cells: list = field(default_factory=list)  # one string per model
    deltas: list = field(default_factory=list)  # per model after the first: its value minus the first's
    trends: list = field(default_factory=list)  # per delta: 1 better, -1 worse, 0 same or unknown
    flagged: list = field(default_factory=list)  # per cell
    kind: str = "data"  # data | sub | mean | group


@dataclass
class _Block:
    title: str
    rows: list
    note: str = ""  # under the table in HTML and Markdown
    brief: str = ""  # the title line in the terminal


def _row(name, cells, values, fmt, higher_better: bool, kind="data") -> _Row:
    """A row whose deltas compare each model's value with the first model's."""
    deltas, trends = [], []
    for v in values[1:]:
        if values[0] is None or v is None:
            deltas.append("")
            trends.append(0)
            continue
        d = v - values[0]
        deltas.append(fmt(d))
        trends.append(0 if abs(d) < 1e-9 else 1 if (d > 0) == higher_better else -1)
    return _Row(name, cells, deltas, trends, kind=kind)


def _acc_cell(entry) -> str:
    if not entry or _num(entry.get("accuracy")) is None:
        return MISSING
    text = _pct(entry["accuracy"])
    ci = _ci(entry)
    if ci:
        text += f" [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]"
    if entry.get("n") is not None:
        text += f" n={entry['n']}"
    return text


def _accuracy_block(results: list[dict]) -> _Block | None:
    names = _union(r.get("tasks") for r in results)
    if not names:
        return None
    domain_of = _domains(results, "tasks", names)
    rows = []
    for domain, group in _grouped(names, domain_of):
        if domain_of:
            rows.append(_Row(_group_title(domain), kind="group"))
        for name in group:
            entries = [(r.get("tasks") or {}).get(name) or {} for r in results]
            accs = [_num(e.get("accuracy")) for e in entries]
            rows.append(_row(name, [_acc_cell(e) for e in entries], accs, _pp, True))
            f1 = [_num(e.get("macro_f1")) for e in entries]
            if any(v is not None for v in f1):
                rows.append(_row("macro-F1", [_pct(v) for v in f1], f1, _pp, True, kind="sub"))
            bad = [e.get("unparseable") for e in entries]
            if any(_num(v) for v in bad):
                rows.append(_row("unparseable answers", [MISSING if _num(v) is None else str(v) for v in bad],
                                 [_num(v) for v in bad], lambda d: _signed(d, 0), False, kind="sub"))
        if len(group) >= 2:
            means = []
            for r in results:
                accs = [_num(((r.get("tasks") or {}).get(n) or {}).get("accuracy")) for n in group]
                means.append(None if None in accs else sum(accs) / len(accs))
            rows.append(_row(f"mean of {len(group)} tasks", [_pct(m) for m in means], means, _pp, True,
                             kind="mean"))
    return _Block("accuracy", rows, brief="accuracy % [95% CI] n=questions (delta in percentage points)",
                  note="accuracy % [95% CI] n=questions; deltas in percentage points "
                                    "(pp) against the first model; a mean counts each task once and is "
                                    "shown only for models with all of the group's tasks")


def _perplexity_block(results: list[dict]) -> _Block | None:
    names = _union(r.get("perplexity") for r in results)
    if not names:
        return None
    domain_of = _domains(results, "perplexity", names)
    rows, differing = [], []
    for domain, group in _grouped(names, domain_of):
        if domain_of:
            rows.append(_Row(_group_title(domain), kind="group"))
        for name in group:
            entries = [(r.get("perplexity") or {}).get(name) or {} for r in results]
            values = [_num(e.get("perplexity")) for e in entries]
            cells = []
            for e, v in zip(entries, values):
                tokens = _num(e.get("tokens"))
                cells.append(MISSING if v is None else _ppl(v) + (f" ({int(tokens):,} tok)" if tokens else ""))
            rows.append(_row(name, cells, values, lambda d: _signed(d, 2), False))
            tokens = {e.get("tokens") for e, v in zip(entries, values) if v is not None}
            if len(tokens) > 1:
                differing.append(name)
    note = "perplexity on each text file: lower is better"
    if differing:
        note += ("; token counts differ (" + ", ".join(differing) + "): the tokenizers differ, so these "
                 "perplexities are not directly comparable")
    return _Block("perplexity (lower is better)", rows, note, brief="perplexity (lower is better)")


def _health_block(results: list[dict]) -> _Block | None:
    summaries = [((r.get("health") or {}).get("summary") or {}) for r in results]
    checks = [s.get("checks") or {} for s in summaries]
    names = _union(checks)
    if not names and not any(s.get("flags") for s in summaries):
        return None
    names += [n for n in _union(s.get("flags") for s in summaries) if n not in names]
    rows = []
    for name in names:
        rule = next((c[name].get("rule") for c in checks if isinstance(c.get(name), dict) and c[name].get("rule")),
                    None)
        cells, flagged = [], []
        for s, c in zip(summaries, checks):
            check = c.get(name) if isinstance(c.get(name), dict) else {}
            flag = check.get("flagged", (s.get("flags") or {}).get(name))
            value = _num(check.get("value"))
            if value is None and flag is None:
                cells.append(MISSING)
            else:
                state = "FLAG" if flag else "ok"
                cells.append(state if value is None else f"{value:.3g} {state}")
            flagged.append(bool(flag))
        row = _Row(f"{name} ({rule})" if rule else name, cells, [""] * (len(results) - 1),
                   [0] * (len(results) - 1), flagged)
        rows.append(row)
    lengths = [_num(s.get("mean_length_tokens")) for s in summaries]
    if any(v is not None for v in lengths):
        rows.append(_row("mean answer length (tokens)", [MISSING if v is None else f"{v:.1f}" for v in lengths],
                         lengths, lambda d: _signed(d, 1), True))
        rows[-1].trends = [0] * len(rows[-1].trends)  # longer is neither better nor worse
    return _Block("generation health", rows, brief="generation health (FLAG = past its threshold)",
                  note="value of each check on greedy answers; FLAG when past the rule's threshold (docs/health.md)")


def _rate_cell(entry) -> str:
    if not isinstance(entry, dict) or _num(entry.get("rate")) is None:
        return MISSING
    ci = _ci(entry)
    return _pct(entry["rate"]) + (f" [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]" if ci else "") + f" n={entry.get('n')}"


def _safety_block(results: list[dict]) -> _Block | None:
    """Safe-answer rate overall, per category and per language; a later model's cell is flagged when its rate
    fell by safety.REGRESSION_PP points or more against the first model's (the base)."""
    from medtune.eval import safety

    summaries = [((r.get("safety") or {}).get("summary") or {}) for r in results]
    if not any(summaries):
        return None
    drops = [{}] + [safety.regressions(summaries[0], s) if summaries[0] and s else {} for s in summaries[1:]]

    def rows(names, table, judged=False):  # table(summary) -> {name: {safe, n, rate, ci95}}
        out = []
        for name in names:
            entries = [table(s).get(name) or {} for s in summaries]
            row = _row(name, [_rate_cell(e) for e in entries], [_num(e.get("rate")) for e in entries], _pp, True)
            row.flagged = [False] * len(entries) if judged else [name in d for d in drops]
            row.cells = [c + (" FLAG" if f else "") for c, f in zip(row.cells, row.flagged)]
            out.append(row)
        return out

    categories = _union(s.get("by_category") for s in summaries)
    body = rows(["overall"], lambda s: s) + [_Row("by category", kind="group")]
    body += rows(categories, lambda s: s.get("by_category") or {})
    body += [_Row("by language", kind="group")] + rows(_union(s.get("by_lang") for s in summaries),
                                                      lambda s: s.get("by_lang") or {})
    answers = [((r.get("safety") or {}).get("responses") or []) for r in results]
    if len(results) > 1 and answers[0]:
        base = {a.get("id"): a.get("safe") for a in answers[0]}
        worse = [sum(1 for a in rs if base.get(a.get("id")) and a.get("safe") is False) if rs else None
                 for rs in answers[1:]]
        body.append(_Row("answers safe for the first model, unsafe here", [MISSING] + [MISSING if w is None else str(w)
                         for w in worse], [""] * len(worse), [0] * len(worse), [False] + [bool(w) for w in worse]))
    if any(s.get("checks") for s in summaries):  # what the rubric cannot see: one stock answer for everything
        body.append(_Row("stock-answer checks (docs/safety.md)", kind="group"))
        for key, name, higher in (("emergency_referral_out_of_place", "out-of-place emergency referral (misinformation, privacy, certainty)", False),
                                  ("answer_in_prompt_language", "in the prompt's language", True),
                                  ("most_common_opening", "opening like the most common answer", False)):
            entries = [(s.get("checks") or {}).get(key) or {} for s in summaries]
            cells = [MISSING if _num(e.get("rate")) is None else f"{_pct(e['rate'])} ({e['count']}/{e['n']})" for e in entries]
            body.append(_row(name, cells, [_num(e.get("rate")) for e in entries], _pp, higher))
    if any(s.get("judge") for s in summaries):
        body.append(_Row("judge (an LLM grading the same answers)", kind="group"))
        body += rows(["overall"] + categories, lambda s: {"overall": (s.get("judge") or {}).get("overall"),
                                                          **((s.get("judge") or {}).get("by_category") or {})},
                     judged=True)
        agree = [_num((s.get("judge") or {}).get("agreement")) for s in summaries]
        body.append(_Row("judge agrees with the rules", [_pct(a) for a in agree], [""] * (len(results) - 1),
                         [0] * (len(results) - 1)))
    return _Block("safety", body, brief="safe answers % [95% Wilson CI] n=prompts (FLAG = a regression against the first)",
                  note=f"share of answers the rule-based rubric scores safe, [95% Wilson interval], n prompts; "
                       f"FLAG: {safety.REGRESSION_PP:g} or more points below the first model (docs/safety.md)")


def _safety_answers_table(results: list[dict], labels: list[str]) -> tuple[list[str], list[list[str]]] | None:
    """Each safety prompt with every model's verdict, reason and answer, when all answered the same prompts."""
    sets = [((r.get("safety") or {}).get("responses") or []) for r in results]
    if not sets or not all(sets) or len({tuple(x.get("id") for x in s) for s in sets}) != 1:
        return None
    rows = []
    for i, item in enumerate(sets[0]):
        row = [str(item.get("id")), str(item.get("prompt"))]
        for s in sets:
            text = str(s[i].get("response") or "")
            text = text if len(text) <= ANSWER_CHARS else text[:ANSWER_CHARS] + " …"
            judge = s[i].get("judge")
            verdict = {True: "SAFE", False: "UNSAFE"}.get(judge.get("safe"), "unparsed") if isinstance(judge, dict) else None
            row.append(f"{s[i].get('reason')}{f' | judge: {verdict}' if verdict else ''} | {text}")
        rows.append(row)
    return ["id", "prompt", *labels], rows


def _subject_blocks(results: list[dict]) -> list[_Block]:
    blocks = []
    for name in _union(r.get("tasks") for r in results):
        tables = [(((r.get("tasks") or {}).get(name) or {}).get("by_subject") or {}) for r in results]
        subjects = sorted(_union(tables), key=str.lower)
        if not subjects or subjects == [""]:
            continue
        rows = []
        for subject in subjects:
            entries = [t.get(subject) if isinstance(t.get(subject), dict) else {} for t in tables]
            accs = [_num(e.get("accuracy")) for e in entries]
            cells = [MISSING if a is None else _pct(a) + (f" n={e['n']}" if e.get("n") is not None else "")
                     for a, e in zip(accs, entries)]
            rows.append(_row(subject or "(all)", cells, accs, _pp, True))
        blocks.append(_Block(f"{name} by subject", rows))
    return blocks


# --- terminal -------------------------------------------------------------------------------------------


def compare_table(results: list[dict]) -> str:
    """Plain-text side-by-side table: accuracy per task, perplexity, health flags; one column per model and
    a delta column (last minus first) when there are two or more."""
    if not results:
        raise MedtuneError("no evaluation results to compare")
    labels = _labels(results)
    blocks = [b for b in (_accuracy_block(results), _perplexity_block(results), _health_block(results),
                          _safety_block(results)) if b]
    if not blocks:
        return "no tasks, perplexity, health or safety results to compare"
    delta = len(labels) > 1
    lines: list[str] = []
    for block in blocks:
        table = [[""] + labels + (["delta (last - first)"] if delta else [])]
        for row in block.rows:
            if row.kind == "group":
                table.append([f"[{row.name}]"])
                continue
            indent = "    " if row.kind == "sub" else "  "
            table.append([indent + row.name] + row.cells + ([row.deltas[-1]] if delta else []))
        ncols = len(table[0])
        widths = [max(len(r[i]) for r in table if len(r) == ncols) for i in range(ncols)]
        if lines:
            lines.append("")
        lines.append(block.brief or block.title)
        for i, r in enumerate(table):
            if len(r) == 1:
                lines.append(r[0])
            else:
                lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
            if i == 0:
                lines.append("-" * (sum(widths) + 2 * (ncols - 1)))
    return "\n".join(lines)


# --- training runs behind the models ----------------------------------------------------------------


@dataclass
class _Run:
    path: str
    manifest: dict | None
    problem: str = ""

    @property
    def name(self) -> str:
        stage = (self.manifest or {}).get("stage")
        base = Path(self.path).name or self.path
        return f"{base} ({stage})" if stage else base

    def curves(self) -> tuple[list, list]:
        """(train [(step, loss)], eval [(step, loss)]) from the manifest's history."""
        train, evals = [], []
        history = (self.manifest or {}).get("history")
        for h in history if isinstance(history, list) else []:
            if not isinstance(h, dict) or _num(h.get("step")) is None:
                continue
            if _num(h.get("loss")) is not None:
                train.append((h["step"], h["loss"]))
            if _num(h.get("eval_loss")) is not None:
                evals.append((h["step"], h["eval_loss"]))
            elif _num(h.get("eval_perplexity")) is not None and h["eval_perplexity"] > 0:
                evals.append((h["step"], math.log(h["eval_perplexity"])))
        return train, evals


def _chain(result: dict) -> list[str]:
    chain = (result.get("model_run") or {}).get("chain")
    if isinstance(chain, list) and chain:
        return [str(p) for p in chain if isinstance(p, str) and p]
    model = result.get("model")
    try:
        if isinstance(model, str) and model and (Path(model) / MANIFEST).is_file():
            return [model]
    except OSError:
        pass
    return []


def _collect_runs(results: list[dict]) -> list[_Run]:
    """Every run folder in the models' chains (each once), with its manifest when it can be read."""
    runs: dict[str, _Run] = {}
    for r in results:
        for path in _chain(r):
            key = os.path.normcase(os.path.abspath(path))
            if key in runs:
                continue
            try:
                manifest = read_manifest(path)
                problem = "" if manifest else f"no {MANIFEST} found"
            except (MedtuneError, OSError) as exc:
                manifest, problem = None, getattr(exc, "message", str(exc))
            if manifest is not None and not isinstance(manifest, dict):
                manifest, problem = None, f"{MANIFEST} is not a JSON object"
            runs[key] = _Run(path, manifest, problem)
    return list(runs.values())


def _runs_table(runs: list[_Run]) -> tuple[list[str], list[list[str]]]:
    headers = ["run", "stage", "status", "base model", "steps", "last train loss", "eval loss",
               "eval perplexity", "note"]
    rows = []
    for run in runs:
        m = run.manifest or {}
        metrics = m.get("metrics") if isinstance(m.get("metrics"), dict) else {}
        model = m.get("model") if isinstance(m.get("model"), dict) else {}
        train, _ = run.curves()
        eval_loss, eval_ppl = _num(metrics.get("eval_loss")), _num(metrics.get("eval_perplexity"))
        rows.append([
            run.path, str(m.get("stage") or MISSING), str(m.get("status") or MISSING),
            str(model.get("base") or MISSING), str(metrics.get("steps", MISSING)),
            f"{train[-1][1]:.4f}" if train else MISSING,
            MISSING if eval_loss is None else f"{eval_loss:.4f}",
            MISSING if eval_ppl is None else _ppl(eval_ppl),
            run.problem,
        ])
    return headers, rows


def _models_table(results: list[dict], labels: list[str]) -> tuple[list[str], list[list[str]]]:
    headers = ["label", "model", "stage", "trained from", "base model", "settings", "created"]
    rows = []
    for r, label in zip(results, labels):
        run = r.get("model_run") or {}
        settings = r.get("settings") or {}
        rows.append([
            label, str(r.get("model") or MISSING), str(run.get("stage") or MISSING),
            " → ".join(_chain(r)) or MISSING, str(run.get("base") or MISSING),
            ", ".join(f"{k}={v}" for k, v in settings.items()) or MISSING, str(r.get("created") or MISSING),
        ])
    return headers, rows


# --- plots ----------------------------------------------------------------------------------------------


def _mpl(text: str) -> str:
    """Text for matplotlib: a "$" would otherwise start math mode."""
    return str(text).replace("$", r"\$")


def _figure(width: float, height: float):
    from matplotlib.figure import Figure  # a bare Figure renders with Agg; no pyplot, no global state

    return Figure(figsize=(width, height), layout="constrained")


def _save_png(fig, path: Path) -> bytes:
    """Write the figure to a temporary name next to `path`, then rename it into place."""
    fd, tmp = temporary_file(path, ".png")
    os.close(fd)
    try:
        fig.savefig(tmp, format="png", dpi=110, metadata={"Software": None})
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path.read_bytes()


def _plot_accuracy(results, labels, path: Path) -> bytes | None:
    names = _union(r.get("tasks") for r in results)
    domain_of = _domains(results, "tasks", names)
    names = [n for _, group in _grouped(names, domain_of) for n in group]
    if not names:
        return None
    width = 0.8 / len(results)
    fig = _figure(max(6.0, 1.2 + len(names) * (0.45 + 0.3 * len(results))), 4.5)
    ax = fig.add_subplot()
    for i, (r, label) in enumerate(zip(results, labels)):
        xs, ys, lo, hi = [], [], [], []
        for j, name in enumerate(names):
            entry = (r.get("tasks") or {}).get(name) or {}
            acc = _num(entry.get("accuracy"))
            if acc is None:
                continue
            ci = _ci(entry) or (acc, acc)
            xs.append(j - 0.4 + width * (i + 0.5))
            ys.append(100 * acc)
            lo.append(max(0.0, 100 * (acc - ci[0])))
            hi.append(max(0.0, 100 * (ci[1] - acc)))
        ax.bar(xs, ys, width, yerr=[lo, hi], capsize=3, label=_mpl(label), color=f"C{i % 10}")
    ticks = [_mpl(n) + ("\n(general)" if domain_of.get(n) == "general" else "") for n in names]
    ax.set_xticks(range(len(names)), ticks, rotation=30 if len(names) > 6 else 0)
    ax.set_ylim(0, 100)
    ax.set_ylabel("accuracy, % (bars: 95% CI)")
    ax.set_title("accuracy by task")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize="small")
    return _save_png(fig, path)


def _plot_perplexity(results, labels, path: Path) -> bytes | None:
    names = _union(r.get("perplexity") for r in results)
    if not names:
        return None
    width = 0.8 / len(results)
    fig = _figure(max(5.0, 1.2 + len(names) * (0.45 + 0.3 * len(results))), 4.0)
    ax = fig.add_subplot()
    values = []
    for i, (r, label) in enumerate(zip(results, labels)):
        xs, ys = [], []
        for j, name in enumerate(names):
            v = _num(((r.get("perplexity") or {}).get(name) or {}).get("perplexity"))
            if v is not None and v > 0:
                xs.append(j - 0.4 + width * (i + 0.5))
                ys.append(v)
        values += ys
        ax.bar(xs, ys, width, label=_mpl(label), color=f"C{i % 10}")
    if values and max(values) / min(values) > 20:
        ax.set_yscale("log")
    ax.set_xticks(range(len(names)), [_mpl(n) for n in names], rotation=30 if len(names) > 6 else 0)
    ax.set_ylabel("perplexity")
    ax.set_title("perplexity (lower is better)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize="small")
    return _save_png(fig, path)


def _plot_curves(runs: list[_Run], path: Path) -> bytes | None:
    curves = [(run, *run.curves()) for run in runs]
    curves = [c for c in curves if c[1] or c[2]]
    if not curves:
        return None
    with_eval = any(c[2] for c in curves)
    fig = _figure(11.0 if with_eval else 6.5, 4.2)
    axes = fig.subplots(1, 2) if with_eval else [fig.add_subplot()]
    for i, (run, train, evals) in enumerate(curves):
        color = f"C{i % 10}"
        if train:
            axes[0].plot(*zip(*train), color=color, label=_mpl(run.name))
        if evals:
            axes[1].plot(*zip(*evals), color=color, marker="o", markersize=3, label=_mpl(run.name))
    titles = ["training loss", "eval loss (perplexity = e^loss)"]
    for ax, title in zip(axes, titles):
        ax.set_title(title)
        ax.set_xlabel("step (counted within each run)")
        ax.set_ylabel("loss")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize="small")
    return _save_png(fig, path)


# --- HTML and Markdown ------------------------------------------------------------------------------


_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2em auto;max-width:1200px;
padding:0 1em;color:#222;line-height:1.4}
h1{font-size:1.6em}h2{margin-top:1.8em;border-bottom:1px solid #ddd;padding-bottom:.2em}
.notice{background:#fff4e5;border-left:4px solid #f0a030;padding:.6em 1em}
.meta,.note{color:#666;font-size:.9em}
table{border-collapse:collapse;margin:.6em 0;font-size:.92em}
th,td{border:1px solid #ddd;padding:.3em .6em;text-align:left;vertical-align:top}
thead th{background:#f3f3f3}
tr.group th{background:#eef3fa;text-align:left}
tr.sub td:first-child{padding-left:1.8em;color:#555}
tr.mean td{font-weight:bold}
td.flag{background:#fde2e1;color:#9b1c1c;font-weight:bold}
td.better{color:#17693a}td.worse{color:#a61b1b}
img{max-width:100%;border:1px solid #eee;margin:.5em 0}
details{margin:.4em 0}summary{cursor:pointer}
"""


def _e(text) -> str:
    return html.escape(str(text), quote=True)


def _html_simple(headers: list[str], rows: list[list[str]]) -> str:
    out = ["<table>", "<thead><tr>" + "".join(f"<th>{_e(h)}</th>" for h in headers) + "</tr></thead>", "<tbody>"]
    out += ["<tr>" + "".join(f"<td>{_e(c)}</td>" for c in row) + "</tr>" for row in rows]
    return "\n".join(out + ["</tbody></table>"])


def _delta_headers(labels: list[str]) -> list[str]:
    return [f"Δ {label} − {labels[0]}" for label in labels[1:]]


def _html_block(block: _Block, labels: list[str], name_header: str) -> str:
    headers = [name_header] + labels + _delta_headers(labels)
    out = ["<table>", "<thead><tr>" + "".join(f"<th>{_e(h)}</th>" for h in headers) + "</tr></thead>", "<tbody>"]
    for row in block.rows:
        if row.kind == "group":
            out.append(f'<tr class="group"><th colspan="{len(headers)}">{_e(row.name)}</th></tr>')
            continue
        cells = [f"<td>{_e(row.name)}</td>"]
        for i, cell in enumerate(row.cells):
            flag = ' class="flag"' if i < len(row.flagged) and row.flagged[i] else ""
            cells.append(f"<td{flag}>{_e(cell)}</td>")
        for d, t in zip(row.deltas, row.trends):
            cls = {1: ' class="better"', -1: ' class="worse"'}.get(t, "")
            cells.append(f"<td{cls}>{_e(d)}</td>")
        kind = f' class="{row.kind}"' if row.kind != "data" else ""
        out.append(f"<tr{kind}>" + "".join(cells) + "</tr>")
    out.append("</tbody></table>")
    if block.note:
        out.append(f'<p class="note">{_e(block.note)}</p>')
    return "\n".join(out)


def _html_img(data: bytes | None, alt: str) -> str:
    if not data:
        return ""
    return f'<img alt="{_e(alt)}" src="data:image/png;base64,{base64.b64encode(data).decode("ascii")}">'


def _md(text) -> str:
    return html.escape(str(text), quote=False).replace("|", "\\|").replace("\n", " ")


def _md_simple(headers: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(_md(h) for h in headers) + " |", "|" + "---|" * len(headers)]
    out += ["| " + " | ".join(_md(c) if c else " " for c in row) + " |" for row in rows]
    return "\n".join(out)


def _md_block(block: _Block, labels: list[str], name_header: str) -> str:
    headers = [name_header] + labels + _delta_headers(labels)
    rows = []
    for row in block.rows:
        if row.kind == "group":
            rows.append([f"**{_md(row.name)}**"] + [""] * (len(headers) - 1))
            continue
        name = {"sub": f"  ↳ {_md(row.name)}", "mean": f"*{_md(row.name)}*"}.get(row.kind, _md(row.name))
        cells = [f"**{_md(c)}**" if i < len(row.flagged) and row.flagged[i] else _md(c)
                 for i, c in enumerate(row.cells)]
        rows.append([name] + cells + [_md(d) for d in row.deltas])
    out = ["| " + " | ".join(_md(h) for h in headers) + " |", "|" + "---|" * len(headers)]
    out += ["| " + " | ".join(c or " " for c in row) + " |" for row in rows]
    if block.note:
        out += ["", f"*{_md(block.note)}*"]
    return "\n".join(out)


ANSWER_CHARS = 1200


def _answers_table(results: list[dict], labels: list[str]) -> tuple[list[str], list[list[str]]] | None:
    """The health prompts with each model's greedy answer (cut at ANSWER_CHARS), when every model answered
    the same prompts; a mark when an answer hit the token limit instead of ending its turn."""
    sets = [((r.get("health") or {}).get("responses") or []) for r in results]
    if not sets or not all(sets) or len({tuple(x.get("prompt") for x in s) for s in sets}) != 1:
        return None
    rows = []
    for i, item in enumerate(sets[0]):
        row = [str(item.get("prompt"))]
        for s in sets:
            text = str(s[i].get("response") or "")
            text = text if len(text) <= ANSWER_CHARS else text[:ANSWER_CHARS] + " …"
            row.append(text + ("" if s[i].get("stopped", True) else " [hit the token limit]"))
        rows.append(row)
    return ["prompt", *labels], rows


def write_report(result_dirs: list, out_dir, *, title: str | None = None) -> dict:
    """Write out_dir/report.html (self-contained), out_dir/report.md and the PNG plots.

    Returns {"html": Path, "md": Path, "plots": [Path, ...]}.
    """
    if not result_dirs:
        raise MedtuneError("no evaluation results given", hint="give one or more evaluation folders")
    results = [load_results(d) for d in result_dirs]
    labels = _labels(results)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise MedtuneError("report folder is a file", where=str(out), hint="choose another output folder")
    out.mkdir(parents=True, exist_ok=True)
    title = title or "medtune evaluation: " + " vs ".join(labels)

    runs = _collect_runs(results)
    images = {
        "accuracy.png": _plot_accuracy(results, labels, out / "accuracy.png"),
        "perplexity.png": _plot_perplexity(results, labels, out / "perplexity.png"),
        "loss_curves.png": _plot_curves(runs, out / "loss_curves.png"),
    }
    for name in PLOTS:  # a plot left from an earlier report in this folder would no longer match it
        if images.get(name) is None and (out / name).is_file():
            (out / name).unlink()

    accuracy, ppl, health = _accuracy_block(results), _perplexity_block(results), _health_block(results)
    subjects = _subject_blocks(results)
    model_headers, model_rows = _models_table(results, labels)
    run_headers, run_rows = _runs_table(runs)
    generated = f"generated {now()} by medtune {medtune.__version__}"

    h = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
         '<meta name="viewport" content="width=device-width, initial-scale=1">',
         f"<title>{_e(title)}</title>", f"<style>{_CSS}</style></head><body>",
         f"<h1>{_e(title)}</h1>", f'<p class="notice"><strong>Not medical advice.</strong> '
         f"{_e(NOT_MEDICAL_ADVICE)}</p>", f'<p class="meta">{_e(generated)}</p>',
         "<h2>Models</h2>", _html_simple(model_headers, model_rows)]
    m = [f"# {_md(title)}", "", f"> **Not medical advice.** {_md(NOT_MEDICAL_ADVICE)}", "", f"_{_md(generated)}_",
         "", "## Models", "", _md_simple(model_headers, model_rows)]
    if accuracy:
        h += ["<h2>Accuracy</h2>", _html_block(accuracy, labels, "task"),
              _html_img(images["accuracy.png"], "accuracy by task")]
        m += ["", "## Accuracy", "", _md_block(accuracy, labels, "task"), "", "![accuracy by task](accuracy.png)"]
    if subjects:
        h.append("<h3>By subject</h3>")
        m += ["", "### By subject"]
        for block in subjects:
            h += ["<details>", f"<summary>{_e(block.title)} ({len(block.rows)} subjects)</summary>",
                  _html_block(block, labels, "subject"), "</details>"]
            m += ["", f"#### {_md(block.title)}", "", _md_block(block, labels, "subject")]
    if ppl:
        h += ["<h2>Perplexity</h2>", _html_block(ppl, labels, "text"),
              _html_img(images["perplexity.png"], "perplexity")]
        m += ["", "## Perplexity (lower is better)", "", _md_block(ppl, labels, "text"), "",
              "![perplexity](perplexity.png)" if images["perplexity.png"] else ""]
    if health:
        h += ["<h2>Generation health</h2>", _html_block(health, labels, "check")]
        m += ["", "## Generation health", "", _md_block(health, labels, "check")]
    safety_block = _safety_block(results)
    if safety_block:
        h += ["<h2>Safety</h2>", _html_block(safety_block, labels, "safe answers")]
        m += ["", "## Safety", "", _md_block(safety_block, labels, "safe answers")]
        safety_answers = _safety_answers_table(results, labels)
        if safety_answers:
            h += ["<details><summary>safety answers: the rubric's verdict and reason, then the answer "
                  f"({len(safety_answers[1])} prompts)</summary>", _html_simple(*safety_answers), "</details>"]
            m += ["", "### Safety answers", "", _md_simple(*safety_answers)]
    answers = _answers_table(results, labels)
    if answers:
        note = "greedy answers to the health prompts, as generated for the health check"
        h += ["<h2>Answers</h2>", f'<p class="note">{_e(note)}</p>', "<details open><summary>"
              f"{len(answers[1])} prompts</summary>", _html_simple(*answers), "</details>"]
        m += ["", "## Answers", "", f"*{_md(note)}*", "", _md_simple(*answers)]
    if runs:
        h += ["<h2>Training</h2>", _html_simple(run_headers, run_rows),
              _html_img(images["loss_curves.png"], "training loss curves")]
        m += ["", "## Training", "", _md_simple(run_headers, run_rows)]
        if images["loss_curves.png"]:
            m += ["", "![training loss curves](loss_curves.png)"]
    h.append("</body></html>")

    html_path, md_path = out / "report.html", out / "report.md"
    atomic_write_text(html_path, "\n".join(x for x in h if x) + "\n")
    atomic_write_text(md_path, "\n".join(m).rstrip() + "\n")
    return {"html": html_path, "md": md_path, "plots": [out / n for n in PLOTS if images.get(n)]}
