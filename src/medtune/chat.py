"""`medtune chat MODEL_OR_RUN`: talk to a model or a run folder, interactively or with `--prompt`.

Prompts are encoded exactly as in training (medtune.data.templates), so the model sees at inference the
same tokens it was trained on, and generation stops at the template's end-of-turn token.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from medtune import NOT_MEDICAL_ADVICE
from medtune.data import templates
from medtune.models import ModelConfig


@dataclass
class GenerationSettings:
    """Sampling defaults, chosen for small models that tend to repeat themselves.

    temperature 0.7 (0 = greedy), top_p 0.9, max_new_tokens 256, repetition_penalty 1.1 (1.0 = off),
    no_repeat_ngram_size 0 (off; e.g. 4 forbids repeating any 4-gram).
    """

    temperature: float = 0.7
    top_p: float = 0.9
    max_new_tokens: int = 256
    repetition_penalty: float = 1.1
    no_repeat_ngram_size: int = 0


@dataclass
class ChatModel:
    model: object
    tokenizer: object
    fmt: templates.ChatFormat
    stop_ids: list[int]


def load_chat_model(spec: str, *, template: str | None = None, trust_remote_code: bool = False) -> ChatModel:
    """Load `spec` (`default`, a folder, a run folder, a .gguf file or a hub id) for generation."""
    import torch

    from medtune import models, runs

    resolved = models.resolve(spec)
    manifest = runs.read_manifest(resolved) if Path(resolved).is_dir() else None
    if template is None:
        template = (manifest or {}).get("model", {}).get("template") or "auto"
    device = "cuda" if torch.cuda.is_available() else "cpu"
    loaded = models.load(ModelConfig(name_or_path=spec, trust_remote_code=trust_remote_code, template=template),
                         device=device)
    model = loaded.model.to(device).eval()
    fmt = templates.resolve_format(loaded.tokenizer, template)
    if templates.install_format(loaded.tokenizer, fmt):
        model.resize_token_embeddings(len(loaded.tokenizer))
    return ChatModel(model, loaded.tokenizer, fmt, templates.generation_stop_ids(loaded.tokenizer, fmt))


def generate(cm: ChatModel, messages: list[dict], settings: GenerationSettings, *, stream=None) -> tuple[str, bool]:
    """Reply to `messages`. Returns (text, stopped) where `stopped` says the model ended its turn itself
    rather than running into max_new_tokens. With `stream` (a file), tokens are written as they come."""
    import torch

    enc = templates.encode_dialogue(cm.tokenizer, cm.fmt, messages, add_generation_prompt=True)
    input_ids = torch.tensor([enc.input_ids], device=cm.model.device)
    sample = settings.temperature > 0
    kwargs = dict(
        max_new_tokens=settings.max_new_tokens,
        do_sample=sample,
        repetition_penalty=settings.repetition_penalty,
        no_repeat_ngram_size=settings.no_repeat_ngram_size,
        eos_token_id=cm.stop_ids,
        pad_token_id=cm.tokenizer.pad_token_id,
    )
    if sample:
        kwargs.update(temperature=settings.temperature, top_p=settings.top_p)
    else:
        kwargs.update(temperature=None, top_p=None, top_k=None)
    if stream is not None:
        kwargs["streamer"] = _Streamer(cm.tokenizer, stream)
    with torch.no_grad():
        out = cm.model.generate(input_ids, attention_mask=torch.ones_like(input_ids), **kwargs)
    new = out[0, input_ids.shape[1]:].tolist()
    stopped = bool(new) and new[-1] in cm.stop_ids
    text = cm.tokenizer.decode(new[:-1] if stopped else new, skip_special_tokens=False)
    return text.strip(), stopped


class _Streamer:
    """Writes decoded text as tokens arrive (prompt skipped, end-of-turn token not shown)."""

    def __init__(self, tokenizer, out):
        from transformers import TextStreamer

        self._inner = TextStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
        self._inner.on_finalized_text = self._write
        self.out = out

    def _write(self, text: str, stream_end: bool = False):
        self.out.write(text)
        if stream_end:
            self.out.write("\n")
        self.out.flush()

    def put(self, value):
        self._inner.put(value)

    def end(self):
        self._inner.end()


def main(spec: str, settings: GenerationSettings, *, prompt: str | None = None, system: str | None = None,
         template: str | None = None, trust_remote_code: bool = False) -> int:
    print(f"note: {NOT_MEDICAL_ADVICE}", file=sys.stderr)
    cm = load_chat_model(spec, template=template, trust_remote_code=trust_remote_code)
    history: list[dict] = [{"role": "system", "content": system}] if system else []
    if prompt is not None:
        generate(cm, history + [{"role": "user", "content": prompt}], settings, stream=sys.stdout)
        return 0
    print("medtune chat - type a message; /reset clears the history, /quit or Ctrl-D leaves.", file=sys.stderr)
    while True:
        try:
            line = input("\nyou> ").strip()
        except EOFError:
            print()
            return 0
        if not line:
            continue
        if line in ("/quit", "/exit"):
            return 0
        if line == "/reset":
            history = history[:1] if system else []
            continue
        history.append({"role": "user", "content": line})
        sys.stdout.write("model> ")
        text, _ = generate(cm, history, settings, stream=sys.stdout)
        history.append({"role": "assistant", "content": text or "..."})
