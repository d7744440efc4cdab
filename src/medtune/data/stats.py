"""Describe training files before using them: sizes, token lengths, truncation, duplicates, languages.

For each file (pretraining text or dialogues, detected as in clean.py): the number of examples, characters,
tokens, the token-length distribution, the share of examples longer than ``max_length``, exact- and
near-duplicate rates (the same tests as ``medtune data clean``), the language mix and, for dialogues,
turns per example. A dialogue's tokens are those of its chat-templated text (the tokenizer's own chat
template, ChatML if it has none), as SFT sees it; a text's tokens are counted as the PT stage counts
them (the tokenizer's special tokens, plus the EOS appended between documents). A preference file's pair
counts its prompt + its longer answer, as rm and dpo do, and the file's `truncation` figures say what those
stages would do at the given limits (pairs kept whole, prompts cut, answers cut, pairs dropped).
See docs/data-tools.md.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

from medtune.data import clean, formats, preference
from medtune.errors import MedtuneError

LANGUAGES = ("zh", "latin", "mixed", "other")
_LATIN_WORD = re.compile("[A-Za-z\u00c0-\u024f]+")
_OTHER_WORD = re.compile(f"[^\\W\\d_A-Za-z\u00c0-\u024f{formats.CJK_RANGES}]+")
_BATCH = 256  # texts per tokenizer call


def language_of(text: str) -> str:
    """"zh", "latin", "mixed" or "other", counting CJK characters against words of other letters.

    A CJK character is counted like a Latin word (it carries about as much), so a Chinese answer with a few
    abbreviations (CT, mg) is still mainly Chinese. "Mainly" is 80% of those units; "other" is text with
    no letters or mainly another script (Cyrillic, Greek, ...).
    """
    cjk = len(formats.CJK.findall(text))
    latin = len(_LATIN_WORD.findall(text))
    other = len(_OTHER_WORD.findall(text))
    total = cjk + latin + other
    if total == 0 or other >= 0.8 * total:
        return "other"
    if cjk >= 0.8 * total:
        return "zh"
    if latin >= 0.8 * total:
        return "latin"
    return "mixed"


def _summary(values: list[int]) -> dict:
    import numpy as np

    a = np.asarray(values, dtype=np.int64)
    p50, p90, p99 = np.percentile(a, [50, 90, 99])
    return {"min": int(a.min()), "mean": round(float(a.mean()), 1), "median": round(float(p50), 1),
            "p90": round(float(p90), 1), "p99": round(float(p99), 1), "max": int(a.max())}


def _token_counts_texts(tokenizer, texts: list[str]) -> list[int]:
    """Tokens per document as the PT stage counts them: special tokens, plus the EOS that separates documents."""
    eos = tokenizer.eos_token_id
    ids_list = tokenizer(texts, add_special_tokens=True)["input_ids"]
    return [len(ids) + (eos is not None and (not ids or ids[-1] != eos)) for ids in ids_list]


def _measure(path, tokenizer=None, max_length: int = 1024, *, kind: str = "auto", mode: str = "line",
             fmt: str = "auto", near_dup_threshold: float = 0.8, num_perm: int = 128, ngram: int = 5,
             seed: int = 0, truncation: str = "keep_end", max_prompt_length: int | None = None,
             max_answer_length: int | None = None) -> tuple[dict, list[int]]:
    """The stats of one file and the per-example lengths (tokens, or characters without a tokenizer)."""
    if max_length < 1:
        raise MedtuneError(f"max_length must be at least 1, got {max_length}")
    if kind == "preference" or (kind == "auto" and preference.is_pair_file(path)):
        return _measure_pairs(path, tokenizer, max_length, truncation=truncation, max_prompt_length=max_prompt_length,
                              max_answer_length=max_answer_length, near_dup_threshold=near_dup_threshold,
                              num_perm=num_perm, ngram=ngram, seed=seed)
    kind = clean.detect_kind(path, kind)
    chat_format = None
    if tokenizer is not None and kind == "dialogue":
        from medtune.data.templates import encode_dialogue, resolve_format

        chat_format = resolve_format(tokenizer, "auto")
    near = clean.NearDuplicates(near_dup_threshold, num_perm, seed)
    seen: set[bytes] = set()
    chars: list[int] = []
    tokens: list[int] = []
    pending: list[str] = []  # texts waiting for a batched tokenizer call
    languages: Counter = Counter()
    turns: list[int] = []
    exact = near_dups = multi_turn = 0
    file_format = None

    def flush():
        if pending and tokenizer is not None:
            tokens.extend(_token_counts_texts(tokenizer, pending))
        pending.clear()

    if kind == "text":
        records = clean.iter_text_documents(path, mode)
        suffix = Path(path).suffix.lower()
        file_format = f"txt-{mode}" if suffix == ".txt" else suffix[1:]  # jsonl or json (an array)
    else:
        file_format = formats.detect_format(path) if fmt == "auto" else fmt
        records = formats.iter_dialogues(path, fmt, require_final_assistant=False)
    for record in records:
        if kind == "text":
            text = record
            pending.append(text)
            if len(pending) >= _BATCH:
                flush()
            normal = clean.normalize(text)
            key = clean.exact_key(normal)
        else:
            messages = record["messages"]
            text = clean.dialogue_text(messages)
            if chat_format is not None:
                tokens.append(len(encode_dialogue(tokenizer, chat_format, messages).input_ids))
            normal_messages = [{"role": m["role"], "content": clean.normalize(m["content"])} for m in messages]
            normal = clean.dialogue_text(normal_messages)
            key = clean.dialogue_key(normal_messages)
            turns.append(sum(m["role"] != "system" for m in messages))
            multi_turn += sum(m["role"] == "user" for m in messages) > 1
        chars.append(len(text) if kind == "text" else sum(len(m["content"]) for m in messages))
        languages[language_of(text)] += 1
        if key in seen:
            exact += 1
        else:
            seen.add(key)
            near_dups += near.seen(clean.ngrams(normal, ngram))
    flush()

    n = len(chars)
    lengths = tokens if tokenizer is not None else chars
    stats = _common(path, kind, file_format, chars, tokens if tokenizer is not None else None, max_length, exact,
                    near_dups, languages)
    if kind == "dialogue":
        stats["turns"] = {"min": min(turns), "mean": round(sum(turns) / n, 2), "max": max(turns)}
        stats["multi_turn_share"] = round(multi_turn / n, 4)
    return stats, lengths


def _measure_pairs(path, tokenizer, max_length: int, *, truncation: str, max_prompt_length: int | None,
                   max_answer_length: int | None, near_dup_threshold: float, num_perm: int, ngram: int,
                   seed: int) -> tuple[dict, list[int]]:
    """A preference file: a pair's length is its prompt + its longer answer, as rm and dpo count it; with a
    tokenizer, `truncation` holds what the stages would do at these limits (preference.fit_pairs)."""
    if truncation not in preference.TRUNCATION:
        raise MedtuneError(f"unknown truncation {truncation!r}", hint="use " + ", ".join(preference.TRUNCATION))
    preference.check_limits(max_length, max_prompt_length, max_answer_length, cli=True)
    read: dict = {}
    pairs = preference.load_pairs(path, stats=read)
    near = clean.NearDuplicates(near_dup_threshold, num_perm, seed)
    seen: set[bytes] = set()
    chars, languages, exact, near_dups, multi_turn = [], Counter(), 0, 0, 0
    for pair in pairs:
        chosen, rejected = preference.answer_text(pair["chosen"]), preference.answer_text(pair["rejected"])
        messages = [*pair["prompt"], {"role": "chosen", "content": chosen}, {"role": "rejected", "content": rejected}]
        normal_messages = [{"role": m["role"], "content": clean.normalize(m["content"])} for m in messages]
        key = clean.dialogue_key(normal_messages)
        if key in seen:
            exact += 1
        else:
            seen.add(key)
            near_dups += near.seen(clean.ngrams(clean.dialogue_text(normal_messages), ngram))
        chars.append(sum(len(m["content"]) for m in pair["prompt"]) + max(len(chosen), len(rejected)))
        languages[language_of(clean.dialogue_text(messages[:-1]))] += 1
        multi_turn += sum(m["role"] == "user" for m in pair["prompt"]) > 1
    tokens = fit = None
    if tokenizer is not None:
        from medtune.data.templates import resolve_format

        chat_format = resolve_format(tokenizer, "auto")
        tokens = []  # each pair's length before truncation, for the table and the histogram
        for pair in pairs:
            p, c = preference.encode_pair(tokenizer, chat_format, pair["prompt"], pair["chosen"], pair.get("tools"))
            _, r = preference.encode_pair(tokenizer, chat_format, pair["prompt"], pair["rejected"], pair.get("tools"))
            tokens.append(len(p) + max(len(c), len(r)))
        fit = {"max_prompt_length": max_prompt_length, "max_answer_length": max_answer_length}
        preference.fit_pairs(pairs, tokenizer, chat_format, fit, max_length=max_length, truncation=truncation,
                             max_prompt_length=max_prompt_length, max_answer_length=max_answer_length)
    n = len(pairs)
    lengths = tokens if tokens is not None else chars
    stats = {
        **_common(path, "preference", "preference", chars, tokens, max_length, exact, near_dups, languages),
        "identical_answers_dropped": read["identical_dropped"],
        "multi_turn_share": round(multi_turn / n, 4),
        "truncation": fit,
    }
    return stats, lengths


def _common(path, kind, file_format, chars, tokens, max_length, exact, near_dups, languages) -> dict:
    """The figures every kind of file reports; `tokens` is None without a tokenizer (lengths in characters)."""
    n = len(chars)
    over = sum(length > max_length for length in tokens) if tokens is not None else None
    return {
        "path": str(path),
        "kind": kind,
        "format": file_format,
        "examples": n,
        "characters": sum(chars),
        "tokens": sum(tokens) if tokens is not None else None,
        "length_unit": "tokens" if tokens is not None else "characters",
        "lengths": _summary(tokens if tokens is not None else chars),
        "max_length": max_length,
        "over_max_length": over,
        "over_max_length_share": round(over / n, 4) if over is not None else None,
        "exact_duplicates": exact,
        "exact_duplicate_rate": round(exact / n, 4),
        "near_duplicates": near_dups,
        "near_duplicate_rate": round(near_dups / n, 4),
        "languages": {lang: round(languages[lang] / n, 4) for lang in LANGUAGES},
    }


def file_stats(path, tokenizer=None, max_length: int = 1024, **options) -> dict:
    """Stats of one file (see the module docstring). Without a tokenizer, lengths are in characters and
    the truncation share is None. `options`: kind, mode, fmt, near_dup_threshold, num_perm, ngram, seed."""
    return _measure(path, tokenizer, max_length, **options)[0]


def _histogram(lengths: list[int], max_length: int | None, unit: str, title: str, out: Path) -> None:
    """A PNG histogram of lengths with a dashed line at max_length (matplotlib, no display needed)."""
    from matplotlib.figure import Figure  # the object API: no pyplot, no GUI backend, no global state

    fig = Figure(figsize=(7, 4), dpi=100)
    ax = fig.subplots()
    ax.hist(lengths, bins=min(60, max(1, len(set(lengths)))), color="#4878a8")
    if max_length is not None:
        ax.axvline(max_length, color="#c03030", linestyle="--", label=f"max_length {max_length}")
        ax.legend()
    ax.set_xlabel(f"{unit} per example")
    ax.set_ylabel("examples")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(out, format="png")


def write_stats(paths, out_dir="stats", tokenizer=None, max_length: int = 1024, *, tokenizer_name: str | None = None,
                **options) -> dict:
    """Stats of every file, a histogram PNG per file and ``stats.json`` in `out_dir`; returns what
    stats.json holds. `tokenizer` is a loaded tokenizer (`medtune data stats` loads it with
    models.tokenizer_for) or None: lengths in characters only. `tokenizer_name` is what stats.json calls it
    (default: the tokenizer's own name_or_path)."""
    from medtune.runs import now, write_json

    paths = [str(p) for p in ([paths] if isinstance(paths, (str, Path)) else paths)]
    if not paths:
        raise MedtuneError("no files given")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise MedtuneError("the output folder is a file", where=str(out), hint="pass --out with a folder name")
    if tokenizer is not None and tokenizer_name is None:
        tokenizer_name = getattr(tokenizer, "name_or_path", None) or type(tokenizer).__name__
    results, names = [], set()
    for path in paths:
        stats, lengths = _measure(path, tokenizer, max_length, **options)
        results.append((stats, lengths))
    out.mkdir(parents=True, exist_ok=True)
    files = []
    for stats, lengths in results:
        name = f"{Path(stats['path']).stem}.lengths.png"
        k = 2
        while name in names:  # two inputs with the same name from different folders
            name, k = f"{Path(stats['path']).stem}-{k}.lengths.png", k + 1
        names.add(name)
        line = max_length if stats["length_unit"] == "tokens" else None
        title = f"{Path(stats['path']).name}: {stats['examples']} examples"
        if line is not None:
            title += f", {stats['over_max_length_share']:.1%} longer than {max_length} tokens"
        _histogram(lengths, line, stats["length_unit"], title, out / name)
        files.append({**stats, "histogram": str(out / name)})
    summary = {"created": now(), "tokenizer": None if tokenizer is None else str(tokenizer_name),
               "max_length": max_length, "files": files}
    write_json(out / "stats.json", summary)
    return summary


def format_table(summary: dict) -> str:
    """A compact table: one row per file, then one line per file for languages and dialogue turns."""
    header = ["file", "kind", "examples", "chars", "tokens", "min", "mean", "median", "p90", "p99", "max",
              f">{summary['max_length']}", "dup", "near-dup"]
    rows = []
    for s in summary["files"]:
        lengths = s["lengths"]
        over = "-" if s["over_max_length_share"] is None else f"{s['over_max_length_share']:.1%}"
        rows.append([Path(s["path"]).name, s["kind"], str(s["examples"]), str(s["characters"]),
                     "-" if s["tokens"] is None else str(s["tokens"]),
                     *(f"{lengths[k]:g}" for k in ("min", "mean", "median", "p90", "p99", "max")),
                     over, f"{s['exact_duplicate_rate']:.1%}", f"{s['near_duplicate_rate']:.1%}"])
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) if i < 2 else cell.rjust(w) for i, (cell, w) in enumerate(zip(r, widths)))
             for r in [header, *rows]]
    unit = f"tokens ({summary['tokenizer']} tokenizer)" if summary["tokenizer"] else "characters"
    lines.insert(0, f"lengths in {unit}; >{summary['max_length']}: share longer than max_length")
    for s in summary["files"]:
        langs = ", ".join(f"{lang} {share:.1%}" for lang, share in s["languages"].items() if share)
        extra = ""
        if s["kind"] == "preference":
            extra = f"; multi-turn prompts {s['multi_turn_share']:.1%}"
            if s["truncation"]:
                extra += f"\n{Path(s['path']).name}: at max_length {summary['max_length']}, " + preference.fit_summary(s["truncation"])
        if s["kind"] == "dialogue":
            t = s["turns"]
            extra = f"; turns {t['min']}-{t['max']} (mean {t['mean']:g}), multi-turn {s['multi_turn_share']:.1%}"
        lines.append(f"{Path(s['path']).name}: languages {langs}{extra}")
    return "\n".join(lines)
