"""Clean a corpus before training: normalise, filter out low-quality documents, drop exact and near
duplicates, and optionally de-identify (see docs/data-tools.md).

Works on pretraining text (``.txt``, ``.jsonl``/``.json`` with ``text``) and on dialogue files (any
format formats.py reads). Steps, each counted in the report:

1. normalise: Unicode NFC, control characters removed (``\\n`` and ``\\t`` kept), runs of spaces collapsed;
   empty documents and dialogues with an empty turn are dropped;
2. quality filters: length, share of useful characters, U+FFFD, repeated lines and repeated n-grams;
3. exact duplicates (lower-cased, whitespace-collapsed text), first occurrence kept;
4. near duplicates: MinHash + LSH (datasketch) over n-gram shingles, first of each cluster kept;
5. de-identification (``deid=True``) with :mod:`medtune.data.deid`: placeholders or surrogates, counts per
   type in the report, and with ``deid_report`` a JSON Lines file of (line, type, start, end) per span
   found, never the identifier itself.

Every option lives in one :class:`CleanSettings` (recorded in the report); ``clean_files`` takes it, or
its fields as keyword arguments.

Input is streamed and kept documents are written as they come to a temporary file beside the output,
which is renamed into place at the end: a failed run leaves an existing output as it was. Only hashes
and MinHash signatures are held in memory, never the texts.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import unicodedata
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from medtune.data import formats, jsonio
from medtune.errors import DataError, MedtuneError

KINDS = ("auto", "text", "dialogue")
# removal reasons in pipeline order (the report lists every one, zeros included)
REASONS = (
    "empty", "too_short", "too_long", "replacement_chars", "low_useful_chars", "repeated_lines", "repeated_ngrams",
    "exact_duplicate", "near_duplicate",
)

_CJK_RANGES = formats.CJK_RANGES
# a "unit" is one CJK character or one run of other letters/digits: words in Latin text, characters in Chinese
_UNIT = re.compile(f"{formats.CJK.pattern}|[^\\W_{_CJK_RANGES}]+")
# C0/C1 control characters except \t and \n (\r is turned into \n first), plus BOM and zero-width space
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ufeff\u200b]")
_SPACE_RUN = re.compile("[ \u00a0\u1680\u2000-\u200a\u202f\u205f\u3000]{2,}")
_NOT_WORD = re.compile(r"[^\w\s]")


@dataclass
class CleanSettings:
    """Every option of a cleaning run (recorded in the report).

    kind: auto (.txt is text; .jsonl/.json records with "text" are text; else dialogues), text or dialogue.
    mode: .txt documents per line or paragraph. fmt: the dialogue format (auto per file).
    Thresholds: see docs/data-tools.md. deid: replace PHI; deid_types ("EMAIL,PHONE" or a list) restricts
    it to those types and turns it on; deid_mode: mask ([TYPE]) or surrogate (consistent fake values);
    deid_keep_year: dates keep their year; deid_report: a file for the (line, type, start, end) records.
    """

    kind: str = "auto"
    mode: str = "line"
    fmt: str = "auto"
    min_chars: int = 20
    max_chars: int = 100_000
    min_useful: float = 0.8
    max_replacement_chars: int = 0
    max_repeated_lines: float = 0.3
    max_repeated_ngrams: float = 0.4
    ngram: int = 5
    near_dup: bool = True
    near_dup_threshold: float = 0.8
    num_perm: int = 128
    deid: bool = False
    deid_types: str | list | None = None
    deid_mode: str = "mask"
    deid_keep_year: bool = False
    deid_report: str | None = None
    seed: int = 0

    def check(self) -> None:
        """MedtuneError for a value out of range."""
        if self.kind not in KINDS:
            raise MedtuneError(f"unknown kind {self.kind!r}", hint="use auto, text or dialogue")
        if self.mode not in formats.TEXT_MODES:
            raise MedtuneError(f"unknown text mode {self.mode!r}", hint="use line or paragraph")
        if self.deid_mode not in ("mask", "surrogate"):
            raise MedtuneError(f"unknown de-identification mode {self.deid_mode!r}", hint="use mask or surrogate")
        for name in ("min_useful", "max_repeated_lines", "max_repeated_ngrams", "near_dup_threshold"):
            value = getattr(self, name)
            if not 0 <= value <= 1:
                raise MedtuneError(f"{name} must be between 0 and 1, got {value}")
        if self.min_chars < 0 or self.max_replacement_chars < 0:
            raise MedtuneError("min_chars and max_replacement_chars must be 0 or more")
        if self.max_chars < max(self.min_chars, 1):
            raise MedtuneError(f"max_chars ({self.max_chars}) must be at least min_chars ({self.min_chars}) and 1")
        if self.ngram < 1 or self.num_perm < 2:
            raise MedtuneError("ngram must be at least 1 and num_perm at least 2")


# --------------------------------------------------------------------------- normalise and measure


def normalize(text: str) -> str:
    """NFC, line breaks as \\n, control characters removed, runs of spaces collapsed to one, ends stripped."""
    text = unicodedata.normalize("NFC", text).replace("\r\n", "\n").replace("\r", "\n")
    text = _CONTROL.sub("", text)
    return _SPACE_RUN.sub(" ", text).strip()


def units(text: str) -> list[str]:
    """Lower-cased words and CJK characters of a text, punctuation and spaces left out."""
    return _UNIT.findall(text.lower())


def useful_share(text: str) -> float:
    """Share of non-space characters that are letters (CJK included), digits, marks or punctuation.

    What is left are symbols (math, currency, emoji, box drawing, U+FFFD) and unassigned or private codes.
    """
    non_space = len("".join(text.split()))
    if non_space == 0:
        return 0.0
    # only the few characters that are not word characters need a category look-up
    bad = sum(1 for ch in _NOT_WORD.findall(text) if unicodedata.category(ch)[0] not in "PM")
    return 1 - bad / non_space


def repeated_lines_share(text: str) -> float:
    """Share of non-blank lines that repeat an earlier line of the same document."""
    lines = [line.strip() for line in text.split("\n") if line.strip()]
    return 1 - len(set(lines)) / len(lines) if len(lines) > 1 else 0.0


def ngrams(text: str, n: int) -> list[str]:
    """The n-grams of a text's units, in order (one n-gram of all units if there are fewer than n)."""
    toks = units(text)
    if len(toks) <= n:
        return [" ".join(toks)] if toks else []
    return [" ".join(toks[i : i + n]) for i in range(len(toks) - n + 1)]


