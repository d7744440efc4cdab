"""A fuzzer over every loader of user files: any bytes give a result or one line of MedtuneError, never another
exception (a traceback). Bytes are drawn three ways: raw bytes, JSON/JSONL built from the fields the formats
use (so records get past the JSON parser and into the field checks), and YAML built from the recipes' keys.

`make test` runs the `ci` profile (a fixed number of examples, derandomised: the same inputs every run). A
longer search: `MEDTUNE_FUZZ=nightly pytest tests/test_fuzz.py` (docs/testing.md, "Fuzzing").
"""

import json
import os
import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from medtune.errors import MedtuneError

settings.register_profile("ci", max_examples=60, deadline=None, derandomize=True, database=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("nightly", max_examples=3000, deadline=None, database=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
FUZZ = settings.get_profile(os.environ.get("MEDTUNE_FUZZ", "ci"))

# the field names and values the loaders look for, so generated records reach their checks
KEYS = ["messages", "role", "content", "conversations", "from", "value", "instruction", "input", "output",
        "system", "history", "text", "chosen", "rejected", "prompt", "question", "response_chosen",
        "response_rejected", "options", "answer", "answer_idx", "id", "subject", "context", "explanation",
        "opa", "opb", "opc", "opd", "cop", "QUESTION", "CONTEXTS", "final_decision", "LONG_ANSWER", "meta_info",
        "condition", "name", "weight", "path"]
WORDS = ["user", "assistant", "system", "human", "gpt", "A", "B", "yes", "no", "maybe", "", " ", "\ue000",
         "<|im_end|>", "\x00", "患者"]
scalars = (st.none() | st.booleans() | st.integers(-3, 1_000) | st.integers() | st.floats(allow_nan=True)
           | st.sampled_from(WORDS) | st.text(max_size=12))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=6), inner, max_size=5),
                      max_leaves=24)
records = st.dictionaries(st.sampled_from(KEYS), values, max_size=6)


def _json_lines(recs) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in recs).encode("utf-8", "surrogatepass")


def _json_array(recs) -> bytes:
    return json.dumps(recs, ensure_ascii=False).encode("utf-8", "surrogatepass")


def _mutate(data: bytes, cut: int, junk: bytes) -> bytes:
    """Cut the document short and splice in junk: a torn write, a bad byte."""
    at = cut % (len(data) + 1)
    return data[:at] + junk + data[at:]


json_bytes = st.one_of(
    st.binary(max_size=300),
    st.lists(records, min_size=1, max_size=4).map(_json_lines),
    st.lists(records, min_size=1, max_size=4).map(_json_array),
    st.builds(_mutate, st.lists(records, min_size=1, max_size=3).map(_json_lines), st.integers(0, 10_000),
              st.binary(max_size=4)),
    st.lists(values, max_size=3).map(_json_lines),
    st.text(max_size=200).map(lambda t: t.encode("utf-8")),
)
csv_bytes = st.one_of(
    st.binary(max_size=200),
    st.lists(st.lists(st.sampled_from(WORDS) | st.text(max_size=8), max_size=8), max_size=5).map(
        lambda rows: "\n".join(",".join(r) for r in rows).encode("utf-8", "surrogatepass")),
)


@pytest.fixture(scope="module")
def folder():
    with tempfile.TemporaryDirectory() as d:
        yield Path(d)


def write(folder: Path, name: str, data: bytes) -> Path:
    path = folder / name
    path.write_bytes(data)
    return path


def one_line_or_result(load, *args, **kwargs):
    """`load(...)`'s result, or None when it raised a MedtuneError of one line; any other exception fails."""
    try:
        return load(*args, **kwargs)
    except MedtuneError as exc:
        assert "\n" not in str(exc), repr(str(exc))
        return None


# --------------------------------------------------------------------------- dialogue and text files


@FUZZ
@given(data=json_bytes, fmt=st.sampled_from(["auto", "messages", "sharegpt", "alpaca"]),
       suffix=st.sampled_from([".jsonl", ".json"]))
def test_dialogue_files(folder, data, fmt, suffix):
    from medtune.data import formats

    path = write(folder, "dialogues" + suffix, data)
    loaded = one_line_or_result(formats.load_dialogues, path, fmt)
    checked = one_line_or_result(formats.validate_file, path, fmt)
    assert (loaded is None) == (checked is None)  # `data validate` and the stages agree on every file
    if loaded is not None:
        assert loaded and all(d["messages"] for d in loaded)


