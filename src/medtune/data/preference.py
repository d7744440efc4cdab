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

Tool-calling pairs (docs/tools.md): a record with a `tools` list, or whose prompt holds OpenAI `tool_calls` /
`tool` messages (MedicalGPT's `function_call` / `observation` turns in the `conversations` shape), is checked as
data/tools.py checks dialogues; its pair also holds `"tools"`, its prompt may end with a tool result, and an
answer given as an assistant message with `tool_calls` stays that message (``{"role": "assistant", "content",
"tool_calls"}``) instead of a string.

The prompt follows the dialogue rules (optional system first, then user/assistant alternating, ending
with a user turn); the answers must be non-empty. A pair whose answers are identical carries no
preference: it is dropped and counted, not an error.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from medtune.config import at_least, check
from medtune.data import formats, tools
from medtune.data.jsonio import get_list, get_str, iter_objects, json_type, require_file
from medtune.errors import ConfigError, DataError, MedtuneError

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
        value = get_str(path, line, value[0], "content", f"{key}[0].content")
    else:
        value = get_str(path, line, record, key, key)
    if not value.strip():
        raise DataError(path, line, key, "empty answer", "fill in the text or drop the record")
    return value


def _messages(path, line, items: list, field: str) -> list[tuple]:
    """[{"role", "content"}] as turns for formats.check_turns (field names point into the user's record)."""
    record = {"messages": items}
    turns = formats.turns_messages(path, line, record)
    return [(r, c, rf.replace("messages", field, 1), cf.replace("messages", field, 1)) for r, c, rf, cf in turns]


def _prompt_turns(path, line, turns: list[tuple], container: str) -> list[dict]:
    if not turns:
        raise DataError(path, line, container, "empty prompt", "the prompt needs at least one user turn")
    messages = formats.check_turns(path, line, turns, container, require_final_assistant=False)
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
        raise DataError(path, line, "prompt", f"must be a string or a list of messages, got {json_type(value)}",
                        'write "prompt": "..." or "prompt": [{"role": "user", "content": "..."}]')
    return _prompt_turns(path, line, turns, "prompt")


def is_tool_pair(record: dict, shape: str) -> bool:
    """Whether a preference record holds tools: a `tools` list, tool calls or tool results anywhere in it."""
    if "tools" in record:
        return True
    if shape == "medicalgpt":
        return tools.has_tools({"conversations": record.get("conversations")}, "sharegpt")
    items = [m for key in ("prompt", "chosen", "rejected") if isinstance(record.get(key), list) for m in record[key]]
    return any(isinstance(m, dict) and (m.get("role") == "tool" or "tool_calls" in m) for m in items)


def answer_text(answer) -> str:
    """An answer as text: itself, or an assistant message's content followed by its calls as JSON (to compare
    answers and count their characters)."""
    if isinstance(answer, str):
        return answer
    calls = [c["function"] for c in answer.get("tool_calls", [])]
    return "\n".join([answer["content"], *(json.dumps(c, ensure_ascii=False, sort_keys=True) for c in calls)]).strip()


def _renamed(exc: DataError, name) -> DataError:
    """`exc` (raised by tools.tool_dialogue on a dialogue built from the record) pointing at the record's own
    field: name(i) gives the field of the dialogue's message i."""
    field = exc.field or ""
    found = re.match(r"(messages|conversations)\[(\d+)\]", field)
    if found:
        field = name(int(found.group(2))) + field[found.end():]
    return DataError(exc.path, exc.line, field or None, exc.message, exc.hint)


def _tool_answer(path, line, record: dict, key: str) -> dict:
    """An answer given as a string or as one assistant message (which may hold `tool_calls`)."""
    value = record.get(key)
    if isinstance(value, str):
        return {"role": "assistant", "content": value}
    if not isinstance(value, list) or len(value) != 1 or not isinstance(value[0], dict) \
            or value[0].get("role") != "assistant":
        raise DataError(path, line, key, "must be a string or one assistant message",
                        f'write "{key}": "..." or "{key}": [{{"role": "assistant", "content": "...", "tool_calls": [...]}}]')
    return value[0]


def _tool_prompt(path, line, items: list, tool_list, name) -> list[dict]:
    """The prompt of a tool-calling pair, checked as a dialogue (calls declared, JSON arguments, a result for
    every call); it ends with a user turn or a tool result, where the assistant answers next."""
    if not items:
        raise DataError(path, line, name(0).split("[")[0], "empty prompt", "the prompt needs at least one user turn")
    try:
        prompt = tools.tool_dialogue(path, line, {"messages": items, "tools": tool_list}, "messages",
                                     require_final_assistant=False)["messages"]
    except DataError as exc:
        raise _renamed(exc, name) from None
    if prompt[-1]["role"] not in ("user", "tool"):
        raise DataError(path, line, name(len(items) - 1), "the prompt must end with a user turn or a tool result",
                        "the answers go in chosen/rejected, not in the prompt")
    return prompt


def _read_tool_pair(path, line, record: dict, shape: str) -> dict:
    """A preference record that holds tools (is_tool_pair): the prompt and each answer checked together as a
    dialogue by tools.tool_dialogue (an answer's calls may wait for their results: they come after it)."""
    tool_list = tools.read_tools(path, line, record)
    answers = {}
    if shape == "medicalgpt":
        conversation = record.get("conversations")
        try:
            prompt = tools.tool_dialogue(path, line, {"conversations": conversation, "tools": record.get("tools")},
                                         "sharegpt", require_final_assistant=False)["messages"]
        except DataError as exc:
            raise _renamed(exc, lambda i: f"conversations[{i}]") from None
        if prompt[-1]["role"] not in ("user", "tool"):
            raise DataError(path, line, f"conversations[{len(conversation) - 1}]",
                            "the prompt must end with a user turn or a tool result",
                            "the answers go in chosen/rejected, not in the prompt")
        for key in ("chosen", "rejected"):
            answers[key] = _answer(path, line, record, key)
        return {"prompt": prompt, **answers, "tools": tool_list, "source": f"{path}:{line}"}
    if shape == "prompt":
        value = record["prompt"]
        if isinstance(value, str):
            items, name = [{"role": "user", "content": value}], (lambda i: "prompt")
        elif isinstance(value, list):
            items, name = value, (lambda i: f"prompt[{i}]")
        else:
            raise DataError(path, line, "prompt", f"must be a string or a list of messages, got {json_type(value)}",
                            'write "prompt": [{"role": "user", "content": "..."}, ...]')
        prompt = _tool_prompt(path, line, items, tool_list, name)
        given = {key: (items, _tool_answer(path, line, record, key)) for key in ("chosen", "rejected")}
    elif shape == "implicit":
        example = '"chosen": [{"role": "user", ...}, {"role": "assistant", ...}]'
        whole = {key: get_list(path, line, record, key, example) for key in ("chosen", "rejected")}
        for key, items in whole.items():
            if not items or not isinstance(items[-1], dict) or items[-1].get("role") != "assistant":
                raise DataError(path, line, key, "must end with the assistant's answer", example)
        if whole["chosen"][:-1] != whole["rejected"][:-1]:
            raise DataError(path, line, "rejected", "chosen and rejected differ before their last turn",
                            "both must hold the same prompt and differ only in the final assistant answer")
        items = whole["chosen"][:-1]
        name = (lambda i: f"chosen[{i}]")
        prompt = _tool_prompt(path, line, items, tool_list, name)
        given = {key: (items, whole[key][-1]) for key in ("chosen", "rejected")}
    else:
        raise DataError(path, line, "tools", "tool calls are read in the prompt/chosen/rejected, chosen/rejected "
                        "or conversations shapes", 'write {"prompt": [messages], "chosen": [...], "rejected": [...], '
                        '"tools": [...]}; see docs/tools.md')
    for key, (items, message) in given.items():
        if shape == "prompt":
            answer_field = key if isinstance(record[key], str) else f"{key}[0]"
        else:
            answer_field = f"{key}[{len(items)}]"

        def where(i, n=len(items), answer_field=answer_field):
            return name(i) if i < n else answer_field

        try:
            dialogue = tools.tool_dialogue(path, line, {"messages": [*items, message], "tools": tool_list},
                                           "messages", open_final_calls=True)
        except DataError as exc:
            raise _renamed(exc, where) from None
        answer = dialogue["messages"][-1]
        answers[key] = {k: answer[k] for k in ("role", "content", "tool_calls") if k in answer} \
            if answer.get("tool_calls") else answer["content"]
    return {"prompt": prompt, **answers, "tools": tool_list, "source": f"{path}:{line}"}


def _read(path, line, record: dict, shape: str) -> dict:
    if is_tool_pair(record, shape):
        return _read_tool_pair(path, line, record, shape)
    if shape == "medicalgpt":
        record_turns = formats.turns_sharegpt(path, line, record)
        prompt = _prompt_turns(path, line, record_turns, "conversations")
        chosen, rejected = _answer(path, line, record, "chosen"), _answer(path, line, record, "rejected")
    elif shape == "pairwise":
        turns = []
        system = get_str(path, line, record, "system", "system", optional=True)
        if system is not None:
            turns.append(("system", system, "system", "system"))
        turns.append(("user", get_str(path, line, record, "question", "question"), "question", "question"))
        prompt = _prompt_turns(path, line, turns, "question")
        chosen = _answer(path, line, record, "response_chosen")
        rejected = _answer(path, line, record, "response_rejected")
    elif shape == "prompt":
        prompt = _prompt_field(path, line, record)
        chosen, rejected = _answer(path, line, record, "chosen"), _answer(path, line, record, "rejected")
    else:  # implicit: two whole conversations with a shared prompt
        example = '"chosen": [{"role": "user", ...}, {"role": "assistant", ...}]'
        c_items = get_list(path, line, record, "chosen", example)
        r_items = get_list(path, line, record, "rejected", example)
        c_turns, r_turns = _messages(path, line, c_items, "chosen"), _messages(path, line, r_items, "rejected")
        if len(c_turns) < 2 or c_turns[-1][0] != "assistant" or not r_turns or r_turns[-1][0] != "assistant":
            raise DataError(path, line, "chosen" if len(c_turns) < 2 or c_turns[-1][0] != "assistant" else "rejected",
                            "must end with the assistant's answer", example)
        if [t[:2] for t in c_turns[:-1]] != [t[:2] for t in r_turns[:-1]]:
            raise DataError(path, line, "rejected", "chosen and rejected differ before their last turn",
                            "both must hold the same prompt and differ only in the final assistant answer")
        prompt = _prompt_turns(path, line, c_turns[:-1], "chosen")
        formats.check_turns(path, line, c_turns, "chosen", require_final_assistant=True)
        chosen, rejected = c_turns[-1][1], r_turns[-1][1]
        for key, text in (("chosen", chosen), ("rejected", rejected)):
            if not text.strip():
                raise DataError(path, line, key, "empty answer", "fill in the text or drop the record")
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected, "source": f"{path}:{line}"}


