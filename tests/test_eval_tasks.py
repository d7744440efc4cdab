"""Benchmark task loaders, prompts and SFT conversion (medtune.eval.tasks)."""

from __future__ import annotations

import collections
import json
from pathlib import Path

import pytest

from medtune.data import formats
from medtune.errors import DataError, MedtuneError
from medtune.eval import tasks
from medtune.eval.tasks import MCItem, load_task

FIX = Path(__file__).parent / "fixtures" / "eval"
PUBMEDQA = FIX / "pubmedqa" / "ori_pqal.json"
MEDMCQA = FIX / "medmcqa" / "dev.json"
MEDQA = FIX / "medqa" / "test.jsonl"
MMLU = FIX / "mmlu" / "test"
CMMLU = FIX / "cmmlu" / "test"
MCQ = FIX / "mcq" / "test.jsonl"
DEMO_EXAM = Path(tasks.__file__).parents[1] / "assets" / "demo" / "exam.jsonl"


def error_at(call, path, line, field) -> DataError:
    """Run ``call``, expect a DataError at path:line naming field; return it."""
    with pytest.raises(DataError) as info:
        call()
    err = info.value
    assert (err.path, err.line, err.field) == (str(path), line, field), str(err)
    return err


def write(tmp_path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text, encoding="utf-8")
    return p


