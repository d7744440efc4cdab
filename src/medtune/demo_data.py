"""Demo data for medtune, generated from a small hand-written table of conditions.

The table (``medtune/assets/demo/conditions.json``) holds about two dozen common
conditions, each with English and Simplified Chinese fields: name, symptoms,
tests, treatments, red flags and one line of advice. Everything here is built
from that table, so a model trained on it can actually learn the mapping.

What a caller gets (all deterministic for a given seed, stdlib only):

* :func:`load_conditions` - the table itself, a list of dicts.
* :func:`sft_examples` - a few hundred chat dialogues ``{"messages": [...]}``.
* :func:`heldout_questions` - six fixed questions for a before/after demo.
* :func:`exam_questions` - multiple-choice questions for evaluation.
* :func:`pt_documents` - short encyclopedia-style paragraphs for pretraining.
* :func:`preference_pairs` - ``{"prompt", "chosen", "rejected"}`` for DPO/RM.
* :func:`health_prompts` - the held-out questions plus a few general ones, for the demo's health check.

Run ``python -m medtune.demo_data`` to (re)write the shipped files
``sft.jsonl``, ``exam.jsonl``, ``pt.txt``, ``preference.jsonl`` and ``health_prompts.jsonl`` next to the
table. The data is a toy for demonstrating the pipeline, not medical advice.
"""

from __future__ import annotations

import argparse
import importlib.resources
import json
import os
import random
import tempfile
from pathlib import Path

LANGS = ("en", "zh")
EXAM_TYPES = ("diagnosis", "test", "treatment")
SFT_FILE, EXAM_FILE, PT_FILE, PREFERENCE_FILE = "sft.jsonl", "exam.jsonl", "pt.txt", "preference.jsonl"
HEALTH_FILE = "health_prompts.jsonl"

# --------------------------------------------------------------------------- #
# The table
# --------------------------------------------------------------------------- #


def load_conditions() -> list[dict]:
    """Return the condition table: a list of ``{"id", "en", "zh", ...}`` dicts.

    Each language block has ``name``, ``symptoms``, ``tests``, ``treatments``,
    ``red_flags`` (lists of short strings) and ``advice`` (one sentence). Extra
    keys per condition: ``urgency`` (routine / urgent / emergency), ``related``
    (ids too similar to be exam distractors), optional ``vignette`` (False when
    the condition is usually silent) and optional ``exam_types``.
    """
    resource = importlib.resources.files("medtune") / "assets" / "demo" / "conditions.json"
    return json.loads(resource.read_text(encoding="utf-8"))["conditions"]


def _related(conditions: list[dict]) -> dict[str, set[str]]:
    """The symmetric closure of each condition's ``related`` list."""
    related = {c["id"]: set(c.get("related", [])) for c in conditions}
    for cid, others in list(related.items()):
        for other in others:
            related[other].add(cid)
    return related


# --------------------------------------------------------------------------- #
# Wording helpers
# --------------------------------------------------------------------------- #


def _join(items: list[str], lang: str, conj: str = "and") -> str:
    """Join list items as prose: "a, b and c" / "a、b、c" (semicolons where items are crowded)."""
    if lang == "zh":
        if any("、" in i or "，" in i for i in items):
            return "；".join(items)
        if conj == "or" and len(items) > 1:
            return "、".join(items[:-1]) + "或" + items[-1]
        return "、".join(items)
    if len(items) == 1:
        return items[0]
    # Items that contain commas or the conjunction themselves need stronger separators.
    crowded = any("," in i or f" {conj} " in i for i in items)
    if len(items) == 2:
        return f"{items[0]}{',' if crowded else ''} {conj} {items[1]}"
    if crowded:
        return "; ".join(items[:-1]) + f"; {conj} {items[-1]}"
    return ", ".join(items[:-1]) + f" {conj} {items[-1]}"


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _fill(template: str, info: dict, **extra: str) -> str:
    """Format a template with ``{name}`` / ``{Name}`` plus any extra fields."""
    return template.format(name=info["name"], Name=_cap(info["name"]), **extra)


SYSTEM_PROMPTS = {
    "en": [
        "You are a careful medical assistant. Give accurate, concise information and recommend seeing a clinician when appropriate.",
        "You are a helpful health information assistant. Answer briefly and put patient safety first.",
        "You are a medical assistant for the general public. Be clear, cautious and concise.",
    ],
    "zh": [
        "你是一名谨慎的医疗助手。请给出准确、简洁的信息，并在适当时建议就医。",
        "你是一名健康咨询助手，回答要简明，并以患者安全为先。",
        "你是面向大众的医疗助手，请清晰、审慎、简洁地回答。",
    ],
}

