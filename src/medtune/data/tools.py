"""Tool-calling dialogues: read and check them in either shape, as one form (docs/tools.md).

Accepted shapes, beside the plain dialogues of data/formats.py:

- OpenAI ``{"messages": [..., {"role": "assistant", "content": "", "tool_calls": [{"type": "function",
  "function": {"name": "lookup", "arguments": "{\\"drug\\": \\"x\\"}"}}]}, {"role": "tool", "content": "..."},
  ...], "tools": [{"type": "function", "function": {"name": "lookup", "parameters": {...}}}]}``
- ShareGPT as MedicalGPT (and LLaMA-Factory) write it: ``{"conversations": [{"from": "human", ...},
  {"from": "function_call", "value": "{\\"name\\": \\"lookup\\", \\"arguments\\": {...}}"},
  {"from": "observation", "value": "..."}, {"from": "gpt", ...}], "tools": "[{\\"name\\": \\"lookup\\", ...}]"}``
  (`tools` a JSON list or a string holding one; a function_call value one call or a list of them).

Both become ``{"messages": [...], "tools": [{"type": "function", "function": {...}}, ...], "source": ...}``
where an assistant message may hold ``tool_calls`` ([{"type": "function", "function": {"name", "arguments":
dict}}]) and a ``tool`` message holds a result. Checks: every call names a declared tool and its arguments are
a JSON object; a tool result follows a call; every call gets its result before the next assistant turn.
"""

from __future__ import annotations

import json

from medtune.data.jsonio import get_str, json_type
from medtune.errors import DataError

SHAREGPT_TOOL_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                       "system": "system", "function_call": "assistant", "observation": "tool", "tool": "tool"}
_ORDER = ("after an optional system prompt: user, then assistant; an assistant's tool calls are followed by one "
          "tool result per call, then the assistant again")


def has_tools(record: dict, shape: str) -> bool:
    """Whether a record is a tool-calling dialogue (a `tools` list, tool calls, or tool results)."""
    if "tools" in record:
        return True
    if shape == "messages" and isinstance(record.get("messages"), list):
        return any(isinstance(m, dict) and (m.get("role") == "tool" or "tool_calls" in m) for m in record["messages"])
    if shape == "sharegpt" and isinstance(record.get("conversations"), list):
        return any(isinstance(t, dict) and t.get("from") in ("function_call", "observation", "tool")
                   for t in record["conversations"])
    return False


def _json_value(path, line, value, field: str, what: str):
    """`value` itself, or the JSON a string holds (MedicalGPT writes tools and calls as JSON text)."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError as exc:
            raise DataError(path, line, field, f"is not valid JSON ({exc.msg} at character {exc.pos})",
                            f"write {what}") from None
    return value


def read_tools(path, line, record: dict) -> list[dict]:
    """The record's `tools` as OpenAI function entries; [] when it has none."""
    if "tools" not in record or record["tools"] in (None, "", []):
        return []
    what = 'a list of functions, e.g. [{"name": "lookup", "parameters": {...}}]'
    tools = _json_value(path, line, record["tools"], "tools", what)
    if not isinstance(tools, list):
        raise DataError(path, line, "tools", f"must be a list of functions, got {json_type(tools)}", f"write {what}")
    out = []
    for i, tool in enumerate(tools):
        spec = tool.get("function") if isinstance(tool, dict) and tool.get("type") == "function" else tool
        if not isinstance(spec, dict) or not isinstance(spec.get("name"), str) or not spec["name"].strip():
            raise DataError(path, line, f"tools[{i}]", "must be a function with a name", f"write {what}")
        out.append({"type": "function", "function": spec})
    return out


