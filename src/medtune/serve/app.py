"""`medtune serve MODEL_OR_RUN`: an OpenAI-compatible HTTP API and a web chat over the batched engine.

Endpoints (docs/serve.md has the details and every error):

* `GET /v1/models`: the served model, its base model, chain of stages, key metrics, the not-medical-advice notice.
* `POST /v1/chat/completions`: OpenAI's chat completions, non-streaming and streaming (server-sent events
  exactly as the official `openai` client reads them, `stream_options.include_usage` included).
* `GET /health`: liveness, whether the model is loaded, requests running and waiting.
* `GET /`: the web chat (static files in `static/`, no network needed).

Prompts are rendered with the run's chat template exactly as in training (medtune.data.templates), so text a
user types that spells a control token stays text. Errors use OpenAI's body
`{"error": {"message", "type", "param", "code"}}`; bad input is always a 4xx, never a 500.
"""

from __future__ import annotations

import asyncio
import hmac
import html
import ipaddress
import json
import secrets
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.exceptions import HTTPException

from medtune import NOT_MEDICAL_ADVICE
from medtune.errors import MedtuneError
from medtune.serve.engine import Engine, Event, GenerationSettings, QueueFull, SamplingParams

STATIC = Path(__file__).parent / "static"
ROLES = ("system", "user", "assistant")
_KEY_METRICS = ("eval_perplexity", "eval_loss", "eval_accuracy", "heldout_margin", "heldout_margin_gain",
                "reward_last", "kl_last", "train_loss", "steps")


@dataclass
class ServeSettings:
    """What `medtune serve` accepts besides the model.

    host: address to bind (default 127.0.0.1; any other needs an API key). port: 0 = any free port.
    api_key: clients must send `Authorization: Bearer KEY` (also read from MEDTUNE_API_KEY).
    max_concurrency: requests decoded together in one batch. max_queue: requests waiting for a batch slot;
      beyond that a request gets 503 with Retry-After. max_input_tokens: longest prompt (after the template).
    max_tokens: default and upper limit of a reply's tokens. system_prompt: used when a request has no system
      message (default: the run's own SFT system prompt, if any). timeout_s: a reply running longer ends with
      finish_reason `length`. max_body_bytes: larger request bodies get 413.
    """

    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = None
    max_concurrency: int = 8
    max_queue: int = 32
    max_input_tokens: int = 2048
    max_tokens: int = 512
    system_prompt: str | None = None
    template: str | None = None
    timeout_s: float = 600.0
    max_body_bytes: int = 1 << 20
    trust_remote_code: bool = False
    enable_thinking: bool | None = None  # thinking templates (Qwen3): the default when a request does not say


def check_settings(s: ServeSettings) -> None:
    """Refuse settings that cannot work, each with one line (exit code 2 from the CLI)."""
    if not 0 <= s.port <= 65535:
        raise MedtuneError(f"--port {s.port} is out of range", hint="use 1-65535, or 0 for any free port")
    for name in ("max_concurrency", "max_input_tokens", "max_tokens"):
        if getattr(s, name) < 1:
            raise MedtuneError(f"--{name.replace('_', '-')} must be at least 1 (got {getattr(s, name)})")
    if s.max_queue < 0:
        raise MedtuneError(f"--max-queue must be at least 0 (got {s.max_queue})")
    if s.timeout_s <= 0:
        raise MedtuneError(f"--timeout must be above 0 (got {s.timeout_s})")
    if s.api_key is not None and not s.api_key.strip():
        raise MedtuneError("the API key is empty", hint="pass --api-key KEY or unset MEDTUNE_API_KEY")
    if not s.api_key and not is_loopback(s.host):
        raise MedtuneError(f"refusing to serve on {s.host} without an API key: anyone who can reach it could use "
                           "the model", hint="pass --api-key KEY (or set MEDTUNE_API_KEY), or keep --host 127.0.0.1")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


# --- the model card -----------------------------------------------------------------------------------