def load_pairs(path, *, stats: dict | None = None) -> list[dict]:
    """All preference pairs of a file, fully checked; raises DataError on the first bad record.
    Pairs with identical answers are dropped and counted in `stats["identical_dropped"]`."""
    require_file(path)
    pairs, count = [], 0
    stats = stats if stats is not None else {}
    stats.setdefault("identical_dropped", 0)
    for line, record in iter_objects(path):
        shape = shape_of(record)
        if shape is None:
            raise DataError(path, line, None, f"not a preference record: keys [{formats.key_list(record)}]", _HINT_SHAPE)
        count += 1
        pair = _read(path, line, record, shape)
        if answer_text(pair["chosen"]).strip() == answer_text(pair["rejected"]).strip():
            stats["identical_dropped"] += 1
            continue
        pairs.append(pair)
    if count == 0:
        raise DataError(path, None, None, "no records", "the file is empty; add at least one preference pair")
    return pairs


def is_pair_file(path) -> bool:
    """Whether the first record of a .jsonl/.json file is a preference pair (any of the four shapes)."""
    if Path(path).suffix.lower() not in (".jsonl", ".json"):
        return False
    records = iter_objects(require_file(path))
    try:
        first = next(records, (None, None))[1]
    finally:
        records.close()
    return first is not None and ("chosen" in first or "response_chosen" in first) and shape_of(first) is not None