def _call(path, line, call, field: str, names: set[str]) -> dict:
    """One tool call as {"type": "function", "function": {"name", "arguments": dict}}, checked."""
    spec = call.get("function") if isinstance(call, dict) and isinstance(call.get("function"), dict) else call
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
        raise DataError(path, line, field, "a tool call needs a name", 'write {"name": "lookup", "arguments": {...}}')
    name = spec["name"]
    if not names:
        raise DataError(path, line, field, f"calls tool {name!r} but the record declares no tools",
                        'add "tools": [{"name": ..., "parameters": ...}] to the record')
    if name not in names:
        raise DataError(path, line, field, f"calls tool {name!r}, which the record does not declare",
                        f"declared: {', '.join(sorted(names))}")
    arguments = _json_value(path, line, spec.get("arguments", {}), f"{field}.arguments", "the arguments as a JSON object")
    if not isinstance(arguments, dict):
        raise DataError(path, line, f"{field}.arguments", f"must be a JSON object, got {json_type(arguments)}",
                        'write the arguments as {"name": value, ...}')
    out = {"type": "function", "function": {"name": name, "arguments": arguments}}
    if isinstance(call, dict) and isinstance(call.get("id"), str):
        out["id"] = call["id"]
    return out


def _turns(path, line, record: dict, shape: str, names: set[str]) -> list[tuple[dict, str]]:
    """(message, field) for each turn of the record, calls and results in the common form."""
    out = []
    if shape == "messages":
        items = record.get("messages")
        if not isinstance(items, list):
            raise DataError(path, line, "messages", f"must be a list, got {json_type(items)}")
        for i, item in enumerate(items):
            at = f"messages[{i}]"
            if not isinstance(item, dict):
                raise DataError(path, line, at, f"must be an object, got {json_type(item)}")
            role = get_str(path, line, item, "role", f"{at}.role")
            if role not in ("system", "user", "assistant", "tool"):
                raise DataError(path, line, f"{at}.role", f"unknown role {role!r}",
                                "allowed roles: system, user, assistant, tool")
            calls = item.get("tool_calls") or []
            content = get_str(path, line, item, "content", f"{at}.content", optional=bool(calls)) or ""
            message = {"role": role, "content": content}
            if calls:
                if role != "assistant" or not isinstance(calls, list):
                    raise DataError(path, line, f"{at}.tool_calls", "only an assistant message holds tool calls, as a list")
                message["tool_calls"] = [_call(path, line, c, f"{at}.tool_calls[{j}]", names) for j, c in enumerate(calls)]
            out.append((message, at))
        return out
    items = record.get("conversations")
    if not isinstance(items, list):
        raise DataError(path, line, "conversations", f"must be a list, got {json_type(items)}")
    for i, item in enumerate(items):
        at = f"conversations[{i}]"
        if not isinstance(item, dict):
            raise DataError(path, line, at, f"must be an object, got {json_type(item)}")
        speaker = get_str(path, line, item, "from", f"{at}.from")
        if speaker not in SHAREGPT_TOOL_ROLES:
            raise DataError(path, line, f"{at}.from", f"unknown speaker {speaker!r}",
                            "allowed: human, gpt, system, function_call, observation")
        value = get_str(path, line, item, "value", f"{at}.value")
        if speaker == "function_call":
            calls = _json_value(path, line, value, f"{at}.value", 'a call {"name": ..., "arguments": {...}}')
            calls = calls if isinstance(calls, list) else [calls]
            out.append(({"role": "assistant", "content": "",
                         "tool_calls": [_call(path, line, c, f"{at}.value", names) for c in calls]}, at))
        else:
            out.append(({"role": SHAREGPT_TOOL_ROLES[speaker], "content": value}, at))
    return out


