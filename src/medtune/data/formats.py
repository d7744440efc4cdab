"""The data contract: read, check and convert the files users train on (see docs/data-formats.md).

Dialogue (SFT) files come in three shapes, detected per file from the first record:

- ``messages``  OpenAI style: ``{"messages": [{"role": "user", "content": "..."}, ...]}``
- ``sharegpt``  ``{"conversations": [{"from": "human", "value": "..."}, ...]}``
- ``alpaca``    ``{"instruction": "...", "input": "...", "output": "...", "system"?, "history"?}``

each as JSON Lines (first non-blank character ``{``) or as one JSON array (``[``). Every reader
returns the same thing: ``{"messages": [{"role", "content"}, ...], "source": "path:line"}``.

SFT files may also hold prompt-completion records (TRL's plain-text form), ``prompt_completion``:
``{"prompt": "...", "completion": "..."}``: plain text, no chat template, the loss on the completion
only (what ``medtune data from-benchmark --form prompt_completion`` writes). They are read by
:func:`iter_prompt_completions` (or :func:`load_sft_records`, which reads either kind) as
``{"prompt", "completion", "source"}``; the dialogue readers refuse them in one line.

Pretraining text is ``.txt`` (one document per line, or blank-line separated paragraphs) or
``.jsonl`` with a ``text`` field.

Every problem in a user's file is a :class:`~medtune.errors.DataError` naming the file, the line,
the field and what to do; checking stops at the first one, so nothing trains on a file that fails.
Bytes, lines and JSON records are read by data/jsonio.py; this module knows what the records must hold.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

from medtune.data import tools
from medtune.data.jsonio import (get_list, get_str, iter_jsonl, iter_lines, iter_objects, json_type, open_bytes,
                                 require_file)
from medtune.errors import DataError

FORMATS = ("messages", "sharegpt", "alpaca")
PROMPT_COMPLETION = "prompt_completion"
SFT_FORMATS = FORMATS + (PROMPT_COMPLETION,)  # what sft trains: dialogues or prompt-completion records
ROLES = ("system", "user", "assistant")
SHAREGPT_ROLES = {"human": "user", "gpt": "assistant", "system": "system", "user": "user", "assistant": "assistant"}
TEXT_MODES = ("line", "paragraph")

CJK_RANGES = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002ebef"  # Han ideographs, for a [...] class
CJK = re.compile(f"[{CJK_RANGES}]")
_LATIN = re.compile("[A-Za-z\u00c0-\u024f]")

_HINT_SHAPE = (
    "expected 'messages' (OpenAI), 'conversations' (ShareGPT) or 'instruction'/'output' (Alpaca); "
    "see docs/data-formats.md"
)
_HINT_ORDER = "after an optional first system prompt, turns must alternate user, assistant, user, ..."


# --------------------------------------------------------------------------- files


def fingerprint(path) -> dict:
    """``{"path": absolute path, "sha256": hex digest, "bytes": size}`` of a file, hashed in 1 MiB chunks."""
    p = require_file(path)
    digest, size = hashlib.sha256(), 0
    with open_bytes(p) as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    return {"path": str(p.resolve()), "sha256": digest.hexdigest(), "bytes": size}


# --------------------------------------------------------------------------- one function per format
# Each returns a list of turns (role, content, role field, content field): the field names are the
# user's own (``conversations[2].value``), so errors point at what is in the file.


def _shape_of(record: dict) -> str | None:
    """The format a record looks like, from its keys; None if it looks like none of them."""
    if "completion" in record:
        return PROMPT_COMPLETION
    if "messages" in record:
        return "messages"
    if "conversations" in record:
        return "sharegpt"
    if "instruction" in record or "output" in record:
        return "alpaca"
    return None


def turns_messages(path, line, record: dict) -> list[tuple]:
    """OpenAI ``{"messages": [{"role", "content"}, ...]}``; an assistant's ``reasoning_content`` (thinking models)
    becomes a leading ``<think>...</think>`` block of its content; other keys are ignored."""
    items = get_list(path, line, record, "messages", '"messages": [{"role": "user", "content": "..."}, ...]')
    turns = []
    for i, item in enumerate(items):
        at = f"messages[{i}]"
        if not isinstance(item, dict):
            hint = 'write {"role": "user", "content": "..."}'
            raise DataError(path, line, at, f"must be an object, got {json_type(item)}", hint)
        role = get_str(path, line, item, "role", f"{at}.role")
        if role not in ROLES:
            raise DataError(path, line, f"{at}.role", f"unknown role {role!r}", "allowed roles: system, user, assistant")
        content = get_str(path, line, item, "content", f"{at}.content")
        thought = get_str(path, line, item, "reasoning_content", f"{at}.reasoning_content", optional=True)
        if role == "assistant" and thought and thought.strip():  # one form for reasoning: a leading <think> block
            content = f"<think>\n{thought.strip(chr(10))}\n</think>\n\n{content}"
        turns.append((role, content, f"{at}.role", f"{at}.content"))
    return turns


def turns_sharegpt(path, line, record: dict) -> list[tuple]:
    """ShareGPT ``{"conversations": [{"from": "human"|"gpt"|"system", "value"}, ...]}``; user/assistant also accepted."""
    items = get_list(path, line, record, "conversations", '"conversations": [{"from": "human", "value": "..."}, ...]')
    turns = []
    for i, item in enumerate(items):
        at = f"conversations[{i}]"
        if not isinstance(item, dict):
            hint = 'write {"from": "human", "value": "..."}'
            raise DataError(path, line, at, f"must be an object, got {json_type(item)}", hint)
        speaker = get_str(path, line, item, "from", f"{at}.from")
        if speaker not in SHAREGPT_ROLES:
            raise DataError(
                path, line, f"{at}.from", f"unknown speaker {speaker!r}", "allowed: human, gpt, system, user, assistant"
            )
        turns.append((SHAREGPT_ROLES[speaker], get_str(path, line, item, "value", f"{at}.value"), f"{at}.from", f"{at}.value"))
    return turns


def turns_alpaca(path, line, record: dict, require_final_assistant: bool) -> list[tuple]:
    """Alpaca: system?, history? ([[user, assistant], ...]), then user = instruction (+ "\\n\\n" + input), assistant = output."""
    turns = []
    pairs_hint = 'write "history": [["question", "answer"], ...]'
    system = get_str(path, line, record, "system", "system", optional=True)
    if system is not None:
        turns.append(("system", system, "system", "system"))
    history = record.get("history")
    if history is not None:
        if not isinstance(history, list):
            raise DataError(path, line, "history", f"must be an array, got {json_type(history)}", pairs_hint)
        for i, pair in enumerate(history):
            if not (isinstance(pair, list) and len(pair) == 2):
                got = f"{len(pair)} items" if isinstance(pair, list) else json_type(pair)
                raise DataError(path, line, f"history[{i}]", f"must be a [user, assistant] pair, got {got}", pairs_hint)
            for j, role in enumerate(("user", "assistant")):
                if not isinstance(pair[j], str):
                    got = json_type(pair[j])
                    raise DataError(path, line, f"history[{i}][{j}]", f"must be a string, got {got}", pairs_hint)
                turns.append((role, pair[j], f"history[{i}]", f"history[{i}][{j}]"))
    instruction = get_str(path, line, record, "instruction", "instruction")
    extra = get_str(path, line, record, "input", "input", optional=True) or ""
    prompt = "\n\n".join(part for part in (instruction, extra) if part.strip())
    turns.append(("user", prompt, "instruction", "instruction"))
    output = get_str(path, line, record, "output", "output", optional=not require_final_assistant)
    if output or require_final_assistant:
        turns.append(("assistant", output, "output", "output"))
    return turns


def check_turns(path, line, turns: list[tuple], container: str, require_final_assistant: bool) -> list[dict]:
    """The turns as messages, after the content and role-order rules; an empty system prompt is dropped."""
    if turns and turns[0][0] == "system" and not turns[0][1].strip():
        turns = turns[1:]
    messages = []
    for i, (role, content, role_field, content_field) in enumerate(turns):
        if role == "system" and i > 0:
            hint = "merge it into the first system prompt"
            raise DataError(path, line, role_field, "a system prompt is only allowed as the first turn", hint)
        if role != "system" and not content.strip():
            raise DataError(path, line, content_field, f"empty {role} turn", "fill in the text or drop the record")
        if role != "system":
            previous = messages[-1]["role"] if messages else "system"
            expected = "assistant" if previous == "user" else "user"
            if role != expected:  # then role == previous, or an assistant opens the conversation
                problem = f"two {role} turns in a row" if role == previous else "the conversation starts with assistant"
                raise DataError(path, line, role_field, f"turn out of order: {problem}", _HINT_ORDER)
        messages.append({"role": role, "content": content})
    if not any(m["role"] == "user" for m in messages):
        raise DataError(path, line, container, "no user turn", "a conversation needs at least one user turn")
    if require_final_assistant and messages[-1]["role"] != "assistant":
        hint = "the last turn must be the assistant's answer: add it or drop the record"
        raise DataError(path, line, turns[-1][2], "the conversation ends with a user turn", hint)
    return messages


# --------------------------------------------------------------------------- dialogues


def _unknown_shape(path, line, record: dict) -> DataError:
    return DataError(path, line, None, f"unknown record shape with keys [{key_list(record)}]", _HINT_SHAPE)


def key_list(record: dict) -> str:
    """A record's keys for an error message: the first 8, sorted; a key with a line break or another control
    character is shown quoted and escaped, so the message stays one line."""
    names = [k if k.isprintable() else json.dumps(k) for k in sorted(record)[:8]]
    return ", ".join(names) + (", ..." if len(record) > 8 else "")


def _no_records(path) -> DataError:
    return DataError(path, None, None, "no records", "the file is empty; add at least one dialogue")


def detect_format(path) -> str:
    """"messages", "sharegpt", "alpaca" or "prompt_completion", from the first record's keys; DataError if none fits or the file is empty."""
    require_file(path)
    for line, record in iter_objects(path):
        shape = _shape_of(record)
        if shape is None:
            raise _unknown_shape(path, line, record)
        return shape
    raise _no_records(path)


