"""Benchmark tasks for ``medtune eval``: strict loaders, lm-evaluation-harness prompts, SFT conversion.

Every task reads its public release format into the same :class:`MCItem` (a multiple-choice question
with a gold index) and knows the harness's prompt for it, so a log-likelihood scorer can rank each
choice's continuation after :func:`Task.prompt`. Formats, prompts and rules: docs/eval-tasks.md.

Loaders are strict (benchmarks.py: each release format into MCItem): a problem in a file is a
:class:`~medtune.errors.DataError` naming the file, the line and the field. ``limit`` takes a seeded random
sample, kept in file order.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from medtune.data.formats import CJK
from medtune.errors import DataError, MedtuneError
from medtune.eval.benchmarks import (CMMLU_MEDICAL, MMLU_MEDICAL, PUBMEDQA_LABELS, PUBMEDQA_SETTINGS,
                                     MCItem, is_whole_number, lettered_options, load_cmmlu, load_mcq, load_medmcqa,
                                     load_medqa, load_medqa_4options, load_mmlu, load_pubmedqa, medmcqa_cop_base,
                                     no_items, subject_from_filename)

# named here too, for the callers that know benchmarks as tasks (stages/grpo.py, eval/runner.py, the tests)
__all__ = ["MCItem", "PUBMEDQA_LABELS", "PUBMEDQA_SETTINGS", "TASKS", "Task", "continuations", "few_shot_prompt",
           "find_task_file", "get_task", "lettered_options", "load_task", "medmcqa_cop_base", "prompt",
           "to_prompt_completion_records", "to_sft_records"]


# --------------------------------------------------------------------------- prompts (lm-evaluation-harness)


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
    if not is_whole_number(limit) or limit < 0:
        raise MedtuneError(f"limit must be a whole number >= 0, got {limit!r}", hint="0 means all items")
    items = task.loader(path, setting)
    if not items:
        raise no_items(path)
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
            if candidate.is_dir() and any(subject_from_filename(f) in task.subjects for f in candidate.glob("*.csv")):
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


def to_prompt_completion_records(name: str, items: list[MCItem], *, long_answer: bool = False) -> list[dict]:
    """Benchmark items as prompt-completion records in the harness's own format: ``{"prompt", "completion",
    "id", "task"}``, the prompt exactly what the scorer puts before the choices (:meth:`Task.prompt`, e.g.
    "Abstract: ...\nQuestion: ...\nAnswer:"), the completion the gold choice's continuation (" yes", " B").

    ``long_answer``: the explanation (PubMedQA's long answer, MedMCQA's ``exp``) follows on the next line, so
    the model is trained on the conclusion as well; the scored continuation still comes first.
    """
    task = get_task(name)
    records = []
    for item in items:
        completion = task.continuations(item)[item.answer]
        if long_answer and item.explanation.strip():
            completion += "\n" + item.explanation.strip()
        records.append({"prompt": task.prompt(item), "completion": completion, "id": item.id, "task": task.name})
    return records
