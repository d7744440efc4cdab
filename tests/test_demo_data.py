"""Tests for medtune.demo_data: the shipped demo files and their generators."""

from __future__ import annotations

import collections
import json
import re

import pytest

from medtune import demo_data

CJK = re.compile(r"[\u4e00-\u9fff]")


def _lang(text: str) -> str:
    return "zh" if CJK.search(text) else "en"


@pytest.fixture(scope="module")
def conditions():
    return demo_data.load_conditions()


@pytest.fixture(scope="module")
def sft():
    return demo_data.sft_examples(0)


@pytest.fixture(scope="module")
def exam():
    return demo_data.exam_questions(0)


@pytest.fixture(scope="module")
def prefs():
    return demo_data.preference_pairs(0)


# --------------------------------------------------------------------------- table


def test_table_shape(conditions):
    assert 20 <= len(conditions) <= 30
    ids = [c["id"] for c in conditions]
    assert len(set(ids)) == len(ids)
    for cond in conditions:
        assert cond["urgency"] in {"routine", "urgent", "emergency"}
        assert set(cond.get("related", [])) <= set(ids) - {cond["id"]}
        assert set(cond.get("exam_types", demo_data.EXAM_TYPES)) <= set(demo_data.EXAM_TYPES)
        for lang in demo_data.LANGS:
            info = cond[lang]
            assert set(info) == {"name", "symptoms", "tests", "treatments", "red_flags", "advice"}
            for key, low, high in [("symptoms", 3, 5), ("tests", 3, 5), ("treatments", 3, 5), ("red_flags", 2, 4)]:
                assert low <= len(info[key]) <= high, (cond["id"], lang, key)
                assert all(item.strip() and "\n" not in item for item in info[key])
                assert len(info[key]) == len(cond["en"][key])
            assert info["name"] and info["advice"]
            assert bool(CJK.search(info["name"] + info["advice"])) == (lang == "zh"), cond["id"]


def test_exam_keys_are_distinct_across_conditions(conditions):
    for lang in demo_data.LANGS:
        for key in ("name", "symptoms", "tests", "treatments"):
            firsts = [c[lang][key] if key == "name" else c[lang][key][0] for c in conditions]
            assert len(set(firsts)) == len(firsts), (lang, key)


# --------------------------------------------------------------------------- shipped files


def test_shipped_files_are_up_to_date():
    fresh = demo_data.render_files(0)
    assert set(fresh) == {"sft.jsonl", "exam.jsonl", "pt.txt", "preference.jsonl", "health_prompts.jsonl"}
    for name, text in fresh.items():
        shipped = (demo_data.demo_dir() / name).read_bytes()
        assert shipped == text.encode("utf-8"), f"{name} is stale: run python -m medtune.demo_data"


def test_shipped_jsonl_parses():
    for name in ("sft.jsonl", "exam.jsonl", "preference.jsonl", "health_prompts.jsonl"):
        lines = (demo_data.demo_dir() / name).read_text(encoding="utf-8").splitlines()
        assert lines and all(json.loads(line) for line in lines)
        assert not any("\\u" in line for line in lines), "written with ensure_ascii=False"


def test_main_writes_atomically(tmp_path):
    assert demo_data.main(["--out", str(tmp_path)]) == 0
    written = sorted(p.name for p in tmp_path.iterdir())
    assert written == sorted(demo_data.render_files(0)), "no temp files left behind"
    assert (tmp_path / "sft.jsonl").read_bytes() == (demo_data.demo_dir() / "sft.jsonl").read_bytes()


# --------------------------------------------------------------------------- SFT


def test_sft_counts_and_languages(sft):
    assert 360 <= len(sft) <= 480
    langs = collections.Counter(_lang(" ".join(m["content"] for m in ex["messages"])) for ex in sft)
    assert set(langs) == {"en", "zh"}
    assert 0.4 <= langs["zh"] / len(sft) <= 0.6


