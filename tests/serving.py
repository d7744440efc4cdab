"""A live `medtune serve` process for tests: started on 127.0.0.1 with --port 0 (the OS picks a free port, the
server prints it), plus a few plain HTTP helpers that do what a client would, without the openai package."""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Live:
    proc: subprocess.Popen
    host: str
    port: int
    log: Path
    banner: list[str]
    key: str | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def health(self) -> dict:
        return request(self, "GET", "/health")[2]


def start(model, *args, log_dir: Path, env: dict | None = None, wait_s: float = 600) -> Live:
    """Start `medtune serve MODEL --port 0 ARGS` and return once it prints its URL (after the model loaded)."""
    log = Path(log_dir) / "serve-stderr.log"
    proc = subprocess.Popen([sys.executable, "-m", "medtune", "serve", str(model), "--port", "0", *args],
                            stdout=subprocess.PIPE, stderr=open(log, "w"), text=True,
                            env={**os.environ, **(env or {})})
    timer = threading.Timer(wait_s, proc.kill)  # a server that never comes up must not hang the suite
    timer.start()
    banner = []
    try:
        while len(banner) < 3:
            line = proc.stdout.readline()
            if not line:
                raise AssertionError(f"medtune serve exited with {proc.wait()}: {log.read_text()[-3000:]}")
            banner.append(line.rstrip("\n"))
    finally:
        timer.cancel()
    threading.Thread(target=proc.stdout.read, daemon=True).start()  # drain anything printed later
    address = banner[0].split("http://", 1)[1].split("/", 1)[0]
    host, port = address.rsplit(":", 1)
    key = args[list(args).index("--api-key") + 1] if "--api-key" in args else None
    return Live(proc, host, int(port), log, banner, key)


def request(live: Live, method: str, path: str, body=None, headers: dict | None = None, timeout: float = 600):
    """(status, headers, parsed JSON or text). `body`: a dict (sent as JSON), bytes or str (sent as is)."""
    conn = http.client.HTTPConnection(live.host, live.port, timeout=timeout)
    data = json.dumps(body).encode() if isinstance(body, (dict, list)) else body
    if isinstance(data, str):
        data = data.encode()
    conn.request(method, path, body=data, headers={"Content-Type": "application/json", **(headers or {})})
    r = conn.getresponse()
    raw = r.read().decode("utf-8", errors="replace")
    conn.close()
    try:
        parsed = json.loads(raw)
    except ValueError:
        parsed = raw
    return r.status, dict(r.getheaders()), parsed


def chat(live: Live, content: str, *, key: str | None = None, **params) -> dict:
    """A non-streaming greedy completion (repetition penalty off unless given) with the server's key; returns
    the JSON body."""
    key = key or live.key
    body = {"messages": [{"role": "user", "content": content}], "temperature": 0, "repetition_penalty": 1.0, **params}
    status, _, out = request(live, "POST", "/v1/chat/completions", body,
                             {"Authorization": f"Bearer {key}"} if key else None)
    assert status == 200, (status, out)
    return out


def wait_until(condition, what: str, limit_s: float = 120) -> None:
    """Poll `condition()` until true; fail naming `what` after `limit_s` (a hang guard, not a timing assertion)."""
    end = time.monotonic() + limit_s
    while not condition():
        if time.monotonic() > end:
            raise AssertionError(f"gave up waiting for: {what}")
        time.sleep(0.1)
