"""Generation health: does a model loop, write the user's next turn itself, leak control tokens, or fail
to end its turn? (`medtune eval MODEL --health`, docs/health.md)

Per-response metrics are pure functions of the response's token ids and text, so they can be tested
without a model. `summarize` turns them into shares and means and raises a flag for each one past its
threshold (`Thresholds`). `run_health` generates a greedy answer to each prompt, several at once, through the
engine `medtune serve` batches (`replies`).
"""

from __future__ import annotations

import dataclasses
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from medtune.data import jsonio
from medtune.errors import DataError, MedtuneError

DEFAULT_PROMPTS = "medtune:health_prompts.jsonl"

# --- repetition ---------------------------------------------------------------------------------------


def repeated_ngram_rate(token_ids: list[int], n: int = 4) -> float:
    """Share of the response's n-grams that repeat an n-gram seen earlier in it (0 when it has none).

    A looping answer that repeats one sentence scores close to 1; ordinary prose close to 0.
    """
    total = len(token_ids) - n + 1
    if total <= 0:
        return 0.0
    seen: set[tuple[int, ...]] = set()
    repeats = 0
    for i in range(total):
        gram = tuple(token_ids[i:i + n])
        if gram in seen:
            repeats += 1
        else:
            seen.add(gram)
    return repeats / total


# --- self-questioning ---------------------------------------------------------------------------------

# Role labels count only at the start of a line (the start of the response included), so prose such as
# "ask the user: ..." or "see Q: 3" does not. Markdown emphasis around the label is allowed ("**User:**").
_ROLE_LINE = re.compile(
    r"^[ \t]*[*_]*(?:user|human|patient)[*_]*[ \t]*[*_]*:"  # User: / Human: / Patient:
    r"|^[ \t]*(?-i:Q)[ \t]*:"  # Q: (capital only)
    r"|^[ \t]*#{2,}[ \t]*(?:instruction|human|user)[ \t]*:?[ \t]*$"  # a line "### Instruction:" (not "## User guide")
    r"|^[ \t]*(?:用户|患者|病人|问)[ \t]*[：:]",  # 用户： / 患者： / 问：
    re.MULTILINE | re.IGNORECASE,
)
# Control-token forms of a user turn count anywhere: no prose contains them.
_ROLE_TOKEN = re.compile(
    r"<\|im_start\|>[ \t]*(?:user|human)\b"
    r"|<\|start_header_id\|>[ \t]*user[ \t]*<\|end_header_id\|>"
    r"|<\|user\|>|<start_of_turn>user\b|\[INST\]"
)

_SLOTS = ("\ue000a\ue001", "\ue000b\ue001", "\ue000c\ue001")
_EOS_SENTINEL = "\ue002"


def user_turn_marker(fmt, tokenizer=None) -> str | None:
    """The text that opens a user turn under chat format `fmt`, e.g. `<|im_start|>user` for ChatML or
    `### Instruction:` for alpaca; None when it cannot be found.

    It is read off a rendered user/assistant/user dialogue: the template text between the assistant's
    content and the second user message, less the assistant's end-of-turn token. A format that uses the
    tokenizer's own template (`fmt.jinja is None`) needs the tokenizer.
    """
    messages = [{"role": r, "content": c} for r, c in zip(("user", "assistant", "user"), _SLOTS)]
    controls = set(getattr(fmt, "special", ()))
    try:
        if tokenizer is not None:
            text = tokenizer.apply_chat_template(messages, chat_template=getattr(fmt, "jinja", None),
                                                 tokenize=False, add_generation_prompt=False)
            controls |= _special_strings(tokenizer)
        elif getattr(fmt, "jinja", None):
            import jinja2

            text = jinja2.Environment().from_string(fmt.jinja).render(
                messages=messages, add_generation_prompt=False, eos_token=_EOS_SENTINEL, bos_token="")
            controls.add(_EOS_SENTINEL)
        else:
            return None
        between = text.split(_SLOTS[1], 1)[1].split(_SLOTS[2], 1)[0]
    except Exception:  # a template that rejects the probe dialogue or drops content: generic patterns only
        return None
    marker = between.strip()
    for control in sorted(controls, key=len, reverse=True):  # drop the assistant's end-of-turn token
        if control and marker.startswith(control) and marker[len(control):].strip():
            marker = marker[len(control):].strip()
            break
    return marker or None