# Short closing notes; which set is used depends on the condition's urgency.
NOTES = {
    "en": {
        "routine": [
            "Please check with a clinician about your own situation.",
            "A doctor can confirm what applies to you.",
            "Your own clinician can advise on what suits you.",
            "Please discuss this with your doctor or nurse.",
        ],
        "urgent": [
            "Please get seen by a doctor today.",
            "This needs same-day medical assessment.",
            "Please seek medical care promptly.",
        ],
        "emergency": [
            "Call emergency services straight away.",
            "Call an ambulance now; do not wait to see if it passes.",
        ],
        "red_flags": [
            "If in doubt, contact a clinician or emergency services.",
            "When unsure, it is safer to get checked quickly.",
        ],
    },
    "zh": {
        "routine": [
            "具体情况请咨询医生。",
            "建议就医，由医生根据您的情况判断。",
            "请向医生或护士咨询适合您的方案。",
            "诊断和治疗请以医生意见为准。",
        ],
        "urgent": ["请当天就医。", "建议今天就去看医生。", "请尽快到医院就诊。"],
        "emergency": ["请立即拨打急救电话（如120）。", "请马上呼叫急救，不要等待症状自行消失。"],
        "red_flags": ["如有疑虑，请及时联系医生或急救服务。", "拿不准时，宁可尽早就医。"],
    },
}

# User-question templates, several per question type. "{s}" is a symptom list.
QUESTIONS = {
    "en": {
        "symptoms": [
            "What are the symptoms of {name}?",
            "What symptoms does {name} usually cause?",
            "How would I recognise {name}?",
            "What are the typical signs of {name}?",
        ],
        "tests": [
            "How is {name} diagnosed?",
            "Which tests are used to diagnose {name}?",
            "What investigations confirm {name}?",
            "What tests would a doctor do for suspected {name}?",
        ],
        "treatments": [
            "How is {name} treated?",
            "What are the treatment options for {name}?",
            "What is the usual treatment for {name}?",
            "How do doctors manage {name}?",
        ],
        "red_flags": [
            "When should someone with {name} seek urgent care?",
            "What are the warning signs in {name} that need urgent help?",
            "With {name}, when is it an emergency?",
        ],
        "advice": [
            "What can I do myself to manage {name}?",
            "Any self-care tips for {name}?",
            "I've been diagnosed with {name}. What should I keep in mind day to day?",
        ],
        "advice_emergency": [
            "What should be done straight away if {name} is suspected?",
            "What is the first thing to do if {name} is suspected?",
        ],
        "overview": [
            "Can you give me a quick overview of {name}?",
            "Tell me briefly about {name}: symptoms, tests and treatment.",
            "What should I know about {name}?",
        ],
        "vignette": [
            "I've noticed {s}. What could this be?",
            "For the past few days I've had {s}. What might be causing it?",
            "What could be going on if someone has {s}?",
            "My {relative} has {s}. What might this be?",
        ],
    },
    "zh": {
        "symptoms": [
            "{name}有哪些症状？",
            "{name}的常见表现是什么？",
            "得了{name}会有什么感觉？",
            "请问{name}的典型症状有哪些？",
        ],
        "tests": [
            "{name}怎么诊断？",
            "诊断{name}需要做哪些检查？",
            "怀疑{name}时医生会安排什么检查？",
            "{name}要做什么检查才能确诊？",
        ],
        "treatments": [
            "{name}怎么治疗？",
            "{name}有哪些治疗方法？",
            "得了{name}一般怎么处理？",
            "{name}的主要治疗是什么？",
        ],
        "red_flags": [
            "{name}患者什么情况下需要紧急就医？",
            "{name}有哪些危险信号？",
            "得了{name}，出现什么情况要马上去医院？",
        ],
        "advice": [
            "{name}患者平时要注意什么？",
            "得了{name}，自己能做些什么？",
            "关于{name}的日常管理有什么建议？",
        ],
        "advice_emergency": [
            "怀疑有人发生{name}时应该怎么做？",
            "如果怀疑是{name}，第一步该做什么？",
        ],
        "overview": [
            "简单介绍一下{name}。",
            "{name}是什么病？怎么处理？",
            "请概括说明{name}的症状、检查和治疗。",
        ],
        "vignette": [
            "我最近出现了{s}，可能是什么问题？",
            "我有{s}，这会是什么病？",
            "家里{relative}最近{s}，可能是什么原因？",
            "{s}，这可能是什么情况？",
        ],
    },
}

