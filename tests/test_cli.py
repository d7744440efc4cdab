"""The command line as a user meets it: bad input gives one line naming file, line and field, exit code 2."""

import json
import subprocess
import sys

import pytest

from medtune.cli import main


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "medtune", *map(str, args)], capture_output=True, text=True,
                          timeout=300)


def test_malformed_line_is_one_clear_line_with_exit_code_2(tmp_path):
    data = tmp_path / "train.jsonl"
    good = json.dumps({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]})
    data.write_text(good + "\n" + good + "\n" + '{"messages": [{"role": "user", "content": "hi"}\n', encoding="utf-8")
    r = run_cli("data", "validate", data)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "train.jsonl:3" in lines[0], r.stderr


@pytest.mark.parametrize("content,expect", [
    ({"messages": [{"role": "assistant", "content": "x"}, {"role": "user", "content": "y"}]}, "messages[0].role"),
    ({"messages": [{"role": "user", "content": ""}, {"role": "assistant", "content": "y"}]}, "messages[0].content"),
    ({"messages": [{"role": "doctor", "content": "x"}, {"role": "assistant", "content": "y"}]}, "messages[0].role"),
    ({"conversations": [{"from": "human", "value": "x"}, {"from": "gpt"}]}, "conversations[1].value"),
])
def test_sft_refuses_bad_records_before_loading_any_model(tmp_path, capsys, content, expect):
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps(content) + "\n", encoding="utf-8")
    assert main(["data", "validate", str(data)]) == 2
    err = capsys.readouterr().err
    assert f"d.jsonl:1: field '{expect}'" in err, err


def test_non_utf8_bytes_name_the_line(tmp_path, capsys):
    data = tmp_path / "d.jsonl"
    ok = json.dumps({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]})
    data.write_bytes((ok + "\n" + ok + "\n").encode() + b'{"messages": "\xff"}\n')
    assert main(["data", "validate", str(data)]) == 2
    assert "d.jsonl:3" in capsys.readouterr().err


def test_missing_model_path_and_unknown_key(tmp_path, capsys):
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}) + "\n")
    assert main(["sft", "model.name_or_path=./no/such/model", f"data.path={data}", f"output_dir={tmp_path}/r"]) == 2
    err = capsys.readouterr().err
    assert "./no/such/model: model path does not exist" in err
    assert main(["sft", "train.learnin_rate=1"]) == 2
    assert "did you mean 'learning_rate'" in capsys.readouterr().err


def test_validate_checks_a_recipe_and_its_data(tmp_path, capsys):
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}) + "\n")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"# medtune sft r.yaml\nstage: sft\ndata:\n  path: [{data}]\n")
    assert main(["validate", str(recipe)]) == 0
    assert "1 records" in capsys.readouterr().out
    assert main(["validate", str(recipe), "data.path=" + str(tmp_path / "none.jsonl")]) == 2
    assert "none.jsonl" in capsys.readouterr().err
    assert main(["validate", "medtune:recipes/sft_demo.yaml"]) == 0


def test_convert_to_messages(tmp_path, capsys):
    src = tmp_path / "a.json"
    src.write_text(json.dumps([{"instruction": "What is BP?", "input": "", "output": "Blood pressure."}]))
    dst = tmp_path / "m.jsonl"
    assert main(["data", "convert", str(src), str(dst), "--to", "messages"]) == 0
    rec = json.loads(dst.read_text())
    assert rec["messages"] == [{"role": "user", "content": "What is BP?"}, {"role": "assistant", "content": "Blood pressure."}]


def test_interactive_chat_streams_and_warns(tmp_path):
    from tiny import save_tiny

    model = save_tiny(tmp_path / "tiny")
    r = subprocess.run([sys.executable, "-m", "medtune", "chat", str(model), "--max-new-tokens", "5",
                        "--temperature", "0"], input="hello\n/reset\nagain\n/quit\n", capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "not medical advice" in r.stderr
    assert r.stdout.count("model> ") == 2