def validate_file(path) -> dict:
    """`medtune data validate --kind preference`: counts of a checked file."""
    stats: dict = {}
    pairs = load_pairs(path, stats=stats)
    return {"records": len(pairs) + stats["identical_dropped"], "pairs": len(pairs), **stats}


def load_prompts(path) -> list[dict]:
    """Prompts for RL (PPO, GRPO): the prompts of a preference file, or prompt-only records
    {"prompt": str | [messages], ...} whose extra keys (e.g. "answer") are kept for the reward.
    Returns [{"prompt": [messages], "source", **extra}]."""
    require_file(path)
    out = []
    for line, record in iter_objects(path):
        shape = shape_of(record)
        if shape in ("medicalgpt", "pairwise") or (shape in ("prompt", "implicit") and "chosen" in record):
            if is_tool_pair(record, shape):
                raise DataError(path, line, None, "a tool-calling record: PPO and GRPO prompts cannot hold tools yet",
                                "use tool-calling pairs with rm or dpo (docs/tools.md)")
            pair = _read(path, line, record, shape)
            out.append({"prompt": pair["prompt"], "source": pair["source"]})
            continue
        if shape == "prompt" and is_tool_pair(record, shape):
            raise DataError(path, line, None, "a tool-calling record: PPO and GRPO prompts cannot hold tools yet",
                            "use prompts without tool calls")
        if shape == "prompt":  # prompt-only records, e.g. {"prompt": "...", "answer": "C"}
            extra = {k: v for k, v in record.items() if k != "prompt"}
            out.append({"prompt": _prompt_field(path, line, record), "source": f"{path}:{line}", **extra})
            continue
        raise DataError(path, line, None, "not a prompt record",
                        'write {"prompt": "..."} (other keys such as "answer" are passed to the reward) or a preference pair')
    if not out:
        raise DataError(path, None, None, "no records", "the file is empty; add at least one prompt")
    return out