def model_card(spec: str, resolved: str) -> dict:
    """Base model, chain of stages (oldest first) and key metrics, read from the run manifests."""
    from medtune import models, runs

    chain, metrics, base, system = [], {}, resolved, None
    folder, seen = resolved, set()
    while folder and Path(folder).is_dir() and folder not in seen:
        seen.add(folder)
        m = runs.read_manifest(folder)
        if not m:
            break
        chain.insert(0, {"stage": m.get("stage", "?"), "run": Path(folder).name, "status": m.get("status", "?")})
        if not metrics:
            metrics = {k: v for k, v in (m.get("metrics") or {}).items()
                       if k in _KEY_METRICS and isinstance(v, (int, float))}
        if system is None:
            system = ((m.get("config") or {}).get("data") or {}).get("system_prompt") or None
        model = m.get("model") or {}
        base = str(model.get("base") or base)
        weights = model.get("weights")
        if not weights or str(weights) == folder:
            break
        try:
            folder = models.resolve(str(weights))
        except MedtuneError:
            break
    name = models.DEFAULT_NAME if spec == "default" else Path(spec.rstrip("/")).name or spec
    default_dir = models.cache_dir() / "models" / models.DEFAULT_NAME  # where `default` converts to
    base_name = models.DEFAULT_NAME if Path(base) == default_dir else base
    return {"id": name, "base_model": base_name, "stages": chain, "metrics": metrics, "system_prompt": system}


# --- request models -----------------------------------------------------------------------------------


class ApiError(Exception):
    """An OpenAI-style error: HTTP status, message, and the body's type, param and code."""

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None,
                 type: str = "invalid_request_error", headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.type = status, message, param, code, type
        self.headers = headers or {}

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


class TextPart(BaseModel):
    type: str
    text: str | None = None


class Message(BaseModel):
    role: str
    content: str | list[TextPart] | None = None


class StreamOptions(BaseModel):
    include_usage: bool = False


class ChatRequest(BaseModel):
    """The fields of OpenAI's chat completion request that medtune reads; others are ignored. Extension:
    `repetition_penalty` (1.0 = off, as in transformers)."""

    model_config = ConfigDict(extra="ignore")

    messages: list[Message]
    model: str | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    n: int | None = 1
    stream: bool = False
    stream_options: StreamOptions | None = None
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    repetition_penalty: float | None = Field(default=None, gt=0, le=10)
    enable_thinking: bool | None = None  # thinking templates (Qwen3); also read from chat_template_kwargs (vLLM's)
    chat_template_kwargs: dict | None = None

    def thinking(self) -> bool | None:
        """The request's enable_thinking: its own field, else chat_template_kwargs' (vLLM's form), else None."""
        if self.enable_thinking is not None:
            return self.enable_thinking
        value = (self.chat_template_kwargs or {}).get("enable_thinking")
        return value if isinstance(value, bool) else None


def parse_request(raw: bytes) -> ChatRequest:
    """The request body as a ChatRequest, or ApiError 400 naming the field."""
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "the request body is not valid JSON") from None
    if not isinstance(data, dict):
        raise ApiError(400, "the request body must be a JSON object")
    if "messages" not in data:
        raise ApiError(400, "missing required field 'messages'", param="messages")
    try:
        return ChatRequest.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        param = ".".join(str(p) for p in err["loc"] if not str(p).startswith(("str", "list[")))
        raise ApiError(400, f"{param}: {err['msg']}", param=param.split(".")[0] or None) from None


def check_messages(messages: list[Message]) -> list[dict]:
    """Plain {role, content} dicts: known roles (`developer` = system), text content that is not empty, an
    optional system message first, then user and assistant turns alternating, ending with the user's."""
    if not messages:
        raise ApiError(400, "messages is empty: send at least one user message", param="messages")
    out = []
    for i, m in enumerate(messages):
        role = "system" if m.role == "developer" else m.role
        if role not in ROLES:
            raise ApiError(400, f"messages[{i}].role '{m.role}' is not supported: use system, user or assistant",
                           param=f"messages[{i}].role")
        content = m.content
        if isinstance(content, list):
            if any(p.type != "text" or p.text is None for p in content):
                raise ApiError(400, f"messages[{i}].content: only text parts are supported",
                               param=f"messages[{i}].content")
            content = "".join(p.text for p in content)
        if not content or not content.strip():
            raise ApiError(400, f"messages[{i}].content is empty", param=f"messages[{i}].content")
        out.append({"role": role, "content": content})
    turns = out[1:] if out[0]["role"] == "system" else out
    for i, m in enumerate(turns):
        expected = "user" if i % 2 == 0 else "assistant"
        if m["role"] != expected:
            k = i + len(out) - len(turns)
            raise ApiError(400, f"messages[{k}] is '{m['role']}' where '{expected}' was expected: after an optional "
                           "system message, user and assistant turns alternate", param=f"messages[{k}].role")
    if not turns or turns[-1]["role"] != "user":
        raise ApiError(400, "the last message must be the user's", param="messages")
    return out