def repeated_ngrams_share(grams: list[str]) -> float:
    """Share of a document's n-grams that repeat an earlier n-gram of the same document."""
    return 1 - len(set(grams)) / len(grams) if len(grams) > 1 else 0.0


def quality_problem(text: str, grams: list[str], s: CleanSettings) -> str | None:
    """The first quality filter the text fails (a REASONS name), or None if it passes them all."""
    if len(text) < s.min_chars:
        return "too_short"
    if len(text) > s.max_chars:
        return "too_long"
    if text.count("\ufffd") > s.max_replacement_chars:
        return "replacement_chars"
    if useful_share(text) < s.min_useful:
        return "low_useful_chars"
    if repeated_lines_share(text) > s.max_repeated_lines:
        return "repeated_lines"
    if repeated_ngrams_share(grams) > s.max_repeated_ngrams:
        return "repeated_ngrams"
    return None


# --------------------------------------------------------------------------- duplicates


def exact_key(text: str) -> bytes:
    """16-byte hash of the lower-cased, whitespace-collapsed text: equal keys are exact duplicates."""
    return hashlib.blake2b(" ".join(text.lower().split()).encode("utf-8"), digest_size=16).digest()


def dialogue_text(messages: list[dict]) -> str:
    """The contents of a dialogue joined by newlines (what the filters and near-dup step look at)."""
    return "\n".join(m["content"] for m in messages)


