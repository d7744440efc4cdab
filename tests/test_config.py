import re

import pytest

from medtune.config import load_config, parse_overrides
from medtune.errors import ConfigError, MedtuneError
from medtune.stages.sft import SFTConfig


def write(tmp_path, text):
    p = tmp_path / "r.yaml"
    p.write_text(text, encoding="utf-8")
    return p


def test_yaml_then_overrides(tmp_path):
    p = write(tmp_path, "stage: sft\ntrain:\n  learning_rate: 1e-4\n  batch_size: 2\ndata:\n  path: [a.jsonl]\n")
    cfg = load_config(SFTConfig, p, ["train.learning_rate=1e-5", "lora.r=8", "data.path=x.jsonl,y.jsonl"])
    assert cfg.train.learning_rate == 1e-5  # override wins, "1e-5" read as a number
    assert cfg.train.batch_size == 2
    assert cfg.lora.r == 8
    assert cfg.data.path == ["x.jsonl", "y.jsonl"]


def test_unknown_key_names_it_and_suggests(tmp_path):
    p = write(tmp_path, "train:\n  learnig_rate: 1e-4\n")
    with pytest.raises(ConfigError) as e:
        load_config(SFTConfig, p)
    assert "train.learnig_rate" in str(e.value) and "learning_rate" in str(e.value)
    with pytest.raises(ConfigError, match="did you mean 'max_length'"):
        load_config(SFTConfig, None, ["data.max_lenght=5"])
    with pytest.raises(ConfigError, match="unknown key 'trian'"):
        load_config(SFTConfig, None, ["trian.seed=1"])


def test_wrong_types_and_choices():
    with pytest.raises(ConfigError, match="expected an integer"):
        load_config(SFTConfig, None, ["train.batch_size=two"])
    with pytest.raises(ConfigError, match="expected true or false"):
        load_config(SFTConfig, None, ["data.packing=maybe"])
    with pytest.raises(ConfigError, match="choose one of"):
        load_config(SFTConfig, None, ["data.truncation=cut"])
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_overrides(["train.seed"])


def test_bad_yaml_and_wrong_stage(tmp_path):
    with pytest.raises(ConfigError, match=r"r.yaml:\d+: invalid YAML"):
        load_config(SFTConfig, write(tmp_path, "train:\n  seed: [1\n"))
    with pytest.raises(ConfigError, match="for stage 'dpo'"):
        load_config(SFTConfig, write(tmp_path, "stage: dpo\n"))
    with pytest.raises(ConfigError, match="not found"):
        load_config(SFTConfig, tmp_path / "missing.yaml")


def test_every_shipped_recipe_loads():
    from pathlib import Path

    import medtune
    from conftest import SHARED
    from medtune.stages import get_stage
    from medtune.config import read_yaml

    roots = [Path(__file__).resolve().parents[1] / "recipes", Path(medtune.__file__).parent / "assets" / "recipes"]
    recipes = [p for r in roots for p in sorted(r.glob("*.yaml"))]
    assert recipes, "no recipes shipped"
    for p in recipes:
        first = p.read_text(encoding="utf-8").splitlines()[0]
        assert first.startswith("# medtune "), f"{p} must open with the command that runs it"
        stage = read_yaml(p)["stage"]
        if stage == "pipeline":
            from medtune import pipeline

            assert f"medtune pipeline {p.parent.name}/{p.name}" in first or f"medtune:recipes/{p.name}" in first
            assert pipeline.check(p)[1]
            continue
        module, cls = get_stage(stage)
        assert f"medtune {stage} " in first
        cfg = load_config(cls, p)
        built = "medtune data from-benchmark" in first  # its data is written by the command it opens with
        if not built and ("../shared" not in p.read_text(encoding="utf-8") or SHARED.is_dir()):
            module.validate(cfg)  # every data file it names is there and reads cleanly


