"""Preference pairs: a prompt (a conversation that ends with a user turn) and two answers, one preferred.

Four shapes are read, detected per record from its keys (see docs/data-formats.md):

- ``medicalgpt``  ``{"conversations": [{"from": "system"|"human"|"gpt", "value"}, ...], "chosen": str, "rejected": str}``
- ``pairwise``    ``{"question": str, "response_chosen": str, "response_rejected": str, "system"?: str}``
  (MedicalGPT's older reward files)
- ``prompt``      TRL's explicit-prompt form: ``{"prompt": str | [messages], "chosen": str | [assistant message],
  "rejected": ...}``
- ``implicit``    TRL's implicit-prompt form: ``{"chosen": [messages], "rejected": [messages]}``, two whole
  conversations that differ only in the last (assistant) turn

each in a JSON Lines file or one JSON array. Every reader returns the same thing:
``{"prompt": [{"role", "content"}, ...], "chosen": str, "rejected": str, "source": "path:line"}``.

The prompt follows the dialogue rules (optional system first, then user/assistant alternating, ending
with a user turn); the answers must be non-empty. A pair whose answers are identical carries no
preference: it is dropped and counted, not an error.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from medtune.config import at_least
from medtune.data import formats
from medtune.errors import ConfigError
from medtune.data.formats import DataError, _check_turns, _get_list, _get_str, _iter_objects, _json_type, _require_file

SHAPES = ("medicalgpt", "pairwise", "prompt", "implicit")
_HINT_SHAPE = ('expected {"conversations", "chosen", "rejected"} (MedicalGPT), {"question", "response_chosen", '
               '"response_rejected"}, {"prompt", "chosen", "rejected"} or {"chosen": [messages], "rejected": '
               '[messages]} (TRL); see docs/data-formats.md')


def shape_of(record: dict) -> str | None:
    if "conversations" in record and "chosen" in record:
        return "medicalgpt"
    if "response_chosen" in record or "response_rejected" in record:
        return "pairwise"
    if "prompt" in record:
        return "prompt"
    if isinstance(record.get("chosen"), list):
        return "implicit"
    return None


def _answer(path, line, record: dict, key: str) -> str:
    """An answer given as a string or as [{"role": "assistant", "content": ...}]."""
    value = record.get(key)
    if isinstance(value, list):
        if len(value) != 1 or not isinstance(value[0], dict) or value[0].get("role") != "assistant":
            raise DataError(path, line, key, "must be a string or one assistant message",
                            f'write "{key}": "..." or "{key}": [{{"role": "assistant", "content": "..."}}]')
        value = _get_str(path, line, value[0], "content", f"{key}[0].content")
    else:
        value = _get_str(path, line, record, key, key)
    if not value.strip():
        raise DataError(path, line, key, "empty answer", "fill in the text or drop the record")
    return value


def _messages(path, line, items: list, field: str) -> list[tuple]:
    """[{"role", "content"}] as turns for formats._check_turns (field names point into the user's record)."""
    record = {"messages": items}
    turns = formats._turns_messages(path, line, record)
    return [(r, c, rf.replace("messages", field, 1), cf.replace("messages", field, 1)) for r, c, rf, cf in turns]


def _prompt_turns(path, line, turns: list[tuple], container: str) -> list[dict]:
    if not turns:
        raise DataError(path, line, container, "empty prompt", "the prompt needs at least one user turn")
    messages = _check_turns(path, line, turns, container, require_final_assistant=False)
    if messages[-1]["role"] != "user":
        raise DataError(path, line, turns[-1][2], "the prompt must end with a user turn",
                        "the answers go in chosen/rejected, not in the prompt")
    return messages


def _prompt_field(path, line, record: dict) -> list[dict]:
    """The `prompt` key: a string (one user turn) or a list of messages ending with a user turn."""
    value = record["prompt"]
    if isinstance(value, str):
        turns = [("user", value, "prompt", "prompt")]
    elif isinstance(value, list):
        turns = _messages(path, line, value, "prompt")
    else:
        raise DataError(path, line, "prompt", f"must be a string or a list of messages, got {_json_type(value)}",
                        'write "prompt": "..." or "prompt": [{"role": "user", "content": "..."}]')
    return _prompt_turns(path, line, turns, "prompt")


def _read(path, line, record: dict, shape: str) -> dict:
    if shape == "medicalgpt":
        record_turns = formats._turns_sharegpt(path, line, record)
        prompt = _prompt_turns(path, line, record_turns, "conversations")
        chosen, rejected = _answer(path, line, record, "chosen"), _answer(path, line, record, "rejected")
    elif shape == "pairwise":
        turns = []
        system = _get_str(path, line, record, "system", "system", optional=True)
        if system is not None:
            turns.append(("system", system, "system", "system"))
        turns.append(("user", _get_str(path, line, record, "question", "question"), "question", "question"))
        prompt = _prompt_turns(path, line, turns, "question")
        chosen = _answer(path, line, record, "response_chosen")
        rejected = _answer(path, line, record, "response_rejected")
    elif shape == "prompt":
        prompt = _prompt_field(path, line, record)
        chosen, rejected = _answer(path, line, record, "chosen"), _answer(path, line, record, "rejected")
    else:  # implicit: two whole conversations with a shared prompt
        example = '"chosen": [{"role": "user", ...}, {"role": "assistant", ...}]'
        c_items = _get_list(path, line, record, "chosen", example)
        r_items = _get_list(path, line, record, "rejected", example)
        c_turns, r_turns = _messages(path, line, c_items, "chosen"), _messages(path, line, r_items, "rejected")
        if len(c_turns) < 2 or c_turns[-1][0] != "assistant" or not r_turns or r_turns[-1][0] != "assistant":
            raise DataError(path, line, "chosen" if len(c_turns) < 2 or c_turns[-1][0] != "assistant" else "rejected",
                            "must end with the assistant's answer", example)
        if [t[:2] for t in c_turns[:-1]] != [t[:2] for t in r_turns[:-1]]:
            raise DataError(path, line, "rejected", "chosen and rejected differ before their last turn",
                            "both must hold the same prompt and differ only in the final assistant answer")
        prompt = _prompt_turns(path, line, c_turns[:-1], "chosen")
        _check_turns(path, line, c_turns, "chosen", require_final_assistant=True)
        chosen, rejected = c_turns[-1][1], r_turns[-1][1]
        for key, text in (("chosen", chosen), ("rejected", rejected)):
            if not text.strip():
                raise DataError(path, line, key, "empty answer", "fill in the text or drop the record")
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected, "source": f"{path}:{line}"}


