"""Bad input, as a demanding user types it: one line on stderr naming file, line and field, exit code 2,
no traceback, nothing half-written. Each test pins one case that once failed differently."""

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Literal, Union

import pytest

from medtune.cli import main
from medtune.config import above, at_least, check, load_config, one_of
from medtune.errors import ConfigError

GOOD = json.dumps({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]})


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("medtune: error: "), err
    return err[0]


def write(path, text: str):
    path.write_text(text, encoding="utf-8")
    return path


# --------------------------------------------------------------------------- data files


def test_deeply_nested_json_is_a_data_error_not_a_recursion_traceback(tmp_path):
    deep = "[" * 100_000 + "]" * 100_000
    jsonl = write(tmp_path / "d.jsonl", GOOD + "\n" + '{"messages": ' + deep + "}\n")
    array = write(tmp_path / "d.json", "[" + deep + "]")
    for path, line in ((jsonl, 2), (array, 1)):
        r = subprocess.run([sys.executable, "-m", "medtune", "data", "validate", str(path)],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1
        assert f"{path.name}:{line}: invalid JSON: arrays or objects nested too deeply" in r.stderr


def test_utf16_file_is_named_as_utf16(tmp_path, capsys):
    path = tmp_path / "u.jsonl"
    path.write_bytes((GOOD + "\n").encode("utf-16"))
    assert main(["data", "validate", str(path)]) == 2
    assert "u.jsonl:1: the file is UTF-16 text, not UTF-8" in one_error_line(capsys)


def test_gbk_bom_and_crlf(tmp_path, capsys):
    zh = json.dumps({"messages": [{"role": "user", "content": "患者发热"}, {"role": "assistant", "content": "休息"}]},
                    ensure_ascii=False)
    gbk = tmp_path / "gbk.jsonl"
    gbk.write_bytes((zh + "\n").encode("gbk"))
    assert main(["data", "validate", str(gbk)]) == 2
    assert "gbk.jsonl:1: not valid UTF-8" in one_error_line(capsys)
    ok = tmp_path / "ok.jsonl"
    ok.write_bytes(b"\xef\xbb\xbf" + (GOOD + "\r\n" + zh + "\r\n").encode())
    assert main(["data", "validate", str(ok)]) == 0
    assert "2 records" in capsys.readouterr().out


@pytest.mark.parametrize("text,expect", [
    ("", "no records"),
    ("\n  \n\t\n", "no records"),
    ("[" + GOOD + ", 3]", "d.jsonl:1: a record must be a JSON object, got number"),
])
def test_empty_blank_and_non_object(tmp_path, capsys, text, expect):
    assert main(["data", "validate", str(write(tmp_path / "d.jsonl", text))]) == 2
    assert expect in one_error_line(capsys)


def test_a_key_with_a_line_break_stays_on_one_line(tmp_path, capsys):  # found by tests/test_fuzz.py
    path = write(tmp_path / "d.jsonl", json.dumps({"\n": None, "b": 1}) + "\n")
    assert main(["data", "validate", str(path)]) == 2
    assert 'unknown record shape with keys ["\\n", b]' in one_error_line(capsys)
    from medtune.data import preference
    from medtune.errors import DataError

    with pytest.raises(DataError, match=r'not a preference record: keys \["\\n", b\]') as e:
        preference.load_pairs(path)
    assert "\n" not in str(e.value)


def test_convert_refuses_a_special_file_as_destination(tmp_path, capsys):
    """Renaming the output onto /dev/null (or a pipe) would replace it with a regular file."""
    src = write(tmp_path / "a.jsonl", GOOD + "\n")
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    link = tmp_path / "link"
    link.symlink_to(fifo)
    for dst in (fifo, link):
        assert main(["data", "convert", str(src), str(dst)]) == 2
        assert "is not a regular file" in one_error_line(capsys)
    assert fifo.is_fifo() and link.is_symlink()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_convert_writes_through_a_symlink_and_in_place(tmp_path, capsys):
    src = write(tmp_path / "a.jsonl", GOOD + "\n")
    target = write(tmp_path / "target.jsonl", "old\n")
    link = tmp_path / "link.jsonl"
    link.symlink_to(target)
    assert main(["data", "convert", str(src), str(link), "--to", "sharegpt"]) == 0
    assert link.is_symlink() and "conversations" in target.read_text()
    assert main(["data", "convert", str(target), str(target), "--to", "messages"]) == 0  # src == dst
    assert json.loads(target.read_text()) == json.loads(GOOD)


@pytest.mark.parametrize("dst,expect", [
    ("", "no output file given"),
    ("afile/x.jsonl", "afile is a file, not a folder"),
    ("nodir/x.jsonl", "folder nodir does not exist"),
])
def test_convert_bad_destination(tmp_path, capsys, monkeypatch, dst, expect):
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "afile", "x")
    src = write(tmp_path / "a.jsonl", GOOD + "\n")
    assert main(["data", "convert", str(src), dst]) == 2
    assert expect in one_error_line(capsys)


