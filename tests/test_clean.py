"""`medtune data clean`: each step removes what it should and keeps the rest, in order; output layout,
atomic writing and errors as the user meets them."""

import json

import pytest

from medtune.cli import main
from medtune.data import formats
from medtune.data.clean import CleanSettings, clean_files, normalize
from medtune.errors import DataError, MedtuneError

EN_A = ("Type 2 diabetes develops slowly over several years, and many people have no symptoms at first. "
        "Typical signs include increased thirst, frequent urination, tiredness, blurred vision and cuts that heal "
        "slowly. The diagnosis rests on an HbA1c blood test or a fasting plasma glucose measured on two separate "
        "occasions. Treatment starts with a healthy diet, regular physical activity and weight loss, and metformin "
        "is usually the first medicine offered.")
EN_B = ("Asthma is a long-term condition of the airways that causes wheezing, breathlessness, a tight chest and "
        "coughing, often worse at night or after exercise. Attacks can be triggered by colds, pollen, smoke, cold "
        "air or pets. Most people control it well with a preventer inhaler taken every day and a reliever inhaler "
        "for sudden symptoms, reviewed by a nurse at least once a year.")
ZH_A = ("高血压是最常见的慢性病之一，早期通常没有明显症状，很多人在体检时才发现血压升高。长期血压控制不好会损害心脏、"
        "大脑和肾脏，增加中风和心肌梗死的风险。治疗包括低盐饮食、规律运动、戒烟限酒，以及在医生指导下长期服用降压药物。")
ZH_B = ("糖尿病患者需要定期监测血糖，了解饮食和运动对血糖的影响。出现口渴、多尿、体重下降时应及时就医。"
        "医生会根据糖化血红蛋白的结果调整治疗方案，必要时使用胰岛素，并检查眼底、肾功能和足部感觉。")


def write_lines(path, lines):
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def write_jsonl(path, records):
    return write_lines(path, [json.dumps(r, ensure_ascii=False) for r in records])


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def removed(report):
    return {reason: n for reason, n in report["removed"].items() if n}


def test_exact_duplicates_first_kept_order_preserved(tmp_path):
    docs = [EN_A, EN_B, "  " + EN_A.upper().replace(" ", "   "), ZH_A, EN_B]
    src = write_lines(tmp_path / "in.txt", docs)
    report = clean_files([src], tmp_path / "out.txt", progress=False)
    assert (tmp_path / "out.txt").read_text(encoding="utf-8").splitlines() == [EN_A, EN_B, ZH_A]
    assert removed(report) == {"exact_duplicate": 2}
    assert report["documents"] == {"read": 5, "kept": 3, "removed": 2}


@pytest.mark.parametrize("first,changed,other", [
    (EN_A, EN_A.replace("tiredness", "fatigue"), EN_B),
    (ZH_A, ZH_A.replace("规律运动", "适量运动"), ZH_B),
], ids=["english", "chinese"])
def test_near_duplicates_removed_different_documents_kept(tmp_path, first, changed, other):
    src = write_jsonl(tmp_path / "in.jsonl", [{"text": t} for t in (first, changed, other)])
    report = clean_files([src], tmp_path / "out.jsonl", progress=False)
    assert [r["text"] for r in read_jsonl(tmp_path / "out.jsonl")] == [first, other]
    assert removed(report) == {"near_duplicate": 1}
    report = clean_files([src], tmp_path / "all.jsonl", near_dup=False, progress=False)
    assert report["documents"]["kept"] == 3


def test_duplicates_across_input_files(tmp_path):
    a = write_lines(tmp_path / "a.txt", [EN_A, ZH_A])
    b = write_jsonl(tmp_path / "b.jsonl", [{"text": ZH_A.replace("规律运动", "适量运动")}, {"text": EN_A}, {"text": EN_B}])
    report = clean_files([a, b], tmp_path / "out.jsonl", progress=False)
    assert [r["text"] for r in read_jsonl(tmp_path / "out.jsonl")] == [EN_A, ZH_A, EN_B]
    assert [(i["read"], i["kept"]) for i in report["inputs"]] == [(2, 2), (3, 1)]