def self_questioning(text: str, fmt=None, *, tokenizer=None) -> bool:
    """Does the response start a new user turn: a role label at the start of a line ("User:", "Q:",
    "### Instruction", "患者：", ...), a user-turn control sequence (`<|im_start|>user`, `[INST]`, ...) or,
    given `fmt` (a ChatFormat, or the marker string itself), the template's own user-turn marker (anywhere,
    case-sensitive; at a line start when shorter than 5 characters)?"""
    if _ROLE_LINE.search(text) or _ROLE_TOKEN.search(text):
        return True
    marker = fmt if isinstance(fmt, str) else (user_turn_marker(fmt, tokenizer) if fmt is not None else None)
    if not marker:
        return False
    if len(marker) >= 5:  # "<|im_start|>user", "### Instruction:", "USER:": case-sensitive, anywhere
        return marker in text
    return re.search(rf"^[ \t]*{re.escape(marker)}", text, re.MULTILINE) is not None  # short ones: line start


# --- control-token leaks ------------------------------------------------------------------------------

_GENERIC_CONTROL = re.compile(
    r"<\|[A-Za-z0-9_.:-]{1,40}\|>"  # <|im_end|>, <|eot_id|>, <|endoftext|>, <|user|>
    r"|\[/?INST\]|<</?SYS>>|</?s>|<unk>|<pad>|<(?:start|end)_of_turn>"
    r"|\ufffd"  # the replacement character: bytes that do not decode (half a UTF-8 character)
)


def _special_strings(tokenizer) -> set[str]:
    """The tokenizer's special-token strings that look like markup (so `sop` of ChatGLM, a word, is left out)."""
    strings = set(getattr(tokenizer, "all_special_tokens", []) or [])
    for added in (getattr(tokenizer, "added_tokens_decoder", None) or {}).values():
        if getattr(added, "special", False):
            strings.add(str(added.content))
    return {s for s in strings if len(s.strip()) >= 3 and any(not (c.isalnum() or c.isspace()) for c in s)}


def control_token_leak(text: str, tokenizer=None) -> bool:
    """Does the response (decoded without skipping special tokens) hold a control token: one of the
    tokenizer's special tokens, a generic one (`<|...|>`, `[INST]`, `<s>`, `</s>`, ...) or U+FFFD?"""
    if _GENERIC_CONTROL.search(text):
        return True
    return tokenizer is not None and any(s in text for s in _special_strings(tokenizer))


# --- one response, then many --------------------------------------------------------------------------


def response_metrics(token_ids, text_raw: str, stopped: bool, tokenizer=None, fmt=None) -> dict:
    """Metrics of one response. `token_ids`: the generated ids without the end-of-turn token; `text_raw`:
    them decoded without skipping special tokens; `stopped`: the model ended its turn itself."""
    token_ids = list(token_ids)
    # a reply cut at max_new_tokens may end in half a character: that U+FFFD is the cut, not a leak
    leak_text = text_raw if stopped else text_raw.rstrip("\ufffd")
    return {
        "repeat_4gram": repeated_ngram_rate(token_ids, 4),
        "self_question": self_questioning(text_raw, fmt, tokenizer=tokenizer),
        "leak": control_token_leak(leak_text, tokenizer),
        "stopped": bool(stopped),
        "length_tokens": len(token_ids),
    }


@dataclass(frozen=True)
class Thresholds:
    """When a flag is raised (docs/health.md says why these values)."""

    max_mean_repeat_4gram: float = 0.2  # repetition: mean repeated-4-gram rate above this
    max_self_question_share: float = 0.05  # self_questioning: share of responses that start a user turn
    max_leak_share: float = 0.0  # leak: any response with control-token text
    min_stopped_share: float = 0.8  # not_stopping: share that ended with the end-of-turn token below this
    max_short_share: float = 0.1  # short: share of (near-)empty responses above this
    short_tokens: int = 4  # a response with fewer tokens than this is (near-)empty
    looping_rate: float = 0.5  # a response whose repeated-4-gram rate reaches this is looping (reported only)