def encode_pair(tokenizer, fmt, prompt: list[dict], answer, tools=None) -> tuple[list[int], list[int]]:
    """(prompt ids, answer ids) of one answer under the chat template: the prompt ends with the assistant
    header, the answer with the template's end-of-turn token; prompt + answer is exactly how SFT encodes
    the same dialogue, so every preference stage sees the text the model was tuned on. `answer` is a string or
    an assistant message with `tool_calls`; `tools` the pair's declared functions (rendered by the template)."""
    from medtune.data import templates

    message = answer if isinstance(answer, dict) else {"role": "assistant", "content": answer}
    enc = templates.encode_dialogue(tokenizer, fmt, [*prompt, message], tools=tools)
    end = enc.turn_ends[-1]
    start = end
    while start > 0 and enc.assistant_mask[start - 1]:
        start -= 1
    return enc.input_ids[:start], enc.input_ids[start:end]


# ------------------------------------------------------------------------------------------ truncation

TRUNCATION = ("drop", "keep_end", "keep_start")


def _text_ids(tokenizer, text: str) -> list[int]:
    """A message's own tokens, as templates.encode_dialogue tokenises message content."""
    return tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"]


def _longest_cut(text: str, keep: str, fits) -> str | None:
    """The longest start (keep_start) or end (keep_end) of `text` for which fits(cut) holds, by bisection on
    characters (a cut between characters never splits one into broken bytes); None when no character fits."""
    lo, hi = 0, len(text)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if fits(text[-mid:] if keep == "keep_end" else text[:mid]):
            lo = mid
        else:
            hi = mid - 1
    if lo == 0:
        return None
    return text[-lo:] if keep == "keep_end" else text[:lo]