@FUZZ
@given(data=json_bytes, suffix=st.sampled_from([".txt", ".jsonl", ".json"]), mode=st.sampled_from(["line", "paragraph"]))
def test_text_files(folder, data, suffix, mode):
    from medtune.data import formats

    one_line_or_result(formats.load_texts, write(folder, "text" + suffix, data), mode=mode)


# --------------------------------------------------------------------------- preference pairs and RL prompts


@FUZZ
@given(data=json_bytes, suffix=st.sampled_from([".jsonl", ".json"]))
def test_preference_files(folder, data, suffix):
    from medtune.data import preference

    path = write(folder, "pairs" + suffix, data)
    one_line_or_result(preference.load_pairs, path)
    one_line_or_result(preference.load_prompts, path)
    one_line_or_result(preference.validate_file, path)


# --------------------------------------------------------------------------- benchmark files


@FUZZ
@given(data=json_bytes, task=st.sampled_from(["pubmedqa", "medmcqa", "medqa", "medqa_4options", "mcq"]),
       suffix=st.sampled_from([".jsonl", ".json"]))
def test_benchmark_files(folder, data, task, suffix):
    from medtune.eval import tasks

    one_line_or_result(tasks.load_task, task, write(folder, "bench" + suffix, data))


@FUZZ
@given(data=csv_bytes, task=st.sampled_from(["mmlu_medical", "cmmlu"]))
def test_benchmark_csv_files(folder, data, task):
    from medtune.eval import tasks

    one_line_or_result(tasks.load_task, task, write(folder, "anatomy_test.csv" if task == "mmlu_medical" else "anatomy.csv", data))


# --------------------------------------------------------------------------- recipes and pipeline recipes

STAGES = ["pt", "sft", "rm", "dpo", "ppo", "grpo"]
RECIPE_KEYS = ["stage", "model", "data", "lora", "train", "output_dir", "resume", "overwrite", "name_or_path",
               "template", "path", "max_length", "learning_rate", "batch_size", "target_modules", "sources",
               "weight", "steps", "name", "run", "recipe", "set", "models", "tasks", "alpha", "train.max_steps",
               "beta", "loss", "rewards", "reward_model", "val_size", "system_prompt", "truncation"]
yaml_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.sampled_from(RECIPE_KEYS + STAGES), inner, max_size=4), max_leaves=16)


def _yaml(doc) -> bytes:
    return yaml.safe_dump(doc, allow_unicode=True).encode("utf-8", "surrogatepass")


yaml_bytes = st.one_of(
    st.binary(max_size=200),
    st.text(max_size=200).map(lambda t: t.encode("utf-8")),
    st.dictionaries(st.sampled_from(RECIPE_KEYS), yaml_values, max_size=6).map(_yaml),
    st.builds(_mutate, st.dictionaries(st.sampled_from(RECIPE_KEYS), yaml_values, max_size=6).map(_yaml),
              st.integers(0, 10_000), st.sampled_from([b"\t", b": ", b"- ", b"&a ", b"*a", b"!!python/object ", b"{", b"\xff"])),
)


@FUZZ
@given(data=yaml_bytes, stage=st.sampled_from(STAGES))
def test_recipes(folder, data, stage):
    from medtune.stages import get_stage
    from medtune.config import load_config

    one_line_or_result(load_config, get_stage(stage)[1], write(folder, "recipe.yaml", data))


@FUZZ
@given(steps=st.lists(st.dictionaries(st.sampled_from(RECIPE_KEYS), yaml_values, max_size=5), max_size=3),
       extra=st.dictionaries(st.sampled_from(RECIPE_KEYS), yaml_values, max_size=2), raw=st.binary(max_size=100),
       use_raw=st.booleans())
def test_pipeline_recipes(folder, steps, extra, raw, use_raw):
    from medtune import pipeline

    doc = {"stage": "pipeline", "output_dir": str(folder / "never"), "steps": steps, **extra}
    path = write(folder, "pipeline.yaml", raw if use_raw else _yaml(doc))
    one_line_or_result(pipeline.check, path)
    assert not (folder / "never").exists()