def jsonl(tmp_path, name: str, records: list[dict]) -> Path:
    return write(tmp_path, name, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


# --------------------------------------------------------------------------- PubMedQA


def test_pubmedqa_fixture():
    items = load_task("pubmedqa", PUBMEDQA)
    assert [i.id for i in items] == ["90000001", "90000002", "90000003"]
    assert [i.answer for i in items] == [0, 1, 2]
    first = items[0]
    assert first.question == "Does daily walking lower resting blood pressure in older adults?"
    assert first.choices == first.choice_labels == ["yes", "no", "maybe"]
    assert first.context == (
        "Regular aerobic activity is thought to lower blood pressure.\n"
        "Sixty adults aged 65 to 80 were randomised to walking or usual activity for 12 weeks.\n"
        "Mean systolic pressure fell by 6 mmHg with walking and by 1 mmHg in controls (p=0.01)."
    )
    assert first.explanation == "A 12-week walking programme lowered resting systolic pressure in older adults."
    assert first.subject == ""
    assert [i.source for i in items] == [f"{PUBMEDQA}:2", f"{PUBMEDQA}:17", f"{PUBMEDQA}:30"]


def test_pubmedqa_reasoning_free_gives_the_long_answer_as_context():
    item = load_task("pubmedqa", PUBMEDQA, setting="reasoning_free")[1]
    assert item.context == "Coffee intake was not associated with kidney stones."
    assert item.explanation == ""
    assert tasks.prompt("pubmedqa", item) == (
        "Abstract: Coffee intake was not associated with kidney stones.\n"
        "Question: Is coffee intake associated with kidney stones in a fictional cohort?\nAnswer:"
    )


def test_pubmedqa_jsonl_hugging_face_shape(tmp_path):
    p = jsonl(tmp_path, "pqa.jsonl", [
        {"pubid": 123, "question": "Q one?", "context": {"contexts": ["a", "b"], "labels": ["X", "Y"]},
         "long_answer": "L one.", "final_decision": "no"},
        {"pubid": 124, "question": "Q two?", "context": {"contexts": ["c"]}, "long_answer": "L two.", "final_decision": "maybe"},
    ])
    items = load_task("pubmedqa", p)
    got = [(i.id, i.answer, i.context, i.explanation) for i in items]
    assert got == [("123", 1, "a\nb", "L one."), ("124", 2, "c", "L two.")]
    assert items[1].source == f"{p}:2"


def _pqal(tmp_path, **changes) -> Path:
    record = {"QUESTION": "Q?", "CONTEXTS": ["c1"], "LONG_ANSWER": "L.", "final_decision": "yes"}
    record.update(changes)
    record = {k: v for k, v in record.items() if v is not ...}
    return write(tmp_path, "p.json", '{\n  "1": {"QUESTION": "ok?", "CONTEXTS": ["c"], "final_decision": "no"},\n  "2": '
                 + json.dumps(record) + "\n}\n")


@pytest.mark.parametrize("changes, field, words", [
    ({"final_decision": ...}, "2.final_decision", "missing"),
    ({"final_decision": "Yes"}, "2.final_decision", "yes, no or maybe"),
    ({"CONTEXTS": "c1"}, "2.CONTEXTS", "array"),
    ({"CONTEXTS": []}, "2.CONTEXTS", "empty array"),
    ({"CONTEXTS": ["c1", 7]}, "2.CONTEXTS[1]", "string"),
    ({"QUESTION": " "}, "2.QUESTION", "empty"),
])
def test_pubmedqa_errors(tmp_path, changes, field, words):
    p = _pqal(tmp_path, **changes)
    err = error_at(lambda: load_task("pubmedqa", p), p, 3, field)
    assert words in str(err)


def test_pubmedqa_structural_errors(tmp_path):
    p = write(tmp_path, "dup.json", '{"7": {"QUESTION": "a?", "CONTEXTS": ["c"], "final_decision": "no"},\n'
                                    ' "7": {"QUESTION": "b?", "CONTEXTS": ["c"], "final_decision": "no"}}')
    assert "duplicate PMID" in str(error_at(lambda: load_task("pubmedqa", p), p, 2, "7"))
    p = write(tmp_path, "bad.json", '{"7": {"QUESTION": "a?",\n "CONTEXTS": ["c"] "final_decision": "no"}}')
    assert "invalid JSON" in str(error_at(lambda: load_task("pubmedqa", p), p, 2, None))
    p = write(tmp_path, "free.json", '{"7": {"QUESTION": "a?", "CONTEXTS": ["c"], "final_decision": "no"}}')
    assert len(load_task("pubmedqa", p)) == 1  # LONG_ANSWER is optional for the default setting
    error_at(lambda: load_task("pubmedqa", p, setting="reasoning_free"), p, 1, "7.LONG_ANSWER")


def test_pubmedqa_real_sample(shared_data):
    path = shared_data / "pubmedqa" / "pqal_trainval.json"
    items = load_task("pubmedqa", path)
    assert len(items) == 500 and len({i.id for i in items}) == 500
    counts = collections.Counter(i.choice_labels[i.answer] for i in items)
    assert counts == {"yes": 276, "no": 169, "maybe": 55}
    raw = json.loads(path.read_text(encoding="utf-8"))
    for item in items:
        assert 0 <= item.answer < 3 and item.question.strip() and item.context.strip()
        assert item.choice_labels[item.answer] == raw[item.id]["final_decision"]
        assert item.context == "\n".join(raw[item.id]["CONTEXTS"])
    free = load_task("pubmedqa", path, setting="reasoning_free")
    assert all(f.context == raw[f.id]["LONG_ANSWER"] for f in free)
    assert tasks.find_task_file("pubmedqa", shared_data) == path


# --------------------------------------------------------------------------- MedMCQA


def test_medmcqa_fixture_one_indexed():
    items = load_task("medmcqa", MEDMCQA)
    assert [i.answer for i in items] == [1, 3, 2, 0]
    first = items[0]
    assert (first.id, first.subject) == ("fx-0001", "Physiology")
    assert first.question == "Insulin is secreted by which cells of the pancreas?"
    assert first.choices == ["Alpha cells", "Beta cells", "Delta cells", "Acinar cells"]
    assert first.choice_labels == ["A", "B", "C", "D"]
    assert first.explanation == "Beta cells of the islets of Langerhans secrete insulin."
    assert items[1].explanation == "" and items[1].context == ""
    assert [i.source.rsplit(":", 1)[1] for i in items] == ["1", "2", "4", "5"]


def _mm(cop, **changes) -> dict:
    record = {"question": "Q?", "opa": "a", "opb": "b", "opc": "c", "opd": "d", "cop": cop, "exp": None,
              "subject_name": "S", "id": f"id{cop}-{len(changes)}"}
    record.update(changes)
    return record


def test_medmcqa_cop_indexing_is_detected_per_file(tmp_path):
    zero = jsonl(tmp_path, "hf.jsonl", [_mm(2), _mm(0), _mm(3, id="x")])
    assert [i.answer for i in load_task("medmcqa", zero)] == [2, 0, 3]
    ambiguous = jsonl(tmp_path, "raw.jsonl", [_mm(2), _mm(1), _mm(3)])
    assert [i.answer for i in load_task("medmcqa", ambiguous)] == [1, 0, 2]  # only 1..3: the raw release
    assert tasks.medmcqa_cop_base([1, 4]) == 1 and tasks.medmcqa_cop_base([0, 3]) == 0
    assert tasks.medmcqa_cop_base([1, 2, 3]) == 1
    with pytest.raises(ValueError):
        tasks.medmcqa_cop_base([0, 4])


@pytest.mark.parametrize("record, field, words", [
    (_mm(5), "cop", "out of range"),
    (_mm(-1), "cop", "no gold answer"),
    (_mm(None), "cop", "no gold answer"),
    (_mm("2"), "cop", "integer"),
    (_mm(True), "cop", "integer"),
    (_mm(2, opc=None), "opc", "missing"),
    (_mm(2, opd=4), "opd", "string"),
    (_mm(2, question=""), "question", "empty"),
])
def test_medmcqa_errors(tmp_path, record, field, words):
    p = jsonl(tmp_path, "m.jsonl", [_mm(1), record])
    assert words in str(error_at(lambda: load_task("medmcqa", p), p, 2, field))


def test_medmcqa_mixed_indexing_is_an_error(tmp_path):
    p = jsonl(tmp_path, "mixed.jsonl", [_mm(0), _mm(2), _mm(4)])
    err = error_at(lambda: load_task("medmcqa", p), p, 3, "cop")
    assert "line 1 has cop 0" in str(err)


def test_medmcqa_real_sample(shared_data):
    path = shared_data / "medmcqa" / "dev_sample300.jsonl"
    items = load_task("medmcqa", path)
    raw = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    assert len(items) == len(raw) == 300
    cops = [r["cop"] for r in raw]
    assert tasks.medmcqa_cop_base(cops) == 1 and 4 in cops and 0 not in cops  # the raw release: 1-indexed
    assert [i.answer for i in items] == [c - 1 for c in cops]
    assert all(0 <= i.answer < 4 and len(i.choices) == 4 for i in items)
    assert set(collections.Counter(i.answer for i in items)) == {0, 1, 2, 3}
    assert all(i.subject for i in items) and len({i.id for i in items}) == 300
    assert sum(bool(i.explanation) for i in items) == sum(bool(r["exp"]) for r in raw)
    assert tasks.find_task_file("medmcqa", shared_data) == path


# --------------------------------------------------------------------------- MedQA


def test_medqa_keeps_options_as_given():
    items = load_task("medqa", MEDQA)
    assert [len(i.choices) for i in items] == [4, 5, 5]
    assert [i.answer for i in items] == [2, 1, 4]
    assert [i.subject for i in items] == ["step2&3", "step1", "step1"]
    assert items[1].choice_labels == ["A", "B", "C", "D", "E"]
    assert items[1].choices[1] == "Vitamin C" and items[0].id == "1"


def test_medqa_4options_drops_e():
    items = load_task("medqa_4options", MEDQA)
    assert [i.id for i in items] == ["1", "2"]
    assert all(i.choice_labels == ["A", "B", "C", "D"] and len(i.choices) == 4 for i in items)
    assert items[1].choices == ["Vitamin A", "Vitamin C", "Vitamin D", "Vitamin K"] and items[1].answer == 1


@pytest.mark.parametrize("changes, field, words", [
    ({"answer_idx": "F"}, "answer_idx", "not among the options"),
    ({"answer": "Vitamin K"}, "answer", "not the text of option B"),
    ({"options": {"A": "x", "B": "y", "D": "z"}}, "options", "in sequence"),
    ({"options": ["x", "y"]}, "options", "must be an object"),
    ({"options": {"A": "x", "B": None}}, "options.B", "missing"),
])
def test_medqa_errors(tmp_path, changes, field, words):
    record = {"question": "Q?", "answer": "Vitamin C", "options": {"A": "Vitamin A", "B": "Vitamin C"}, "answer_idx": "B"}
    record.update(changes)
    p = jsonl(tmp_path, "q.jsonl", [record])
    assert words in str(error_at(lambda: load_task("medqa", p), p, 1, field))


def test_medqa_4options_with_only_e_answers(tmp_path):
    p = jsonl(tmp_path, "q.jsonl", [{"question": "Q?", "options": dict(zip("ABCDE", "vwxyz")), "answer_idx": "E"}])
    assert "A-D" in str(error_at(lambda: load_task("medqa_4options", p), p, None, None))


# --------------------------------------------------------------------------- MMLU and CMMLU


def test_mmlu_folder_loads_medical_subjects_only():
    items = load_task("mmlu_medical", MMLU)
    assert [i.subject for i in items] == ["anatomy"] * 3 + ["clinical_knowledge"]
    assert [i.id for i in items] == ["anatomy/1", "anatomy/2", "anatomy/3", "clinical_knowledge/1"]
    second = items[1]
    assert second.question == "Which nerve supplies the diaphragm,\nas most textbooks state?"
    assert second.choices == ["Vagus nerve", "Phrenic nerve", "Intercostal nerve", "Accessory nerve"] and second.answer == 1
    assert [i.source for i in items[:3]] == [f"{MMLU / 'anatomy_test.csv'}:{n}" for n in (1, 2, 4)]


def test_mmlu_single_file_any_subject():
    items = load_task("mmlu_medical", MMLU / "astronomy_test.csv")
    assert len(items) == 1 and items[0].subject == "astronomy" and items[0].answer == 1


@pytest.mark.parametrize("text, line, field, words", [
    ("Q?,a,b,c,d,A\nQ2?,a,b,c,D\n", 2, None, "expected 6 columns"),
    ("Q?,a,b,c,d,A\nQ2?,a,b,c,d,E\n", 2, "answer", "not one of A, B, C, D"),
    ("question,A,B,C,D,answer\nQ?,a,b,c,d,A\n", 1, "answer", "no header row"),
    ('Q?,a,b,c,d,A\n\n" ",a,b,c,d,B\n', 3, "question", "empty"),
])
def test_mmlu_errors(tmp_path, text, line, field, words):
    p = write(tmp_path, "anatomy_test.csv", text)
    assert words in str(error_at(lambda: load_task("mmlu_medical", p), p, line, field))


def test_mmlu_folder_errors(tmp_path):
    write(tmp_path, "astronomy_test.csv", "Q?,a,b,c,d,A\n")
    err = error_at(lambda: load_task("mmlu_medical", tmp_path), tmp_path, None, None)
    assert "anatomy_test.csv" in str(err)
    write(tmp_path, "anatomy_test.csv", "Q?,a,b,c,d,A\n")
    write(tmp_path, "anatomy_dev.csv", "Q?,a,b,c,d,A\n")
    assert "several files" in str(error_at(lambda: load_task("mmlu_medical", tmp_path), tmp_path, None, None))


def test_csv_not_utf8(tmp_path):
    p = tmp_path / "anatomy_test.csv"
    p.write_bytes("Q?,a,b,c,d,A\n".encode() + "问题,甲,乙,丙,丁,A\n".encode("gbk"))
    assert "UTF-8" in str(error_at(lambda: load_task("mmlu_medical", p), p, 2, None))


def test_cmmlu_folder():
    items = load_task("cmmlu", CMMLU)
    assert [(i.subject, i.id) for i in items] == [
        ("anatomy", "anatomy/0"), ("anatomy", "anatomy/1"), ("traditional_chinese_medicine", "traditional_chinese_medicine/0")]
    assert items[0].question == "人体最大的器官是" and items[0].choices == ["肝脏", "皮肤", "肺", "大脑"] and items[0].answer == 1
    assert items[2].question == '中医"四诊"不包括下列哪一项？' and items[2].answer == 3
    assert items[1].source == f"{CMMLU / 'anatomy.csv'}:3"
    assert load_task("cmmlu", CMMLU / "arts.csv")[0].subject == "arts"


@pytest.mark.parametrize("text, line, field, words", [
    ("Question,A,B,C,D\nQ,a,b,c,d\n", 1, None, "header"),
    (",Question,A,B,C,D,Answer\n0,Q,a,b,c,d\n", 2, None, "expected 7 columns"),
    (",Question,A,B,C,D,Answer\n0,Q,a,b,c,d,b\n", 2, "Answer", "not one of A, B, C, D"),
])
def test_cmmlu_errors(tmp_path, text, line, field, words):
    p = write(tmp_path, "anatomy.csv", text)
    assert words in str(error_at(lambda: load_task("cmmlu", p), p, line, field))


def test_cmmlu_header_without_index_column(tmp_path):
    p = write(tmp_path, "nutrition.csv", "Question,A,B,C,D,Answer\nQ,a,b,c,d,C\n")
    item = load_task("cmmlu", p)[0]
    assert (item.id, item.answer, item.subject) == ("nutrition/0", 2, "nutrition")


# --------------------------------------------------------------------------- generic MCQ


def test_mcq_fixture():
    items = load_task("mcq", MCQ)
    a, b, c = items
    assert (a.id, a.answer, a.subject) == ("q1", 1, "gastroenterology")
    assert (a.choices, a.choice_labels) == (["Pancreas", "Liver", "Spleen"], ["A", "B", "C"])
    assert a.explanation == "Bile is made in the liver and stored in the gallbladder."
    assert (b.id, b.answer, b.choice_labels) == ("2", 2, ["A", "B", "C", "D"])
    assert b.context == "A fasting plasma glucose of 7.8 mmol/L was measured on two days."
    assert (c.subject, c.answer, c.choices[0]) == ("nutrition", 0, "维生素A")


def test_demo_exam_loads_as_mcq():
    items = load_task("mcq", DEMO_EXAM)
    assert len(items) == 50
    assert all(i.subject and len(i.choices) == 4 and 0 <= i.answer < 4 for i in items)
    first = json.loads(DEMO_EXAM.read_text(encoding="utf-8").splitlines()[0])
    assert items[0].subject == first["condition"] and items[0].choice_labels[items[0].answer] == first["answer"]


@pytest.mark.parametrize("changes, field, words", [
    ({"answer": "D"}, "answer", "not among the options A, B, C"),
    ({"answer": 3}, "answer", "out of range"),
    ({"answer": True}, "answer", "letter or an index"),
    ({"answer": ...}, "answer", "missing"),
    ({"options": ...}, "options", "missing"),
    ({"options": ["only one"]}, "options", "2 to 26"),
    ({"options": ["x", 2]}, "options[1]", "string"),
    ({"options": {"A": "x", "C": "y"}}, "options", "in sequence"),
    ({"subject": 3}, "subject", "string"),
])
def test_mcq_errors(tmp_path, changes, field, words):
    record = {"question": "Q?", "options": ["x", "y", "z"], "answer": "B"}
    record.update(changes)
    record = {k: v for k, v in record.items() if v is not ...}
    p = jsonl(tmp_path, "m.jsonl", [{"question": "fine?", "options": ["x", "y"], "answer": 0}, record])
    assert words in str(error_at(lambda: load_task("mcq", p), p, 2, field))


def test_duplicate_ids(tmp_path):
    p = jsonl(tmp_path, "m.jsonl", [{"id": "a", "question": "Q?", "options": ["x", "y"], "answer": 0}] * 2)
    assert "duplicate id 'a'" in str(error_at(lambda: load_task("mcq", p), p, 2, "id"))


def test_bad_names_and_settings(tmp_path):
    with pytest.raises(MedtuneError, match="unknown task 'usmle'.*pubmedqa"):
        load_task("usmle", MCQ)
    with pytest.raises(MedtuneError, match="no setting 'reasoning_free'"):
        load_task("medmcqa", MEDMCQA, setting="reasoning_free")
    with pytest.raises(MedtuneError, match="limit"):
        load_task("mcq", MCQ, limit=-1)
    error_at(lambda: load_task("mcq", tmp_path / "missing.jsonl"), tmp_path / "missing.jsonl", None, None)
    empty = write(tmp_path, "empty.jsonl", "\n")
    assert "no questions" in str(error_at(lambda: load_task("mcq", empty), empty, None, None))


# --------------------------------------------------------------------------- limit


def test_limit_is_a_seeded_stable_sample():
    everything = load_task("mcq", DEMO_EXAM)
    one = load_task("mcq", DEMO_EXAM, limit=10, seed=1)
    assert len(one) == 10
    assert [i.id for i in one] == [i.id for i in load_task("mcq", DEMO_EXAM, limit=10, seed=1)]
    assert [i.id for i in one] != [i.id for i in load_task("mcq", DEMO_EXAM, limit=10, seed=2)]
    positions = [[i.id for i in everything].index(item.id) for item in one]
    assert positions == sorted(positions) and positions != list(range(10))  # file order, not the first N
    assert len(load_task("mcq", DEMO_EXAM, limit=500)) == 50


# --------------------------------------------------------------------------- prompts


def test_prompt_pubmedqa():
    item = load_task("pubmedqa", PUBMEDQA)[2]
    assert tasks.prompt("pubmedqa", item) == (
        "Abstract: Poor adherence limits asthma control.\n"
        "Adherence rose from 52% to 58% with reminders, a difference that was not significant.\n"
        "Question: Can a phone reminder improve inhaler adherence?\nAnswer:"
    )
    assert tasks.continuations("pubmedqa", item) == [" yes", " no", " maybe"]


def test_prompt_medmcqa():
    item = load_task("medmcqa", MEDMCQA)[0]
    assert tasks.prompt("medmcqa", item) == (
        "Question: Insulin is secreted by which cells of the pancreas?\nChoices:\n"
        "A. Alpha cells\nB. Beta cells\nC. Delta cells\nD. Acinar cells\nAnswer:"
    )
    assert tasks.continuations("medmcqa", item) == [" A", " B", " C", " D"]


def test_prompt_medqa():
    items = load_task("medqa_4options", MEDQA)
    assert tasks.prompt("medqa_4options", items[1]) == (
        "Question: Deficiency of which vitamin causes scurvy?\n"
        "A. Vitamin A\nB. Vitamin C\nC. Vitamin D\nD. Vitamin K\nAnswer:"
    )
    five = load_task("medqa", MEDQA)[2]
    assert tasks.prompt("medqa", five).endswith("D. Prostacyclin synthase\nE. Cyclooxygenase\nAnswer:")
    assert tasks.continuations("medqa", five) == [" A", " B", " C", " D", " E"]


def test_prompt_mmlu():
    items = load_task("mmlu_medical", MMLU)
    assert tasks.prompt("mmlu_medical", items[2]) == (
        "The following are multiple choice questions (with answers) about anatomy.\n\n"
        "How many chambers does the human heart have?\nA. Two\nB. Three\nC. Four\nD. Five\nAnswer:"
    )
    assert tasks.prompt("mmlu_medical", items[3]).startswith(
        "The following are multiple choice questions (with answers) about clinical knowledge.\n\nWhat is")


def test_prompt_cmmlu():
    item = load_task("cmmlu", CMMLU)[0]
    assert tasks.prompt("cmmlu", item) == (
        "以下是关于解剖学的单项选择题，请直接给出正确答案的选项。\n\n"
        "人体最大的器官是\nA. 肝脏\nB. 皮肤\nC. 肺\nD. 大脑\n答案："
    )
    assert tasks.continuations("cmmlu", item) == [" A", " B", " C", " D"]
    tcm = load_task("cmmlu", CMMLU)[2]
    assert tasks.prompt("cmmlu", tcm).startswith("以下是关于中医中药的单项选择题")


def test_prompt_mcq():
    a, b, _ = load_task("mcq", MCQ)
    assert tasks.prompt("mcq", a) == "Question: Which organ produces bile?\nChoices:\nA. Pancreas\nB. Liver\nC. Spleen\nAnswer:"
    assert tasks.prompt("mcq", b) == (
        "Context: A fasting plasma glucose of 7.8 mmol/L was measured on two days.\n"
        "Question: What does this result suggest?\nChoices:\n"
        "A. Normal glucose\nB. Prediabetes\nC. Diabetes\nD. Hypoglycaemia\nAnswer:"
    )


def test_prompt_mcq_cloze_scores_the_option_texts():
    a, b, _ = load_task("mcq_cloze", MCQ)
    assert tasks.prompt("mcq_cloze", a) == "Question: Which organ produces bile?\nAnswer:"
    assert tasks.continuations("mcq_cloze", a) == [" Pancreas", " Liver", " Spleen"]
    assert tasks.prompt("mcq_cloze", b).startswith("Context: A fasting plasma glucose")
    assert tasks.continuations("mcq", a) == [" A", " B", " C"]


def test_few_shot_prompts():
    a1, a2, a3, ck = load_task("mmlu_medical", MMLU)
    assert tasks.few_shot_prompt("mmlu_medical", [a1, a3], ck) == (
        "The following are multiple choice questions (with answers) about clinical knowledge.\n\n"
        "Which bone forms the point of the elbow?\nA. Ulna\nB. Radius\nC. Humerus\nD. Scapula\nAnswer: A\n\n"
        "How many chambers does the human heart have?\nA. Two\nB. Three\nC. Four\nD. Five\nAnswer: C\n\n"
        "What is the usual adult resting heart rate in beats per minute?\nA. 20-40\nB. 60-100\nC. 120-160\nD. 180-220\nAnswer:"
    )
    p1, p2, p3 = load_task("pubmedqa", PUBMEDQA)
    shot = tasks.few_shot_prompt("pubmedqa", [p2], p3)
    assert shot == tasks.prompt("pubmedqa", p2) + " no\n\n" + tasks.prompt("pubmedqa", p3)
    assert tasks.few_shot_prompt("medmcqa", [], p1) == tasks.prompt("medmcqa", p1)
    assert tasks.TASKS["mmlu_medical"].few_shot_prompt([a1], a2).count("The following are") == 1


def test_every_task_prompt_ends_without_trailing_space():
    loaded = {"pubmedqa": PUBMEDQA, "medmcqa": MEDMCQA, "medqa": MEDQA, "medqa_4options": MEDQA,
              "mmlu_medical": MMLU, "cmmlu": CMMLU, "mcq": MCQ, "mcq_cloze": MCQ}
    assert set(loaded) == set(tasks.TASKS)
    for name, path in loaded.items():
        for item in load_task(name, path):
            text = tasks.prompt(name, item)
            assert text == text.rstrip() and text.endswith(("Answer:", "答案："))
            conts = tasks.continuations(name, item)
            assert len(conts) == len(item.choices) and all(c.startswith(" ") and c[1:].strip() == c[1:] for c in conts)


# --------------------------------------------------------------------------- SFT conversion and files


def test_to_sft_records_are_valid_dialogues(tmp_path):
    sources = {"pubmedqa": PUBMEDQA, "medmcqa": MEDMCQA, "medqa": MEDQA, "mmlu_medical": MMLU, "cmmlu": CMMLU, "mcq": MCQ}
    for name, path in sources.items():
        items = load_task(name, path)
        records = tasks.to_sft_records(name, items)
        out = jsonl(tmp_path, f"{name}.jsonl", records)
        dialogues = formats.load_dialogues(out)
        assert len(dialogues) == len(items)
        assert all([m["role"] for m in d["messages"]] == ["user", "assistant"] for d in dialogues)
        assert [r["id"] for r in records] == [i.id for i in items]

    med = tasks.to_sft_records("medmcqa", load_task("medmcqa", MEDMCQA))
    assert med[0]["messages"] == [
        {"role": "user", "content": "Insulin is secreted by which cells of the pancreas?\n\n"
                                    "A. Alpha cells\nB. Beta cells\nC. Delta cells\nD. Acinar cells"},
        {"role": "assistant", "content": "Answer: B. Beta cells\n\nBeta cells of the islets of Langerhans secrete insulin."},
    ]
    assert med[1]["messages"][1]["content"] == "Answer: D. Adrenaline"
    pqa = tasks.to_sft_records("pubmedqa", load_task("pubmedqa", PUBMEDQA))[1]["messages"]
    assert pqa[0]["content"] == (
        "Four hundred invented participants reported coffee intake and stone events over 5 years.\n\n"
        "Question: Is coffee intake associated with kidney stones in a fictional cohort?\nAnswer yes, no or maybe."
    )
    assert pqa[1]["content"] == "Answer: no\n\nCoffee intake was not associated with kidney stones."
    mcq = tasks.to_sft_records("mcq", load_task("mcq", MCQ))
    user = mcq[1]["messages"][0]["content"]
    assert user.startswith("A fasting plasma glucose of 7.8 mmol/L was measured on two days.\n\nWhat does")
    assert mcq[2]["messages"][1]["content"] == "答案：A. 维生素A"


def test_find_task_file(tmp_path):
    expected = {"pubmedqa": PUBMEDQA, "medmcqa": MEDMCQA, "medqa": MEDQA, "medqa_4options": MEDQA,
                "mmlu_medical": MMLU, "cmmlu": CMMLU, "mcq": MCQ, "mcq_cloze": MCQ}
    for name, path in expected.items():
        assert tasks.find_task_file(name, FIX) == path
    official = write(tmp_path, "medqa/4_options/phrases_no_exclude_test.jsonl", "")
    write(tmp_path, "medqa/test.jsonl", "")
    assert tasks.find_task_file("medqa_4options", tmp_path) == official
    assert tasks.find_task_file("medqa", tmp_path) == tmp_path / "medqa" / "test.jsonl"
    with pytest.raises(MedtuneError, match=r"no pubmedqa data found.*ori_pqal\.json.*\*\.json"):
        tasks.find_task_file("pubmedqa", tmp_path)
    write(tmp_path, "mcq/a.jsonl", "")
    write(tmp_path, "mcq/b.jsonl", "")
    with pytest.raises(MedtuneError, match="several candidate mcq files.*a.jsonl, b.jsonl"):
        tasks.find_task_file("mcq", tmp_path)
    with pytest.raises(MedtuneError, match="no mmlu_medical data found.*anatomy"):
        tasks.find_task_file("mmlu_medical", tmp_path)
    with pytest.raises(MedtuneError, match="data folder not found"):
        tasks.find_task_file("mcq", tmp_path / "nowhere")


def test_items_are_plain_dataclasses():
    item = MCItem(id="x", question="q", choices=["a", "b"], choice_labels=["A", "B"], answer=1)
    assert (item.context, item.subject, item.explanation, item.source) == ("", "", "", "")
    assert tasks.prompt("mcq", item) == "Question: q\nChoices:\nA. a\nB. b\nAnswer:"