RELATIVES = {"en": ["mother", "father", "partner", "brother"], "zh": ["老人", "孩子他爸", "妈妈", "爱人"]}

# Short follow-up questions for multi-turn dialogues ("it" = the condition just discussed).
FOLLOW_UPS = {
    "en": {
        "tests": ["How would a doctor confirm it?", "Which tests are used for that?"],
        "treatments": ["And how is it treated?", "What treatment is usually given?"],
        "red_flags": ["When should I get urgent help?", "What warning signs should I watch for?"],
        "advice": ["Is there anything I can do myself?", "Any tips for day-to-day management?"],
    },
    "zh": {
        "tests": ["医生怎么确诊？", "需要做哪些检查？"],
        "treatments": ["那应该怎么治疗？", "一般用什么治疗？"],
        "red_flags": ["什么情况下要紧急就医？", "需要注意哪些危险信号？"],
        "advice": ["我自己能做些什么？", "日常生活中要注意什么？"],
    },
}

# Answer templates. {list} is the relevant table list; {first}/{rest} split it.
ANSWERS = {
    "en": {
        "symptoms": [
            "Common symptoms of {name} include: {list}.",
            "Typical symptoms of {name}: {list}.",
            "{Name} usually shows up as: {list}.",
        ],
        "tests": [
            "{Name} is usually diagnosed with {list}.",
            "Useful investigations for {name}: {list}.",
            "The key test for {name} is {first}; other useful checks are {rest}.",
        ],
        "treatments": [
            "{Name} is usually managed with {list}.",
            "Treatment options for {name} include {list}.",
            "The main approach to {name} is {first}, along with {rest}.",
        ],
        "red_flags": [
            "Someone with {name} should seek urgent care for any of these: {list}.",
            "Warning signs in {name} that need urgent help: {list}.",
            "Get urgent medical help with {name} if you notice: {list}.",
        ],
        "advice": ["{advice}", "With {name}, {advice_lc}"],
        "overview": [
            "{Name} in brief. Typical symptoms: {sym}. Key test: {test}. Main treatments: {treat}.",
            "In short, {name} causes {sym}; it is confirmed with {test} and treated with {treat}.",
        ],
        "vignette_routine": [
            "These symptoms can fit {name}, although other causes are possible. The key check is usually: {test}.",
            "One possibility is {name}, but other conditions can look similar. A useful first step is: {test}.",
        ],
        "vignette_urgent": [
            "These symptoms could point to {name}, which needs prompt medical assessment.",
            "This could be {name}, which should be checked by a doctor without delay.",
        ],
        "vignette_emergency": [
            "These can be warning signs of {name}, a medical emergency.",
            "This could be {name}, which is an emergency where every minute counts.",
        ],
    },
    "zh": {
        "symptoms": [
            "{name}的常见症状包括：{list}。",
            "{name}的典型表现有：{list}。",
            "{name}主要表现为：{list}。",
        ],
        "tests": [
            "{name}通常通过{list}来诊断。",
            "诊断{name}常用的检查有：{list}。",
            "确诊{name}最关键的是{first}，此外还可做{rest}。",
        ],
        "treatments": [
            "{name}的治疗包括：{list}。",
            "{name}一般采用{list}等方法处理。",
            "治疗{name}主要依靠{first}，同时配合{rest}。",
        ],
        "red_flags": [
            "{name}患者如出现以下情况应紧急就医：{list}。",
            "{name}的危险信号包括：{list}。",
            "得了{name}，一旦出现{list}，要马上寻求紧急医疗帮助。",
        ],
        "advice": ["{advice}", "对于{name}，{advice}"],
        "overview": [
            "{name}简介。典型症状：{sym}。关键检查：{test}。主要治疗：{treat}。",
            "简单来说，{name}常表现为{sym}，通过{test}确诊，治疗包括{treat}。",
        ],
        "vignette_routine": [
            "这些症状可能与{name}有关，但也可能是其他原因。关键检查通常是：{test}。",
            "一种可能是{name}，但其他疾病也可能有类似表现。常用的第一步检查是：{test}。",
        ],
        "vignette_urgent": [
            "这些症状可能提示{name}，需要尽快就医评估。",
            "这可能是{name}，应及时请医生检查。",
        ],
        "vignette_emergency": [
            "这些可能是{name}的危险信号，属于急症。",
            "这可能是{name}，属于急症，每一分钟都很重要。",
        ],
    },
}