# --- the app ------------------------------------------------------------------------------------------


@dataclass
class Server:
    """What the app serves: the chat model and its engine (None while the model loads), the settings and the
    model card."""

    cm: object | None
    engine: Engine | None
    settings: ServeSettings
    card: dict
    created: int = field(default_factory=lambda: int(time.time()))
    rejected: int = 0  # requests refused with 503

    def ready(self) -> Engine:
        if self.engine is None:
            raise ApiError(503, "the model is still loading; retry shortly", type="server_error",
                           code="model_loading", headers={"Retry-After": "5"})
        return self.engine

    def defaults(self) -> GenerationSettings:
        return GenerationSettings()

    def sampling(self, req: ChatRequest) -> SamplingParams:
        limit = self.settings.max_tokens
        asked = req.max_completion_tokens if req.max_completion_tokens is not None else req.max_tokens
        if asked is not None and asked > limit:
            param = "max_completion_tokens" if req.max_completion_tokens is not None else "max_tokens"
            raise ApiError(400, f"{param} {asked} is over this server's limit of {limit} (--max-tokens)", param=param)
        if req.n not in (None, 1):
            raise ApiError(400, "n must be 1: medtune generates one choice per request", param="n")
        stop = [req.stop] if isinstance(req.stop, str) else list(req.stop or [])
        if len(stop) > 4 or any(not s for s in stop):
            raise ApiError(400, "stop: at most 4 strings, none empty", param="stop")
        d = self.defaults()
        return SamplingParams(
            max_new_tokens=asked or limit,
            temperature=d.temperature if req.temperature is None else req.temperature,
            top_p=d.top_p if req.top_p is None else req.top_p,
            repetition_penalty=d.repetition_penalty if req.repetition_penalty is None else req.repetition_penalty,
            frequency_penalty=req.frequency_penalty or 0.0, presence_penalty=req.presence_penalty or 0.0,
            stop=tuple(stop), seed=req.seed, timeout_s=self.settings.timeout_s)

    def prompt_ids(self, messages: list[dict], enable_thinking: bool | None = None) -> list[int]:
        from medtune.data import templates

        if enable_thinking is None:
            enable_thinking = self.settings.enable_thinking
        system = self.settings.system_prompt or self.card.get("system_prompt")
        if system and messages[0]["role"] != "system":
            messages = [{"role": "system", "content": system}, *messages]
        try:
            ids = templates.encode_dialogue(self.cm.tokenizer, self.cm.fmt, messages, add_generation_prompt=True,
                                            enable_thinking=enable_thinking).input_ids
        except MedtuneError as exc:
            raise ApiError(400, str(exc), param="messages") from None
        if len(ids) > self.settings.max_input_tokens:
            raise ApiError(400, f"the prompt is {len(ids)} tokens, over this server's limit of "
                           f"{self.settings.max_input_tokens} (--max-input-tokens)", param="messages",
                           code="context_length_exceeded")
        return ids


