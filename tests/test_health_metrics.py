"""Generation-health metrics: each metric on hand-written texts (traps included), then tiny models trained
to misbehave in one way each, which must trip that flag, and a well-behaved one, which must trip none."""

import dataclasses
import json

import pytest
import torch

from medtune import chat
from medtune.data import templates
from medtune.errors import DataError, MedtuneError
from medtune.eval import health
from margins import SEED, above, below, lr
from tiny import tiny_llama, tiny_tokenizer

# --- repetition ---------------------------------------------------------------------------------------


def test_repeated_ngram_rate_counts_repeats_of_earlier_ngrams():
    assert health.repeated_ngram_rate([]) == 0.0
    assert health.repeated_ngram_rate([5, 5, 5]) == 0.0  # shorter than one 4-gram
    assert health.repeated_ngram_rate(list(range(50))) == 0.0
    assert health.repeated_ngram_rate([1, 2, 3, 4, 1, 2, 3, 4]) == pytest.approx(1 / 5)
    assert health.repeated_ngram_rate([7, 8, 9] * 10) == pytest.approx(24 / 27)
    assert health.repeated_ngram_rate([1, 2, 1, 2, 1, 2], n=2) == pytest.approx(3 / 5)


@pytest.mark.parametrize("text", [
    "A fever is usually caused by an infection such as a cold or the flu. Rest, drink fluids and take "
    "paracetamol if you are uncomfortable; see a doctor if it lasts more than three days or is very high.",
    "发热多由感染引起，例如感冒或流感。注意休息、多喝水，体温过高或持续三天以上请及时就医。",
])
def test_ordinary_answers_repeat_little_and_loops_repeat_a_lot(text):
    tok = tiny_tokenizer()
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert health.repeated_ngram_rate(ids) < 0.1
    loop = tok(text[:30] * 8, add_special_tokens=False)["input_ids"]
    assert health.repeated_ngram_rate(loop) > 0.6


# --- self-questioning ---------------------------------------------------------------------------------

@pytest.mark.parametrize("text", [
    "Rest and drink water.\nUser: What about a cough?",
    "Rest and drink water.\n\nHuman: and then?",
    "User: what should I take?",  # the response opens with a user turn
    "Take it with food.\n**Patient:** Does it hurt?",
    "See a doctor.\n### Instruction:\nWhat about children?",
    "Yes.\nQ: Is it contagious?\nA: Yes.",
    "Take paracetamol.<|im_start|>user\nAnd for a child?",
    "Take paracetamol. [INST] and for a child? [/INST]",
    "建议休息并多喝水。\n患者：那咳嗽怎么办？",
    "多喝水。\n问：还需要吃药吗？",
    "注意休息。\n用户：谢谢医生",
])
def test_self_questioning_finds_a_new_user_turn(text):
    assert health.self_questioning(text)


@pytest.mark.parametrize("text", [
    "The user should rest; tell the user: drink water.",
    "Ask the patient: does it hurt when you breathe in?",
    "Patient education: explain the warning signs of a stroke.",
    "See Q: 3 in the FAQ for dosing.",
    "Users: 40 per day on average.",
    "## User guide\nOpen the settings page.",
    "用户可以在设置中修改提醒时间。",
    "患者应多喝水：每天约两升。",
    "请问：您发热几天了？这有助于判断病因。",
    "Fever (a temperature above 38 °C) is common; question: when to worry? Over 40 °C.",
])
def test_self_questioning_ignores_roles_in_prose(text):
    assert not health.self_questioning(text)
    assert not health.self_questioning(text, templates.FALLBACKS["chatml"])


def test_self_questioning_knows_each_templates_user_turn():
    vicuna, alpaca = templates.FALLBACKS["vicuna"], templates.FALLBACKS["alpaca"]
    assert health.self_questioning("Rest well. USER: and after that?", vicuna)  # vicuna's turn needs no newline
    assert not health.self_questioning("Rest well. USER: and after that?")
    assert not health.self_questioning("Ask the user: rest well.", vicuna)  # case-sensitive
    assert health.self_questioning("Rest. <reserved_106>And then?", templates.FALLBACKS["baichuan2"])
    assert health.self_questioning("Rest. ### Instruction: more?", alpaca)
    assert health.self_questioning("Rest. <|start_header_id|>user<|end_header_id|>\n\nmore?")