# Answer types that give advice and therefore end with a clinician note.
ADVICE_TYPES = {"treatments", "red_flags", "advice", "overview", "vignette"}


# --------------------------------------------------------------------------- #
# Answers built from the table
# --------------------------------------------------------------------------- #


def _note(rng: random.Random, cond: dict, lang: str, kind: str) -> str:
    """A closing note for an advice-giving answer of type ``kind``."""
    urgency = cond["urgency"]
    if kind == "red_flags" and urgency == "routine":
        return rng.choice(NOTES[lang]["red_flags"])
    if kind == "advice" and urgency == "urgent":
        urgency = "routine"  # day-to-day advice is for people already being treated
    return rng.choice(NOTES[lang][urgency])


def _answer(rng: random.Random, cond: dict, lang: str, kind: str) -> str:
    """The assistant's answer about ``cond`` for question type ``kind``."""
    info = cond[lang]
    space = " " if lang == "en" else ""
    if kind in ("symptoms", "tests", "treatments", "red_flags"):
        items = info[kind]
        conj = "or" if kind == "red_flags" else "and"
        text = _fill(
            rng.choice(ANSWERS[lang][kind]), info,
            list=_join(items, lang, conj), first=items[0], rest=_join(items[1:], lang),
        )
    elif kind == "advice":
        advice = info["advice"]
        text = _fill(rng.choice(ANSWERS[lang]["advice"]), info, advice=advice,
                     advice_lc=advice[:1].lower() + advice[1:])
    elif kind == "overview":
        text = _fill(
            rng.choice(ANSWERS[lang]["overview"]), info,
            sym=_join(info["symptoms"][:3], lang), test=info["tests"][0], treat=_join(info["treatments"][:2], lang),
        )
    elif kind == "vignette":
        text = _fill(rng.choice(ANSWERS[lang]["vignette_" + cond["urgency"]]), info, test=info["tests"][0])
    else:
        raise ValueError(f"unknown answer type {kind!r}")
    # Advice-giving answers (and anything about an emergency) end with a short clinician note.
    if kind in ADVICE_TYPES or cond["urgency"] == "emergency":
        text += space + _note(rng, cond, lang, kind)
    return text


def _question(rng: random.Random, cond: dict, lang: str, kind: str, symptoms: list[str] | None = None) -> str:
    """A user question about ``cond`` of type ``kind`` (vignettes name symptoms, not the condition)."""
    templates = QUESTIONS[lang][kind]
    if kind == "advice" and cond["urgency"] != "routine":
        # Acute conditions: no "I've been diagnosed ... day to day" phrasing.
        templates = QUESTIONS[lang]["advice_emergency"] if cond["urgency"] == "emergency" else templates[:2]
    template = rng.choice(templates)
    if kind == "vignette":
        return template.format(s=_join(symptoms, lang), relative=rng.choice(RELATIVES[lang]))
    return _fill(template, cond[lang])


def _vignette_symptoms(rng: random.Random, symptoms: list[str], avoid: list[str] | None = None) -> list[str]:
    """Pick 2-3 symptoms (kept in table order), different from ``avoid``."""
    while True:
        k = rng.choice([2, 3])
        picked = [symptoms[i] for i in sorted(rng.sample(range(len(symptoms)), k))]
        if picked != avoid:
            return picked


# --------------------------------------------------------------------------- #
# SFT dialogues
# --------------------------------------------------------------------------- #

SINGLE_TURN_TYPES = ("symptoms", "tests", "treatments", "red_flags", "advice", "overview")
MULTI_TURN_SHARE = 0.15
SYSTEM_PROMPT_SHARE = 0.3


