"""The benchmarks' own release formats, read strictly into one shape: :class:`MCItem`, a multiple-choice
question with its gold index.

PubMedQA (JSON keyed by PMID), MedMCQA (JSONL, `cop` 1-4 or 0-3), MedQA-USMLE (JSONL with lettered options),
MMLU and CMMLU (a folder of per-subject CSV files) and medtune's own MCQ JSONL. A problem in a file is a
:class:`~medtune.errors.DataError` naming the file, the line and the field (docs/eval-tasks.md). What is asked
of a model about each item (the harness's prompt) is tasks.py's.
"""

from __future__ import annotations

import csv
import json
import re
import string
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from medtune.data.jsonio import iter_json_members, iter_lines, iter_objects, json_type, require_file
from medtune.errors import DataError, MedtuneError

LETTERS = string.ascii_uppercase
PUBMEDQA_LABELS = ("yes", "no", "maybe")
PUBMEDQA_SETTINGS = ("reasoning_required", "reasoning_free")

# MMLU subjects that make up the usual "medical" subset (Med-PaLM, Meditron, ...).
MMLU_MEDICAL = (
    "anatomy",
    "clinical_knowledge",
    "college_biology",
    "college_medicine",
    "medical_genetics",
    "professional_medicine",
)

# CMMLU subjects loaded from a folder: the medicine-related ones.
CMMLU_MEDICAL = (
    "anatomy",
    "clinical_knowledge",
    "college_medical_statistics",
    "college_medicine",
    "genetics",
    "nutrition",
    "professional_medicine",
    "traditional_chinese_medicine",
    "virology",
)

_SPLIT_SUFFIX = re.compile(r"_(test|val|validation|dev|train)$")
_HINT_DOCS = "see docs/eval-tasks.md for the expected format"
_HINT_PUBMEDQA_JSON = 'PubMedQA files are one JSON object {"PMID": {"QUESTION": ..., ...}, ...}, or JSON Lines'


@dataclass
class MCItem:
    """One multiple-choice question with its gold answer."""

    id: str  # stable id (PMID, given id, or row/line number)
    question: str
    choices: list[str]  # option texts in order
    choice_labels: list[str]  # ["A", "B", "C", "D"] or ["yes", "no", "maybe"]
    answer: int  # index of the gold choice
    context: str = ""  # PubMedQA abstract (or long answer), an mcq "context"; empty otherwise
    subject: str = ""  # for per-subject breakdowns
    explanation: str = ""  # MedMCQA `exp`, PubMedQA LONG_ANSWER, mcq "explanation"
    source: str = ""  # "file:line"


# --------------------------------------------------------------------------- reading helpers


def _source(path, line) -> str:
    return f"{path}:{line}"


def _str_field(path, line, record: dict, key: str, *, field_name: str | None = None, required: bool = True,
               nonempty: bool = False) -> str:
    """A string field; "" for an absent/null optional one."""
    name = field_name or key
    value = record.get(key)
    if value is None:
        if required:
            raise DataError(path, line, name, "missing", f"each record needs a string '{key}'; {_HINT_DOCS}")
        return ""
    if not isinstance(value, str):
        raise DataError(path, line, name, f"must be a string, got {json_type(value)}", _HINT_DOCS)
    if nonempty and not value.strip():
        raise DataError(path, line, name, "is empty", "fill in the text or drop the record")
    return value


def _id_field(path, line, record: dict, key: str, default: str) -> str:
    value = record.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise DataError(path, line, key, f"must be a string or an integer, got {json_type(value)}", _HINT_DOCS)
    return str(value)