@pytest.mark.parametrize("name, marker", [
    ("chatml", "<|im_start|>user"), ("qwen", "<|im_start|>user"),
    ("llama3", "<|start_header_id|>user<|end_header_id|>"), ("baichuan2", "<reserved_106>"),
    ("chatglm3", "<|user|>"), ("alpaca", "### Instruction:"), ("vicuna", "USER:"),
])
def test_user_turn_marker_of_each_template(name, marker):
    fmt = templates.FALLBACKS[name]
    assert health.user_turn_marker(fmt) == marker
    tok = tiny_tokenizer(chat_template=None)
    templates.install_format(tok, fmt)
    assert health.user_turn_marker(fmt, tok) == marker
    # the tokenizer's own template (fmt.jinja is None) needs the tokenizer
    assert health.user_turn_marker(templates.ChatFormat("tokenizer", None), tok) == marker


# --- control-token leaks ------------------------------------------------------------------------------

@pytest.mark.parametrize("text", [
    "Rest and drink water.<|im_end|>", "Take it twice a day <|endoftext|>", "[INST] dose? [/INST]",
    "Rest.</s>", "<s>Rest.", "建议休息\ufffd", "<|eot_id|>",
])
def test_control_token_leak_finds_generic_control_tokens(text):
    assert health.control_token_leak(text)


@pytest.mark.parametrize("text", [
    "Use <b>bold</b> for warnings.", "If x < y | z > w then stop.", "|x| > 2 is abnormal.",
    "Take 2 tablets [in the morning].", "Blood pressure <140/90 is the target.", "体温 < 38 ℃ 可以观察。",
])
def test_control_token_leak_ignores_ordinary_markup(text):
    assert not health.control_token_leak(text)


def test_control_token_leak_uses_the_tokenizers_special_tokens():
    tok = tiny_tokenizer(chat_template=None)
    templates.install_format(tok, templates.FALLBACKS["baichuan2"])
    assert not health.control_token_leak("Rest well.<reserved_107>")
    assert health.control_token_leak("Rest well.<reserved_107>", tok)
    glm = tiny_tokenizer(chat_template=None)
    templates.install_format(glm, templates.FALLBACKS["chatglm3"])
    assert health.control_token_leak("Rest [gMASK] well", glm)
    assert not health.control_token_leak("Eat a sop of bread", glm)  # chatglm's "sop" token is also a word


def test_response_metrics_does_not_count_a_cut_character_as_a_leak():
    cut = health.response_metrics([1, 2, 3, 4, 5], "建议休息\ufffd", stopped=False)
    assert cut["leak"] is False and cut["stopped"] is False and cut["length_tokens"] == 5
    assert health.response_metrics([1, 2, 3, 4, 5], "建议休息\ufffd", stopped=True)["leak"] is True
    loop = health.response_metrics([9, 8, 7] * 5, "A\nUser: b", stopped=True)
    assert loop["repeat_4gram"] > 0.5 and loop["self_question"] is True


# --- summary and flags --------------------------------------------------------------------------------

def _row(rep=0.0, sq=False, leak=False, stopped=True, length=30, kind="medical"):
    return {"repeat_4gram": rep, "self_question": sq, "leak": leak, "stopped": stopped, "length_tokens": length,
            "kind": kind}


def test_summarize_flags_each_problem_past_its_threshold():
    healthy = [_row(rep=0.05) for _ in range(19)] + [_row(rep=0.05, sq=True, kind="general")]
    summary = health.summarize(healthy)
    assert summary["self_question_share"] == 0.05 and not any(summary["flags"].values())  # 1 in 20 is allowed
    assert summary["by_kind"]["general"]["n"] == 1 and summary["by_kind"]["medical"]["self_question_share"] == 0
    sick = [_row(rep=0.9, stopped=False, length=256), _row(sq=True), _row(leak=True), _row(length=1), _row()]
    summary = health.summarize(sick)
    assert summary["flags"] == {"repetition": False, "self_questioning": True, "leak": True,
                                "not_stopping": False, "short": True}
    assert summary["checks"]["repetition"] == {"value": 0.18, "threshold": 0.2, "flagged": False,
                                               "rule": "mean_repeat_4gram > 0.2"}
    assert summary["looping_share"] == 0.2
    strict = health.summarize(sick, health.Thresholds(max_mean_repeat_4gram=0.1, min_stopped_share=0.9))
    assert strict["flags"]["repetition"] and strict["flags"]["not_stopping"]
    with pytest.raises(MedtuneError):
        health.summarize([])