def _dialogues(path, fmt: str, require_final_assistant: bool) -> Iterator[tuple[str, dict]]:
    """(file format, dialogue) for each record; the format is fixed by ``fmt`` or by the first record."""
    require_file(path)
    if fmt != "auto" and fmt not in FORMATS:
        raise DataError(path, None, None, f"unknown format {fmt!r}", "use auto, messages, sharegpt or alpaca")
    file_fmt, first_line, count = (None if fmt == "auto" else fmt), None, 0
    for line, record in iter_objects(path):
        shape = _shape_of(record)
        if file_fmt is None:
            if shape is None:
                raise _unknown_shape(path, line, record)
            file_fmt, first_line = shape, line
            if shape == PROMPT_COMPLETION:
                hint = "train it with `medtune sft` (data.format auto or prompt_completion); it has no turns to convert"
                raise DataError(path, line, None, "prompt-completion records are not dialogues", hint)
        elif fmt == "auto" and shape is not None and shape != file_fmt:
            raise DataError(
                path, line, None, f"mixed formats: this record is {shape} but the one on line {first_line} is {file_fmt}",
                "use one format per file; `medtune data convert` can rewrite each part as messages",
            )
        if file_fmt != "alpaca" and tools.has_tools(record, file_fmt):  # tool calls and results (data/tools.py)
            count += 1
            yield file_fmt, tools.tool_dialogue(path, line, record, file_fmt, require_final_assistant)
            continue
        if file_fmt == "messages":
            turns, container = turns_messages(path, line, record), "messages"
        elif file_fmt == "sharegpt":
            turns, container = turns_sharegpt(path, line, record), "conversations"
        else:
            turns, container = turns_alpaca(path, line, record, require_final_assistant), "instruction"
        if not turns:
            raise DataError(path, line, container, "empty conversation", "add a user and an assistant turn, or drop the record")
        count += 1
        messages = check_turns(path, line, turns, container, require_final_assistant)
        yield file_fmt, {"messages": messages, "source": f"{path}:{line}"}
    if count == 0:
        raise _no_records(path)