def test_a_section_given_in_part_keeps_the_stages_own_defaults():
    from medtune.stages import dpo, ppo

    cfg = load_config(dpo.DPOConfig, None, ["train.max_steps=5"])
    assert cfg.train.max_steps == 5 and cfg.train.learning_rate == 5e-5  # dpo's default, not TrainConfig's 2e-4
    assert load_config(dpo.DPOConfig, None, ["train.learning_rate=1e-3"]).train.learning_rate == 1e-3
    assert load_config(ppo.PPOConfig, None, ["sampling.top_p=0.9"]).sampling.max_new_tokens == 64


def test_from_dict_checks_option_sets_as_recipe_keys_and_names_their_source():
    from medtune.config import from_dict
    from medtune.eval.runner import EvalSettings

    s = from_dict(EvalSettings, {"tasks": ["mcq"], "shots": 2, "health_langs": "en,zh"}, source="p.yaml: step 'exam'")
    assert (s.tasks, s.shots, s.health_langs, s.batch_size) == (["mcq"], 2, ["en", "zh"], 8)  # the rest: defaults
    where = "p.yaml: step 'exam'"
    for data, message in [
        ({"shotz": 1}, f"{where}: unknown key 'shotz' (did you mean 'shots'?)"),
        ({"shots": -1}, f"{where}: field 'shots': got -1; it must be at least 0"),
        ({"batch_size": 0}, f"{where}: field 'batch_size': got 0; it must be at least 1"),
        ({"batch_size": "eight"}, f"{where}: field 'batch_size': expected an integer, got 'eight'"),
        ({"mode": "guess"}, f"{where}: field 'mode': got 'guess'; it must be one of: loglik, generate"),
        ({"files": ["mcq.jsonl"]}, f"{where}: field 'files': expected a mapping"),
        ([1, 2], f"{where}: expected a mapping of keys"),
    ]:
        with pytest.raises(ConfigError) as e:
            from_dict(EvalSettings, data, source=where)
        assert str(e.value).startswith(message), str(e.value)


def test_the_eval_commands_options_build_its_settings_through_from_dict():
    from medtune.cli import build_parser, eval_settings

    ns = build_parser().parse_args(["eval", "m", "--tasks", "mcq, pubmedqa", "--file", "mcq=a.jsonl", "--shots", "2",
                                    "--general-text", "a,b.txt", "--health-langs", "en,zh", "--mode", "generate"])
    s = eval_settings(ns)
    assert (s.tasks, s.files, s.shots, s.general_text, s.health_langs, s.mode) == (
        ["mcq", "pubmedqa"], {"mcq": "a.jsonl"}, 2, ["a,b.txt"], ["en", "zh"], "generate")
    assert (s.limit, s.batch_size, s.text_mode, s.general_tasks) == (0, 8, "line", [])  # argparse's defaults
    with pytest.raises(MedtuneError, match="expected TASK=PATH"):
        eval_settings(build_parser().parse_args(["eval", "m", "--file", "mcq"]))


def test_an_options_range_is_declared_once_on_its_settings_field():
    import argparse
    from dataclasses import dataclass, field

    from medtune.config import INT_LIMIT, above, at_least, between, field_option, from_dict

    @dataclass
    class Settings:
        batch: int = field(default=8, metadata=at_least(1))
        rate: float = field(default=0.5, metadata=above(0))
        seed: int = field(default=0, metadata=between(0, 99))

    assert (field_option(Settings, "batch")("3"), field_option(Settings, "rate")("0.25")) == (3, 0.25)
    for name, text, message in [("batch", "0", "must be at least 1 (got 0)"),
                                ("batch", str(INT_LIMIT + 1), f"must be at most {INT_LIMIT}"),
                                ("rate", "0", "more than 0"), ("seed", "100", "must be at most 99")]:
        with pytest.raises(argparse.ArgumentTypeError, match=re.escape(message)):
            field_option(Settings, name)(text)
        if text != str(INT_LIMIT + 1):  # the command line's cap on any integer, not the field's range
            with pytest.raises(ConfigError):  # the same key in a pipeline step or a sweep
                from_dict(Settings, {name: float(text) if name == "rate" else int(text)})
    from medtune.cli import build_parser

    with pytest.raises(SystemExit):  # `medtune eval --batch-size 0` is refused by EvalSettings' own range
        build_parser().parse_args(["eval", "m", "--batch-size", "0"])