def sft_examples(seed: int = 0) -> list[dict]:
    """Return chat dialogues ``{"messages": [{"role", "content"}, ...]}``, shuffled by ``seed``.

    Per condition and language: one question of each type in
    ``SINGLE_TURN_TYPES`` plus two patient-style vignettes (none for silent
    conditions), i.e. about 400 dialogues, half English and half Chinese.
    About 15% get a follow-up user turn and answer; about 30% start with a
    system prompt. Every dialogue ends with an assistant turn.
    """
    rng = random.Random(seed)
    dialogues = []  # (condition, lang, first question type, messages)
    for cond in load_conditions():
        for lang in LANGS:
            for kind in SINGLE_TURN_TYPES:
                messages = [
                    {"role": "user", "content": _question(rng, cond, lang, kind)},
                    {"role": "assistant", "content": _answer(rng, cond, lang, kind)},
                ]
                dialogues.append((cond, lang, kind, messages))
            if cond.get("vignette", True):
                previous = None
                for _ in range(2):
                    symptoms = _vignette_symptoms(rng, cond[lang]["symptoms"], previous)
                    previous = symptoms
                    messages = [
                        {"role": "user", "content": _question(rng, cond, lang, "vignette", symptoms)},
                        {"role": "assistant", "content": _answer(rng, cond, lang, "vignette")},
                    ]
                    dialogues.append((cond, lang, "vignette", messages))

    # Turn a fixed share into two-turn conversations with a follow-up question.
    for index in sorted(rng.sample(range(len(dialogues)), round(MULTI_TURN_SHARE * len(dialogues)))):
        cond, lang, kind, messages = dialogues[index]
        follow = rng.choice([k for k in FOLLOW_UPS[lang] if k != kind])
        messages.append({"role": "user", "content": rng.choice(FOLLOW_UPS[lang][follow])})
        messages.append({"role": "assistant", "content": _answer(rng, cond, lang, follow)})

    examples = []
    for cond, lang, kind, messages in dialogues:
        if rng.random() < SYSTEM_PROMPT_SHARE:
            messages = [{"role": "system", "content": rng.choice(SYSTEM_PROMPTS[lang])}] + messages
        examples.append({"messages": messages})
    rng.shuffle(examples)
    return examples


# --------------------------------------------------------------------------- #
# Held-out demo questions
# --------------------------------------------------------------------------- #


def heldout_questions() -> list[dict]:
    """Return six fixed questions ``{"lang", "question", "condition"}`` (3 EN, 3 ZH).

    They are about conditions in the table but phrased unlike any training
    template, for printing a model's answers before and after fine-tuning.
    """
    return [
        {"lang": "en", "condition": "gerd",
         "question": "My dad gets a burning feeling behind his breastbone most evenings after dinner, "
                     "worse when he lies down. What usually helps with this?"},
        {"lang": "en", "condition": "deep_vein_thrombosis",
         "question": "After a long flight my left calf is swollen and sore. How do doctors check whether it is a clot?"},
        {"lang": "en", "condition": "hyperthyroidism",
         "question": "My sister is losing weight although she eats a lot, feels hot all the time and her heart races. "
                     "Which condition should her doctor look for?"},
        {"lang": "zh", "condition": "atopic_eczema",
         "question": "孩子胳膊肘和膝盖窝里的皮肤又干又痒，平时应该怎么护理？"},
        {"lang": "zh", "condition": "gout",
         "question": "昨晚大脚趾突然又红又肿、疼得厉害，以后怎样才能少发作？"},
        {"lang": "zh", "condition": "stroke",
         "question": "老人吃饭时突然一边嘴角歪了、说话含糊，家属第一时间应该做什么？"},
    ]


GENERAL_PROMPTS = [
    "Give me three tips for staying focused while studying.",
    "What is the difference between weather and climate?",
    "Write a short thank-you note to a colleague who helped me move house.",
    "Explain what a spreadsheet is to someone who has never used one.",
]


def health_prompts() -> list[dict]:
    """Prompts ``{"prompt", "kind", "lang"}`` for the demo's generation-health check: the six held-out
    questions (kind ``medical``) and four general English requests (kind ``general``), so the check sees
    both the domain the demo trains and the general chat it must not break."""
    out = [{"prompt": q["question"], "kind": "medical", "lang": q["lang"]} for q in heldout_questions()]
    return out + [{"prompt": p, "kind": "general", "lang": "en"} for p in GENERAL_PROMPTS]


# --------------------------------------------------------------------------- #
# Multiple-choice exam
# --------------------------------------------------------------------------- #