def iter_dialogues(path, fmt: str = "auto", *, require_final_assistant: bool = True) -> Iterator[dict]:
    """Each dialogue as ``{"messages": [...], "source": "path:line"}``, checked as it is read.

    Streams JSON Lines (a JSON array is parsed whole). A bad record raises when the iteration reaches
    it, so use :func:`load_dialogues` where nothing may be used before the whole file is checked.
    """
    for _, dialogue in _dialogues(path, fmt, require_final_assistant):
        yield dialogue


def load_dialogues(path, fmt: str = "auto", *, require_final_assistant: bool = True) -> list[dict]:
    """All dialogues of an SFT file, fully checked: ``[{"messages": [{"role", "content"}, ...], "source": "path:line"}]``.

    ``fmt`` is "auto" (per file, from the first record's keys) or "messages" | "sharegpt" | "alpaca".
    ``source`` is the path as given plus the line where the record starts (JSON arrays included).
    Roles: an optional system prompt first, then user, assistant, user, ...; with
    ``require_final_assistant`` (training) the last turn is the assistant's. An empty system prompt
    is dropped. Raises DataError on the first problem.
    """
    return list(iter_dialogues(path, fmt, require_final_assistant=require_final_assistant))


def _language(messages: list[dict]) -> str:
    """'zh' if CJK characters are a real share of the text, 'en' if mostly Latin letters, else 'other'."""
    text = "".join(m["content"] for m in messages)
    cjk, latin = len(CJK.findall(text)), len(_LATIN.findall(text))
    letters = sum(ch.isalpha() for ch in text)
    if cjk and cjk * 4 >= latin:
        return "zh"
    if latin and latin * 2 >= letters:
        return "en"
    return "other"


