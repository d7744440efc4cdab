"""Benchmark tasks for ``medtune eval``: strict loaders, lm-evaluation-harness prompts, SFT conversion.

Every task reads its public release format into the same :class:`MCItem` (a multiple-choice question
with a gold index) and knows the harness's prompt for it, so a log-likelihood scorer can rank each
choice's continuation after :func:`Task.prompt`. Formats, prompts and rules: docs/eval-tasks.md.

Loaders are strict: a problem in a file is a :class:`~medtune.errors.DataError` naming the file, the
line and the field. ``limit`` takes a seeded random sample, kept in file order.
"""

from __future__ import annotations

import csv
import json
import random
import re
import string
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from medtune.data.formats import CJK
from medtune.data.jsonio import decode_line, iter_lines, iter_objects, json_type, open_bytes, require_file
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

# Chinese subject names for the CMMLU description line, as lm-evaluation-harness writes them.
CMMLU_SUBJECTS_ZH = {
    "agronomy": "农学", "anatomy": "解剖学", "ancient_chinese": "古汉语", "arts": "艺术学", "astronomy": "天文学",
    "business_ethics": "商业伦理", "chinese_civil_service_exam": "中国公务员考试", "chinese_driving_rule": "中国驾驶规则",
    "chinese_food_culture": "中国饮食文化", "chinese_foreign_policy": "中国外交政策", "chinese_history": "中国历史",
    "chinese_literature": "中国文学", "chinese_teacher_qualification": "中国教师资格", "clinical_knowledge": "临床知识",
    "college_actuarial_science": "大学精算学", "college_education": "大学教育学",
    "college_engineering_hydrology": "大学工程水文学", "college_law": "大学法律", "college_mathematics": "大学数学",
    "college_medical_statistics": "大学医学统计", "college_medicine": "大学医学", "computer_science": "计算机科学",
    "computer_security": "计算机安全", "conceptual_physics": "概念物理学", "construction_project_management": "建设工程管理",
    "economics": "经济学", "education": "教育学", "electrical_engineering": "电气工程", "elementary_chinese": "小学语文",
    "elementary_commonsense": "小学常识", "elementary_information_and_technology": "小学信息技术",
    "elementary_mathematics": "初等数学", "ethnology": "民族学", "food_science": "食品科学", "genetics": "遗传学",
    "global_facts": "全球事实", "high_school_biology": "高中生物", "high_school_chemistry": "高中化学",
    "high_school_geography": "高中地理", "high_school_mathematics": "高中数学", "high_school_physics": "高中物理学",
    "high_school_politics": "高中政治", "human_sexuality": "人类性行为", "international_law": "国际法学",
    "journalism": "新闻学", "jurisprudence": "法理学", "legal_and_moral_basis": "法律与道德基础", "logical": "逻辑学",
    "machine_learning": "机器学习", "management": "管理学", "marketing": "市场营销", "marxist_theory": "马克思主义理论",
    "modern_chinese": "现代汉语", "nutrition": "营养学", "philosophy": "哲学", "professional_accounting": "专业会计",
    "professional_law": "专业法学", "professional_medicine": "专业医学", "professional_psychology": "专业心理学",
    "public_relations": "公共关系", "security_study": "安全研究", "sociology": "社会学", "sports_science": "体育学",
    "traditional_chinese_medicine": "中医中药", "virology": "病毒学", "world_history": "世界历史", "world_religions": "世界宗教",
}

_SPLIT_SUFFIX = re.compile(r"_(test|val|validation|dev|train)$")
_HINT_DOCS = "see docs/eval-tasks.md for the expected format"


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