def test_each_quality_filter_removes_its_example(tmp_path):
    bad = {
        "empty": "\x00\x01\x02",
        "too_short": "Rest and fluids.",
        "too_long": " ".join(f"word{i}" for i in range(80)),
        "replacement_chars": "The patient\ufffds fever lasted three days and then resolved.",
        "low_useful_chars": "★★★★★ ☆☆☆☆☆ ♥♥♥♥♥ $$$ +++ === <<< >>> ~~~ ok",
        "repeated_lines": "Subscribe to our newsletter\nSubscribe to our newsletter\nSubscribe to our newsletter\n"
                          "The clinic opens at nine.",
        "repeated_ngrams": "buy cheap pills online now " * 8,
    }
    good = ["Paracetamol lowers fever; adults take 500 mg to 1 g every 4-6 hours (at most 4 g a day).",
            "患者发热三天，伴咳嗽、咽痛，建议多喝水、注意休息，如持续高热请及时就医。"]
    records = [{"text": t} for t in [good[0], *bad.values(), good[1]]]
    src = write_jsonl(tmp_path / "in.jsonl", records)
    report = clean_files([src], tmp_path / "out.jsonl", max_chars=300, progress=False)
    assert [r["text"] for r in read_jsonl(tmp_path / "out.jsonl")] == good
    assert removed(report) == {reason: 1 for reason in bad}
    assert report["settings"]["max_chars"] == 300 and report["settings"]["min_chars"] == 20
    # thresholds are settable: loosened, the same examples pass
    report = clean_files([src], tmp_path / "loose.jsonl", min_chars=5, max_chars=1000, min_useful=0,
                         max_replacement_chars=1, max_repeated_lines=1, max_repeated_ngrams=1, progress=False)
    assert removed(report) == {"empty": 1}


def test_normalisation():
    assert normalize("  Cafe\u0301  au \u3000 lait\x07\r\nis\tserved\ufeff.  ") == "Café au lait\nis\tserved."


def test_dialogues_cleaned_and_written_as_messages(tmp_path):
    def sharegpt(q, a):
        return {"conversations": [{"from": "human", "value": q}, {"from": "gpt", "value": a}]}

    src = write_jsonl(tmp_path / "sg.jsonl", [
        sharegpt("What is type 2 diabetes?", EN_A),
        sharegpt("What is type 2 diabetes?", EN_A.replace("tiredness", "fatigue")),  # near duplicate
        sharegpt("hi", "ok"),  # too short once joined
        sharegpt("What is asthma?", EN_B),
        sharegpt("\x07\x07", EN_B),  # a user turn empty after normalising
    ])
    out = tmp_path / "clean.jsonl"
    report = clean_files([src], out, progress=False)
    assert removed(report) == {"empty": 1, "too_short": 1, "near_duplicate": 1}
    assert formats.detect_format(out) == "messages"
    kept = formats.load_dialogues(out)
    assert [[m["content"] for m in d["messages"]] for d in kept] == [["What is type 2 diabetes?", EN_A],
                                                                       ["What is asthma?", EN_B]]
    alpaca = tmp_path / "alpaca.json"  # a JSON array in, messages JSONL out
    alpaca.write_text(json.dumps([{"instruction": "What is asthma?", "input": "", "output": EN_B}]), encoding="utf-8")
    clean_files([alpaca], tmp_path / "a.jsonl", progress=False)
    assert read_jsonl(tmp_path / "a.jsonl") == [{"messages": [{"role": "user", "content": "What is asthma?"},
                                                              {"role": "assistant", "content": EN_B}]}]


def test_paragraph_layout_preserved(tmp_path):
    src = tmp_path / "in.txt"
    src.write_text(f"{EN_A[:200]}\n{EN_A[200:]}\n\n\n{EN_B}\n\n{EN_A[:200]}\n{EN_A[200:]}\n\nToo short.\n", encoding="utf-8")
    out = tmp_path / "out.txt"
    report = clean_files([src], out, mode="paragraph", progress=False)
    assert report["layout"] == "txt-paragraph"
    assert out.read_text(encoding="utf-8") == f"{EN_A[:200]}\n{EN_A[200:]}\n\n{EN_B}\n"
    assert formats.load_texts(out, mode="paragraph") == [f"{EN_A[:200]}\n{EN_A[200:]}", EN_B]