def create_app(server: Server):
    """The FastAPI application for `server`."""
    app = FastAPI(title="medtune serve", docs_url=None, redoc_url=None, openapi_url=None)
    settings = server.settings

    def error(exc: ApiError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(ApiError)
    async def on_api_error(request, exc: ApiError):
        return error(exc)

    @app.exception_handler(HTTPException)
    async def on_http_error(request, exc: HTTPException):  # unknown paths and methods, in OpenAI's shape
        return error(ApiError(exc.status_code, str(exc.detail), code="not_found" if exc.status_code == 404 else None))

    @app.exception_handler(RequestValidationError)
    async def on_validation_error(request, exc: RequestValidationError):
        first = (exc.errors() or [{}])[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        return error(ApiError(400, f"{where}: {first.get('msg', 'invalid request')}"))

    @app.exception_handler(Exception)
    async def on_bug(request, exc):  # a bug: say so without a traceback
        print(f"medtune serve: internal error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return error(ApiError(500, "internal server error", type="server_error"))

    def authorize(request: Request) -> None:
        if not settings.api_key:
            return
        header = request.headers.get("authorization", "")
        scheme, _, given = header.partition(" ")
        if not given:
            raise ApiError(401, "missing API key: send the header 'Authorization: Bearer YOUR_KEY'",
                           code="invalid_api_key")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), settings.api_key.encode()):
            raise ApiError(401, "incorrect API key", code="invalid_api_key")

    async def read_body(request: Request) -> bytes:
        limit = settings.max_body_bytes
        too_big = ApiError(413, f"the request body is over {limit} bytes", code="request_too_large")
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            raise too_big
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise too_big
        return bytes(body)

    @app.get("/health")
    async def health():
        engine = server.engine
        state = {"status": "ok" if engine else "loading", "model_loaded": engine is not None,
                 "model": server.card["id"], "auth_required": bool(settings.api_key)}
        if engine is None:
            return state
        running, waiting = engine.load()
        return {**state, "running": running, "waiting": waiting, "batched": engine.batched,
                "peak_batch": engine.peak_batch, "decode_steps": engine.steps,
                "completed": engine.finished["stop"] + engine.finished["length"],
                "cancelled": engine.finished["cancelled"], "failed": engine.finished["error"],
                "rejected": server.rejected}

    @app.get("/v1/models")
    async def list_models(request: Request):
        authorize(request)
        card = server.card
        entry = {"id": card["id"], "object": "model", "created": server.created, "owned_by": "medtune",
                 "base_model": card["base_model"], "stages": card["stages"], "metrics": card["metrics"],
                 "max_tokens": settings.max_tokens, "max_input_tokens": settings.max_input_tokens,
                 "notice": NOT_MEDICAL_ADVICE}
        return {"object": "list", "data": [entry]}

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        authorize(request)
        engine = server.ready()
        req = parse_request(await read_body(request))
        messages = check_messages(req.messages)
        params = server.sampling(req)
        prompt = server.prompt_ids(messages, req.thinking())
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[Event] = asyncio.Queue()

        def sink(ev: Event):  # called from the engine's thread
            loop.call_soon_threadsafe(events.put_nowait, ev)

        try:
            handle = engine.submit(prompt, params, sink)
        except QueueFull:
            server.rejected += 1
            raise ApiError(503, "the server is busy: every slot and the queue are full; retry shortly",
                           type="server_error", code="server_busy", headers={"Retry-After": "1"}) from None
        cid = "chatcmpl-" + secrets.token_hex(12)
        created = int(time.time())
        model = server.card["id"]

        async def next_event() -> Event | None:
            """The next event, or None once the client has gone (its request is cancelled then)."""
            while True:
                try:
                    return await asyncio.wait_for(events.get(), timeout=0.25)
                except asyncio.TimeoutError:
                    if await request.is_disconnected():
                        return None

        if not req.stream:
            parts = []
            try:
                while True:
                    ev = await next_event()
                    if ev is None:
                        handle.cancel()
                        return JSONResponse({}, status_code=499)  # nobody reads it
                    parts.append(ev.delta)
                    if ev.finish_reason is not None:
                        break
            finally:
                handle.cancel()
            if ev.finish_reason == "error":
                raise ApiError(500, f"generation failed: {ev.error}", type="server_error")
            usage = {"prompt_tokens": ev.prompt_tokens, "completion_tokens": ev.completion_tokens,
                     "total_tokens": ev.prompt_tokens + ev.completion_tokens}
            return {"id": cid, "object": "chat.completion", "created": created, "model": model,
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": "".join(parts)},
                                 "logprobs": None, "finish_reason": ev.finish_reason}],
                    "usage": usage}

        include_usage = bool(req.stream_options and req.stream_options.include_usage)

        def chunk(delta: dict | None, finish: str | None = None, usage: dict | None = None) -> str:
            body = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
                    "choices": [] if delta is None else [{"index": 0, "delta": delta, "logprobs": None,
                                                          "finish_reason": finish}]}
            if include_usage:
                body["usage"] = usage
            return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"

        async def stream():
            try:
                yield chunk({"role": "assistant", "content": ""})
                while True:
                    ev = await next_event()
                    if ev is None:
                        return
                    if ev.finish_reason == "error":
                        err = ApiError(500, f"generation failed: {ev.error}", type="server_error")
                        yield f"data: {json.dumps(err.body())}\n\n"
                        break
                    if ev.delta:
                        yield chunk({"content": ev.delta})
                    if ev.finish_reason is not None:
                        yield chunk({}, ev.finish_reason)
                        if include_usage:
                            yield chunk(None, usage={"prompt_tokens": ev.prompt_tokens,
                                                     "completion_tokens": ev.completion_tokens,
                                                     "total_tokens": ev.prompt_tokens + ev.completion_tokens})
                        break
                yield "data: [DONE]\n\n"
            finally:  # the client left, or the reply is complete: either way the batch slot is freed now
                handle.cancel()

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    page = (STATIC / "index.html").read_text(encoding="utf-8")
    page = page.replace("{{NOTICE}}", html.escape(NOT_MEDICAL_ADVICE))
    security = {"Content-Security-Policy": "default-src 'self'; img-src 'self'; object-src 'none'; base-uri 'none'",
                "X-Content-Type-Options": "nosniff"}

    @app.get("/")
    async def index():
        return HTMLResponse(page, headers=security)

    @app.get("/static/{name}")
    async def static(name: str):
        path = STATIC / name
        if name not in {p.name for p in STATIC.iterdir()} or name == "index.html":
            raise ApiError(404, f"no static file {name}", code="not_found")
        return FileResponse(path, headers=security)

    return app