DEFAULT = Thresholds()


def _mean(values) -> float:
    values = list(values)
    return sum(values) / len(values) if values else 0.0


def _stats(rows: list[dict], th: Thresholds) -> dict:
    return {
        "n": len(rows),
        "mean_repeat_4gram": _mean(r["repeat_4gram"] for r in rows),
        "looping_share": _mean(r["repeat_4gram"] >= th.looping_rate for r in rows),
        "self_question_share": _mean(r["self_question"] for r in rows),
        "leak_share": _mean(r["leak"] for r in rows),
        "stopped_share": _mean(r["stopped"] for r in rows),
        "short_share": _mean(r["length_tokens"] < th.short_tokens for r in rows),
        "mean_length_tokens": _mean(r["length_tokens"] for r in rows),
    }


def summarize(per_response: list[dict], thresholds: Thresholds = DEFAULT) -> dict:
    """Means and shares over the responses, `flags` {name: bool} and `checks` {name: {value, threshold,
    rule, flagged}}; responses with a `kind` are also summarised per kind under `by_kind`."""
    if not per_response:
        raise MedtuneError("no responses to summarise", hint="give at least one prompt")
    th = thresholds
    summary = {k: round(v, 4) if isinstance(v, float) else v for k, v in _stats(per_response, th).items()}
    rules = {  # name: (statistic, comparison, threshold)
        "repetition": ("mean_repeat_4gram", ">", th.max_mean_repeat_4gram),
        "self_questioning": ("self_question_share", ">", th.max_self_question_share),
        "leak": ("leak_share", ">", th.max_leak_share),
        "not_stopping": ("stopped_share", "<", th.min_stopped_share),
        "short": ("short_share", ">", th.max_short_share),
    }
    checks = {}
    for name, (stat, op, limit) in rules.items():
        value = summary[stat]
        flagged = value > limit if op == ">" else value < limit
        checks[name] = {"value": value, "threshold": limit, "rule": f"{stat} {op} {limit}", "flagged": flagged}
    summary["flags"] = {name: c["flagged"] for name, c in checks.items()}
    summary["checks"] = checks
    kinds = sorted({r["kind"] for r in per_response if r.get("kind")})
    if kinds:
        summary["by_kind"] = {
            k: {s: round(v, 4) if isinstance(v, float) else v
                for s, v in _stats([r for r in per_response if r.get("kind") == k], th).items()}
            for k in kinds
        }
    return summary


# --- running a model ----------------------------------------------------------------------------------


def health_settings(settings=None):
    """The generation settings `run_health` uses: `settings` made greedy, so results are reproducible. With no
    settings: what `medtune chat` serves with (repetition penalty 1.1), greedy, up to 512 new tokens."""
    from medtune.chat import GenerationSettings

    if settings is None:
        return GenerationSettings(temperature=0.0, max_new_tokens=512, repetition_penalty=1.1)
    return dataclasses.replace(settings, temperature=0.0)


def replies(cm, conversations: list[list[dict]], settings, *, batch_size: int = 16, progress: bool = True,
            desc: str = "generate") -> list:
    """Replies (`chat.Reply`) to many conversations through the engine `medtune serve` batches: `batch_size`
    decoded together, a conversation taking the row of the first reply to finish. Greedy replies are the ones
    `chat.complete` gives one at a time (docs/eval.md says how close). The progress bar counts replies, with
    their rate, the tokens generated per second and the time left."""
    from tqdm import tqdm

    from medtune import chat
    from medtune.data import templates
    from medtune.serve.engine import Engine

    prompts = [templates.encode_dialogue(cm.tokenizer, cm.fmt, messages, add_generation_prompt=True,
                                         enable_thinking=settings.enable_thinking).input_ids
               for messages in conversations]
    engine = Engine(cm.model, cm.tokenizer, cm.stop_ids, max_concurrency=batch_size, max_queue=0)
    bar = tqdm(total=len(prompts), desc=desc, unit="reply", disable=not progress, file=sys.stderr)
    generated = [0]

    def done(_, event):
        generated[0] += event.completion_tokens
        bar.set_postfix_str(f"{generated[0] / max(1e-9, bar.format_dict['elapsed']):.0f} tokens/s", refresh=False)
        bar.update(1)

    try:
        finals = engine.run_many(prompts, chat.sampling_params(settings), on_done=done)
    finally:
        bar.close()
    return [chat.Reply(ev.delta.strip(), ev.finish_reason == "stop", ev.token_ids or []) for ev in finals]