def validate_file(path, fmt: str = "auto", *, require_final_assistant: bool = True) -> dict:
    """Check a whole SFT file and summarise it; DataError on the first problem.

    Returns ``{"path", "format", "records", "turns" (user + assistant messages), "system_prompts"
    (records with one), "multi_turn" (records with more than one user turn), "languages": {"en", "zh",
    "other"}}``; the language is a script test per record (CJK characters -> zh, Latin letters -> en).
    """
    summary = {"path": str(path), "format": fmt, "records": 0, "turns": 0, "system_prompts": 0, "multi_turn": 0,
               "languages": {"en": 0, "zh": 0, "other": 0}}
    if fmt == PROMPT_COMPLETION or (fmt == "auto" and detect_format(path) == PROMPT_COMPLETION):
        summary["format"] = PROMPT_COMPLETION
        for record in iter_prompt_completions(path):  # a prompt and a completion: two turns, no system prompt
            summary["records"] += 1
            summary["turns"] += 2
            summary["languages"][_language([{"content": record["prompt"] + record["completion"]}])] += 1
        return summary
    for file_fmt, dialogue in _dialogues(path, fmt, require_final_assistant):
        messages = dialogue["messages"]
        summary["format"] = file_fmt
        summary["records"] += 1
        summary["turns"] += sum(m["role"] != "system" for m in messages)
        summary["system_prompts"] += messages[0]["role"] == "system"
        summary["multi_turn"] += sum(m["role"] == "user" for m in messages) > 1
        summary["languages"][_language(messages)] += 1
    return summary


# --------------------------------------------------------------------------- prompt-completion