def dialogue_key(messages: list[dict]) -> bytes:
    """Exact-duplicate key of a dialogue: roles and contents (NUL cannot occur in normalised text)."""
    return exact_key("\0".join(f"{m['role']}\0{m['content']}" for m in messages))


class NearDuplicates:
    """Streaming near-duplicate detection: MinHash signatures of n-gram shingles in an LSH index.

    :meth:`seen` says whether a document is a near duplicate of one added earlier, and adds it if not, so
    the first document of each cluster is kept. LSH candidates are confirmed with the estimated Jaccard
    similarity of the signatures, which cuts the false positives of banding.
    """

    def __init__(self, threshold: float = 0.8, num_perm: int = 128, seed: int = 0):
        from datasketch import MinHash, MinHashLSH

        self.threshold = threshold
        self._template = MinHash(num_perm=num_perm, seed=seed)  # copied per document: permutations made once
        # bands stored as 8-byte digests rather than their raw values: a smaller index, same candidates
        self._lsh = MinHashLSH(threshold=threshold, num_perm=num_perm, hashfunc=_band_digest)
        self._signatures: list[bytes] = []  # kept documents' hash values, by LSH key

    def signature(self, grams: list[str]):
        """The MinHash of a document's set of n-grams (its shingles), or None if it has none."""
        if not grams:
            return None
        m = self._template.copy()
        m.update_batch({g.encode("utf-8") for g in grams})
        return m

    def seen(self, grams: list[str]) -> bool:
        """True if a document with these n-grams is a near duplicate of one seen before; else remember it."""
        m = self.signature(grams)
        if m is None:
            return False
        values = m.hashvalues
        for key in self._lsh.query(m):
            if (np.frombuffer(self._signatures[key], dtype=values.dtype) == values).mean() >= self.threshold:
                return True
        self._lsh.insert(len(self._signatures), m, check_duplication=False)
        self._signatures.append(values.tobytes())
        return False


def _band_digest(band: bytes) -> bytes:
    return hashlib.blake2b(band, digest_size=8).digest()


# --------------------------------------------------------------------------- reading


def detect_kind(path, kind: str = "auto") -> str:
    """"text" or "dialogue": .txt is text; .jsonl/.json is text if its first record has "text"."""
    p = jsonio.require_file(path)
    if kind not in KINDS:
        raise MedtuneError(f"unknown kind {kind!r}", hint="use auto, text or dialogue")
    suffix = p.suffix.lower()
    if suffix not in (".txt", ".jsonl", ".json"):
        hint = "use .txt or .jsonl/.json (a 'text' field, or dialogues as in docs/data-formats.md)"
        raise DataError(path, None, None, f"unsupported file type {p.suffix!r}", hint)
    if kind != "auto":
        return kind
    if suffix == ".txt":
        return "text"
    records = jsonio.iter_objects(path)
    try:
        first = next(records, None)
    finally:
        records.close()
    return "text" if first is not None and "text" in first[1] else "dialogue"


def iter_text_documents(path, mode: str = "line"):
    """Documents of a text file: .txt per `mode`, .jsonl/.json by their "text" field; empty ones skipped."""
    if Path(path).suffix.lower() != ".json":
        yield from formats.iter_texts(path, mode)
        return
    count = 0
    for line, record in jsonio.iter_objects(path):
        text = jsonio.get_str(path, line, record, "text", "text")
        if text.strip():
            count += 1
            yield text
    if count == 0:
        raise DataError(path, None, None, "no documents", "the file is empty or holds only blank text")


def _estimate_records(path, kind: str, mode: str) -> int | None:
    """About how many records a file holds (its line count) for the progress bar; None if unknowable cheaply."""
    p = Path(path)
    txt = kind == "text" and p.suffix.lower() == ".txt"
    if (txt and mode == "paragraph") or (not txt and jsonio.first_byte(p)[0] == b"["):
        return None  # paragraphs and JSON arrays: records do not follow lines
    count = 0
    with open(p, "rb") as f:
        while chunk := f.read(1 << 20):
            count += chunk.count(b"\n")
    return max(count, 1)


