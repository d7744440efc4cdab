"""`medtune data stats`: counts, token lengths, truncation, duplicates, languages and the histogram, checked
against values worked out by hand with the in-process tiny tokenizer."""

import json

import pytest
from tiny import tiny_tokenizer

from medtune.cli import main
from medtune.data.stats import file_stats, language_of, write_stats

# "z" is not in the tiny tokenizer's training corpus: each one is a single byte token, never merged
Z_DOCS = ["z" * 30, "z" * 40, "z" * 50, "z" * 200, "Z" * 30]  # the last is an exact duplicate of the first
ASTHMA = ("Asthma is a long-term condition of the airways that causes wheezing, breathlessness, a tight chest and "
          "coughing, often worse at night or after exercise. Attacks can be triggered by colds, pollen, smoke, cold "
          "air or pets. Most people control it well with a preventer inhaler taken every day and a reliever inhaler "
          "for sudden symptoms, reviewed by a nurse at least once a year.")


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


def write_lines(path, lines):
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def test_text_counts_lengths_and_truncation(tmp_path, tok):
    assert [len(tok(d)["input_ids"]) for d in Z_DOCS] == [30, 40, 50, 200, 30]  # the premise
    s = file_stats(write_lines(tmp_path / "z.txt", Z_DOCS), tok, max_length=45)
    # tokens per document: its characters + the EOS that separates documents in PT
    assert (s["kind"], s["examples"], s["characters"], s["tokens"]) == ("text", 5, 350, 355)
    assert s["lengths"] == {"min": 31, "mean": 71.0, "median": 41.0, "p90": 141.0, "p99": 195.0, "max": 201}
    assert (s["over_max_length"], s["over_max_length_share"]) == (2, 0.4)  # 51 and 201 tokens
    assert (s["exact_duplicates"], s["exact_duplicate_rate"]) == (1, 0.2)
    assert s["near_duplicates"] == 0


def test_near_duplicate_rate_and_no_tokenizer(tmp_path):
    docs = [ASTHMA, ASTHMA.replace("wheezing", "whistling"), ASTHMA.lower(), "患者发热三天，伴咳嗽、咽痛，建议多喝水。"]
    src = tmp_path / "t.jsonl"
    src.write_text("".join(json.dumps({"text": d}, ensure_ascii=False) + "\n" for d in docs), encoding="utf-8")
    s = file_stats(src)
    assert (s["exact_duplicates"], s["near_duplicates"], s["near_duplicate_rate"]) == (1, 1, 0.25)
    assert s["tokens"] is None and s["over_max_length_share"] is None and s["length_unit"] == "characters"
    assert s["lengths"]["max"] == len(ASTHMA) + 1 and s["characters"] == sum(map(len, docs))


def test_language_mix(tmp_path):
    docs = ["患者发热咳嗽，建议多休息、多喝水。", "The patient has a fever and a cough.",
            "患者 has fever 发热 and cough 咳嗽", "12345 67890 !!! ???", "患者血常规正常，CRP 和 PCT 略高，胸部 CT 未见异常。"]
    assert [language_of(d) for d in docs] == ["zh", "latin", "mixed", "other", "zh"]
    s = file_stats(write_lines(tmp_path / "l.txt", docs))
    assert s["languages"] == {"zh": 0.4, "latin": 0.2, "mixed": 0.2, "other": 0.2}


def test_dialogues_templated_tokens_and_turns(tmp_path, tok):
    dialogues = [
        [{"role": "user", "content": "I have a fever."}, {"role": "assistant", "content": "Rest and drink fluids."}],
        [{"role": "system", "content": "Be careful."}, {"role": "user", "content": "Chest pain?"},
         {"role": "assistant", "content": "Call an ambulance."}, {"role": "user", "content": "Now?"},
         {"role": "assistant", "content": "Yes, now."}],
    ]
    src = tmp_path / "d.jsonl"
    src.write_text("".join(json.dumps({"messages": d}) + "\n" for d in dialogues), encoding="utf-8")
    expected = [len(tok(tok.apply_chat_template(d, tokenize=False), add_special_tokens=False)["input_ids"])
                for d in dialogues]
    s = file_stats(src, tok, max_length=min(expected))
    assert s["tokens"] == sum(expected) and (s["lengths"]["min"], s["lengths"]["max"]) == (min(expected), max(expected))
    assert s["over_max_length"] == 1
    assert s["characters"] == sum(len(m["content"]) for d in dialogues for m in d)
    assert (s["kind"], s["format"], s["examples"]) == ("dialogue", "messages", 2)
    assert s["turns"] == {"min": 2, "mean": 3.0, "max": 4} and s["multi_turn_share"] == 0.5


def test_write_stats_png_and_json(tmp_path, tok):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = write_lines(tmp_path / "a" / "z.txt", Z_DOCS)
    b = write_lines(tmp_path / "b" / "z.txt", [ASTHMA])
    summary = write_stats([a, b], tmp_path / "out", tokenizer=tok, max_length=45)
    pngs = [f["histogram"] for f in summary["files"]]
    assert [p.rsplit("/", 1)[1] for p in pngs] == ["z.lengths.png", "z-2.lengths.png"]  # same name, two folders
    for png in pngs:
        with open(png, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    saved = json.loads((tmp_path / "out" / "stats.json").read_text(encoding="utf-8"))
    assert saved["max_length"] == 45 and [f["examples"] for f in saved["files"]] == [5, 1]


def test_cli_stats_with_a_tokenizer_folder(tmp_path, tok, capsys):
    tok.save_pretrained(tmp_path / "tok")
    src = write_lines(tmp_path / "z.txt", Z_DOCS)
    out = tmp_path / "stats"
    assert main(["data", "stats", str(src), "--tokenizer", str(tmp_path / "tok"), "--max-length", "45",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    row = next(line for line in printed.splitlines() if line.startswith("z.txt"))
    assert row.split() == ["z.txt", "text", "5", "350", "355", "31", "71", "41", "141", "195", "201", "40.0%",
                           "20.0%", "0.0%"]
    assert (out / "z.lengths.png").is_file() and (out / "stats.json").is_file()
    assert main(["data", "stats", str(tmp_path / "nope.txt"), "--tokenizer", "none", "--out", str(out)]) == 2
    assert "nope.txt: file not found" in capsys.readouterr().err