def _prompt_completion(path, line, record: dict) -> dict:
    if isinstance(record.get("prompt"), list) or isinstance(record.get("completion"), list):
        hint = "give prompt and completion as plain text, or write the exchange as a dialogue ('messages')"
        raise DataError(path, line, "prompt" if isinstance(record.get("prompt"), list) else "completion",
                        "conversational prompt-completion (a list of messages) is not supported", hint)
    prompt = get_str(path, line, record, "prompt", "prompt")
    completion = get_str(path, line, record, "completion", "completion")
    if not prompt.strip():
        raise DataError(path, line, "prompt", "is empty", "fill in the text the completion follows, or drop the record")
    if not completion.strip():
        raise DataError(path, line, "completion", "is empty (nothing to train on)", "fill in the answer or drop the record")
    return {"prompt": prompt, "completion": completion, "source": f"{path}:{line}"}


def iter_prompt_completions(path) -> Iterator[dict]:
    """Each record of a prompt-completion file as ``{"prompt", "completion", "source": "path:line"}``, checked as
    it is read: both fields non-empty strings, and every record of this form (DataError naming the line)."""
    require_file(path)
    count = 0
    for line, record in iter_objects(path):
        shape = _shape_of(record)
        if shape != PROMPT_COMPLETION:
            what = f"a {shape} record" if shape else f"a record with keys [{key_list(record)}]"
            hint = "one form per file: every record {\"prompt\": \"...\", \"completion\": \"...\"}"
            raise DataError(path, line, None, f"{what} in a prompt-completion file", hint)
        count += 1
        yield _prompt_completion(path, line, record)
    if count == 0:
        raise _no_records(path)


def load_sft_records(path, fmt: str = "auto") -> list[dict]:
    """Everything an SFT file holds, fully checked: dialogues (see :func:`load_dialogues`) or, for a
    prompt-completion file (``fmt`` "prompt_completion", or "auto" and a first record with ``completion``),
    ``[{"prompt", "completion", "source"}]``."""
    if fmt == PROMPT_COMPLETION or (fmt == "auto" and detect_format(path) == PROMPT_COMPLETION):
        return list(iter_prompt_completions(path))
    return load_dialogues(path, fmt)


# --------------------------------------------------------------------------- convert


def _to_messages(messages: list[dict]) -> dict:
    return {"messages": messages}


def _to_sharegpt(messages: list[dict]) -> dict:
    names = {"system": "system", "user": "human", "assistant": "gpt"}
    return {"conversations": [{"from": names[m["role"]], "value": m["content"]} for m in messages]}