def test_deidentify_text_and_dialogue_contents(tmp_path):
    note = "Please call the ward on +1 415 555 0134 or write to j.smith@example.com about the results."
    src = write_jsonl(tmp_path / "t.jsonl", [{"text": note}, {"text": EN_B}])
    report = clean_files([src], tmp_path / "t_out.jsonl", deid=True, progress=False)
    texts = [r["text"] for r in read_jsonl(tmp_path / "t_out.jsonl")]
    assert texts == ["Please call the ward on [PHONE] or write to [EMAIL] about the results.", EN_B]
    assert report["deid"]["replaced"] == {"EMAIL": 1, "PHONE": 1}

    report = clean_files([src], tmp_path / "email.jsonl", deid_types="EMAIL", progress=False)
    assert read_jsonl(tmp_path / "email.jsonl")[0]["text"] == note.replace("j.smith@example.com", "[EMAIL]")
    assert report["deid"]["replaced"] == {"EMAIL": 1} and report["deid"]["types"] == ["EMAIL"]

    dialogue = {"messages": [
        {"role": "system", "content": "You are a clinic assistant. Escalations: triage@clinic.example.org"},
        {"role": "user", "content": "My number is +44 20 7946 0958, please call me back about my test."},
        {"role": "assistant", "content": "We will call you on +44 20 7946 0958 today."}]}
    src = write_jsonl(tmp_path / "d.jsonl", [dialogue])
    report = clean_files([src], tmp_path / "d_out.jsonl", deid=True, progress=False)
    contents = [m["content"] for m in read_jsonl(tmp_path / "d_out.jsonl")[0]["messages"]]
    assert contents == ["You are a clinic assistant. Escalations: [EMAIL]",
                        "My number is [PHONE], please call me back about my test.", "We will call you on [PHONE] today."]
    assert report["deid"]["replaced"] == {"EMAIL": 1, "PHONE": 2}
    with pytest.raises(MedtuneError, match="unknown PHI type"):
        clean_files([src], tmp_path / "x.jsonl", deid_types="EMAIL,NAMES", progress=False)


def test_report_next_to_output(tmp_path):
    src = write_lines(tmp_path / "in.txt", [EN_A, EN_A])
    clean_files([src], tmp_path / "out.txt", progress=False)
    report = json.loads((tmp_path / "out.txt.report.json").read_text(encoding="utf-8"))
    assert report["inputs"][0]["sha256"] == formats.fingerprint(src)["sha256"]
    assert report["removed"]["exact_duplicate"] == 1 and report["settings"]["near_dup_threshold"] == 0.8


def test_failed_run_leaves_existing_output_untouched(tmp_path, monkeypatch):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "clean.jsonl"
    out.write_text("old\n", encoding="utf-8")
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"text": EN_A}) + '\n{"text": "unfinished\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"bad.jsonl:2: invalid JSON"):
        clean_files([bad], out, progress=False)
    assert sorted(p.name for p in out_dir.iterdir()) == ["clean.jsonl"] and out.read_text() == "old\n"

    good = write_jsonl(tmp_path / "good.jsonl", [{"text": EN_A}])

    def disk_full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("medtune.data.clean.os.fsync", disk_full)
    with pytest.raises(MedtuneError, match="No space left on device"):
        clean_files([good], out, progress=False)
    with pytest.raises(MedtuneError, match="No space left on device"):
        clean_files([good], out_dir / "new.jsonl", progress=False)
    assert sorted(p.name for p in out_dir.iterdir()) == ["clean.jsonl"] and out.read_text() == "old\n"


def test_bad_options_and_outputs(tmp_path):
    text = write_lines(tmp_path / "in.txt", [EN_A])
    dialogue = write_jsonl(tmp_path / "d.jsonl", [{"messages": [{"role": "user", "content": "hi"},
                                                                {"role": "assistant", "content": "hello"}]}])
    with pytest.raises(MedtuneError, match="would overwrite an input"):
        clean_files([text], text, progress=False)
    assert text.read_text(encoding="utf-8") == EN_A + "\n"
    with pytest.raises(MedtuneError, match="mix text and dialogue"):
        clean_files([text, dialogue], tmp_path / "o.jsonl", progress=False)
    with pytest.raises(MedtuneError, match="near_dup_threshold must be between 0 and 1"):
        clean_files([text], tmp_path / "o.txt", near_dup_threshold=1.5, progress=False)
    with pytest.raises(DataError, match="missing.txt: file not found"):
        clean_files([tmp_path / "missing.txt"], tmp_path / "o.txt", progress=False)
    assert not (tmp_path / "o.txt").exists() and not (tmp_path / "o.jsonl").exists()


