"""Chat templates: render a dialogue to token ids with an assistant mask, keeping user text as text.

The tokenizer's own Jinja template is used when it has one; otherwise (or on request) a named fallback
from `FALLBACKS`. Rendering is done once with placeholders in place of each message's content, and the
rendered string is split at the placeholders:

* template text (role markers, end-of-turn tokens) is tokenised with special tokens recognised;
* message content is tokenised with `split_special_tokens=True`, so a user who types `<|im_end|>`
  gets the characters, never the control token.

Trained positions (`assistant_mask`) are each assistant message's content plus the template text that
follows it up to and including the first special token (the end-of-turn token, e.g. `<|im_end|>`).
When a template puts no special token after an assistant turn, the tokenizer's EOS is appended and
trained, so every trained turn ends with a token that stops generation.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from medtune.errors import MedtuneError

# Named fallbacks for tokenizers without a chat template. `special` lists the control strings the
# template needs as single tokens; models.py adds any the tokenizer lacks (and resizes embeddings).
_CHATML = (
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
_QWEN = (
    "{% if messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
    + _CHATML
)
_LLAMA3 = (
    "{{ '<|begin_of_text|>' }}{% for m in messages %}"
    "{{ '<|start_header_id|>' + m['role'] + '<|end_header_id|>\n\n' + m['content'] + '<|eot_id|>' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)
_BAICHUAN2 = (
    "{% for m in messages %}{% if m['role'] == 'system' %}{{ m['content'] }}"
    "{% elif m['role'] == 'user' %}{{ '<reserved_106>' + m['content'] }}"
    "{% else %}{{ '<reserved_107>' + m['content'] + eos_token }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<reserved_107>' }}{% endif %}"
)
_CHATGLM3 = (
    "{{ '[gMASK]sop' }}{% for m in messages %}{{ '<|' + m['role'] + '|>\n ' + m['content'] }}"
    "{% if m['role'] == 'assistant' %}{{ eos_token }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}"
)
_ALPACA = (
    "{% for m in messages %}{% if m['role'] == 'system' %}{{ m['content'] + '\n\n' }}"
    "{% elif m['role'] == 'user' %}{{ '### Instruction:\n' + m['content'] + '\n\n' }}"
    "{% else %}{{ '### Response:\n' + m['content'] + eos_token + '\n\n' }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '### Response:\n' }}{% endif %}"
)
_VICUNA = (
    "{% if messages[0]['role'] != 'system' %}{{ \"A chat between a curious user and an artificial intelligence "
    "assistant. The assistant gives helpful, detailed, and polite answers to the user's questions. \" }}{% endif %}"
    "{% for m in messages %}{% if m['role'] == 'system' %}{{ m['content'] + ' ' }}"
    "{% elif m['role'] == 'user' %}{{ 'USER: ' + m['content'] + ' ' }}"
    "{% else %}{{ 'ASSISTANT: ' + m['content'] + eos_token }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)


@dataclass(frozen=True)
class ChatFormat:
    """A chat template and the control strings it needs as single tokens."""

    name: str
    jinja: str | None  # None: the tokenizer's own template
    special: tuple[str, ...] = field(default=())


FALLBACKS = {
    "chatml": ChatFormat("chatml", _CHATML, ("<|im_start|>", "<|im_end|>")),
    "qwen": ChatFormat("qwen", _QWEN, ("<|im_start|>", "<|im_end|>")),
    "llama3": ChatFormat(
        "llama3", _LLAMA3, ("<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>")
    ),
    "baichuan2": ChatFormat("baichuan2", _BAICHUAN2, ("<reserved_106>", "<reserved_107>")),
    "chatglm3": ChatFormat("chatglm3", _CHATGLM3, ("[gMASK]", "sop", "<|system|>", "<|user|>", "<|assistant|>")),
    "alpaca": ChatFormat("alpaca", _ALPACA),
    "vicuna": ChatFormat("vicuna", _VICUNA),
}

TEMPLATE_NAMES = ("auto", "tokenizer", *FALLBACKS)


def resolve_format(tokenizer, name: str = "auto") -> ChatFormat:
    """`auto`: the tokenizer's own template if it has one, else chatml. `tokenizer`: its own, or an error."""
    if name in ("auto", "tokenizer"):
        if getattr(tokenizer, "chat_template", None):
            return ChatFormat("tokenizer", None)
        if name == "tokenizer":
            raise MedtuneError(
                "this tokenizer has no chat template",
                hint=f"set template to one of: {', '.join(FALLBACKS)}",
            )
        return FALLBACKS["chatml"]
    if name not in FALLBACKS:
        raise MedtuneError(f"unknown chat template '{name}'", hint=f"choose one of: {', '.join(TEMPLATE_NAMES)}")
    return FALLBACKS[name]