def load_pairs(path, *, stats: dict | None = None) -> list[dict]:
    """All preference pairs of a file, fully checked; raises DataError on the first bad record.
    Pairs with identical answers are dropped and counted in `stats["identical_dropped"]`."""
    _require_file(path)
    pairs, count = [], 0
    stats = stats if stats is not None else {}
    stats.setdefault("identical_dropped", 0)
    for line, record in _iter_objects(path):
        shape = shape_of(record)
        if shape is None:
            keys = ", ".join(sorted(record)[:8]) + (", ..." if len(record) > 8 else "")
            raise DataError(path, line, None, f"not a preference record: keys [{keys}]", _HINT_SHAPE)
        count += 1
        pair = _read(path, line, record, shape)
        if pair["chosen"].strip() == pair["rejected"].strip():
            stats["identical_dropped"] += 1
            continue
        pairs.append(pair)
    if count == 0:
        raise DataError(path, None, None, "no records", "the file is empty; add at least one preference pair")
    return pairs


def validate_file(path) -> dict:
    """`medtune data validate --kind preference`: counts of a checked file."""
    stats: dict = {}
    pairs = load_pairs(path, stats=stats)
    return {"records": len(pairs) + stats["identical_dropped"], "pairs": len(pairs), **stats}


def load_prompts(path) -> list[dict]:
    """Prompts for RL (PPO, GRPO): the prompts of a preference file, or prompt-only records
    {"prompt": str | [messages], ...} whose extra keys (e.g. "answer") are kept for the reward.
    Returns [{"prompt": [messages], "source", **extra}]."""
    _require_file(path)
    out = []
    for line, record in _iter_objects(path):
        shape = shape_of(record)
        if shape in ("medicalgpt", "pairwise") or (shape in ("prompt", "implicit") and "chosen" in record):
            pair = _read(path, line, record, shape)
            out.append({"prompt": pair["prompt"], "source": pair["source"]})
            continue
        if shape == "prompt":  # prompt-only records, e.g. {"prompt": "...", "answer": "C"}
            extra = {k: v for k, v in record.items() if k != "prompt"}
            out.append({"prompt": _prompt_field(path, line, record), "source": f"{path}:{line}", **extra})
            continue
        raise DataError(path, line, None, "not a prompt record",
                        'write {"prompt": "..."} (other keys such as "answer" are passed to the reward) or a preference pair')
    if not out:
        raise DataError(path, None, None, "no records", "the file is empty; add at least one prompt")
    return out