def test_convert_write_failure_is_one_line_and_leaves_nothing(tmp_path, capsys, monkeypatch):
    src = write(tmp_path / "a.jsonl", GOOD + "\n")
    out = tmp_path / "out"
    out.mkdir()

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("medtune.runs.tempfile.mkstemp", refuse)
    assert main(["data", "convert", str(src), str(out / "m.jsonl")]) == 2
    assert "m.jsonl: cannot write here: Permission denied" in one_error_line(capsys)
    monkeypatch.undo()

    def disk_full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("medtune.data.formats.os.fsync", disk_full)
    assert main(["data", "convert", str(src), str(out / "m.jsonl")]) == 2
    assert "cannot write: No space left on device" in one_error_line(capsys)
    assert list(out.iterdir()) == []


# --------------------------------------------------------------------------- recipes and overrides


@pytest.mark.parametrize("text,expect", [
    ("stage: sft\ndata: [a, b]\n", "r.yaml:2: field 'data': expected a section of keys, got ['a', 'b']"),
    ("stage: sft\nmodel: some/model\n", "r.yaml:2: field 'model': expected a section of keys"),
    ("- a\n- b\n", "r.yaml: a recipe must be a mapping of keys, not a list"),
    ("stage: sft\nfoo: 1\n", "r.yaml:2: unknown key 'foo'"),
    ("stage: sft\n1: 2\n", "r.yaml:2: unknown key '1'"),
    ("stage: sft\ntrain:\n  seed: 1\n  seed: 2\n", "r.yaml:4: invalid YAML: key 'seed' is given twice (first on line 3)"),
    ("stage: [sft]\n", "cannot tell which stage"),
    ("stage: sft\ntrain:\n  bf16: maybe\n", "r.yaml:3: field 'train.bf16': expected 'auto' or true or false, got 'maybe'"),
    ("stage: sft\nlora:\n  target_modules: [q_proj, {a: 1}]\n", "field 'lora.target_modules[1]': expected a string"),
    ("stage: sft\ntrain:\n  learning_rate: .nan\n", "r.yaml:3: field 'train.learning_rate': expected a finite number"),
    ("stage: sft\nmodel:\n  name_or_path: /tmp\n", "no training data"),
    ("stage: sft\noutput_dir: a\x00b\n", "r.yaml:2: invalid YAML: the character '\\x00' is not allowed in YAML"),  # fuzzer
])
def test_validate_bad_recipes(tmp_path, capsys, text, expect):
    assert main(["validate", str(write(tmp_path / "r.yaml", text))]) == 2
    assert expect in one_error_line(capsys)