def is_whole_number(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _iter_csv(path) -> Iterator[tuple[int, list[str]]]:
    """(line where the row starts, cells) for each non-blank row of a UTF-8 CSV file."""
    reader = csv.reader(text + "\n" for _, text in iter_lines(path))
    rows = iter(reader)
    while True:
        start = reader.line_num + 1
        try:
            row = next(rows)
        except StopIteration:
            return
        except csv.Error as e:
            raise DataError(path, reader.line_num, None, f"invalid CSV: {e}", "check the quoting of this row") from None
        if row:
            yield start, row


def subject_from_filename(path: Path) -> str:
    """``anatomy_test.csv`` -> ``anatomy``; ``anatomy.csv`` -> ``anatomy``."""
    return _SPLIT_SUFFIX.sub("", path.stem)


def no_items(path, what: str = "no questions") -> DataError:
    return DataError(path, None, None, what, f"the file holds no usable questions; {_HINT_DOCS}")


# --------------------------------------------------------------------------- PubMedQA


def _pubmedqa_item(path, line, pmid: str, record, setting: str, prefix: str) -> MCItem:
    """One PQA-L record: official keys (QUESTION, CONTEXTS, LONG_ANSWER) or Hugging Face ones (question, context...)."""
    if not isinstance(record, dict):
        got = json_type(record)
        raise DataError(path, line, prefix.rstrip(".") or None, f"must be an object, got {got}", _HINT_DOCS)
    official = "QUESTION" in record
    q_key, la_key = ("QUESTION", "LONG_ANSWER") if official else ("question", "long_answer")
    question = _str_field(path, line, record, q_key, field_name=prefix + q_key, nonempty=True)
    if official:
        contexts, ctx_name = record.get("CONTEXTS"), prefix + "CONTEXTS"
    else:
        holder = record.get("context")
        contexts, ctx_name = (holder.get("contexts") if isinstance(holder, dict) else holder), prefix + "context.contexts"
    if contexts is None:
        raise DataError(path, line, ctx_name, "missing", "each record needs its abstract as a list of strings")
    if not isinstance(contexts, list) or not contexts:
        got = "an empty array" if contexts == [] else json_type(contexts)
        raise DataError(path, line, ctx_name, f"must be a non-empty array of strings, got {got}", _HINT_DOCS)
    for i, part in enumerate(contexts):
        if not isinstance(part, str):
            raise DataError(path, line, f"{ctx_name}[{i}]", f"must be a string, got {json_type(part)}", _HINT_DOCS)
    long_answer = _str_field(path, line, record, la_key, field_name=prefix + la_key, required=setting == "reasoning_free")
    if setting == "reasoning_free" and not long_answer.strip():
        raise DataError(path, line, prefix + la_key, "is empty", "the reasoning_free setting needs the long answer")
    decision = _str_field(path, line, record, "final_decision", field_name=prefix + "final_decision")
    if decision not in PUBMEDQA_LABELS:
        raise DataError(path, line, prefix + "final_decision", f"must be yes, no or maybe, got {decision!r}", _HINT_DOCS)
    if setting == "reasoning_free":  # the paper's reasoning-free input: question + long answer (the conclusion)
        context, explanation = long_answer, ""
    else:
        context, explanation = "\n".join(contexts), long_answer
    return MCItem(
        id=pmid, question=question, choices=list(PUBMEDQA_LABELS), choice_labels=list(PUBMEDQA_LABELS),
        answer=PUBMEDQA_LABELS.index(decision), context=context, explanation=explanation, source=_source(path, line),
    )


def _looks_like_jsonl(path) -> bool:
    """True if the first non-blank line is by itself a whole record with a question (JSON Lines, HF style)."""
    for _, text in iter_lines(path):
        if text.strip():
            try:
                first = json.loads(text, strict=False)
            except (json.JSONDecodeError, RecursionError):
                return False
            return isinstance(first, dict) and ("question" in first or "QUESTION" in first)
    return False


def load_pubmedqa(path, setting: str = "reasoning_required") -> list[MCItem]:
    """PubMedQA PQA-L: the official ``{PMID: record}`` JSON object, or JSON Lines with a ``pubid`` per record."""
    require_file(path)
    if setting not in PUBMEDQA_SETTINGS:
        raise MedtuneError(f"unknown PubMedQA setting {setting!r}", hint="use reasoning_required or reasoning_free")
    items, seen = [], {}
    if _looks_like_jsonl(path):
        for line, record in iter_objects(path):
            pmid = _id_field(path, line, record, "pubid", "") or _id_field(path, line, record, "PMID", str(line))
            items.append(_pubmedqa_item(path, line, pmid, record, setting, ""))
    else:
        for line, pmid, record in iter_json_members(path, _HINT_PUBMEDQA_JSON):
            if pmid in seen:
                raise DataError(path, line, pmid, f"duplicate PMID (first on line {seen[pmid]})", "keep one entry per PMID")
            seen[pmid] = line
            items.append(_pubmedqa_item(path, line, pmid, record, setting, f"{pmid}."))
    return items


# --------------------------------------------------------------------------- MedMCQA


def medmcqa_cop_base(cops: list[int]) -> int:
    """1 if the ``cop`` values are the raw release's 1..4, 0 if they are Hugging Face's 0..3.

    A 0 means 0-indexed, a 4 means 1-indexed; with only 1..3 present the file is taken as the raw
    release (1-indexed). Both 0 and 4 present cannot be told apart: ValueError (the loader reports it).
    """
    has0, has4 = 0 in cops, 4 in cops
    if has0 and has4:
        raise ValueError("both 0 and 4")
    return 0 if has0 else 1


def load_medmcqa(path, setting: str = "reasoning_required") -> list[MCItem]:
    """MedMCQA JSONL {question, opa..opd, cop, subject_name, exp, id}; ``cop`` base detected per file."""
    require_file(path)
    rows = []
    for line, record in iter_objects(path):
        question = _str_field(path, line, record, "question", nonempty=True)
        options = [_str_field(path, line, record, key) for key in ("opa", "opb", "opc", "opd")]
        cop = record.get("cop")
        if cop is None or cop == -1:
            hint = "the MedMCQA test split has no answers; evaluate on dev.json (validation)"
            raise DataError(path, line, "cop", "no gold answer" if cop is None else "no gold answer (cop is -1)", hint)
        if not is_whole_number(cop):
            raise DataError(path, line, "cop", f"must be an integer, got {json_type(cop)}", "1..4 (raw release) or 0..3")
        if not 0 <= cop <= 4:
            hint = "1..4 for the raw release (1 = opa), 0..3 for the Hugging Face copy"
            raise DataError(path, line, "cop", f"{cop} is out of range", hint)
        rows.append((line, record, question, options, cop))
    if not rows:
        raise no_items(path)
    try:
        base = medmcqa_cop_base([r[4] for r in rows])
    except ValueError:
        first0 = next(r[0] for r in rows if r[4] == 0)
        line4 = next(r[0] for r in rows if r[4] == 4)
        message = f"is 4 but line {first0} has cop 0: the file mixes 1-indexed and 0-indexed answers"
        raise DataError(path, line4, "cop", message, "use one release per file: raw (1..4) or Hugging Face (0..3)") from None
    items = []
    for line, record, question, options, cop in rows:
        items.append(MCItem(
            id=_id_field(path, line, record, "id", str(line)), question=question, choices=options,
            choice_labels=list("ABCD"), answer=cop - base,
            subject=_str_field(path, line, record, "subject_name", required=False),
            explanation=_str_field(path, line, record, "exp", required=False), source=_source(path, line),
        ))
    return items


# --------------------------------------------------------------------------- MedQA-USMLE


def lettered_options(path, line, options, name: str = "options") -> tuple[list[str], list[str]]:
    """(labels, texts) of an options object {"A": ..., "B": ...}: the keys must be A, B, C, ... without gaps."""
    if not isinstance(options, dict):
        message = f'must be an object {{"A": ..., "B": ...}}, got {json_type(options)}'
        raise DataError(path, line, name, message, _HINT_DOCS)
    labels = sorted(options)
    if len(labels) < 2 or labels != list(LETTERS[: len(labels)]):
        keys = ", ".join(map(repr, options)) or "none"
        raise DataError(path, line, name, f"keys must be A, B, C, ... in sequence, got {keys}", _HINT_DOCS)
    texts = [_str_field(path, line, options, key, field_name=f"{name}.{key}") for key in labels]
    return labels, texts


def _medqa(path, four_options: bool) -> list[MCItem]:
    require_file(path)
    items = []
    for n, (line, record) in enumerate(iter_objects(path), 1):
        question = _str_field(path, line, record, "question", nonempty=True)
        if "options" not in record:
            raise DataError(path, line, "options", "missing", 'each record needs "options": {"A": ..., "D" or "E": ...}')
        labels, texts = lettered_options(path, line, record["options"])
        gold = _str_field(path, line, record, "answer_idx")
        if gold not in labels:
            raise DataError(path, line, "answer_idx", f"{gold!r} is not among the options {', '.join(labels)}", _HINT_DOCS)
        answer_text = _str_field(path, line, record, "answer", required=False)
        if answer_text and answer_text.strip() != texts[labels.index(gold)].strip():
            raise DataError(path, line, "answer", f"{answer_text!r} is not the text of option {gold}",
                            "answer must repeat options[answer_idx], or be left out")
        if four_options:
            if gold not in "ABCD":
                continue  # medqa_4options drops questions whose answer is E
            labels, texts = labels[:4], texts[:4]
        items.append(MCItem(
            id=_id_field(path, line, record, "id", str(n)), question=question, choices=texts, choice_labels=labels,
            answer=labels.index(gold), subject=_str_field(path, line, record, "meta_info", required=False),
            source=_source(path, line),
        ))
    if not items:
        raise no_items(path, "no questions" + (" with an answer among A-D" if four_options else ""))
    return items


def load_medqa(path, setting: str = "reasoning_required") -> list[MCItem]:
    """MedQA-USMLE JSONL {question, options {A..D|E}, answer_idx, answer?, meta_info}, options kept as given."""
    return _medqa(path, four_options=False)


def load_medqa_4options(path, setting: str = "reasoning_required") -> list[MCItem]:
    """MedQA-USMLE keeping options A-D; questions whose answer is E are dropped."""
    return _medqa(path, four_options=True)


# --------------------------------------------------------------------------- MMLU and CMMLU (CSV)


def _csv_files(path, medical: tuple[str, ...], task: str, pattern: str) -> list[tuple[Path, str]]:
    """(file, subject) pairs: the file itself, or a folder's files for the medical subjects."""
    p = Path(path)
    if p.is_file():
        return [(p, subject_from_filename(p))]
    if not p.is_dir():
        require_file(path)  # raises "file not found"
    found: dict[str, list[Path]] = {}
    for f in sorted(p.glob("*.csv")):
        subject = subject_from_filename(f)
        if subject in medical:
            found.setdefault(subject, []).append(f)
    if not found:
        expected = ", ".join(pattern.format(s) for s in medical)
        raise DataError(path, None, None, f"no {task} subject files here", f"expected some of: {expected}")
    for subject, files in found.items():
        if len(files) > 1:
            names = ", ".join(f.name for f in files)
            raise DataError(path, None, None, f"several files for subject {subject}: {names}",
                            "point at one split's folder (e.g. data/test) or at one file")
    return [(found[s][0], s) for s in medical if s in found]


def _answer_letter(path, line, value: str, name: str, first_row: bool) -> int:
    letter = value.strip()
    if letter not in ("A", "B", "C", "D"):
        hint = "the answer column holds A, B, C or D"
        if first_row and letter.lower() == "answer":
            hint = "MMLU CSV files have no header row: delete the first line"
        raise DataError(path, line, name, f"{value!r} is not one of A, B, C, D", hint)
    return "ABCD".index(letter)


def _abcd_item(path, line, subject: str, index: str, cells: list[str], names: tuple[str, str], first_row: bool):
    """An MMLU/CMMLU row: cells question, A, B, C, D, answer letter; `names` are the file's question and answer
    column names, for an error."""
    if not cells[0].strip():
        raise DataError(path, line, names[0], "is empty", "fill in the question or drop the row")
    answer = _answer_letter(path, line, cells[5], names[1], first_row)
    return MCItem(id=f"{subject}/{index}", question=cells[0], choices=cells[1:5], choice_labels=list("ABCD"),
                  answer=answer, subject=subject, source=_source(path, line))


def _mmlu_file(path: Path, subject: str) -> list[MCItem]:
    items = []
    for n, (line, row) in enumerate(_iter_csv(path), 1):
        if len(row) != 6:
            raise DataError(path, line, None, f"expected 6 columns (question, A, B, C, D, answer), got {len(row)}",
                            "check the quoting: a field with a comma or a line break must be in double quotes")
        items.append(_abcd_item(path, line, subject, str(n), row, ("question", "answer"), n == 1))
    if not items:
        raise no_items(path)
    return items


def load_mmlu(path, setting: str = "reasoning_required") -> list[MCItem]:
    """MMLU CSVs without a header (question, A, B, C, D, answer); a folder loads the medical subjects only."""
    files = _csv_files(path, MMLU_MEDICAL, "MMLU", "{}_test.csv")
    return [item for f, subject in files for item in _mmlu_file(f, subject)]


_CMMLU_HEADER = ["Question", "A", "B", "C", "D", "Answer"]


def _cmmlu_file(path: Path, subject: str) -> list[MCItem]:
    items, header = [], None
    for line, row in _iter_csv(path):
        if header is None:
            cells = [c.strip() for c in row]
            if cells not in (_CMMLU_HEADER, [""] + _CMMLU_HEADER):
                raise DataError(path, line, None, "expected the header ,Question,A,B,C,D,Answer",
                                "CMMLU files start with that header row; the first (index) column may be left out")
            header = cells
            continue
        if len(row) != len(header):
            raise DataError(path, line, None, f"expected {len(header)} columns like the header, got {len(row)}",
                            "check the quoting: a field with a comma or a line break must be in double quotes")
        cells = dict(zip(header, row))
        index = cells.get("", "").strip() or str(len(items))
        items.append(_abcd_item(path, line, subject, index, [cells[k] for k in _CMMLU_HEADER],
                                ("Question", "Answer"), False))
    if not items:
        raise no_items(path)
    return items


def load_cmmlu(path, setting: str = "reasoning_required") -> list[MCItem]:
    """CMMLU CSVs with header ``,Question,A,B,C,D,Answer``; a folder loads the medicine-related subjects only."""
    files = _csv_files(path, CMMLU_MEDICAL, "CMMLU", "{}.csv")
    return [item for f, subject in files for item in _cmmlu_file(f, subject)]


# --------------------------------------------------------------------------- our generic MCQ JSONL


def load_mcq(path, setting: str = "reasoning_required") -> list[MCItem]:
    """Generic JSONL {question, options (object or list), answer (letter or index), id?, subject?, context?, explanation?}.

    ``subject`` falls back to ``condition`` (the demo exam's field).
    """
    require_file(path)
    items = []
    for n, (line, record) in enumerate(iter_objects(path), 1):
        question = _str_field(path, line, record, "question", nonempty=True)
        if "options" not in record:
            raise DataError(path, line, "options", "missing", 'add "options": {"A": "...", "B": "..."} or a list')
        options = record["options"]
        if isinstance(options, list):
            if len(options) < 2 or len(options) > len(LETTERS):
                raise DataError(path, line, "options", f"needs 2 to 26 options, got {len(options)}", _HINT_DOCS)
            texts = [_str_field(path, line, {"o": o}, "o", field_name=f"options[{i}]") for i, o in enumerate(options)]
            labels = list(LETTERS[: len(texts)])
        else:
            labels, texts = lettered_options(path, line, options)
        if "answer" not in record:
            raise DataError(path, line, "answer", "missing", 'add "answer": "B" (a letter) or 1 (an index from 0)')
        answer = record["answer"]
        if is_whole_number(answer):
            if not 0 <= answer < len(texts):
                message = f"index {answer} is out of range 0..{len(texts) - 1}"
                raise DataError(path, line, "answer", message, "an index counts from 0")
            gold = answer
        elif isinstance(answer, str):
            if answer not in labels:
                raise DataError(path, line, "answer", f"{answer!r} is not among the options {', '.join(labels)}", _HINT_DOCS)
            gold = labels.index(answer)
        else:
            raise DataError(path, line, "answer", f"must be a letter or an index, got {json_type(answer)}", _HINT_DOCS)
        subject_key = "subject" if record.get("subject") is not None else "condition"
        items.append(MCItem(
            id=_id_field(path, line, record, "id", str(n)), question=question, choices=texts, choice_labels=labels,
            answer=gold, context=_str_field(path, line, record, "context", required=False),
            subject=_str_field(path, line, record, subject_key, required=False),
            explanation=_str_field(path, line, record, "explanation", required=False), source=_source(path, line),
        ))
    return items