def encode_pair(tokenizer, fmt, prompt: list[dict], answer: str) -> tuple[list[int], list[int]]:
    """(prompt ids, answer ids) of one answer under the chat template: the prompt ends with the assistant
    header, the answer with the template's end-of-turn token; prompt + answer is exactly how SFT encodes
    the same dialogue, so every preference stage sees the text the model was tuned on."""
    from medtune.data import templates

    enc = templates.encode_dialogue(tokenizer, fmt, [*prompt, {"role": "assistant", "content": answer}])
    end = enc.turn_ends[-1]
    start = end
    while start > 0 and enc.assistant_mask[start - 1]:
        start -= 1
    return enc.input_ids[:start], enc.input_ids[start:end]


@dataclass
class PreferenceData:
    """Preference pairs (the `data` section of rm and dpo recipes).

    path: one file or a list (MedicalGPT `conversations`+`chosen`/`rejected`, `question`/`response_chosen`/
      `response_rejected`, or TRL `prompt`/`chosen`/`rejected`; see docs/data-formats.md).
    max_length: longest prompt + answer in tokens; longer pairs are dropped and counted.
    val_size: held-out share (0 < x < 1) or count (x >= 1) of pairs for the pairwise metrics.
    max_samples: use only the first N pairs of each file (0 = all).
    system_prompt: a system message added to prompts that have none ("" = none).
    """

    path: list[str] = field(default_factory=list)
    max_length: int = field(default=1024, metadata=at_least(8))
    val_size: float = field(default=0.1, metadata=at_least(0))
    max_samples: int = field(default=0, metadata=at_least(0))
    system_prompt: str = ""


def read_pair_files(data: PreferenceData) -> tuple[list[dict], list[dict], dict]:
    """Every pair of every file, checked before any model loads. Returns (pairs, fingerprints, stats)."""
    from medtune.data import resolve_path

    paths = [data.path] if isinstance(data.path, str) else list(data.path)
    if not paths:
        raise ConfigError("no preference data", where="data.path", hint="set data.path to one or more files")
    pairs, fingerprints, stats = [], [], {"identical_dropped": 0}
    for p in [resolve_path(x) for x in paths]:
        found = load_pairs(p, stats=stats)
        if data.max_samples:
            found = found[: data.max_samples]
        fingerprints.append({**formats.fingerprint(p), "records": len(found)})
        pairs.extend(found)
    if data.system_prompt:
        for pair in pairs:
            if pair["prompt"][0]["role"] != "system":
                pair["prompt"] = [{"role": "system", "content": data.system_prompt}, *pair["prompt"]]
    return pairs, fingerprints, stats