def run_health(cm, prompts: list[dict], settings=None, *, progress: bool = True,
               thresholds: Thresholds = DEFAULT, batch_size: int = 16) -> dict:
    """Answer each prompt greedily (`replies`: `batch_size` generated together), measure each answer, summarise.

    Returns {"settings": ..., "responses": [{prompt, kind, lang, response, <metrics>}], "summary": ...}.
    """
    settings = health_settings(settings)
    marker = user_turn_marker(cm.fmt, cm.tokenizer)
    answers = replies(cm, [[{"role": "user", "content": item["prompt"]}] for item in prompts], settings,
                      batch_size=batch_size, progress=progress, desc="health")
    responses = []
    for item, reply in zip(prompts, answers):
        text, stopped = reply.text, reply.stopped
        ids = reply.token_ids[:-1] if stopped else reply.token_ids  # exactly what was generated, end token off
        row = {"prompt": item["prompt"], "kind": item.get("kind"), "lang": item.get("lang"), "response": text}
        row.update(response_metrics(ids, text, stopped, cm.tokenizer, marker or cm.fmt))
        responses.append(row)
    return {"settings": dataclasses.asdict(settings), "responses": responses,
            "summary": summarize(responses, thresholds)}


# --- prompts ------------------------------------------------------------------------------------------

_HINT = ('write one JSON object per line, e.g. {"prompt": "What causes a fever?"}, '
         "or a .txt file with one prompt per line")


def load_prompts(path=None, langs=None) -> list[dict]:
    """Prompts as [{"prompt", "kind", "lang"}]: the bundled set by default, else a JSONL file of
    {"prompt": ..., "kind"?: ..., "lang"?: ...} or a .txt file with one prompt per line.
    `langs` (e.g. ["en"]) keeps only prompts whose `lang` is one of them."""
    from medtune.data import resolve_path

    path = jsonio.require_file(resolve_path(path or DEFAULT_PROMPTS))
    as_text = path.suffix.lower() == ".txt"
    prompts = []
    for line_no, raw_line in jsonio.iter_lines(path):
        line = raw_line.strip()
        if not line:
            continue
        if as_text:
            prompts.append({"prompt": line, "kind": "custom", "lang": None})
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(path, line_no, None, f"invalid JSON: {e.msg} (column {e.colno})", _HINT) from None
        if not isinstance(record, dict):
            raise DataError(path, line_no, None, "a prompt must be a JSON object", _HINT)
        prompt = record.get("prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            problem = "missing" if prompt is None else "must be non-empty text"
            raise DataError(path, line_no, "prompt", problem, _HINT)
        for key in ("kind", "lang"):
            if record.get(key) is not None and not isinstance(record[key], str):
                raise DataError(path, line_no, key, "must be a string", 'e.g. "kind": "medical", "lang": "en"')
        prompts.append({"prompt": prompt.strip(), "kind": record.get("kind") or "custom", "lang": record.get("lang")})
    return in_languages(path, prompts, langs, "--health-langs", _HINT)


def in_languages(path, prompts: list[dict], langs, option: str, hint: str) -> list[dict]:
    """The prompts whose `lang` is one of `langs` (all when none are given); an empty result names the file, the
    languages it has and the `option` that asked."""
    if not prompts:
        raise DataError(path, None, None, "holds no prompts", hint)
    if not langs:
        return prompts
    found = sorted({p["lang"] for p in prompts if p["lang"]})
    kept = [p for p in prompts if p["lang"] in set(langs)]
    if not kept:
        raise DataError(path, None, "lang", f"no prompt has lang {', '.join(langs)} (the file has: "
                        f"{', '.join(found) or 'none'})", f"pick languages the file has, or drop {option}")
    return kept