EXAM_STEMS = {
    "en": {
        "diagnosis": "A patient reports {s}. What is the most likely diagnosis?",
        "test": "Which investigation is most useful for diagnosing {name}?",
        "treatment": "Which of the following is a recommended treatment for {name}?",
    },
    "zh": {
        "diagnosis": "患者出现{s}。最可能的诊断是什么？",
        "test": "诊断{name}最有用的检查是哪一项？",
        "treatment": "下列哪一项是{name}的推荐治疗？",
    },
}


def _exam_key(cond: dict, lang: str, kind: str) -> str:
    """The correct option text: the condition's name, first test or first treatment."""
    info = cond[lang]
    return {"diagnosis": info["name"], "test": info["tests"][0], "treatment": info["treatments"][0]}[kind]


def exam_questions(seed: int = 0) -> list[dict]:
    """Return multiple-choice items ``{"question", "options", "answer", "lang", "condition"}``.

    One item per condition per language (about 50). The question type
    (diagnosis from symptoms, key test, key treatment) rotates over the types
    the table allows for that condition. Distractors are the matching keys of
    other, unrelated conditions; answer letters are exactly balanced and
    shuffled by ``seed``.
    """
    rng = random.Random(seed)
    conditions = load_conditions()
    related = _related(conditions)

    plan = []  # (condition, lang, question type)
    for i, cond in enumerate(conditions):
        kinds = cond.get("exam_types", list(EXAM_TYPES))
        for j, lang in enumerate(LANGS):
            plan.append((cond, lang, kinds[(i + j) % len(kinds)]))

    letters = [("A", "B", "C", "D")[i % 4] for i in range(len(plan))]
    rng.shuffle(letters)

    items = []
    for (cond, lang, kind), letter in zip(plan, letters):
        info = cond[lang]
        correct = _exam_key(cond, lang, kind)
        own_items = set(info["symptoms"] + info["tests"] + info["treatments"]) | {info["name"]}
        pool = sorted({
            _exam_key(other, lang, kind)
            for other in conditions
            if other["id"] != cond["id"]
            and other["id"] not in related[cond["id"]]
            and kind in other.get("exam_types", EXAM_TYPES)
        } - own_items)
        options = rng.sample(pool, 3)
        options.insert("ABCD".index(letter), correct)
        stem = _fill(EXAM_STEMS[lang][kind], info, s=_join(info["symptoms"][:3], lang))
        items.append({
            "question": stem,
            "options": dict(zip("ABCD", options)),
            "answer": letter,
            "lang": lang,
            "condition": cond["id"],
        })
    rng.shuffle(items)
    return items


# --------------------------------------------------------------------------- #
# Pretraining documents
# --------------------------------------------------------------------------- #


def pt_documents(lang: str | None = None) -> list[str]:
    """Return encyclopedia-style paragraphs (no newlines): two per condition per language.

    ``lang`` is ``"en"``, ``"zh"`` or ``None`` for both. The order is fixed
    (table order, English before Chinese); there is no seed.
    """
    langs = LANGS if lang is None else (lang,)
    documents = []
    for cond in load_conditions():
        for code in langs:
            info = cond[code]
            if code == "en":
                documents.append(
                    f"{_cap(info['name'])}. Typical features of {info['name']} are: {_join(info['symptoms'], code)}. "
                    f"Diagnosis relies on {_join(info['tests'], code)}."
                )
                documents.append(
                    f"Management of {info['name']} includes {_join(info['treatments'], code)}. "
                    f"Urgent medical attention is needed for {_join(info['red_flags'], code, 'or')}. {info['advice']}"
                )
            else:
                documents.append(
                    f"{info['name']}。{info['name']}的典型表现包括：{_join(info['symptoms'], code)}。"
                    f"诊断主要依靠{_join(info['tests'], code)}。"
                )
                documents.append(
                    f"{info['name']}的治疗包括：{_join(info['treatments'], code)}。"
                    f"出现{_join(info['red_flags'], code, 'or')}时需要紧急就医。{info['advice']}"
                )
    return documents


# --------------------------------------------------------------------------- #
# Preference pairs
# --------------------------------------------------------------------------- #

UNSAFE = {
    "en": [
        "There is no need to worry with {name}; these problems usually settle on their own, so just rest at home and avoid going to hospital.",
        "Warning signs in {name} are rarely serious. Wait a few days and take extra doses of your usual medicines before seeking help.",
    ],
    "zh": [
        "{name}一般不需要担心，这些问题通常会自行缓解，在家休息即可，不必去医院。",
        "{name}的危险信号很少严重，先观察几天，把平时的药加量吃，再考虑就医。",
    ],
}