def _to_alpaca(messages: list[dict], dst, source: str) -> dict:
    """Last user turn -> instruction (input ""), its answer -> output, earlier pairs -> history, system -> system."""
    record: dict = {}
    if messages[0]["role"] == "system":
        record["system"] = messages[0]["content"]
        messages = messages[1:]
    roles = [m["role"] for m in messages]
    if roles != ["user", "assistant"] * (len(roles) // 2) + ["user"] * (len(roles) % 2):
        raise DataError(dst, None, None, f"the dialogue from {source} cannot be written as Alpaca", "use --to messages")
    last_user = len(roles) - (1 if roles[-1] == "user" else 2)
    history = [[messages[i]["content"], messages[i + 1]["content"]] for i in range(0, last_user, 2)]
    record.update(instruction=messages[last_user]["content"], input="")
    if roles[-1] == "assistant":
        record["output"] = messages[-1]["content"]
    if history:
        record["history"] = history
    return record


def convert_file(src, dst, to: str = "messages", fmt: str = "auto", *, require_final_assistant: bool = True) -> int:
    """Rewrite an SFT file as JSON Lines in format ``to`` ("messages", "sharegpt" or "alpaca"); returns the record count.

    The whole source is checked first; the output goes to a temporary file beside ``dst`` and is
    moved into place only when complete, so on any error ``dst`` is left as it was (or absent).
    ``dst`` may be ``src`` (converted in place) or a symlink (its target is rewritten); a device or pipe
    (``/dev/null``) is refused, as the rename would replace it with a file.
    """
    if to not in FORMATS:
        raise DataError(dst, None, None, f"unknown target format {to!r}", "use messages, sharegpt or alpaca")
    if not str(dst).strip():
        raise DataError(dst, None, None, "no output file given", "give the output file's name, e.g. out/train.jsonl")
    out = Path(os.path.realpath(dst))  # through a symlink to the file it names
    if out.is_dir():
        raise DataError(dst, None, None, "is a directory", "give the output file's name, e.g. out/train.jsonl")
    if out.exists() and not out.is_file():  # /dev/null, a pipe: renaming onto it would replace it with a file
        raise DataError(dst, None, None, "is not a regular file", "give an ordinary file's name, e.g. out/train.jsonl")
    if not out.parent.is_dir():
        folder = Path(dst).parent
        if out.parent.exists():
            raise DataError(dst, None, None, f"{folder} is a file, not a folder", "give a path inside a folder")
        raise DataError(dst, None, None, f"folder {folder} does not exist", "create it first")
    dialogues = load_dialogues(src, fmt, require_final_assistant=require_final_assistant)
    try:
        from medtune.runs import temporary_file

        fd, tmp = temporary_file(out, ".tmp")
    except OSError as e:
        raise DataError(dst, None, None, f"cannot write here: {e.strerror}", "check the folder's permissions") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            for d in dialogues:
                if d.get("tools") is not None or any(m["role"] == "tool" for m in d["messages"]):
                    record = tools.to_record(d, to, dst)
                elif to == "messages":
                    record = _to_messages(d["messages"])
                elif to == "sharegpt":
                    record = _to_sharegpt(d["messages"])
                else:
                    record = _to_alpaca(d["messages"], dst, d["source"])
                f.write(json.dumps(record, ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())
        if out.exists():
            shutil.copymode(out, tmp)
        else:
            os.chmod(tmp, 0o644)
        os.replace(tmp, out)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise DataError(dst, None, None, f"cannot write: {e.strerror}", "check the free disk space and permissions") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return len(dialogues)


# --------------------------------------------------------------------------- pretraining text


def _iter_txt(path, mode: str) -> Iterator[str]:
    """Documents of a plain-text file: one per line, or per blank-line-separated paragraph."""
    paragraph: list[str] = []
    for _, text in iter_lines(path):
        if mode == "line":
            if text.strip():
                yield text.strip()
        elif text.strip():
            paragraph.append(text)
        elif paragraph:
            yield "\n".join(paragraph).strip()
            paragraph = []
    if paragraph:
        yield "\n".join(paragraph).strip()


def _iter_text_jsonl(path) -> Iterator[str]:
    """The ``text`` field of each JSON Lines record."""
    for line, record in iter_jsonl(path):
        if not isinstance(record, dict):
            got = json_type(record)
            raise DataError(path, line, None, f"a record must be a JSON object, got {got}", 'write {"text": "..."} per line')
        text = get_str(path, line, record, "text", "text")
        if text.strip():
            yield text


def iter_texts(path, mode: str = "line") -> Iterator[str]:
    """Pretraining documents one at a time, in constant memory; empty documents are skipped.

    ``.txt``: one document per line (``mode="line"``) or per blank-line-separated paragraph
    (``mode="paragraph"``), stripped of surrounding whitespace. ``.jsonl``: the ``text`` field of
    each record as it is (``mode`` does not apply). DataError on the first problem, or if there are no documents.
    """
    p = require_file(path)
    if mode not in TEXT_MODES:
        raise DataError(path, None, None, f"unknown text mode {mode!r}", "use line or paragraph")
    suffix = p.suffix.lower()
    if suffix == ".jsonl":
        documents = _iter_text_jsonl(path)
    elif suffix == ".txt":
        documents = _iter_txt(path, mode)
    else:
        hint = "use .txt (plain text) or .jsonl with a 'text' field"
        raise DataError(path, None, None, f"unsupported text file type {p.suffix!r}", hint)
    count = 0
    for doc in documents:
        count += 1
        yield doc
    if count == 0:
        raise DataError(path, None, None, "no documents", "the file is empty or holds only blank text")


def load_texts(path, *, mode: str = "line") -> list[str]:
    """All documents of a pretraining file (see :func:`iter_texts`), fully checked."""
    return list(iter_texts(path, mode))