def test_validate_a_directory_and_an_output_dir_that_is_a_file(tmp_path, capsys):
    assert main(["validate", str(tmp_path)]) == 2
    assert "is a directory, not a recipe file" in one_error_line(capsys)
    data = write(tmp_path / "d.jsonl", GOOD + "\n")
    recipe = write(tmp_path / "r.yaml", f"stage: sft\ndata:\n  path: [{data}]\noutput_dir: {data}\n")
    assert main(["validate", str(recipe)]) == 2
    assert "d.jsonl: output_dir is a file, not a folder" in one_error_line(capsys)


def test_an_empty_section_is_allowed(tmp_path):
    cfg = load_config(_Cfg, write(tmp_path / "r.yaml", "train:\n# everything commented out\n"))
    assert cfg.train.batch_size == 4


def test_override_errors_name_the_override(tmp_path):
    recipe = write(tmp_path / "r.yaml", "train:\n  batch_size: 2\n")
    with pytest.raises(ConfigError) as e:
        load_config(_Cfg, recipe, ["train.batch_size=0"])
    assert str(e.value).startswith("override 'train.batch_size=0': got 0; it must be at least 1")
    with pytest.raises(ConfigError, match=r"^override 'trian.seed=1': unknown key 'trian' \(did you mean 'train'\?\)"):
        load_config(_Cfg, recipe, ["trian.seed=1"])
    with pytest.raises(ConfigError, match=r"^override 'train=\{batch_size: 0\}': field 'train.batch_size'"):
        load_config(_Cfg, recipe, ["train={batch_size: 0}"])
    with pytest.raises(ConfigError, match="expected a finite number, got inf"):
        load_config(_Cfg, None, ["train.learning_rate=.inf"])


# --------------------------------------------------------------------------- value ranges (field metadata)


@dataclass
class _Train:
    batch_size: int = field(default=4, metadata=at_least(1))
    learning_rate: float = field(default=1e-4, metadata=above(0))
    scheduler: str = field(default="cosine", metadata=one_of("cosine", "linear"))
    dropout: float = field(default=0.0, metadata=check(lambda v: 0 <= v < 1, "at least 0 and below 1"))
    bf16: Union[Literal["auto"], bool] = "auto"
    seed: int = 0


@dataclass
class _Cfg:
    train: _Train = field(default_factory=_Train)
    paths: list[str] = field(default_factory=list, metadata=check(bool, "at least one file"))


@pytest.mark.parametrize("override,expect", [
    ("train.batch_size=0", "got 0; it must be at least 1"),
    ("train.learning_rate=-1", "got -1; it must be more than 0"),
    ("train.learning_rate=0", "got 0; it must be more than 0"),
    ("train.scheduler=cosin", "got 'cosin'; it must be one of: cosine, linear"),
    ("train.dropout=1", "got 1; it must be at least 0 and below 1"),
    ("paths=", "got ''; it must be at least one file"),
])
def test_range_metadata(tmp_path, override, expect):
    with pytest.raises(ConfigError, match=expect):
        load_config(_Cfg, None, [override])
    recipe = write(tmp_path / "r.yaml", "paths: [a]\ntrain:\n  seed: 1\n")
    key = override.split("=")[0]
    assert load_config(_Cfg, recipe).paths == ["a"]  # defaults (and `paths: []` left out) are not checked
    good = {"train.batch_size": "8", "train.learning_rate": "1e-5", "train.scheduler": "linear",
            "train.dropout": "0.1", "paths": "x.jsonl"}[key]
    load_config(_Cfg, recipe, [f"{key}={good}"])


@pytest.mark.parametrize("override", [
    "train.batch_size=0", "train.learning_rate=-1", "data.max_length=0", "lora.r=0", "model.template=nonsense",
    "data.max_samples=-1",
])
def test_sft_refuses_out_of_range_values_before_doing_anything(tmp_path, capsys, override):
    out = tmp_path / "run"
    assert main(["sft", override, f"output_dir={out}", "model.name_or_path=./no/such/model"]) == 2
    assert f"override '{override}'" in one_error_line(capsys)
    assert not out.exists()