def missing_special_tokens(tokenizer, fmt: ChatFormat) -> list[str]:
    """Control strings of `fmt` that the tokenizer does not hold as single tokens."""
    vocab = tokenizer.get_vocab()
    return [s for s in fmt.special if s not in vocab]


def install_format(tokenizer, fmt: ChatFormat) -> int:
    """Make `fmt` the tokenizer's chat template (so a saved run folder carries it) and add missing control
    tokens. Returns the number of tokens added: the caller must resize the model's embeddings."""
    added = 0
    missing = missing_special_tokens(tokenizer, fmt)
    if missing:
        added = tokenizer.add_special_tokens({"additional_special_tokens": missing}, replace_extra_special_tokens=False)
    if fmt.jinja is not None:
        tokenizer.chat_template = fmt.jinja
    return added


@dataclass
class Encoded:
    input_ids: list[int]
    assistant_mask: list[bool]
    turn_ends: list[int]  # index just past each trained assistant turn (its end token included)


def _markers(messages) -> tuple[str, str]:
    """Two private-use characters that occur in no message: placeholders `OPEN index CLOSE` then cannot be
    confused with anything a user wrote (any text is accepted, private-use characters included)."""
    used = set().union(*(m["content"] for m in messages)) if messages else set()
    for code in range(0xE000, 0xF8FF, 2):
        if chr(code) not in used and chr(code + 1) not in used:
            return chr(code), chr(code + 1)
    raise MedtuneError("a dialogue uses every private-use character (U+E000-U+F8FF); medtune needs two to mark turns")


def _render(tokenizer, fmt: ChatFormat, messages, add_generation_prompt: bool, markers: tuple[str, str]) -> str:
    slots = [{"role": m["role"], "content": f"{markers[0]}{i}{markers[1]}"} for i, m in enumerate(messages)]
    try:
        return tokenizer.apply_chat_template(
            slots, chat_template=fmt.jinja, tokenize=False, add_generation_prompt=add_generation_prompt
        )
    except Exception as exc:  # a template's own raise_exception(): roles out of order, system not allowed...
        raise MedtuneError(f"chat template '{fmt.name}' rejected the dialogue: {exc}") from None


def default_system_prompt(tokenizer, fmt: ChatFormat) -> str | None:
    """The system text `fmt` inserts into a dialogue that has no system message, or None (SmolLM2's own
    template: "You are a helpful AI assistant named SmolLM, trained by Hugging Face"; the qwen fallback: "You
    are a helpful assistant."). Found by rendering a dialogue with and without a system message."""
    markers = ("\ue000", "\ue001")
    try:
        alone = _render(tokenizer, fmt, [{"role": "user", "content": ""}], False, markers)
        with_system = _render(tokenizer, fmt, [{"role": "system", "content": ""}, {"role": "user", "content": ""}],
                              False, markers)
    except MedtuneError:  # a template that refuses system messages inserts none of its own
        return None
    before = alone.split("\ue0000\ue001")[0]
    head, _, tail = with_system.split("\ue0001\ue001")[0].partition("\ue0000\ue001")
    if len(before) > len(head) + len(tail) and before.startswith(head) and before.endswith(tail):
        return before[len(head): len(before) - len(tail)]
    return None


_LITERAL = re.compile(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"")