def cut_prompt(messages: list[dict], limit: int, keep: str, count) -> list[dict] | None:
    """`messages` (optional system, then turns ending with the user's question) made to take at most `limit`
    tokens as `count(messages)` measures them; None when not even a cut question fits.

    Whole earlier turns go first, oldest first (the prompt still starts with a user turn); the system message
    stays while it fits. If the question alone is still too long, its text is cut: keep_end keeps its end (where
    a long case description usually asks), keep_start its start; the system message stays only when it (with
    the template) takes at most half of `limit`. Role markers and end-of-turn tokens are never cut: the result
    is an ordinary dialogue, rendered by the template like any other.
    """
    if count(messages) <= limit:
        return messages
    system = messages[:1] if messages[0]["role"] == "system" else []
    turns = messages[len(system):]
    starts = [i for i, m in enumerate(turns) if m["role"] == "user"]
    for head in ([system, []] if system else [[]]):
        for start in starts:
            if count(head + turns[start:]) <= limit:
                return head + turns[start:]
    question = turns[-1]
    if question["role"] != "user":  # a tool result: cutting it would change what the tool answered
        return None
    if system and count(system + [{**question, "content": ""}]) > limit // 2:
        system = []
    text = _longest_cut(question["content"], keep,
                        lambda cut: count(system + [{**question, "content": cut}]) <= limit)
    return None if text is None else system + [{**question, "content": text}]


def cut_answer(tokenizer, answer, answer_ids: list[int], limit: int) -> str | None:
    """`answer` cut so that its ids (as encode_pair returns them, end-of-turn tokens included) number at most
    `limit`: the end of its text goes, the template's end-of-turn tokens stay whole so the model still learns to
    stop. None when not even one character fits before them."""
    if len(answer_ids) <= limit:
        return answer
    if not isinstance(answer, str):  # a tool call cut short is no call: the pair is dropped
        return None
    room = limit - (len(answer_ids) - len(_text_ids(tokenizer, answer)))  # what the end-of-turn tokens leave
    return _longest_cut(answer, "keep_start", lambda cut: len(_text_ids(tokenizer, cut)) <= room)


def _length_figures(lengths: list[int]) -> dict:
    return {"mean": round(sum(lengths) / len(lengths), 1), "max": max(lengths)} if lengths else {"mean": 0, "max": 0}


