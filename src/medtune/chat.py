"""`medtune chat MODEL_OR_RUN`: talk to a model or a run folder, interactively or with `--prompt`.

Prompts are encoded exactly as in training (medtune.data.templates), so the model sees at inference the
same tokens it was trained on, and generation stops at the template's end-of-turn token. Replies come from
the engine `medtune serve` batches (medtune.serve.engine), so chat, serve and `eval --health` share one path.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from medtune import NOT_MEDICAL_ADVICE
from medtune.data import templates
from medtune.models import ModelConfig
from medtune.serve.engine import GenerationSettings  # chat's, serve's and eval's defaults, named here too


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


def sampling_params(settings: GenerationSettings):
    """The engine's parameters for `settings` (temperature 0 = greedy)."""
    from medtune.serve.engine import SamplingParams

    return SamplingParams(max_new_tokens=settings.max_new_tokens, temperature=max(settings.temperature, 0.0),
                          top_p=settings.top_p, repetition_penalty=settings.repetition_penalty,
                          no_repeat_ngram_size=settings.no_repeat_ngram_size)


@dataclass
class Reply:
    text: str  # the reply, stripped, without the end-of-turn token
    stopped: bool  # the model ended its turn itself (rather than running into max_new_tokens)
    token_ids: list[int]  # every generated id, the end-of-turn token included when `stopped`


def complete(cm: ChatModel, messages: list[dict], settings: GenerationSettings, *, stream=None) -> Reply:
    """Reply to `messages` through the generation engine that `medtune serve` batches (medtune.serve.engine),
    one request inline. With `stream` (a file), text is written as it comes, then a newline."""
    from medtune.serve.engine import Engine

    enc = templates.encode_dialogue(cm.tokenizer, cm.fmt, messages, add_generation_prompt=True,
                                    enable_thinking=settings.enable_thinking)
    engine = Engine(cm.model, cm.tokenizer, cm.stop_ids, max_concurrency=1, max_queue=0)

    def write(text):
        stream.write(text)
        stream.flush()

    final = engine.run(enc.input_ids, sampling_params(settings), on_delta=write if stream is not None else None)
    if stream is not None:
        stream.write("\n")
        stream.flush()
    return Reply(final.delta.strip(), final.finish_reason == "stop", final.token_ids or [])


def generate(cm: ChatModel, messages: list[dict], settings: GenerationSettings, *, stream=None) -> tuple[str, bool]:
    """Reply to `messages`. Returns (text, stopped) where `stopped` says the model ended its turn itself
    rather than running into max_new_tokens. With `stream` (a file), tokens are written as they come."""
    reply = complete(cm, messages, settings, stream=stream)
    return reply.text, reply.stopped


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