def _int_field(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _read_text(path) -> str:
    """The whole file as text (UTF-8, BOM dropped); a DataError naming the line of a bad byte."""
    with open_bytes(path) as f:
        data = f.read()
    start = 3 if data.startswith(b"\xef\xbb\xbf") else 0
    try:
        return data[start:].decode("utf-8")
    except UnicodeDecodeError as e:
        bad = start + e.start
        line_start = data.rfind(b"\n", 0, bad) + 1
        decode_line(path, data[line_start : bad + 1], data.count(b"\n", 0, bad) + 1, line_start)
        raise  # pragma: no cover - decode_line has raised


def _iter_json_object(path) -> Iterator[tuple[int, str, object]]:
    """(line of the key, key, value) for each member of a file holding one JSON object, e.g. PMID -> record."""
    text = _read_text(path)
    decoder = json.JSONDecoder(strict=False)
    hint = 'PubMedQA files are one JSON object {"PMID": {"QUESTION": ..., ...}, ...}, or JSON Lines'

    def line_at(pos: int) -> int:
        return text.count("\n", 0, pos) + 1

    def skip(pos: int) -> int:
        while pos < len(text) and text[pos] in " \t\r\n":
            pos += 1
        return pos

    def fail(pos: int, message: str):
        raise DataError(path, line_at(min(pos, len(text))), None, f"invalid JSON: {message}", hint)

    def expect(pos: int, char: str, what: str) -> int:
        if pos >= len(text) or text[pos] != char:
            fail(pos, f"expected {what}")
        return skip(pos + 1)

    pos = expect(skip(0), "{", "'{' at the start of the file")
    if pos < len(text) and text[pos] == "}":
        pos += 1
    else:
        while True:
            if pos >= len(text) or text[pos] != '"':
                fail(pos, "expected a quoted key")
            key_pos = pos
            try:
                key, pos = decoder.raw_decode(text, pos)
                pos = expect(skip(pos), ":", "':' after the key")
                value, pos = decoder.raw_decode(text, pos)
            except json.JSONDecodeError as e:
                fail(e.pos, e.msg)
            except RecursionError:
                fail(pos, "arrays or objects nested too deeply")
            yield line_at(key_pos), key, value
            pos = skip(pos)
            if pos < len(text) and text[pos] == ",":
                pos = skip(pos + 1)
            elif pos < len(text) and text[pos] == "}":
                pos += 1
                break
            else:
                at_end = pos >= len(text)
                fail(pos, "the object is not closed with '}'" if at_end else "expected ',' or '}' after a member")
    if skip(pos) < len(text):
        fail(skip(pos), "extra data after the closing '}'")


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


def _subject_from_filename(path: Path) -> str:
    """``anatomy_test.csv`` -> ``anatomy``; ``anatomy.csv`` -> ``anatomy``."""
    return _SPLIT_SUFFIX.sub("", path.stem)


def _no_items(path, what: str = "no questions") -> DataError:
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
        for line, pmid, record in _iter_json_object(path):
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
        if not _int_field(cop):
            raise DataError(path, line, "cop", f"must be an integer, got {json_type(cop)}", "1..4 (raw release) or 0..3")
        if not 0 <= cop <= 4:
            hint = "1..4 for the raw release (1 = opa), 0..3 for the Hugging Face copy"
            raise DataError(path, line, "cop", f"{cop} is out of range", hint)
        rows.append((line, record, question, options, cop))
    if not rows:
        raise _no_items(path)
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
        raise _no_items(path, "no questions" + (" with an answer among A-D" if four_options else ""))
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
        return [(p, _subject_from_filename(p))]
    if not p.is_dir():
        require_file(path)  # raises "file not found"
    found: dict[str, list[Path]] = {}
    for f in sorted(p.glob("*.csv")):
        subject = _subject_from_filename(f)
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


def _mmlu_file(path: Path, subject: str) -> list[MCItem]:
    items = []
    for n, (line, row) in enumerate(_iter_csv(path), 1):
        if len(row) != 6:
            raise DataError(path, line, None, f"expected 6 columns (question, A, B, C, D, answer), got {len(row)}",
                            "check the quoting: a field with a comma or a line break must be in double quotes")
        if not row[0].strip():
            raise DataError(path, line, "question", "is empty", "fill in the question or drop the row")
        answer = _answer_letter(path, line, row[5], "answer", n == 1)
        items.append(MCItem(
            id=f"{subject}/{n}", question=row[0], choices=row[1:5], choice_labels=list("ABCD"), answer=answer,
            subject=subject, source=_source(path, line),
        ))
    if not items:
        raise _no_items(path)
    return items


def load_mmlu(path, setting: str = "reasoning_required") -> list[MCItem]:
    """MMLU CSVs without a header (question, A, B, C, D, answer); a folder loads the medical subjects only."""
    items = []
    for f, subject in _csv_files(path, MMLU_MEDICAL, "MMLU", "{}_test.csv"):
        items.extend(_mmlu_file(f, subject))
    return items


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
        if not cells["Question"].strip():
            raise DataError(path, line, "Question", "is empty", "fill in the question or drop the row")
        answer = _answer_letter(path, line, cells["Answer"], "Answer", False)
        index = cells.get("", "").strip() or str(len(items))
        items.append(MCItem(
            id=f"{subject}/{index}", question=cells["Question"], choices=[cells[k] for k in "ABCD"],
            choice_labels=list("ABCD"), answer=answer, subject=subject, source=_source(path, line),
        ))
    if not items:
        raise _no_items(path)
    return items


def load_cmmlu(path, setting: str = "reasoning_required") -> list[MCItem]:
    """CMMLU CSVs with header ``,Question,A,B,C,D,Answer``; a folder loads the medicine-related subjects only."""
    items = []
    for f, subject in _csv_files(path, CMMLU_MEDICAL, "CMMLU", "{}.csv"):
        items.extend(_cmmlu_file(f, subject))
    return items


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
        if _int_field(answer):
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


# --------------------------------------------------------------------------- prompts (lm-evaluation-harness)


def _lettered(item: MCItem) -> str:
    return "".join(f"{label}. {text}\n" for label, text in zip(item.choice_labels, item.choices))


def _text_pubmedqa(item: MCItem) -> str:
    return f"Abstract: {item.context}\nQuestion: {item.question}\nAnswer:"


def _text_medmcqa(item: MCItem) -> str:
    return f"Question: {item.question}\nChoices:\n{_lettered(item)}Answer:"


def _text_medqa(item: MCItem) -> str:
    return f"Question: {item.question}\n{_lettered(item)}Answer:"


def _text_mmlu(item: MCItem) -> str:
    return f"{item.question.strip()}\n{_lettered(item)}Answer:"


def _text_cmmlu(item: MCItem) -> str:
    return f"{item.question.strip()}\n{_lettered(item)}答案："


def _text_mcq(item: MCItem) -> str:
    context = f"Context: {item.context}\n" if item.context else ""
    return f"{context}Question: {item.question}\nChoices:\n{_lettered(item)}Answer:"


def _text_mcq_cloze(item: MCItem) -> str:
    context = f"Context: {item.context}\n" if item.context else ""
    return f"{context}Question: {item.question}\nAnswer:"


def _description_mmlu(item: MCItem) -> str:
    return f"The following are multiple choice questions (with answers) about {item.subject.replace('_', ' ')}.\n\n"


def _description_cmmlu(item: MCItem) -> str:
    name = CMMLU_SUBJECTS_ZH.get(item.subject, item.subject)
    return f"以下是关于{name}的单项选择题，请直接给出正确答案的选项。\n\n"


def _no_description(item: MCItem) -> str:
    return ""


@dataclass(frozen=True)
class Task:
    """A benchmark: its loader, where its files usually are, and its harness prompt."""

    name: str
    summary: str
    loader: Callable[..., list[MCItem]]
    text: Callable[[MCItem], str]  # the harness's doc_to_text
    description: Callable[[MCItem], str] = _no_description  # put once before any few-shot examples
    harness: str = ""  # the lm-evaluation-harness task whose prompt this matches
    folder: str = ""  # DIR/<folder> for find_task_file
    files: tuple[str, ...] = ()  # conventional file names (or folders), in order of preference
    glob: str = ""  # fallback: the only file matching this in DIR/<folder>
    settings: tuple[str, ...] = ("reasoning_required",)
    is_folder: bool = False  # the task reads a folder of per-subject files
    subjects: tuple[str, ...] = field(default=())
    cloze: bool = False  # score each option's text (not its letter) after a prompt that lists no options

    def prompt(self, item: MCItem) -> str:
        """The zero-shot context the choices are scored after (no trailing space)."""
        return self.description(item) + self.text(item)

    def continuations(self, item: MCItem) -> list[str]:
        """Each choice's continuation, with the harness's target delimiter (one space): [" A", " B", ...]; for
        a cloze task the option texts themselves: [" Metformin", " Insulin", ...]."""
        if self.cloze:
            return [" " + text for text in item.choices]
        return [" " + label for label in item.choice_labels]

    def few_shot_prompt(self, shots: list[MCItem], item: MCItem) -> str:
        """Solved examples (prompt + gold continuation) joined by blank lines, then the item; description once on top."""
        solved = "".join(self.text(s) + self.continuations(s)[s.answer] + "\n\n" for s in shots)
        return self.description(item) + solved + self.text(item)


TASKS: dict[str, Task] = {
    task.name: task
    for task in (
        Task("pubmedqa", "PubMedQA PQA-L, yes/no/maybe from an abstract", load_pubmedqa, _text_pubmedqa,
             harness="pubmedqa", folder="pubmedqa", files=("ori_pqal.json", "test_set.json"), glob="*.json",
             settings=PUBMEDQA_SETTINGS),
        Task("medmcqa", "MedMCQA, 4 options (Indian medical entrance exams)", load_medmcqa, _text_medmcqa,
             harness="medmcqa", folder="medmcqa", files=("dev.json", "dev.jsonl", "validation.jsonl", "validation.json"),
             glob="*.json*"),
        Task("medqa", "MedQA-USMLE, 4 or 5 options as given", load_medqa, _text_medqa,
             folder="medqa", files=("test.jsonl", "questions/US/test.jsonl", "US/test.jsonl"), glob="*.jsonl"),
        Task("medqa_4options", "MedQA-USMLE, options A-D (questions answered E dropped)", load_medqa_4options, _text_medqa,
             harness="medqa_4options", folder="medqa",
             files=("4_options/phrases_no_exclude_test.jsonl", "questions/US/4_options/phrases_no_exclude_test.jsonl",
                    "US/4_options/phrases_no_exclude_test.jsonl", "test.jsonl", "questions/US/test.jsonl", "US/test.jsonl"),
             glob="*.jsonl"),
        Task("mmlu_medical", "MMLU medical subjects, 4 options", load_mmlu, _text_mmlu, _description_mmlu,
             harness="mmlu_<subject>", folder="mmlu", files=("test", "data/test", "."), is_folder=True,
             subjects=MMLU_MEDICAL),
        Task("cmmlu", "CMMLU (Chinese) medicine-related subjects, 4 options", load_cmmlu, _text_cmmlu, _description_cmmlu,
             harness="cmmlu_<subject>", folder="cmmlu", files=("test", "data/test", "."), is_folder=True,
             subjects=CMMLU_MEDICAL),
        Task("mcq", "medtune's generic multiple-choice JSONL", load_mcq, _text_mcq,
             folder="mcq", files=("test.jsonl",), glob="*.jsonl"),
        Task("mcq_cloze", "the same file scored as a cloze: the option texts after the question", load_mcq,
             _text_mcq_cloze, folder="mcq", files=("test.jsonl",), glob="*.jsonl", cloze=True),
    )
}


def get_task(name) -> Task:
    """The Task for a name (a Task is passed through); MedtuneError listing the tasks if unknown."""
    if isinstance(name, Task):
        return name
    if name not in TASKS:
        raise MedtuneError(f"unknown task {name!r}", hint="tasks: " + ", ".join(TASKS))
    return TASKS[name]


def prompt(task, item: MCItem) -> str:
    """Zero-shot prompt of ``item`` for a task name (see :meth:`Task.prompt`)."""
    return get_task(task).prompt(item)


def continuations(task, item: MCItem) -> list[str]:
    """Choice continuations of ``item`` for a task name (see :meth:`Task.continuations`)."""
    return get_task(task).continuations(item)


def few_shot_prompt(task, shots: list[MCItem], item: MCItem) -> str:
    """k-shot prompt as lm-evaluation-harness builds it (see :meth:`Task.few_shot_prompt`)."""
    return get_task(task).few_shot_prompt(shots, item)


# --------------------------------------------------------------------------- loading


def _check_unique_ids(items: list[MCItem]) -> None:
    seen: dict[str, str] = {}
    for item in items:
        if item.id in seen:
            path, _, line = item.source.rpartition(":")
            raise DataError(path, int(line), "id", f"duplicate id {item.id!r} (first at {seen[item.id]})",
                            "ids must be unique so results can be matched to questions")
        seen[item.id] = item.source


def load_task(name: str, path, *, setting: str = "reasoning_required", limit: int = 0, seed: int = 0) -> list[MCItem]:
    """All items of a benchmark file (or folder), checked; with ``limit`` > 0 a seeded random sample in file order."""
    task = get_task(name)
    if setting not in task.settings:
        raise MedtuneError(f"task {task.name} has no setting {setting!r}", hint="settings: " + ", ".join(task.settings))
    if not _int_field(limit) or limit < 0:
        raise MedtuneError(f"limit must be a whole number >= 0, got {limit!r}", hint="0 means all items")
    items = task.loader(path, setting)
    if not items:
        raise _no_items(path)
    _check_unique_ids(items)
    if 0 < limit < len(items):
        keep = sorted(random.Random(seed).sample(range(len(items)), limit))
        items = [items[i] for i in keep]
    return items


def find_task_file(name: str, data_dir) -> Path:
    """The conventional file (a folder for MMLU/CMMLU) of a task under ``data_dir``; MedtuneError listing what was tried."""
    task = get_task(name)
    root = Path(data_dir)
    if not root.is_dir():
        hint = "pass the folder holding pubmedqa/, medmcqa/, ..."
        raise MedtuneError("data folder not found", where=str(data_dir), hint=hint)
    base = root / task.folder
    tried = [base / f for f in task.files]
    for candidate in tried:
        if task.is_folder:
            if candidate.is_dir() and any(_subject_from_filename(f) in task.subjects for f in candidate.glob("*.csv")):
                return candidate
        elif candidate.is_file():
            return candidate
    looked = [str(c) for c in tried]
    if task.glob:
        matches = sorted(f for f in base.glob(task.glob) if f.is_file()) if base.is_dir() else []
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            names = ", ".join(m.name for m in matches)
            raise MedtuneError(f"several candidate {task.name} files in {base}: {names}",
                               hint="pass the file itself instead of a data folder")
        looked.append(str(base / task.glob))
    what = "a folder with " + ", ".join(f"{s}*.csv" for s in task.subjects[:3]) + ", ..." if task.is_folder else "a file"
    raise MedtuneError(f"no {task.name} data found under {root}", hint=f"looked for {what} at: " + "; ".join(looked))


# --------------------------------------------------------------------------- SFT conversion


def _is_chinese(text: str) -> bool:
    return bool(CJK.search(text))


def _sft_dialogue(task: Task, item: MCItem) -> list[dict]:
    zh = task.name == "cmmlu" or _is_chinese(item.question)
    gold = item.choice_labels[item.answer]
    if task.name == "pubmedqa":
        user = f"{item.context.strip()}\n\nQuestion: {item.question.strip()}\nAnswer yes, no or maybe."
        answer = f"Answer: {gold}"
    else:
        options = "\n".join(f"{label}. {text.strip()}" for label, text in zip(item.choice_labels, item.choices))
        context = f"{item.context.strip()}\n\n" if item.context.strip() else ""
        user = f"{context}{item.question.strip()}\n\n{options}"
        answer = f"{'答案：' if zh else 'Answer: '}{gold}. {item.choices[item.answer].strip()}".rstrip()
    if item.explanation.strip():
        answer += "\n\n" + item.explanation.strip()
    return [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]


def to_sft_records(name: str, items: list[MCItem]) -> list[dict]:
    """Benchmark items as SFT dialogues: ``{"messages": [user, assistant], "id", "task"}`` (messages format).

    User: (context,) question, lettered options (PubMedQA: abstract, question, "Answer yes, no or
    maybe."). Assistant: the answer line ("Answer: B. text", "答案：B. text" for Chinese) then the
    explanation or long answer where there is one.
    """
    task = get_task(name)
    return [{"messages": _sft_dialogue(task, item), "id": item.id, "task": task.name} for item in items]