def fit_pairs(pairs: list[dict], tokenizer, fmt, stats: dict, *, max_length: int, max_prompt_length: int | None = None,
              max_answer_length: int | None = None, truncation: str = "keep_end") -> list[dict]:
    """Pairs encoded (encode_pair) and made to fit; returns {**pair, "prompt_ids", "chosen_ids", "rejected_ids"}
    with the prompt and answers as used (cut ones cut). A pair's length is its prompt + its longer answer.

    max_length: longest pair in tokens. max_prompt_length: longest prompt (None: what the pair's answers
    leave, but at least half of max_length). max_answer_length: longest answer, end-of-turn tokens included
    (None: what the prompt leaves). truncation: keep_end or keep_start cut the prompt (cut_prompt) and then the
    answers (cut_answer; both answers keep the same prompt tokens); drop skips a pair over any limit.
    Counts in `stats`: kept_whole, prompt_cut, answer_cut (pairs with at least one answer cut; a pair may have
    both), dropped_too_long, and tokens_before / tokens_after ({"mean", "max"} over all pairs / the pairs kept).
    """
    counts = dict.fromkeys(("kept_whole", "prompt_cut", "answer_cut", "dropped_too_long"), 0)
    before, after, out = [], [], []
    answer_cap = max_answer_length or max_length

    def prompt_count(messages, tools=None):  # the prompt's ids do not depend on the answer: the template sees placeholders
        return len(encode_pair(tokenizer, fmt, messages, ".", tools)[0])

    for pair in pairs:
        tools = pair.get("tools")
        try:
            prompt_ids, chosen_ids = encode_pair(tokenizer, fmt, pair["prompt"], pair["chosen"], tools)
            _, rejected_ids = encode_pair(tokenizer, fmt, pair["prompt"], pair["rejected"], tools)
        except MedtuneError as exc:
            raise MedtuneError(exc.message, where=pair["source"], hint=exc.hint) from None
        longest = max(len(chosen_ids), len(rejected_ids))
        before.append(len(prompt_ids) + longest)
        prompt, chosen, rejected = pair["prompt"], pair["chosen"], pair["rejected"]
        if truncation == "drop":
            if before[-1] > max_length or len(prompt_ids) > (max_prompt_length or max_length) or longest > answer_cap:
                counts["dropped_too_long"] += 1
                continue
        else:
            prompt_limit = max_prompt_length or max(max_length - min(longest, answer_cap), max_length // 2)
            if len(prompt_ids) > prompt_limit:
                prompt = cut_prompt(prompt, prompt_limit, truncation, lambda m, tools=tools: prompt_count(m, tools))
                prompt_ids = encode_pair(tokenizer, fmt, prompt, ".", tools)[0] if prompt is not None else prompt_ids
            if prompt is not None:
                answer_limit = min(answer_cap, max_length - len(prompt_ids))
                chosen = cut_answer(tokenizer, chosen, chosen_ids, answer_limit)
                rejected = cut_answer(tokenizer, rejected, rejected_ids, answer_limit)
            if prompt is None or chosen is None or rejected is None:  # not even a cut pair fits
                counts["dropped_too_long"] += 1
                continue
            if (prompt, chosen, rejected) != (pair["prompt"], pair["chosen"], pair["rejected"]):
                prompt_ids, chosen_ids = encode_pair(tokenizer, fmt, prompt, chosen, tools)  # the cut pair, as SFT encodes it
                _, rejected_ids = encode_pair(tokenizer, fmt, prompt, rejected, tools)
        prompt_cut, answer_cut = prompt != pair["prompt"], (chosen, rejected) != (pair["chosen"], pair["rejected"])
        counts["prompt_cut"] += prompt_cut
        counts["answer_cut"] += answer_cut
        counts["kept_whole"] += not (prompt_cut or answer_cut)
        after.append(len(prompt_ids) + max(len(chosen_ids), len(rejected_ids)))
        out.append({**pair, "prompt": prompt, "chosen": chosen, "rejected": rejected, "prompt_ids": prompt_ids,
                    "chosen_ids": chosen_ids, "rejected_ids": rejected_ids})
    stats.update(truncation=truncation, **counts, tokens_before=_length_figures(before),
                 tokens_after=_length_figures(after))
    return out


def fit_prompts(rows: list[dict], tokenizer, fmt, stats: dict, *, max_length: int,
                truncation: str = "keep_end") -> list[dict]:
    """RL prompts ({"prompt": [messages], ...}) rendered with the assistant header, made to take at most
    `max_length` tokens: cut as the prompts of pairs are (cut_prompt; keep_end or keep_start) or dropped (drop).
    Returns {**row, "prompt" (as used), "prompt_ids"}; counts in `stats`: kept_whole, prompt_cut,
    dropped_too_long, tokens_before / tokens_after ({"mean", "max"})."""
    from medtune.data import templates

    counts = dict.fromkeys(("kept_whole", "prompt_cut", "dropped_too_long"), 0)
    before, after, out = [], [], []

    def encode(messages):
        return templates.encode_dialogue(tokenizer, fmt, messages, add_generation_prompt=True).input_ids

    for row in rows:
        try:
            ids = encode(row["prompt"])
            before.append(len(ids))
            prompt = row["prompt"]
            if len(ids) > max_length and truncation != "drop":
                prompt = cut_prompt(prompt, max_length, truncation, lambda m: len(encode(m)))
                ids = encode(prompt) if prompt is not None else ids
        except MedtuneError as exc:
            raise MedtuneError(exc.message, where=row["source"], hint=exc.hint) from None
        if prompt is None or len(ids) > max_length:
            counts["dropped_too_long"] += 1
            continue
        counts["prompt_cut" if prompt is not row["prompt"] else "kept_whole"] += 1
        after.append(len(ids))
        out.append({**row, "prompt": prompt, "prompt_ids": ids})
    stats.update(truncation=truncation, **counts, tokens_before=_length_figures(before),
                 tokens_after=_length_figures(after))
    return out


def fit_summary(stats: dict, unit: str = "pairs") -> str:
    """One line of what fit_pairs / fit_prompts did, for the end-of-run summary and `medtune data stats`."""
    parts = [f"{stats['kept_whole']} whole", f"{stats['prompt_cut']} with the prompt cut"]
    if "answer_cut" in stats:
        parts.append(f"{stats['answer_cut']} with an answer cut")
    parts.append(f"{stats['dropped_too_long']} dropped as too long")
    b, a = stats["tokens_before"], stats["tokens_after"]
    return (f"{unit} ({stats['truncation']}): {', '.join(parts)}; tokens per {unit[:-1]} mean {b['mean']:g} / max "
            f"{b['max']} -> mean {a['mean']:g} / max {a['max']}")


def _unset_or_positive(value) -> bool:
    return value is None or value >= 1


@dataclass
class PreferenceData:
    """Preference pairs (the `data` section of rm and dpo recipes).

    path: one file or a list (MedicalGPT `conversations`+`chosen`/`rejected`, `question`/`response_chosen`/
      `response_rejected`, or TRL `prompt`/`chosen`/`rejected`; see docs/data-formats.md).
    max_length: longest pair in tokens: the prompt plus the longer answer (its end-of-turn tokens included).
    max_prompt_length: longest prompt in tokens, template included; null (default) = what the pair's answers
      leave, but at least half of max_length, so a long answer cannot squeeze the question away.
    max_answer_length: longest answer in tokens, end-of-turn tokens included; null (default) = what the prompt
      leaves.
    truncation: what happens to a pair over these limits. keep_end (default): earlier turns go first, then the
      start of the question's text; the system message stays while it fits; answers lose their end but keep the
      end-of-turn tokens; chosen and rejected keep the same prompt. keep_start: the same, but the question keeps
      its start. drop: the pair is skipped. Every case is counted in the run's summary and data_stats.
    val_size: held-out share (0 < x < 1) or count (x >= 1) of pairs for the pairwise metrics.
    max_samples: use only the first N pairs of each file (0 = all).
    system_prompt: a system message added to prompts that have none. Unset (null): the chat template's own
      behaviour (SmolLM2's inserts its default prompt); "": none at all (the default taken out of the run's
      template; docs/templates.md).
    """

    path: list[str] = field(default_factory=list)
    max_length: int = field(default=1024, metadata=at_least(8))
    max_prompt_length: int | None = field(default=None, metadata=check(_unset_or_positive, "at least 1, or null (derived from max_length)"))
    max_answer_length: int | None = field(default=None, metadata=check(_unset_or_positive, "at least 1, or null (derived from max_length)"))
    truncation: Literal["drop", "keep_end", "keep_start"] = "keep_end"
    val_size: float = field(default=0.1, metadata=at_least(0))
    max_samples: int = field(default=0, metadata=at_least(0))
    system_prompt: str | None = None


def check_limits(max_length: int, max_prompt_length: int | None, max_answer_length: int | None,
                 *, cli: bool = False) -> None:
    """A prompt or answer limit must be positive and leave room in max_length for the other part of the pair.
    Errors name the recipe keys (data.max_prompt_length), or the `medtune data stats` options with cli=True."""
    def name(key):
        return f"--{key.replace('_', '-')}" if cli else f"data.{key}"

    for key, value, other in (("max_prompt_length", max_prompt_length, "the answer"),
                              ("max_answer_length", max_answer_length, "the prompt")):
        if value is not None and value < 1:
            raise ConfigError(f"got {value}; it must be at least 1", where=name(key),
                              hint="leave it unset to derive it from max_length")
        if value is not None and value >= max_length:
            raise ConfigError(f"{value} leaves no room for {other} in {name('max_length')}={max_length}",
                              where=name(key), hint=f"set it below {max_length}, or leave it unset")


def read_pair_files(data: PreferenceData) -> tuple[list[dict], list[dict], dict]:
    """Every pair of every file, checked before any model loads. Returns (pairs, fingerprints, stats)."""
    from medtune.data import resolve_path

    check_limits(data.max_length, data.max_prompt_length, data.max_answer_length)
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