def test_sft_dialogue_structure(sft):
    for ex in sft:
        assert list(ex) == ["messages"]
        messages = ex["messages"]
        roles = [m["role"] for m in messages]
        if roles[0] == "system":
            roles = roles[1:]
        assert roles and len(roles) % 2 == 0
        assert roles == ["user", "assistant"] * (len(roles) // 2)
        assert all(isinstance(m["content"], str) and m["content"].strip() for m in messages)
        assert all(set(m) == {"role", "content"} for m in messages)


def test_sft_mix(sft):
    multi = sum(1 for ex in sft if sum(m["role"] == "user" for m in ex["messages"]) > 1)
    assert 0.10 <= multi / len(sft) <= 0.20
    with_system = sum(1 for ex in sft if ex["messages"][0]["role"] == "system")
    assert 0.15 <= with_system / len(sft) <= 0.45
    # Several phrasings per question type, not one template.
    first_user = [next(m["content"] for m in ex["messages"] if m["role"] == "user") for ex in sft]
    assert len({q.split()[0] for q in first_user if _lang(q) == "en"}) >= 8


def test_sft_answers_are_grounded_in_the_table(sft, conditions):
    """Every treatment answer names the condition's first treatment (content is learnable)."""
    by_name = {c[lang]["name"]: (c, lang) for c in conditions for lang in demo_data.LANGS}
    checked = 0
    for ex in sft:
        messages = [m for m in ex["messages"] if m["role"] != "system"]
        question, answer = messages[0]["content"], messages[1]["content"]
        for name, (cond, lang) in by_name.items():
            treatments = cond[lang]["treatments"]
            if name in question and all(t in answer for t in treatments):
                checked += 1
    assert checked >= 40


def test_sft_answers_are_short(sft):
    for ex in sft:
        for m in ex["messages"]:
            if m["role"] == "assistant":
                assert len(m["content"]) < 600


def test_heldout_questions_not_in_training(sft, prefs):
    held = demo_data.heldout_questions()
    assert len(held) == 6
    assert collections.Counter(q["lang"] for q in held) == {"en": 3, "zh": 3}
    ids = {c["id"] for c in demo_data.load_conditions()}
    training_text = "\n".join(m["content"] for ex in sft for m in ex["messages"])
    training_text += "\n".join(m["content"] for p in prefs for m in p["prompt"])
    for q in held:
        assert _lang(q["question"]) == q["lang"]
        assert q["condition"] in ids
        assert q["question"] not in training_text


# --------------------------------------------------------------------------- exam


def test_exam_schema_and_counts(exam, conditions):
    assert 40 <= len(exam) <= 60
    ids = {c["id"] for c in conditions}
    for item in exam:
        assert list(item) == ["question", "options", "answer", "lang", "condition"]
        assert list(item["options"]) == ["A", "B", "C", "D"]
        assert item["answer"] in "ABCD"
        assert item["condition"] in ids
        assert _lang(item["question"]) == item["lang"]
        assert all(text.strip() for text in item["options"].values())
    assert collections.Counter(item["lang"] for item in exam) == {"en": len(exam) // 2, "zh": len(exam) // 2}


def test_exam_correct_option_is_unique(exam):
    for item in exam:
        options = item["options"]
        correct = options[item["answer"]]
        others = [text for letter, text in options.items() if letter != item["answer"]]
        assert correct not in others
        assert len(set(options.values())) == 4


def test_exam_answer_is_right_and_distractors_come_from_unrelated_conditions(exam, conditions):
    by_id = {c["id"]: c for c in conditions}
    related = demo_data._related(conditions)
    for item in exam:
        cond, lang = by_id[item["condition"]], item["lang"]
        correct = item["options"][item["answer"]]
        assert correct in {cond[lang]["name"], cond[lang]["tests"][0], cond[lang]["treatments"][0]}
        for letter, text in item["options"].items():
            if letter == item["answer"]:
                continue
            owners = [c["id"] for c in conditions
                      if text in {c[lang]["name"], c[lang]["tests"][0], c[lang]["treatments"][0]}]
            assert owners and not (set(owners) & (related[cond["id"]] | {cond["id"]})), (item, text)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_exam_letters_balanced(seed):
    items = demo_data.exam_questions(seed)
    counts = collections.Counter(item["answer"] for item in items)
    for letter in "ABCD":
        assert 0.15 <= counts[letter] / len(items) <= 0.35, counts


# --------------------------------------------------------------------------- PT and preference


def test_pt_documents():
    docs = demo_data.pt_documents()
    n = len(demo_data.load_conditions())
    assert n * 2 <= len(docs) <= n * 4
    assert all(doc.strip() and "\n" not in doc for doc in docs)
    en, zh = demo_data.pt_documents("en"), demo_data.pt_documents("zh")
    assert en and zh and len(en) + len(zh) == len(docs)
    assert not any(CJK.search(d) for d in en)
    assert all(CJK.search(d) for d in zh)


def test_preference_pairs(prefs):
    assert 120 <= len(prefs) <= 180
    langs = collections.Counter(_lang(p["chosen"]) for p in prefs)
    assert set(langs) == {"en", "zh"}
    for pair in prefs:
        assert list(pair) == ["prompt", "chosen", "rejected"]
        assert pair["prompt"][-1]["role"] == "user"
        assert [m["role"] for m in pair["prompt"]] in (["user"], ["system", "user"])
        assert pair["chosen"].strip() and pair["rejected"].strip()
        assert pair["chosen"] != pair["rejected"]
        assert _lang(pair["chosen"]) == _lang(pair["rejected"]) == _lang(pair["prompt"][-1]["content"])


# --------------------------------------------------------------------------- determinism


@pytest.mark.parametrize("fn", [demo_data.sft_examples, demo_data.exam_questions, demo_data.preference_pairs])
def test_deterministic_by_seed(fn):
    assert fn(0) == fn(0)
    assert fn(7) == fn(7)
    a, b = fn(0), fn(1)
    assert a != b
    dump = lambda xs: [json.dumps(x, ensure_ascii=False, sort_keys=True) for x in xs]  # noqa: E731
    assert dump(a) != dump(b)


def test_same_seed_same_bytes_in_a_fresh_interpreter():
    """Output must not depend on hash randomisation (PYTHONHASHSEED)."""
    import os
    import subprocess
    import sys

    code = ("import hashlib; from medtune import demo_data; "
            "print(hashlib.sha256(''.join(demo_data.render_files(3).values()).encode()).hexdigest())")
    digests = set()
    for hashseed in ("1", "2"):
        env = dict(os.environ, PYTHONHASHSEED=hashseed)
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
        digests.add(out.stdout.strip())
    assert len(digests) == 1