# --- tiny models trained to misbehave -----------------------------------------------------------------

PROMPTS = [
    {"prompt": "I have a fever.", "kind": "medical", "lang": "en"},
    {"prompt": "My chest hurts.", "kind": "medical", "lang": "en"},
    {"prompt": "患者咳嗽怎么办？", "kind": "medical", "lang": "zh"},
    {"prompt": "Hello, how are you?", "kind": "general", "lang": "en"},
    {"prompt": "Thirst and urination?", "kind": "medical", "lang": "en"},
    {"prompt": "你好，请介绍一下你自己。", "kind": "general", "lang": "zh"},
]
ANSWERS = ["Rest and drink water.", "Call an ambulance now.", "建议休息并多喝水。", "I am fine, thank you.",
           "Test HbA1c for diabetes.", "我是一个助手。"]
END = "<|im_end|>"
BEHAVIOURS = {  # name: (one training answer per prompt, the flags it must raise)
    "good": ([a + END for a in ANSWERS], set()),
    "looping": (["Drink water and rest. " * 8] * len(PROMPTS), {"repetition", "not_stopping"}),
    "self_questioning": ([ANSWERS[0] + "\n<|im_start|>user\nWhat about a cough?" + END,
                          ANSWERS[1] + "\nUser: And if it gets worse?" + END,
                          ANSWERS[2] + "\n患者：那发烧呢？" + END,
                          ANSWERS[3] + "\nHuman: What is your name?" + END,
                          ANSWERS[4] + "\n<|im_start|>user\nIs it serious?" + END,
                          ANSWERS[5] + "\n用户：谢谢。" + END],
                         {"self_questioning", "leak"}),  # <|im_start|> in the reply is a leak too
    "leak": ([ANSWERS[0] + "<|endoftext|>" + END, ANSWERS[1] + " </s>" + END, ANSWERS[2] + "<|im_start|>" + END,
              ANSWERS[3] + END, ANSWERS[4] + " <unk>" + END, ANSWERS[5] + END], {"leak"}),
}