def _repetitive(cond: dict, lang: str) -> str:
    """A degenerate, looping answer to a symptoms question."""
    info = cond[lang]
    first = info["symptoms"][0]
    if lang == "en":
        sentence = f"{_cap(info['name'])} causes {first}."
        return " ".join([sentence] * 3) + f" {_cap(first)}, {first}, {first} and {first}."
    sentence = f"{info['name']}会引起{first}。"
    return sentence * 3 + "、".join([first] * 4) + "。"


def preference_pairs(seed: int = 0) -> list[dict]:
    """Return ``{"prompt": [messages], "chosen": str, "rejected": str}`` pairs, shuffled by ``seed``.

    Three per condition per language (about 150): a treatment question whose
    rejected answer gives another, unrelated condition's treatments; a symptoms
    question whose rejected answer is repetitive; and a warning-signs question
    whose rejected answer is unsafe reassurance.
    """
    rng = random.Random(seed)
    conditions = load_conditions()
    related = _related(conditions)
    pairs = []
    for cond in conditions:
        for lang in LANGS:
            # 1. Wrong content: same template, another condition's treatments.
            other = rng.choice([c for c in conditions if c["id"] != cond["id"] and c["id"] not in related[cond["id"]]])
            wrong = dict(cond, **{lang: dict(cond[lang], treatments=other[lang]["treatments"])})
            state = rng.getstate()
            chosen = _answer(rng, cond, lang, "treatments")
            rng.setstate(state)  # same template and note, only the content differs
            rejected = _answer(rng, wrong, lang, "treatments")
            pairs.append((cond, lang, "treatments", chosen, rejected))
            # 2. Degenerate repetition.
            pairs.append((cond, lang, "symptoms", _answer(rng, cond, lang, "symptoms"), _repetitive(cond, lang)))
            # 3. Unsafe reassurance about warning signs.
            unsafe = _fill(rng.choice(UNSAFE[lang]), cond[lang])
            pairs.append((cond, lang, "red_flags", _answer(rng, cond, lang, "red_flags"), unsafe))

    records = []
    for cond, lang, kind, chosen, rejected in pairs:
        prompt = [{"role": "user", "content": _question(rng, cond, lang, kind)}]
        if rng.random() < SYSTEM_PROMPT_SHARE:
            prompt.insert(0, {"role": "system", "content": rng.choice(SYSTEM_PROMPTS[lang])})
        records.append({"prompt": prompt, "chosen": chosen, "rejected": rejected})
    rng.shuffle(records)
    return records


# --------------------------------------------------------------------------- #
# Shipped files
# --------------------------------------------------------------------------- #


def _jsonl(records: list[dict]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)


def render_files(seed: int = 0) -> dict[str, str]:
    """Return ``{file name: text}`` for every generated demo file (what :func:`main` writes)."""
    return {
        SFT_FILE: _jsonl(sft_examples(seed)),
        EXAM_FILE: _jsonl(exam_questions(seed)),
        PT_FILE: "".join(doc + "\n" for doc in pt_documents()),
        PREFERENCE_FILE: _jsonl(preference_pairs(seed)),
        HEALTH_FILE: _jsonl(health_prompts()),
    }


def demo_dir() -> Path:
    """The folder holding the table and the shipped files (inside the installed package)."""
    return Path(str(importlib.resources.files("medtune") / "assets" / "demo"))


def _write_atomic(path: Path, text: str) -> None:
    """Write ``text`` as UTF-8 via a temp file in the same folder, then ``os.replace``."""
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o644  # mkstemp alone would give 0600
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def main(argv: list[str] | None = None) -> int:
    """Regenerate the demo files (default: next to the table, seed 0) and print counts."""
    parser = argparse.ArgumentParser(description="Regenerate medtune's demo data files.")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: the package's demo folder)")
    parser.add_argument("--seed", type=int, default=0, help="seed (the shipped files use 0)")
    args = parser.parse_args(argv)
    out = args.out or demo_dir()
    out.mkdir(parents=True, exist_ok=True)
    for name, text in render_files(args.seed).items():
        _write_atomic(out / name, text)
        print(f"wrote {out / name} ({text.count(chr(10))} lines)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
