"""`medtune runs`: every run folder and evaluation folder under a root, with its stage, status, base, parent,
data and key metrics, newest first. A corrupt or emptied folder gets its own row; it never hides the others.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from medtune.errors import MedtuneError
from medtune.runs import MANIFEST, read_manifest

_KEY_METRICS = ("eval_perplexity", "eval_loss", "eval_accuracy", "heldout_margin_gain", "reward_last", "kl_last",
                "train_loss")


def list_runs(root="runs", depth: int = 3) -> list[dict]:
    """Every run folder (a `medtune.json`) and evaluation folder (a `results.json` of `medtune eval`) under
    `root`, newest first: {path, stage, status, base, parent, data, metrics, updated, note}. A folder whose
    manifest cannot be read is listed as `corrupt` (the reason in `note`), and a folder with nothing in it (an
    emptied run) as `empty`: one bad folder never hides the others. Other folders (reports, a pipeline's
    folder of steps) are walked through, not listed."""
    root = Path(root)
    found = []
    for folder in _folders(root, depth):
        names = {p.name for p in folder.iterdir()} if os.access(folder, os.R_OK | os.X_OK) else set()
        try:
            if MANIFEST in names:
                found.append(_run_row(folder))
            elif "results.json" in names:
                row = _eval_row(folder)
                if row:
                    found.append(row)
            elif folder != root and not _has_content(folder):
                found.append(_row(folder, status="empty", note="nothing in it"))
        except Exception as exc:  # noqa: BLE001 - any unreadable or malformed file: that folder's row says so
            name = MANIFEST if MANIFEST in names else "results.json"
            found.append(_row(folder, status="corrupt", note=f"{name}: {_reason(exc)}"))
    return sorted(found, key=lambda r: r["updated"], reverse=True)


def _folders(root: Path, depth: int):
    """`root` and its non-hidden folders up to `depth` levels below, not descending into a run folder (a
    pipeline's eval step holds its evaluations below its own results.json)."""
    level = [root]
    for d in range(depth + 1):
        below = []
        for folder in level:
            yield folder
            if d == depth or (folder / MANIFEST).exists():
                continue
            try:
                below += sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
            except OSError:
                continue
        level = below


def _has_content(folder: Path) -> bool:
    """True when `folder` holds a file that is not hidden (a leftover temporary `.name` does not count)."""
    for _, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        if any(not f.startswith(".") for f in files):
            return True
    return False


def _reason(exc: Exception) -> str:
    if isinstance(exc, MedtuneError):
        return exc.message.split(":")[0]
    if isinstance(exc, (json.JSONDecodeError, UnicodeDecodeError)):
        return "not valid JSON"
    if isinstance(exc, OSError):
        return exc.strerror or "cannot be read"
    return "not a medtune manifest (a field has the wrong type)"


def _row(folder: Path, **fields) -> dict:
    row = {"path": str(folder), "stage": "?", "status": "?", "base": "-", "parent": "-", "data": "-", "metrics": {},
           "updated": "", "note": ""}
    row.update(fields)
    return row


def _run_row(folder: Path) -> dict:
    m = read_manifest(folder)
    if not isinstance(m, dict):
        raise TypeError("a manifest is a JSON object")
    model, metrics = m.get("model") or {}, m.get("metrics") or {}
    return _row(folder, stage=str(m.get("stage", "?")), status=str(m.get("status", "?")),
                base=Path(str(model.get("base", ""))).name or "-",
                parent=Path(str(model.get("weights", ""))).name if model.get("weights") != model.get("base") else "-",
                data=", ".join(Path(d.get("path", "")).name for d in m.get("data") or []) or "-",
                metrics={k: metrics[k] for k in _KEY_METRICS if k in metrics}, updated=str(m.get("updated", "")))


def _eval_row(folder: Path) -> dict | None:
    r = json.loads((folder / "results.json").read_text(encoding="utf-8"))
    if not isinstance(r, dict) or r.get("kind") != "eval":  # a pipeline's list of evaluations: they are listed
        return None
    tasks = r.get("tasks", {})
    return _row(folder, stage="eval", status="completed", base=str(r.get("label", "-")), data=", ".join(tasks) or "-",
                metrics={f"{t}_acc": v.get("accuracy") for t, v in tasks.items() if "accuracy" in v},
                updated=str(r.get("created", "")))


def format_runs(rows: list[dict]) -> str:
    """`medtune runs` as an aligned text table."""
    if not rows:
        return "no runs found"
    table = [("run", "stage", "status", "base", "from", "data", "metrics")]
    for r in rows:
        figures = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in r["metrics"].items())
        path = r["path"] if len(r["path"]) <= 40 else "..." + r["path"][-37:]  # the end names the run
        table.append((path, r["stage"], r["status"], r["base"], r["parent"], r["data"], figures or r.get("note") or "-"))
    widths = [min(max(len(row[i]) for row in table), 40) for i in range(6)]
    return "\n".join("  ".join(c[:40].ljust(w) for c, w in zip(row[:6], widths)) + "  " + row[6] for row in table)