@pytest.mark.parametrize("stage", ["sft", "pt"])
def test_a_stage_without_data_says_so_before_doing_anything(tmp_path, capsys, stage):
    out = tmp_path / "run"
    assert main([stage, "data.path=", f"output_dir={out}"]) == 2
    assert "no training data" in one_error_line(capsys)
    assert not out.exists()


# --------------------------------------------------------------------------- main(): the last line of defence


def test_os_errors_become_one_line(tmp_path, capsys, monkeypatch):
    def not_a_dir(path, fmt):
        raise NotADirectoryError(20, "Not a directory", "runs/x")

    monkeypatch.setattr("medtune.data.formats.validate_file", not_a_dir)
    assert main(["data", "validate", "x.jsonl"]) == 2
    assert one_error_line(capsys) == ("medtune: error: runs/x: Not a directory "
                                      "(check the paths you gave and their permissions)")
    monkeypatch.setenv("MEDTUNE_DEBUG", "1")
    with pytest.raises(NotADirectoryError):
        main(["data", "validate", "x.jsonl"])


def test_a_library_message_over_several_lines_is_printed_as_one(capsys, monkeypatch):
    from medtune.errors import MedtuneError

    def fail(path, fmt):
        raise MedtuneError("could not load the model: OSError: We couldn't connect.\nCheck your connection.", where="a/b")

    monkeypatch.setattr("medtune.data.formats.validate_file", fail)
    assert main(["data", "validate", "x.jsonl"]) == 2
    assert one_error_line(capsys).endswith("We couldn't connect. Check your connection.")


def test_a_closed_pipe_is_not_an_error(capsys, monkeypatch):
    def closed(path, fmt):
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr("medtune.data.formats.validate_file", closed)
    assert main(["data", "validate", "x.jsonl"]) == 141
    assert capsys.readouterr().err == ""


def test_pt_bad_text_files_fail_with_file_and_line_before_any_model_loads(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["pt", f"data.path={tmp_path / 'missing.txt'}", f"output_dir={out}", "model.name_or_path=./no/model"]) == 2
    assert "data file not found" in one_error_line(capsys)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{"text": 3}\n')
    assert main(["pt", f"data.path={bad}", f"output_dir={out}", "model.name_or_path=./no/model"]) == 2
    assert "bad.jsonl:2" in one_error_line(capsys)
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("caf\xe9 au lait\n".encode("latin-1"))
    assert main(["pt", f"data.path={latin1}", f"output_dir={out}"]) == 2
    assert "latin1.txt:1" in one_error_line(capsys)
    assert not out.exists()


# --------------------------------------------------------------------------- errors name their source