def train_tiny(path, answers, max_steps=80):
    """Full fine-tune of a tiny Llama on one answer per prompt (control-token text in an answer becomes the
    control token), saved as a model folder and loaded the way `medtune eval` loads it."""
    tok = tiny_tokenizer()
    model = tiny_llama(tok, hidden=64, seed=SEED)
    fmt = templates.resolve_format(tok)
    rows = []
    for item, answer in zip(PROMPTS, answers):
        prompt = templates.encode_dialogue(tok, fmt, [{"role": "user", "content": item["prompt"]}],
                                           add_generation_prompt=True).input_ids
        target = tok(answer, add_special_tokens=False)["input_ids"]
        rows.append((prompt + target, [-100] * len(prompt) + target))
    width = max(len(ids) for ids, _ in rows)
    input_ids = torch.tensor([ids + [tok.pad_token_id] * (width - len(ids)) for ids, _ in rows])
    labels = torch.tensor([lab + [-100] * (width - len(lab)) for _, lab in rows])
    mask = torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids, _ in rows])
    torch.manual_seed(SEED)
    opt = torch.optim.AdamW(model.parameters(), lr=lr(1e-2))
    model.train()
    for _ in range(max_steps):
        loss = model(input_ids=input_ids, attention_mask=mask, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        if loss.item() < 0.02:
            break
    model.eval()
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return chat.load_chat_model(str(path)), loss.item()


@pytest.fixture
def one_thread():
    """Tiny models run ~30x faster on one thread than on two contended ones (the test machine is shared)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("behaviour", list(BEHAVIOURS))
def test_tiny_model_trips_exactly_its_flags(behaviour, tmp_path, one_thread):
    answers, expected = BEHAVIOURS[behaviour]
    cm, loss = train_tiny(tmp_path / behaviour, answers)
    below("final training loss", loss, 0.1)  # the habit is learned before its flags are read
    settings = chat.GenerationSettings(temperature=0.7, max_new_tokens=40, repetition_penalty=1.0)
    result = health.run_health(cm, PROMPTS, settings, progress=False)
    assert result["settings"]["temperature"] == 0.0  # always greedy
    summary, responses = result["summary"], result["responses"]
    raised = {name for name, on in summary["flags"].items() if on}
    above("flags raised are exactly the trained ones (1 = yes)", float(raised == expected), 0.5,
          (raised, summary, [r["response"] for r in responses]))
    assert summary["n"] == len(PROMPTS) and summary["by_kind"]["general"]["n"] == 2
    if behaviour == "good":
        assert [r["response"] for r in responses] == ANSWERS
        assert all(r["stopped"] and r["length_tokens"] >= 4 for r in responses)
    if behaviour == "looping":
        assert summary["mean_repeat_4gram"] > 0.5 and summary["looping_share"] == 1.0
        assert all(r["length_tokens"] == 40 for r in responses)  # ids come from generation, not re-tokenising
        # the default penalty of --health (1.1, as medtune chat) does not hide a learned loop
        served = health.run_health(cm, PROMPTS, dataclasses.replace(settings, repetition_penalty=1.1), progress=False)
        assert served["summary"]["flags"]["repetition"], served["summary"]
    if behaviour == "self_questioning":  # the plain-text user turns are self-questions without any leak
        plain = [r for r in responses if "<|im_start|>" not in r["response"]]
        assert len(plain) == 4 and all(r["self_question"] and not r["leak"] for r in plain)
    if behaviour == "leak":
        assert [r["leak"] for r in responses] == [True, True, True, False, True, False]
        assert not any(r["self_question"] for r in responses)


# --- prompts ------------------------------------------------------------------------------------------

def test_prompts_filtered_by_language(tmp_path):
    english = health.load_prompts(langs=["en"])
    assert len(english) == 20 and {p["lang"] for p in english} == {"en"}
    with pytest.raises(DataError, match="no prompt has lang fr"):
        health.load_prompts(langs=["fr"])


def test_default_settings_are_what_chat_serves_with_made_greedy():
    from medtune.chat import GenerationSettings

    s = health.health_settings(None)
    assert s.temperature == 0.0 and s.max_new_tokens == 512
    assert s.repetition_penalty == GenerationSettings().repetition_penalty


def test_bundled_prompts_are_half_medical_and_in_both_languages():
    prompts = health.load_prompts()
    assert len(prompts) == 40 and all(p["prompt"].strip() for p in prompts)
    assert len({p["prompt"] for p in prompts}) == 40
    for kind in ("medical", "general"):
        for lang in ("en", "zh"):
            assert sum(p["kind"] == kind and p["lang"] == lang for p in prompts) == 10


def test_user_prompt_files(tmp_path):
    txt = tmp_path / "p.txt"
    txt.write_text("What is a fever?\n\n发热怎么办？\n", encoding="utf-8")
    assert [p["prompt"] for p in health.load_prompts(txt)] == ["What is a fever?", "发热怎么办？"]
    good = tmp_path / "p.jsonl"
    good.write_text(json.dumps({"prompt": "Hi", "kind": "general"}) + "\n", encoding="utf-8")
    assert health.load_prompts(good) == [{"prompt": "Hi", "kind": "general", "lang": None}]


@pytest.mark.parametrize("content, where", [
    ('{"prompt": "ok"}\n{"prompt": "broken"\n', "p.jsonl:2"),
    ('{"prompt": "ok"}\n\n{"question": "no prompt"}\n', "p.jsonl:3: field 'prompt'"),
    ('["a list"]\n', "p.jsonl:1"),
    ('{"prompt": "ok", "kind": 3}\n', "p.jsonl:1: field 'kind'"),
    ('{"prompt": "   "}\n', "p.jsonl:1: field 'prompt'"),
    ("\n\n", "p.jsonl"),
])
def test_bad_prompt_files_name_the_line(tmp_path, content, where):
    path = tmp_path / "p.jsonl"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataError) as err:
        health.load_prompts(path)
    assert err.value.where == f"{path.parent}/{where}"


def test_prompt_file_that_is_missing_or_not_utf8(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        health.load_prompts(tmp_path / "nope.jsonl")
    bad = tmp_path / "p.txt"
    bad.write_bytes("ok\n".encode() + "发热".encode("gbk") + b"\n")
    with pytest.raises(DataError, match="UTF-8") as err:
        health.load_prompts(bad)
    assert err.value.line == 2
