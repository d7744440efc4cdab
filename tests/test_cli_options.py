"""Every numeric command-line option is range-checked: 0, -1 and an absurd value are each either accepted or
refused on one line with exit code 2, never a traceback; and no numeric option escapes the sweep."""

import argparse

import pytest

from medtune import merge
from medtune.cli import build_parser, main

BIG = str(10**12)
# command, option, the values it refuses (of 0, -1 and an absurd one); the others must parse
SWEEP = [
    ("eval m", "--shots", ["-1", BIG]),
    ("eval m", "--limit", ["-1", BIG]),
    ("eval m", "--seed", ["-1", BIG]),
    ("eval m", "--batch-size", ["0", "-1", BIG]),
    ("eval m", "--max-new-tokens", ["0", "-1", BIG]),
    ("eval m", "--generate-batch-size", ["0", "-1", BIG]),
    ("eval m", "--health-repetition-penalty", ["0", "-1", "inf"]),
    ("eval m", "--health-max-new-tokens", ["0", "-1", BIG]),
    ("eval m --safety", "--safety-max-new-tokens", ["0", "-1", BIG]),
    ("chat m", "--temperature", ["-1", "nan"]),
    ("chat m", "--top-p", ["0", "-1", "5"]),
    ("chat m", "--max-new-tokens", ["0", "-1", BIG]),
    ("chat m", "--repetition-penalty", ["0", "-1", "inf"]),
    ("chat m", "--no-repeat-ngram-size", ["-1", BIG]),
    ("serve m", "--port", ["-1", BIG]),
    ("serve m", "--max-concurrency", ["0", "-1", BIG]),
    ("serve m", "--max-queue", ["-1", BIG]),
    ("serve m", "--max-input-tokens", ["0", "-1", BIG]),
    ("serve m", "--max-tokens", ["0", "-1", BIG]),
    ("serve m", "--timeout", ["0", "-1", "inf"]),
    ("data clean a -o b", "--min-chars", ["-1", BIG]),
    ("data clean a -o b", "--max-chars", ["0", "-1", BIG]),
    ("data clean a -o b", "--min-useful", ["-1", "1.5"]),
    ("data clean a -o b", "--max-replacement-chars", ["-1", BIG]),
    ("data clean a -o b", "--max-repeated-lines", ["-1", "2"]),
    ("data clean a -o b", "--max-repeated-ngrams", ["-1", "2"]),
    ("data clean a -o b", "--ngram", ["0", "-1", BIG]),
    ("data clean a -o b", "--near-dup-threshold", ["0", "-1", "2"]),
    ("data clean a -o b", "--num-perm", ["0", "-1", BIG]),
    ("data clean a -o b", "--seed", ["-1", BIG]),
    ("data stats a", "--max-length", ["0", "-1", BIG]),
    ("data stats a", "--max-prompt-length", ["0", "-1", BIG]),
    ("data stats a", "--max-answer-length", ["0", "-1", BIG]),
    ("data vocab a", "--top", ["0", "-1", BIG]),
    ("data vocab a", "--min-count", ["0", "-1", BIG]),
    ("demo", "--max-steps", ["0", "-1", BIG]),
    ("rm score r f", "--batch-size", ["0", "-1", BIG]),
    ("merge average b t o", "--alpha", ["-1", "2"]),
    ("merge average b t o", "--alpha-lower", ["-1", "2"]),
    ("merge average b t o", "--alpha-upper", ["-1", "2"]),
    ("merge average b t o", "--split-layer", ["-1", BIG]),
    ("merge average b t o", "--sweep", ["-1", "0,2"]),
    ("merge average b t o", "--limit", ["-1", BIG]),
    ("merge average b t o", "--batch-size", ["0", "-1", BIG]),
    ("merge average b t o", "--max-general-drop", ["-1", "101"]),
    ("merge average b t o", "--max-ppl-increase", ["-1", "inf"]),
    ("merge average b t o", "--shard-size", ["0", "-1", "1e999"]),
    ("merge soup o a b", "--weights", ["-1", "1,inf"]),
    ("merge soup o a b", "--limit", ["-1", BIG]),
    ("merge soup o a b", "--batch-size", ["0", "-1", BIG]),
    ("merge soup o a b", "--shard-size", ["0", "-1", "1e999"]),
]
VALUES = ("0", "-1")