def without_default_system(tokenizer, fmt: ChatFormat) -> ChatFormat | None:
    """`fmt` with its default system prompt taken out (the Jinja string that writes it becomes ''), so a
    dialogue without a system message gets no system turn at all; `fmt` itself when it has no default; None
    when the default cannot be taken out safely (the result must render every other dialogue unchanged)."""
    default = default_system_prompt(tokenizer, fmt)
    if not default:
        return fmt
    source = fmt.jinja if fmt.jinja is not None else tokenizer.chat_template
    if not isinstance(source, str) or not default.strip():
        return None
    edited = _LITERAL.sub(lambda m: "''" if default.strip() in m.group() else m.group(), source)
    new = ChatFormat(fmt.name, edited, fmt.special)
    markers = ("\ue000", "\ue001")
    probes = ([{"role": "system", "content": "s"}, {"role": "user", "content": "u"}],
              [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}, {"role": "assistant", "content": "a"}])
    try:
        same = all(_render(tokenizer, fmt, p, False, markers) == _render(tokenizer, new, p, False, markers) for p in probes)
    except MedtuneError:
        return None
    if edited == source or not same or default_system_prompt(tokenizer, new) is not None:
        return None
    alone = _render(tokenizer, new, [{"role": "user", "content": "u"}], False, markers)
    return new if default.strip() not in alone else None


def end_token_ids(tokenizer) -> set[int]:
    """Ids that may end an assistant turn: the tokenizer's special tokens."""
    return set(tokenizer.all_special_ids)


def encode_dialogue(tokenizer, fmt: ChatFormat, messages, *, add_generation_prompt: bool = False) -> Encoded:
    """Token ids of `messages` under `fmt`, with the positions to train (assistant turns + end tokens)."""
    markers = _markers(messages)
    text = _render(tokenizer, fmt, messages, add_generation_prompt, markers)
    pieces = re.split(f"{markers[0]}(\\d+){markers[1]}", text)  # [template, idx, template, idx, ..., template]
    seen = [int(i) for i in pieces[1::2]]
    if sorted(seen) != list(range(len(messages))):
        raise MedtuneError(
            f"chat template '{fmt.name}' drops or repeats message content, so turns cannot be located",
            hint="choose a fallback template with template=chatml (or another named one)",
        )
    specials = end_token_ids(tokenizer)
    ids: list[int] = []
    mask: list[bool] = []
    turn_ends: list[int] = []
    train_next_template = False
    for k, piece in enumerate(pieces):
        if k % 2 == 0:  # template text
            toks = tokenizer(piece, add_special_tokens=False)["input_ids"] if piece else []
            if train_next_template:
                end = next((j for j, t in enumerate(toks) if t in specials), None)
                if end is None:  # the template closes the turn with no control token: append EOS
                    ids.append(tokenizer.eos_token_id)
                    mask.append(True)
                    turn_ends.append(len(ids))
                    ids.extend(toks)
                    mask.extend([False] * len(toks))
                else:
                    ids.extend(toks)
                    mask.extend([j <= end for j in range(len(toks))])
                    turn_ends.append(len(ids) - len(toks) + end + 1)
                train_next_template = False
            else:
                ids.extend(toks)
                mask.extend([False] * len(toks))
        else:
            message = messages[int(piece)]
            toks = tokenizer(message["content"], add_special_tokens=False, split_special_tokens=True)["input_ids"]
            is_assistant = message["role"] == "assistant"
            ids.extend(toks)
            mask.extend([is_assistant] * len(toks))
            train_next_template = is_assistant
    return Encoded(ids, mask, turn_ends)


def generation_stop_ids(tokenizer, fmt: ChatFormat) -> list[int]:
    """Token ids that end an assistant reply under `fmt` (EOS plus the template's end-of-turn token)."""
    probe = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    enc = encode_dialogue(tokenizer, fmt, probe)
    stops = [enc.input_ids[enc.turn_ends[-1] - 1]]
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in stops:
        stops.append(tokenizer.eos_token_id)
    return stops
