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

Reasoning (thinking models): an assistant message's reasoning is its `reasoning_content`, or a leading
`<think>...</think>` block of its content (data/formats.py folds `reasoning_content` into that block). A
template that knows thinking (Qwen3's own, which reads `reasoning_content` and `enable_thinking`; the fallbacks
`qwen3` and `qwen3_nothink`) gets the reasoning as `reasoning_content` and places it itself (Qwen3 keeps it only
for the turns after the last user message; `qwen3_nothink` never). `reasoning="train"` trains the reasoning
with its `<think>`/`</think>` markers; `"mask"` leaves them out of the loss (the answer after them is trained).
A template that does not know thinking keeps the block inside the content, trained or masked the same way.
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
# Qwen3-style thinking: reasoning is rendered in a <think> block for the assistant turns after the last user
# message (earlier turns' reasoning is not shown again); `enable_thinking=false` opens the reply with an empty
# block. `qwen3_nothink` never renders reasoning and always opens with the empty block.
_QWEN3_HEAD = (
    "{% set ns = namespace(last_user=-1) %}{% for m in messages %}{% if m['role'] == 'user' %}"
    "{% set ns.last_user = loop.index0 %}{% endif %}{% endfor %}"
    "{% for m in messages %}{% if m['role'] == 'assistant' %}{{ '<|im_start|>assistant\n' }}"
    "{% if loop.index0 > ns.last_user %}"
)
_QWEN3_TAIL = (
    "{% endif %}{{ m['content'] + '<|im_end|>\n' }}"
    "{% else %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}"
)
_QWEN3 = (
    _QWEN3_HEAD + "{{ '<think>\n' + (m['reasoning_content'] if m['reasoning_content'] is defined else '') + '\n</think>\n\n' }}"
    + _QWEN3_TAIL + "{% if enable_thinking is defined and enable_thinking is false %}{{ '<think>\n\n</think>\n\n' }}"
    "{% endif %}{% endif %}"
)
_QWEN3_NOTHINK = (
    _QWEN3_HEAD + "{{ '<think>\n\n</think>\n\n' }}" + _QWEN3_TAIL + "{{ '<think>\n\n</think>\n\n' }}{% endif %}"
)
# ChatML with tools in the Hermes manner (as Qwen2.5 writes them): the declared functions in the system turn,
# each call as JSON in <tool_call> tags, each result in a `tool` turn.
_CHATML_TOOLS = (
    "{% set system = messages[0]['content'] if messages and messages[0]['role'] == 'system' else none %}"
    "{% if tools %}{{ '<|im_start|>system\n' }}{% if system is not none %}{{ system + '\n\n' }}{% endif %}"
    "{{ '# Tools\n\nYou may call one or more of these functions. Write each call as JSON in <tool_call></tool_call>"
    " tags: {\"name\": ..., \"arguments\": {...}}.\n<tools>' }}{% for t in tools %}{{ '\n' + (t | tojson) }}{% endfor %}"
    "{{ '\n</tools><|im_end|>\n' }}{% elif system is not none %}{{ '<|im_start|>system\n' + system + '<|im_end|>\n' }}"
    "{% endif %}{% for m in messages %}{% if m['role'] != 'system' %}"
    "{{ '<|im_start|>' + m['role'] + '\n' + m['content'] }}"
    "{% if m['tool_calls'] is defined %}{% for c in m['tool_calls'] %}{% if m['content'] or not loop.first %}"
    "{{ '\n' }}{% endif %}{{ '<tool_call>\n{\"name\": \"' + c['function']['name'] + '\", \"arguments\": ' }}"
    "{{ c['function']['arguments'] | tojson }}{{ '}\n</tool_call>' }}{% endfor %}{% endif %}"
    "{{ '<|im_end|>\n' }}{% endif %}{% endfor %}"
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
    thinking: bool = False  # the template places reasoning_content itself (or drops it by design)
    tools: bool = False  # the template renders `tools`, assistants' `tool_calls` and `tool` results


FALLBACKS = {
    "chatml": ChatFormat("chatml", _CHATML, ("<|im_start|>", "<|im_end|>")),
    "chatml_tools": ChatFormat("chatml_tools", _CHATML_TOOLS, ("<|im_start|>", "<|im_end|>"), tools=True),
    "qwen3": ChatFormat("qwen3", _QWEN3, ("<|im_start|>", "<|im_end|>", "<think>", "</think>"), thinking=True),
    "qwen3_nothink": ChatFormat("qwen3_nothink", _QWEN3_NOTHINK, ("<|im_start|>", "<|im_end|>", "<think>", "</think>"),
                                thinking=True),
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
            source = tokenizer.chat_template
            return ChatFormat("tokenizer", None, thinking=knows_thinking(source),
                              tools=isinstance(source, str) and "tool_calls" in source)
        if name == "tokenizer":
            raise MedtuneError(
                "this tokenizer has no chat template",
                hint=f"set template to one of: {', '.join(FALLBACKS)}",
            )
        return FALLBACKS["chatml"]
    if name not in FALLBACKS:
        raise MedtuneError(f"unknown chat template '{name}'", hint=f"choose one of: {', '.join(TEMPLATE_NAMES)}")
    return FALLBACKS[name]


def knows_thinking(source) -> bool:
    """A template that reads `reasoning_content` or `enable_thinking` (Qwen3's, DeepSeek-R1's) places reasoning
    itself; any other gets it inside the content."""
    return isinstance(source, str) and ("reasoning_content" in source or "enable_thinking" in source)


THINK_OPEN, THINK_CLOSE = "<think>", "</think>"


def split_reasoning(text: str) -> tuple[str | None, str]:
    """(reasoning, answer) of an assistant message whose content opens with a `<think>...</think>` block;
    (None, text) when it does not."""
    body = text.lstrip()
    if body.startswith(THINK_OPEN) and THINK_CLOSE in body:
        reasoning, _, answer = body[len(THINK_OPEN):].partition(THINK_CLOSE)
        return reasoning.strip("\n"), answer.lstrip("\n")
    return None, text


def strip_reasoning(reply: str) -> str:
    """The answer of a generated reply: what follows the last `</think>`; "" when a `<think>` block was opened
    and never closed (the reply ran out while reasoning); the reply itself when it has no reasoning."""
    if THINK_CLOSE in reply:
        return reply.rpartition(THINK_CLOSE)[2].strip()
    return "" if reply.lstrip().startswith(THINK_OPEN) else reply


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


def _markers(messages, extra=()) -> tuple[str, str]:
    """Two private-use characters that occur in no message: placeholders `OPEN index CLOSE` then cannot be
    confused with anything a user wrote (any text is accepted, private-use characters included)."""
    used = set().union(*(m["content"] for m in messages), *extra) if messages else set()
    for code in range(0xE000, 0xF8FF, 2):
        if chr(code) not in used and chr(code + 1) not in used:
            return chr(code), chr(code + 1)
    raise MedtuneError("a dialogue uses every private-use character (U+E000-U+F8FF); medtune needs two to mark turns")


def _render(tokenizer, fmt: ChatFormat, messages, add_generation_prompt: bool, markers: tuple[str, str],
            thoughts=None, enable_thinking: bool | None = None, tools=None) -> str:
    """The template's text with placeholders: message i's content is `OPEN i CLOSE`, its reasoning (when
    `thoughts[i]` is not None) `OPEN n+i CLOSE`, given as `reasoning_content`; the empty content of a turn that
    only calls tools stays empty (encode_dialogue finds that turn by the assistant header). Tool calls, a tool
    message's other keys and `tools` are given as they are."""
    n = len(messages)
    slots = []
    for i, m in enumerate(messages):
        mark = f"{markers[0]}{i}{markers[1]}"
        slot = {k: v for k, v in m.items() if k not in ("content", "reasoning_content")}
        slot["content"] = "" if m.get("tool_calls") and not m["content"] else mark  # a turn of calls only: as it is
        slots.append(slot)
    for i, thought in enumerate(thoughts or []):
        if thought is not None:
            slots[i]["reasoning_content"] = f"{markers[0]}{n + i}{markers[1]}"
    extra = {} if enable_thinking is None else {"enable_thinking": enable_thinking}
    if tools:
        extra["tools"] = tools
    try:
        return tokenizer.apply_chat_template(
            slots, chat_template=fmt.jinja, tokenize=False, add_generation_prompt=add_generation_prompt, **extra
        )
    except Exception as exc:  # a template's own raise_exception(): roles out of order, system not allowed...
        raise MedtuneError(f"chat template '{fmt.name}' rejected the dialogue: {exc}") from None


def _assistant_header(tokenizer, fmt: ChatFormat) -> str:
    """The text a template puts before an assistant's reply (its generation prompt, e.g. `<|im_start|>assistant\\n`)."""
    probe = [{"role": "user", "content": "\ue000"}]
    with_prompt = _render(tokenizer, fmt, probe, True, ("\ue000", "\ue001"))
    without = _render(tokenizer, fmt, probe, False, ("\ue000", "\ue001"))
    return with_prompt[len(without):] if with_prompt.startswith(without) else ""


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
    new = ChatFormat(fmt.name, edited, fmt.special, fmt.thinking, fmt.tools)
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


def _thoughts(fmt: ChatFormat, messages) -> tuple[list[str], list[str | None], list[int]]:
    """Per message: the content to render, the reasoning the template places (None: none), and how many leading
    characters of the content are a reasoning block kept inline (a template that does not know thinking)."""
    contents, thoughts, inline = [], [], []
    for m in messages:
        thought, answer = None, m["content"]
        if m["role"] == "assistant":
            thought, answer = (m["reasoning_content"], m["content"]) if m.get("reasoning_content") else \
                split_reasoning(m["content"])
        if thought is not None and not fmt.thinking:  # no place for it in the template: the block stays in the text
            block = f"{THINK_OPEN}\n{thought}\n{THINK_CLOSE}\n\n"
            contents.append(block + answer)
            thoughts.append(None)
            inline.append(len(block))
        else:
            contents.append(answer)
            thoughts.append(thought)
            inline.append(0)
    return contents, thoughts, inline


def encode_dialogue(tokenizer, fmt: ChatFormat, messages, *, add_generation_prompt: bool = False,
                    reasoning: str = "train", enable_thinking: bool | None = None, tools=None) -> Encoded:
    """Token ids of `messages` under `fmt`, with the positions to train (assistant turns + end tokens).

    reasoning: `train` (the assistant's reasoning and its <think> markers are trained) or `mask` (not).
    enable_thinking: passed to a template that reads it (Qwen3: False opens the reply with an empty block).
    tools: the functions a tool-calling dialogue declares (data/tools.py), given to the template; an
      assistant's `tool_calls` are trained like its text, `tool` results never (docs/tools.md)."""
    if reasoning not in ("train", "mask"):
        raise MedtuneError(f"unknown reasoning setting '{reasoning}'", hint="choose train or mask")
    uses_tools = bool(tools) or any(m.get("tool_calls") or m["role"] == "tool" for m in messages)
    if uses_tools and not fmt.tools:
        raise MedtuneError(f"chat template '{fmt.name}' does not render tool calls",
                           hint="set model.template=chatml_tools (or --template), or use a model whose template does")
    train_thought = reasoning == "train"
    n = len(messages)
    contents, thoughts, inline = _thoughts(fmt, messages)
    markers = _markers(messages, [t for t in thoughts if t])
    text = _render(tokenizer, fmt, messages, add_generation_prompt, markers, thoughts, enable_thinking, tools)
    pieces = re.split(f"{markers[0]}(\\d+){markers[1]}", text)  # [template, idx, template, idx, ..., template]
    seen = [int(i) for i in pieces[1::2]]
    must = [i for i in range(n) if messages[i]["content"] or not messages[i].get("tool_calls")]
    if not set(must) <= set(seen) or len(set(seen)) != len(seen) or any(i >= 2 * n for i in seen):
        raise MedtuneError(
            f"chat template '{fmt.name}' drops or repeats message content, so turns cannot be located",
            hint="choose a fallback template with template=chatml (or another named one)",
        )
    skipped = [i for i in range(n) if i not in seen and messages[i]["role"] == "assistant"]
    header = _assistant_header(tokenizer, fmt) if skipped else ""
    specials = end_token_ids(tokenizer)

    def text_ids(piece):
        return tokenizer(piece, add_special_tokens=False, split_special_tokens=True)["input_ids"] if piece else []

    ids: list[int] = []
    mask: list[bool] = []
    turn_ends: list[int] = []

    def template_text(piece: str, closes_turn: bool) -> None:
        """Template text; when it closes an assistant turn, trained up to its first control token (EOS appended
        and trained when it has none)."""
        toks = tokenizer(piece, add_special_tokens=False)["input_ids"] if piece else []
        if not closes_turn:
            ids.extend(toks)
            mask.extend([False] * len(toks))
            return
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
    last = -1  # the last message whose content was placed
    for k, piece in enumerate(pieces):
        if k % 2 == 0:  # template text
            nxt = int(pieces[k + 1]) if k + 1 < len(pieces) else None
            if k > 0 and int(pieces[k - 1]) >= n:  # between a reasoning and its answer (`</think>`)
                toks = tokenizer(piece, add_special_tokens=False)["input_ids"] if piece else []
                ids.extend(toks)
                mask.extend([train_thought] * len(toks))
                continue
            # an assistant turn with no content placed here (it only calls tools): trained after its header
            inside = [i for i in skipped if i > last and (nxt is None or nxt >= n or i < nxt)]
            at = piece.find(header) + len(header) if inside and header and header in piece else -1
            if inside and at < 0:
                raise MedtuneError(f"chat template '{fmt.name}': the tool-call turn cannot be located",
                                   hint="set model.template=chatml_tools")
            cut = piece.rfind(THINK_OPEN) if train_thought and nxt is not None and nxt >= n else -1
            if at >= 0:
                template_text(piece[:at], train_next_template)
                template_text(piece[at:], True)
                skipped = [i for i in skipped if i not in inside]
            elif cut >= 0:  # `<think>` opening a trained reasoning: the model writes it
                template_text(piece[:cut], train_next_template)
                toks = tokenizer(piece[cut:], add_special_tokens=False)["input_ids"]
                ids.extend(toks)
                mask.extend([True] * len(toks))
            else:
                template_text(piece, train_next_template)
            train_next_template = False
        elif int(piece) >= n:  # a reasoning the template placed
            toks = text_ids(thoughts[int(piece) - n])
            ids.extend(toks)
            mask.extend([train_thought] * len(toks))
        else:
            i = last = int(piece)
            is_assistant = messages[i]["role"] == "assistant"
            block, answer = contents[i][: inline[i]], contents[i][inline[i]:]
            for part, trained in ((block, is_assistant and train_thought), (answer, is_assistant)):
                toks = text_ids(part)
                ids.extend(toks)
                mask.extend([trained] * len(toks))
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