# --- running it ---------------------------------------------------------------------------------------


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on host:port, bound before the model loads, so a busy port fails at once."""
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as exc:
        sock.close()
        raise MedtuneError(f"cannot listen on {host}:{port}: {exc.strerror or exc}",
                           hint="choose another --port, or stop whatever uses this one") from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def main(spec: str, settings: ServeSettings, load_model) -> int:
    """Check the settings, bind, then serve while the model loads (`/health` says when it is ready; completions
    get 503 until then), start the engine, and serve until Ctrl-C. The startup lines print once it is ready.
    `load_model(spec, template=, trust_remote_code=)` is medtune.chat.load_chat_model (passed in by the command,
    so serve/ does not import chat, which generates through serve's engine)."""
    import uvicorn

    check_settings(settings)
    from medtune import models

    resolved = models.resolve(spec)
    sock = bind(settings.host, settings.port)
    server = Server(None, None, settings, model_card(spec, resolved))
    config = uvicorn.Config(create_app(server), log_level="warning", access_log=False, timeout_graceful_shutdown=2)
    web = uvicorn.Server(config)
    failed: list[MedtuneError] = []
    loader = threading.Thread(target=_load, args=(spec, server, sock, web, failed, load_model), name="medtune-load",
                              daemon=True)
    loader.start()
    try:
        web.run(sockets=[sock])
    finally:
        sock.close()
        if server.engine is not None:
            server.engine.close()
    if failed:
        raise failed[0]
    return 0


def _load(spec: str, server: Server, sock, web, failed: list, load_model) -> None:
    """Load the model and start the engine beside the running web server; on failure, stop the server."""
    settings = server.settings
    try:
        cm = load_model(spec, template=settings.template, trust_remote_code=settings.trust_remote_code)
        server.cm = cm
        server.engine = Engine(cm.model, cm.tokenizer, cm.stop_ids, max_concurrency=settings.max_concurrency,
                               max_queue=settings.max_queue).start()
    except Exception as exc:  # MedtuneError as it is; anything else a library raised, on one line
        failed.append(exc if isinstance(exc, MedtuneError) else
                      MedtuneError(f"could not load the model: {type(exc).__name__}: {exc}", where=spec))
        web.should_exit = True
        return
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    card = server.card
    chain = " -> ".join(s["stage"] for s in card["stages"]) or "no medtune stages"
    print(f"medtune serve: http://{shown}:{port}/  (web chat at /, OpenAI API at /v1)", flush=True)
    print(f"model: {card['id']} (base {card['base_model']}; {chain}); {settings.max_concurrency} requests batched, "
          f"{settings.max_queue} may wait; API key {'required' if settings.api_key else 'off (loopback only)'}",
          flush=True)
    print(f"note: {NOT_MEDICAL_ADVICE}", flush=True)