def tool_dialogue(path, line, record: dict, shape: str, require_final_assistant: bool = True,
                  open_final_calls: bool = False) -> dict:
    """A tool-calling record as ``{"messages", "tools", "source"}``, checked (DataError on the first problem).
    Consecutive assistant turns of the ShareGPT shape (a function_call after a gpt turn) become one message.
    open_final_calls: the last turn may be an assistant's calls with no results yet (a preference answer that
    is a call: data/preference.py)."""
    tools = read_tools(path, line, record)
    names = {t["function"]["name"] for t in tools}
    turns = _turns(path, line, record, shape, names)
    if turns and turns[0][0]["role"] == "system" and not turns[0][0]["content"].strip():
        turns = turns[1:]
    messages: list[dict] = []
    pending = 0  # calls still waiting for their result
    for message, at in turns:
        role = message["role"]
        previous = messages[-1] if messages else None
        if role == "system":
            if messages:
                raise DataError(path, line, at, "a system prompt is only allowed as the first turn",
                                "merge it into the first system prompt")
        elif role == "tool":
            if pending == 0:
                raise DataError(path, line, at, "a tool result with no tool call before it", _ORDER)
            pending -= 1
        elif pending:
            raise DataError(path, line, at, f"{pending} tool call(s) get no result before this turn",
                            "add one tool result (role tool / observation) per call")
        elif role == "user":
            if previous is not None and previous["role"] == "user":
                raise DataError(path, line, at, "turn out of order: two user turns in a row", _ORDER)
        elif previous is None or previous["role"] == "system":
            raise DataError(path, line, at, "turn out of order: the conversation starts with assistant", _ORDER)
        elif previous["role"] == "assistant":
            if previous.get("tool_calls") or not message.get("tool_calls"):
                raise DataError(path, line, at, "turn out of order: two assistant turns in a row", _ORDER)
            previous["tool_calls"] = message["tool_calls"]  # a gpt turn, then its function_call: one message
            pending = len(message["tool_calls"])
            continue
        if role in ("user", "assistant", "tool") and not message["content"].strip() and not message.get("tool_calls"):
            raise DataError(path, line, at, f"empty {role} turn", "fill in the text or drop the record")
        messages.append(message)
        pending += len(message.get("tool_calls", []))
    if not any(m["role"] == "user" for m in messages):
        raise DataError(path, line, shape if shape == "messages" else "conversations", "no user turn",
                        "a conversation needs at least one user turn")
    if pending and not (open_final_calls and messages[-1]["role"] == "assistant" and messages[-1].get("tool_calls")):
        raise DataError(path, line, turns[-1][1], f"{pending} tool call(s) get no result",
                        "add one tool result per call, then the assistant's answer")
    if require_final_assistant and messages[-1]["role"] != "assistant":
        raise DataError(path, line, turns[-1][1], "the conversation does not end with the assistant",
                        "end with the assistant's answer (or its tool call)")
    return {"messages": messages, "tools": tools, "source": f"{path}:{line}"}


def to_record(dialogue: dict, to: str, dst) -> dict:
    """A tool-calling dialogue written as `to`: messages (OpenAI: calls with JSON-text arguments, as the API
    sends them) or sharegpt (MedicalGPT's function_call / observation turns); Alpaca has no place for tools."""
    tools = dialogue.get("tools") or []
    if to == "messages":
        messages = []
        for m in dialogue["messages"]:
            m = dict(m)
            if m.get("tool_calls"):
                m["tool_calls"] = [{**c, "function": {"name": c["function"]["name"], "arguments": json.dumps(
                    c["function"]["arguments"], ensure_ascii=False)}} for c in m["tool_calls"]]
            messages.append(m)
        return {"messages": messages, "tools": tools}
    if to == "sharegpt":
        names = {"system": "system", "user": "human", "assistant": "gpt", "tool": "observation"}
        turns = []
        for m in dialogue["messages"]:
            if m["content"] or not m.get("tool_calls"):
                turns.append({"from": names[m["role"]], "value": m["content"]})
            if m.get("tool_calls"):
                calls = [c["function"] for c in m["tool_calls"]]
                turns.append({"from": "function_call", "value": json.dumps(calls[0] if len(calls) == 1 else calls,
                                                                          ensure_ascii=False)})
        return {"conversations": turns, "tools": json.dumps([t["function"] for t in tools], ensure_ascii=False)}
    raise DataError(dst, None, None, f"the dialogue from {dialogue['source']} has tool calls, which Alpaca cannot hold",
                    "use --to messages or --to sharegpt")