def _absurd(refused):
    return refused[-1] if refused[-1] not in VALUES else None


def _command(line: str) -> str:
    """"data clean a -o b" -> "data clean"; "eval m" -> "eval"."""
    words = line.split()
    return " ".join(words[:2]) if words[0] in ("data", "merge", "rm") else words[0]


@pytest.mark.parametrize("command,option,refused", SWEEP, ids=[f"{_command(c)} {o}" for c, o, _ in SWEEP])
def test_a_bad_numeric_option_is_one_line_and_exit_code_2(capsys, monkeypatch, command, option, refused):
    monkeypatch.delenv("MEDTUNE_API_KEY", raising=False)
    _no_work(monkeypatch)
    for value in refused:
        code = _exit_code([*command.split(), f"{option}={value}"])
        err = capsys.readouterr().err
        assert code == 2, (option, value, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("medtune: error: ") and "Traceback" not in err, (option, value, err)
        assert option in lines[0], lines[0]
    for value in [v for v in VALUES if v not in refused]:  # accepted: the parser takes it
        ns = _parse([*command.split(), f"{option}={value}"])
        assert ns is not None


def _no_work(monkeypatch):
    """A bad option must stop the command before it does anything: what it would have run fails the test."""
    from medtune import chat, demo
    from medtune.data import clean, stats, vocab
    from medtune.eval import runner
    from medtune.serve import app
    from medtune.stages import rm

    def reached(*args, **kwargs):
        raise AssertionError("the command ran with an option it should have refused")

    for module, name in [(demo, "main"), (chat, "main"), (app, "bind"), (runner, "evaluate"), (clean, "clean_files"),
                         (stats, "write_stats"), (vocab, "corpus_candidates"), (rm, "score_file"),
                         (merge, "average"), (merge, "soup"), (merge, "sweep"), (merge, "greedy_soup")]:
        monkeypatch.setattr(module, name, reached)


def _exit_code(argv) -> int:
    try:
        return main(argv)
    except SystemExit as exc:  # argparse refuses it
        return exc.code


def _parse(argv):
    if argv[:2] == ["rm", "score"]:
        from medtune.cli import rm_score_parser

        return rm_score_parser().parse_args(argv[2:])
    return build_parser().parse_args(argv)


def _numeric_options(parser, prefix=""):
    """(command, option) for every option of `parser` and its subcommands that takes a number."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _numeric_options(sub, f"{prefix}{name} ")
        elif action.option_strings and (action.type in (int, float) or hasattr(action.type, "bounds")):
            if action.type in (int, float) or action.type.bounds is not None:
                yield prefix.strip(), action.option_strings[-1], action.type


def test_no_numeric_option_escapes_the_sweep():
    from medtune.cli import rm_score_parser

    swept = {(_command(c), o) for c, o, _ in SWEEP}
    found = list(_numeric_options(build_parser()))
    found += [("rm score", o, t) for _, o, t in _numeric_options(rm_score_parser())]
    assert found
    unchecked = [(c, o) for c, o, t in found if t in (int, float) and o != "--port"]  # serve checks --port itself
    assert unchecked == []
    missing = [(c, o) for c, o, _ in found if (c, o) not in swept]
    assert missing == []


def test_chat_refuses_an_empty_prompt(capsys):
    for prompt in ("", "  \n"):
        assert _exit_code(["chat", "./no/such/model", "--prompt", prompt]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "--prompt must not be empty" in err[0], err