# --------------------------------------------------------------------------- CLI


def test_cli_clean_prints_a_summary(tmp_path, capsys):
    src = write_lines(tmp_path / "in.txt", [EN_A, EN_B, EN_A, "Too short."])
    out = tmp_path / "sub" / "out.txt"
    assert main(["data", "clean", str(src), "-o", str(out), "--deid"]) == 0
    printed = capsys.readouterr().out
    assert "kept 2 of 4 documents (50.0%)" in printed
    assert "removed: too short 1, exact duplicate 1" in printed
    assert "PHI replaced: none found" in printed
    assert f"wrote {out} (txt-line) and {out}.report.json" in printed
    assert out.read_text(encoding="utf-8").splitlines() == [EN_A, EN_B]


def test_cli_malformed_input_is_one_line_exit_2(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]})
                   + "\n{not json}\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"
    assert main(["data", "clean", str(bad), "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("medtune: error: ") and "bad.jsonl:2: invalid JSON" in err[0]
    assert not out.exists()
    gbk = tmp_path / "gbk.txt"
    gbk.write_bytes((EN_A + "\n").encode() + "患者发热\n".encode("gbk"))
    assert main(["data", "clean", str(gbk), "-o", str(out)]) == 2
    assert "gbk.txt:2: not valid UTF-8" in capsys.readouterr().err


NOTE = ("Patient: Harold Whitaker, DOB: 04/17/1952, MRN: 00482913. Call his daughter Rebecca Lin on (617) 555-0143 "
        "about the discharge plan and the follow-up appointment.")


def test_deid_audit_report_has_offsets_never_identifiers(tmp_path):
    src = write_jsonl(tmp_path / "in.jsonl", [{"text": NOTE}, {"text": EN_B}])
    audit = tmp_path / "audit.jsonl"
    report = clean_files([src], tmp_path / "out.jsonl", CleanSettings(deid=True, deid_report=str(audit)), progress=False)
    records = read_jsonl(audit)
    assert {r["type"] for r in records} == {"NAME", "DATE", "MRN", "PHONE"}
    assert report["deid"]["replaced"] == {"DATE": 1, "MRN": 1, "NAME": 2, "PHONE": 1}
    clean_note = normalize(NOTE)
    for r in records:
        assert r["line"] == 1 and set(r) == {"line", "type", "start", "end"}
        assert clean_note[r["start"]:r["end"]] in ("Harold Whitaker", "04/17/1952", "00482913", "Rebecca Lin",
                                                  "(617) 555-0143")
    raw = audit.read_text(encoding="utf-8")
    for secret in ("Whitaker", "00482913", "555-0143", "1952"):
        assert secret not in raw


def test_deid_surrogate_mode_and_keep_year(tmp_path):
    src = write_jsonl(tmp_path / "in.jsonl", [{"text": NOTE}])
    clean_files([src], tmp_path / "s.jsonl", deid=True, deid_mode="surrogate", deid_keep_year=True, progress=False)
    text = read_jsonl(tmp_path / "s.jsonl")[0]["text"]
    assert "[" not in text and "Whitaker" not in text and "00482913" not in text
    assert "/1952" in text and "04/17/1952" not in text  # shifted, year kept
    with pytest.raises(MedtuneError, match="mode"):
        clean_files([src], tmp_path / "x.jsonl", deid=True, deid_mode="scramble", progress=False)
    with pytest.raises(MedtuneError, match="overwrite"):
        clean_files([src], tmp_path / "y.jsonl", deid=True, deid_report=str(src), progress=False)


def test_cli_clean_deid_prints_counts_and_writes_the_audit(tmp_path, capsys):
    src = write_jsonl(tmp_path / "in.jsonl", [{"text": NOTE}])
    audit = tmp_path / "audit.jsonl"
    assert main(["data", "clean", str(src), "-o", str(tmp_path / "o.jsonl"), "--deid", "--deid-report", str(audit)]) == 0
    printed = capsys.readouterr().out
    assert "PHI replaced: DATE 1, MRN 1, NAME 2, PHONE 1" in printed
    assert len(read_jsonl(audit)) == 5
    assert main(["data", "clean", str(src), "-o", str(tmp_path / "p.jsonl"), "--deid-types", "PHONE",
                 "--deid-mode", "surrogate"]) == 0
    assert "Harold Whitaker" in read_jsonl(tmp_path / "p.jsonl")[0]["text"]