def the_error_line(capsys) -> str:
    """The one error line of a command that may print notes first (chat prints the not-medical-advice note)."""
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("medtune: error: ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_a_pipeline_steps_bad_set_names_the_pipeline_the_step_and_the_key(tmp_path, capsys):
    data = write(tmp_path / "d.jsonl", GOOD + "\n")
    recipe = write(tmp_path / "sft.yaml", f"stage: sft\ndata:\n  path: [{data}]\n")
    pipe = write(tmp_path / "pipe.yaml", f"stage: pipeline\noutput_dir: {tmp_path / 'out'}\nsteps:\n"
                 f"  - {{name: tune, run: sft, recipe: {recipe}, set: {{train.learnig_rate: 1}}}}\n")
    for command in (["pipeline", str(pipe)], ["validate", str(pipe)]):
        assert main(command) == 2
        line = one_error_line(capsys)
        assert f"{pipe}: step 'tune': set 'train.learnig_rate': unknown key" in line, line
        assert "override" not in line
    assert not (tmp_path / "out").exists()


def test_a_relative_model_path_with_a_typo_is_named_before_any_network_attempt(tmp_path, capsys, monkeypatch):
    import huggingface_hub

    def network(*args, **kwargs):
        raise AssertionError("asked the hub about a local path")

    monkeypatch.setattr(huggingface_hub, "model_info", network)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs" / "sft-medicalgpt").mkdir(parents=True)
    assert main(["chat", "runs/sft-medicalgtp", "--prompt", "hi"]) == 2
    line = the_error_line(capsys)
    assert "runs/sft-medicalgtp: no such folder" in line and "runs/ is a local folder" in line, line
    for spec in ("nobody/x--y", "nobody/b.git"):  # neither a folder nor a valid hub id
        assert main(["chat", spec, "--prompt", "hi"]) == 2
        line = the_error_line(capsys)
        assert f"{spec}: no such folder, and not a valid hub id" in line, line
    os.symlink("loop", tmp_path / "loop")
    assert main(["chat", "loop", "--prompt", "hi"]) == 2
    assert "loop: a symbolic link that leads nowhere (a loop or a missing target)" in the_error_line(capsys)


@pytest.mark.parametrize("text,expect", [
    ('{"model_type": "llama", "hidden', "config.json is not valid JSON"),
    ("[1]", "config.json is not a JSON object"),
    (b"\xff\xfe{", "config.json is not UTF-8 text"),
])
def test_a_corrupt_config_json_is_one_line_with_a_hint(tmp_path, capsys, text, expect):
    from tiny import save_tiny

    model = save_tiny(tmp_path / "m")
    (model / "config.json").write_bytes(text if isinstance(text, bytes) else text.encode())
    capsys.readouterr()
    for command in (["chat", str(model), "--prompt", "hi"], ["data", "stats", write(tmp_path / "d.jsonl", GOOD).as_posix(),
                                                             "--tokenizer", str(model), "--out", str(tmp_path / "s")]):
        assert main(command) == 2
        line = the_error_line(capsys)
        assert f"{model / 'config.json'}: {expect}" in line and "copy it again" in line, line


def test_a_pair_the_template_refuses_names_its_record_not_a_name_error(monkeypatch):
    """preference.fit_pairs caught MedtuneError without importing it: a refused pair ended in a NameError."""
    from medtune.data import preference
    from medtune.errors import MedtuneError

    def refuse(*args, **kwargs):
        raise MedtuneError("chat template 'x' rejected the dialogue", hint="choose another template")

    monkeypatch.setattr(preference, "encode_pair", refuse)
    pair = {"prompt": [{"role": "user", "content": "q"}], "chosen": "a", "rejected": "b", "source": "p.jsonl:3"}
    with pytest.raises(MedtuneError, match=r"^p.jsonl:3: chat template 'x' rejected"):
        preference.fit_pairs([pair], None, None, {}, max_length=64)


def test_validate_checks_what_the_run_would_check(tmp_path, capsys):
    """validate said "recipe ok" for a corrupt config.json and for LoRA targets the model does not have."""
    from tiny import save_tiny

    model = save_tiny(tmp_path / "m")
    data = write(tmp_path / "d.jsonl", GOOD + "\n")
    recipe = write(tmp_path / "r.yaml", f"stage: sft\nmodel:\n  name_or_path: {model}\ndata:\n  path: [{data}]\n"
                                         f"output_dir: {tmp_path / 'out'}\n")
    capsys.readouterr()
    assert main(["validate", str(recipe)]) == 0
    out = capsys.readouterr().out
    assert "model ok:" in out and "recipe ok" in out
    assert main(["validate", str(recipe), "lora.target_modules=[q_proj,nonexistent_proj]"]) == 2
    assert "lora.target_modules: 'nonexistent_proj' names no module of this model" in one_error_line(capsys)
    (model / "tokenizer.json").write_text("{not json")
    assert main(["validate", str(recipe)]) == 2
    assert "could not load the tokenizer" in one_error_line(capsys)
    (model / "config.json").write_text("{")
    assert main(["validate", str(recipe)]) == 2
    assert "config.json is not valid JSON" in one_error_line(capsys)
    assert not (tmp_path / "out").exists()