# --------------------------------------------------------------------------- output


def _check_output(output, inputs: list[str]) -> tuple[Path, Path]:
    """The real output path and its report path; MedtuneError if either would overwrite an input."""
    if not str(output).strip():
        raise MedtuneError("no output file given", hint="pass -o OUT, e.g. -o clean.jsonl")
    out = Path(os.path.realpath(output))
    report = Path(os.path.realpath(str(output) + ".report.json"))
    if out.is_dir():
        raise MedtuneError("the output is a directory", where=str(output), hint="give a file name, e.g. clean.jsonl")
    if out.exists() and not out.is_file():
        raise MedtuneError("the output is not a regular file", where=str(output), hint="give an ordinary file's name")
    if out.parent.exists() and not out.parent.is_dir():
        raise MedtuneError(f"{Path(output).parent} is a file, not a folder", where=str(output))
    real_inputs = {Path(os.path.realpath(p)) for p in inputs}
    for path in (out, report):
        if path in real_inputs:
            raise MedtuneError("the output would overwrite an input file", where=str(output),
                               hint="write the cleaned data to a new file, e.g. -o clean.jsonl")
    return out, report


class _AtomicOutput:
    """A temporary file beside `path`, renamed onto it by :meth:`commit`; removed if anything fails."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        try:
            from medtune.runs import temporary_file

            fd, self.tmp = temporary_file(path, ".tmp")
        except OSError as e:
            raise MedtuneError(f"cannot write here: {e.strerror}", where=str(path), hint="check the folder's permissions") from None
        self.file = os.fdopen(fd, "w", encoding="utf-8", newline="\n")

    def commit(self) -> None:
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        if self.path.exists():
            shutil.copymode(self.path, self.tmp)
        else:
            os.chmod(self.tmp, 0o644)
        os.replace(self.tmp, self.path)

    def discard(self) -> None:
        self.file.close()
        Path(self.tmp).unlink(missing_ok=True)


class _Writer:
    """Writes kept documents in the output layout: txt-line, txt-paragraph, jsonl (text) or messages."""

    def __init__(self, file, layout: str):
        self.file, self.layout, self.count = file, layout, 0

    def write(self, doc) -> None:
        if self.layout == "messages":
            self.file.write(json.dumps({"messages": doc}, ensure_ascii=False) + "\n")
        elif self.layout == "jsonl":
            self.file.write(json.dumps({"text": doc}, ensure_ascii=False) + "\n")
        elif self.layout == "txt-paragraph":
            self.file.write(("\n" if self.count else "") + doc + "\n")
        else:
            self.file.write(doc + "\n")
        self.count += 1


def _fit_layout(text: str, layout: str) -> str:
    """Make a document representable in a .txt layout: one line, or a paragraph without blank lines."""
    if layout == "txt-line":
        return re.sub(r"\s*\n\s*", " ", text)
    if layout == "txt-paragraph":
        return re.sub(r"\n\s*\n", "\n", text)
    return text


# --------------------------------------------------------------------------- the pipeline


def _load_deid(deid_types) -> list[str] | None:
    """The PHI types to replace (None: all); MedtuneError for an unknown type."""
    from medtune.data.deid import PHI_TYPES, find_phi

    if deid_types is None:
        return None
    parts = [deid_types] if isinstance(deid_types, str) else list(deid_types)
    types = [t.strip().upper() for part in parts for t in str(part).split(",") if t.strip()]
    if not types:
        raise MedtuneError("no PHI types given", hint=f"choose from: {', '.join(PHI_TYPES)}")
    find_phi("", types)  # checks the names
    return types


def _audit_file(path, inputs: list[str], out: Path, report: Path) -> "_AtomicOutput":
    """The --deid-report file, written like the output (atomically); never an input or the output."""
    real = Path(os.path.realpath(path))
    if real in {Path(os.path.realpath(p)) for p in inputs} | {out, report}:
        raise MedtuneError("the de-identification report would overwrite an input or the output", where=str(path),
                           hint="give it a new file name, e.g. --deid-report deid.jsonl")
    if real.is_dir():
        raise MedtuneError("the de-identification report is a directory", where=str(path), hint="give a file name")
    return _AtomicOutput(real)


def _deidentify(doc, types, s: CleanSettings, phi: Counter, audit, line: int):
    """`doc` (a text or a list of messages) with PHI replaced; counts added to `phi`; one audit record per
    span (output line, message index for dialogues, type, start and end in the cleaned input text)."""
    from medtune.data.deid import find_phi, replace_spans

    def one(text: str, message: int | None) -> str:
        spans = find_phi(text, types)
        new, counts = replace_spans(text, spans, mode=s.deid_mode, keep_year=s.deid_keep_year, seed=s.seed)
        phi.update(counts)
        if audit is not None:
            for sp in spans:
                record = {"line": line, "type": sp.type, "start": sp.start, "end": sp.end}
                if message is not None:
                    record = {"line": line, "message": message, "type": sp.type, "start": sp.start, "end": sp.end}
                audit.file.write(json.dumps(record) + "\n")
        return new

    if isinstance(doc, str):
        return one(doc, None)
    return [{"role": m["role"], "content": one(m["content"], i)} for i, m in enumerate(doc)]


def clean_files(inputs: list, output, settings: CleanSettings | None = None, *, progress: bool = True,
                **options) -> dict:
    """Clean `inputs` (all text or all dialogues) into one `output` file; return the report (also written
    to ``OUTPUT.report.json``). DataError for a bad input, MedtuneError for bad options or output.

    settings: a CleanSettings (defaults if None); `options` are CleanSettings fields that override it
    (``clean_files(paths, out, deid=True)``). An output named .txt is written in the text layout of
    `mode`, any other name as JSON Lines ({"text"} or {"messages"}). progress: a tqdm bar on a terminal.
    """
    from tqdm.auto import tqdm

    from medtune.runs import now, write_json

    import dataclasses

    unknown = sorted(set(options) - {f.name for f in dataclasses.fields(CleanSettings)})
    if unknown:
        raise TypeError(f"clean_files() got unknown option(s): {', '.join(unknown)}")
    settings = dataclasses.replace(settings or CleanSettings(), **options)
    settings.check()
    kind, mode, fmt = settings.kind, settings.mode, settings.fmt
    inputs = [str(p) for p in ([inputs] if isinstance(inputs, (str, os.PathLike)) else inputs)]
    if not inputs:
        raise MedtuneError("no input files given")
    fingerprints = [formats.fingerprint(p) for p in inputs]  # also: DataError if a file is missing
    kinds = {p: detect_kind(p, kind) for p in inputs}
    if len(set(kinds.values())) > 1:
        listing = ", ".join(f"{p} ({k})" for p, k in kinds.items())
        raise MedtuneError(f"inputs mix text and dialogue files: {listing}", hint="clean each kind separately")
    kind = kinds[inputs[0]]
    out, report_path = _check_output(output, inputs)
    if kind == "dialogue" and out.suffix.lower() == ".txt":
        raise MedtuneError("dialogues are written as messages JSON Lines", where=str(output), hint="name the output .jsonl")
    layout = "messages" if kind == "dialogue" else f"txt-{mode}" if out.suffix.lower() == ".txt" else "jsonl"
    deid_on = bool(settings.deid or settings.deid_types)
    types = _load_deid(settings.deid_types) if deid_on else None
    audit = _audit_file(settings.deid_report, inputs, out, report_path) if deid_on and settings.deid_report else None

    removed: Counter = Counter()
    phi: Counter = Counter()
    per_input: list[dict] = []
    seen_exact: set[bytes] = set()
    near = NearDuplicates(settings.near_dup_threshold, settings.num_perm, settings.seed) if settings.near_dup else None
    estimates = [_estimate_records(p, kind, mode) for p in inputs]
    total = None if None in estimates else sum(estimates)

    def keep_or_reason(text: str, key: bytes) -> str | None:
        grams = ngrams(text, settings.ngram)
        reason = quality_problem(text, grams, settings)
        if reason:
            return reason
        if key in seen_exact:
            return "exact_duplicate"
        seen_exact.add(key)
        if near is not None and near.seen(grams):
            return "near_duplicate"
        return None

    target = _AtomicOutput(out)
    bar = tqdm(total=total, unit=" docs", desc="clean", delay=1.0, disable=None if progress else True)
    try:
        writer = _Writer(target.file, layout)
        for path, fp in zip(inputs, fingerprints):
            read = kept = 0
            records = (iter_text_documents(path, mode) if kind == "text"
                       else formats.iter_dialogues(path, fmt, require_final_assistant=False))
            for record in records:
                read += 1
                bar.update()
                if kind == "text":
                    doc = _fit_layout(normalize(record), layout)
                    reason = "empty" if not doc else keep_or_reason(doc, exact_key(doc))
                else:
                    doc = [{"role": m["role"], "content": normalize(m["content"])} for m in record["messages"]]
                    doc = [m for m in doc if m["content"] or m["role"] != "system"]  # an empty system prompt goes
                    empty = any(not m["content"] for m in doc)
                    reason = "empty" if empty else keep_or_reason(dialogue_text(doc), dialogue_key(doc))
                if reason:
                    removed[reason] += 1
                    continue
                if deid_on:
                    doc = _deidentify(doc, types, settings, phi, audit, writer.count + 1)
                writer.write(doc)
                kept += 1
            per_input.append({**fp, "given_as": path, "kind": kind, "read": read, "kept": kept})
        if audit is not None:
            audit.commit()
        target.commit()
    except OSError as e:
        target.discard()
        if audit is not None:
            audit.discard()
        raise MedtuneError(f"cannot write: {e.strerror or e}", where=str(output),
                           hint="check the free disk space and permissions") from None
    except BaseException:
        target.discard()
        if audit is not None:
            audit.discard()
        raise
    finally:
        if bar.total is not None and bar.n != bar.total:
            bar.total = bar.n  # the estimate counted lines, not records
        bar.close()

    read = sum(i["read"] for i in per_input)
    report = {
        "created": now(),
        "output": str(output),
        "report": str(output) + ".report.json",
        "kind": kind,
        "layout": layout,
        "inputs": per_input,
        "documents": {"read": read, "kept": writer.count, "removed": read - writer.count},
        "removed": {reason: removed[reason] for reason in REASONS},
        "deid": {"enabled": deid_on, "types": types or "all", "mode": settings.deid_mode,
                 "keep_year": settings.deid_keep_year, "replaced": dict(sorted(phi.items())),
                 "audit": str(settings.deid_report) if audit is not None else None},
        "settings": asdict(settings),
    }
    write_json(report_path, report)
    return report


def format_summary(report: dict) -> str:
    """A few lines for the terminal: kept N of M, removals by reason, PHI by type, files written."""
    docs = report["documents"]
    unit = "dialogues" if report["kind"] == "dialogue" else "documents"
    share = f" ({docs['kept'] / docs['read']:.1%})" if docs["read"] else ""
    lines = [f"kept {docs['kept']} of {docs['read']} {unit}{share}"]
    reasons = [f"{r.replace('_', ' ')} {n}" for r, n in report["removed"].items() if n]
    lines.append("removed: " + (", ".join(reasons) if reasons else "none"))
    if report["deid"]["enabled"]:
        replaced = report["deid"]["replaced"]
        lines.append("PHI replaced: " + (", ".join(f"{t} {n}" for t, n in replaced.items()) if replaced else "none found"))
    lines.append(f"wrote {report['output']} ({report['layout']}) and {report['report']}")
    return "\n".join(lines)
