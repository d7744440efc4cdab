#!/usr/bin/env python
"""Serving throughput: `medtune serve` (continuous batching) against sequential `model.generate`, same run.

  baseline   the bundled prompts one after another through transformers' `model.generate` (greedy, batch 1,
             KV cache, the same template, stop tokens and max_new_tokens), in this process.
  served     a live `medtune serve` on 127.0.0.1 (started here, on a free port); at each concurrency level C,
             C client threads send the same prompts as streaming requests (greedy, repetition penalty off).

Prints, per level: aggregate generated tokens/s, time to first token p50/p95, per-token latency p50 (the gaps
after the first token), and the ratio to the baseline's tokens/s; then whether every served text equals the
baseline's text for the same prompt. Goal on the embedded model: at 8 concurrent clients, at least 3x.

Then a bounded load run: --load-requests requests at concurrency 16, mixed valid (streaming and not) and
invalid ones of every kind; it counts 5xx answers (must be 0), checks each invalid request got its own 4xx,
and reports the server's peak RSS. Only loopback addresses are used. Never compare runs across machines.

    python bench/serve_throughput.py                         # embedded model, 16 prompts, 128 new tokens
    python bench/serve_throughput.py --levels 1,8 --n 8 --max-tokens 64 --load-requests 100
    python bench/serve_throughput.py --model runs/sft-demo --json serve.json
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import queue
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


def bundled_prompts(n: int) -> list[str]:
    """The first n of the 40 bundled health prompts (medical and general, English and Chinese), cycled."""
    from medtune.data import resolve_path

    path = resolve_path("medtune:health_prompts.jsonl")
    prompts = [json.loads(line)["prompt"] for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
    return [prompts[i % len(prompts)] for i in range(n)]


def start_server(model: str, max_tokens: int, concurrency: int, log_dir: str):
    log = open(os.path.join(log_dir, "serve.log"), "w")
    proc = subprocess.Popen([sys.executable, "-m", "medtune", "serve", model, "--host", "127.0.0.1", "--port", "0",
                             "--max-concurrency", str(concurrency), "--max-queue", "64",
                             "--max-tokens", str(max_tokens)], stdout=subprocess.PIPE, stderr=log, text=True)
    first = proc.stdout.readline()
    if "http://" not in first:
        raise SystemExit(f"the server did not start (exit {proc.wait()}); see {log.name}")
    threading.Thread(target=proc.stdout.read, daemon=True).start()
    address = first.split("http://", 1)[1].split("/", 1)[0]
    host, port = address.rsplit(":", 1)
    assert host in ("127.0.0.1", "[::1]", "localhost"), host  # loopback only
    return proc, host, int(port)


def stream_request(host, port, prompt: str, max_tokens: int) -> dict:
    """One streaming greedy request: its text, token count, time to first token and the gaps between tokens."""
    body = {"messages": [{"role": "user", "content": prompt}], "temperature": 0, "repetition_penalty": 1.0,
            "max_tokens": max_tokens, "stream": True, "stream_options": {"include_usage": True}}
    conn = http.client.HTTPConnection(host, port, timeout=3600)
    start = time.perf_counter()
    conn.request("POST", "/v1/chat/completions", json.dumps(body), {"Content-Type": "application/json"})
    r = conn.getresponse()
    if r.status != 200:
        raise RuntimeError(f"HTTP {r.status}: {r.read()[:200]!r}")
    text, stamps, usage = [], [], None
    for raw in r:
        line = raw.decode("utf-8").strip()
        if not line.startswith("data: ") or line == "data: [DONE]":
            continue
        chunk = json.loads(line[6:])
        if chunk.get("usage"):
            usage = chunk["usage"]
        for choice in chunk.get("choices", []):
            if choice["delta"].get("content"):
                text.append(choice["delta"]["content"])
                stamps.append(time.perf_counter())
    end = time.perf_counter()
    conn.close()
    gaps = [b - a for a, b in zip(stamps, stamps[1:])]
    return {"text": "".join(text), "tokens": usage["completion_tokens"], "ttft": (stamps[0] if stamps else end) - start,
            "gaps": gaps, "start": start, "end": end}


def run_level(host, port, prompts: list[str], concurrency: int, max_tokens: int) -> dict:
    jobs: queue.Queue = queue.Queue()
    for i, p in enumerate(prompts):
        jobs.put((i, p))
    results: list = [None] * len(prompts)
    errors: list = []

    def client():
        while True:
            try:
                i, p = jobs.get_nowait()
            except queue.Empty:
                return
            try:
                results[i] = stream_request(host, port, p, max_tokens)
            except Exception as exc:  # reported below; a benchmark with errors has no valid figure
                errors.append(f"{type(exc).__name__}: {exc}")

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    wall = time.perf_counter() - t0
    if errors:
        raise SystemExit(f"concurrency {concurrency}: {len(errors)} requests failed, e.g. {errors[0]}")
    tokens = sum(r["tokens"] for r in results)
    gaps = [g for r in results for g in r["gaps"]]
    return {"concurrency": concurrency, "requests": len(prompts), "tokens": tokens, "seconds": round(wall, 2),
            "tokens_per_s": tokens / wall, "ttft_p50_s": percentile([r["ttft"] for r in results], 0.5),
            "ttft_p95_s": percentile([r["ttft"] for r in results], 0.95),
            "token_latency_p50_ms": 1000 * percentile(gaps, 0.5), "texts": [r["text"] for r in results]}


def baseline(model_spec: str, prompts: list[str], max_tokens: int) -> dict:
    """Sequential `model.generate`, greedy, on the same prompts with the same template and stop tokens."""
    import torch

    from medtune import chat
    from medtune.data import templates

    cm = chat.load_chat_model(model_spec)
    tok = cm.tokenizer
    encoded = [templates.encode_dialogue(tok, cm.fmt, [{"role": "user", "content": p}], add_generation_prompt=True)
               .input_ids for p in prompts]

    def generate(ids):
        x = torch.tensor([ids])
        out = cm.model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=max_tokens, do_sample=False,
                                temperature=None, top_p=None, top_k=None, repetition_penalty=1.0,
                                eos_token_id=cm.stop_ids, pad_token_id=tok.pad_token_id)
        return out[0, len(ids):].tolist()

    with torch.no_grad():
        generate(encoded[0][:8])  # warm-up (allocations, kernels)
        t0 = time.perf_counter()
        outputs = [generate(ids) for ids in encoded]
        wall = time.perf_counter() - t0
    texts = [tok.decode(o[:-1] if o and o[-1] in cm.stop_ids else o, skip_special_tokens=False) for o in outputs]
    tokens = sum(len(o) for o in outputs)
    params = sum(p.numel() for p in {id(p): p for p in cm.model.parameters()}.values())  # a tied head counted once
    return {"tokens": tokens, "seconds": round(wall, 2), "tokens_per_s": tokens / wall, "texts": texts, "params": params}


def matmul_rate() -> float:
    """The best fp32 2048^3 matmul rate of 5 (FLOP/s): the compute bound that shares are given against."""
    import torch

    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    best = 0.0
    for _ in range(5):
        t0 = time.perf_counter()
        a @ b
        best = max(best, 2 * 2048**3 / (time.perf_counter() - t0))
    return best


# --- the load run -----------------------------------------------------------------------------------------

INVALID = [  # (body, the 4xx it must get)
    (b"{not json", 400),
    ({"max_tokens": 4}, 400),
    ({"messages": []}, 400),
    ({"messages": [{"role": "robot", "content": "x"}]}, 400),
    ({"messages": [{"role": "assistant", "content": "a"}, {"role": "user", "content": "b"}]}, 400),
    ({"messages": [{"role": "user", "content": ""}]}, 400),
    ({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 0}, 400),
    ({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 10 ** 6}, 400),
    ({"messages": [{"role": "user", "content": "hi"}], "temperature": -1}, 400),
    ({"messages": [{"role": "user", "content": "hi"}], "n": 3}, 400),
    ({"messages": [{"role": "user", "content": "fever " * 3000}]}, 400),
    ({"messages": [{"role": "user", "content": "x" * (1 << 20)}]}, 413),
]


def load_run(host, port, prompts: list[str], n: int, concurrency: int = 16) -> dict:
    jobs: queue.Queue = queue.Queue()
    for i in range(n):
        if i % 5 in (1, 3):  # 40% invalid, cycling through every kind
            body, expect = INVALID[(i // 5 * 2 + (i % 5 == 3)) % len(INVALID)]
            jobs.put((body, expect, False))
        else:
            stream = i % 2 == 0
            jobs.put(({"messages": [{"role": "user", "content": prompts[i % len(prompts)]}], "max_tokens": 16,
                       "stream": stream}, 200, stream))
    tally = {"valid_ok": 0, "invalid_ok": 0, "wrong": [], "5xx": 0}
    lock = threading.Lock()

    def client():
        while True:
            try:
                body, expect, stream = jobs.get_nowait()
            except queue.Empty:
                return
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            conn = http.client.HTTPConnection(host, port, timeout=3600)
            try:
                conn.request("POST", "/v1/chat/completions", data, {"Content-Type": "application/json"})
                r = conn.getresponse()
                payload = r.read().decode("utf-8", "replace")
                status = r.status
            except (ConnectionError, http.client.HTTPException) as exc:  # a 413 may close before all is sent
                status, payload = (413, '{"error": {}}') if expect == 413 else (0, str(exc))
            finally:
                conn.close()
            ok = status == expect and (("data: [DONE]" in payload) if stream else ('"error"' in payload) == (expect != 200))
            with lock:
                tally["5xx"] += status >= 500
                if ok:
                    tally["valid_ok" if expect == 200 else "invalid_ok"] += 1
                else:
                    tally["wrong"].append((expect, status, payload[:120]))

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    tally["seconds"] = round(time.perf_counter() - t0, 1)
    tally["requests"] = n
    return tally


def peak_rss_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="default")
    p.add_argument("--n", type=int, default=16, help="prompts per level (default 16)")
    p.add_argument("--levels", default="1,4,8,16", help="client concurrency levels (default 1,4,8,16)")
    p.add_argument("--max-tokens", type=int, default=128, help="new tokens per reply (default 128)")
    p.add_argument("--load-requests", type=int, default=300, help="requests in the load run (default 300; 0 = skip)")
    p.add_argument("--json", help="also write the figures here")
    a = p.parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    levels = [int(x) for x in a.levels.split(",")]

    import torch

    prompts = bundled_prompts(a.n)
    print(f"{a.n} bundled prompts, greedy, {a.max_tokens} new tokens; model {a.model}; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {os.cpu_count()} CPUs, {platform.processor() or platform.machine()}")
    base = baseline(a.model, prompts, a.max_tokens)
    peak = matmul_rate()
    share = lambda tps: 2 * base["params"] * tps / peak  # noqa: E731  forward FLOPs per token = 2N
    print(f"compute bound: fp32 matmul {peak / 1e9:.0f} GFLOP/s; 2N = {2 * base['params'] / 1e9:.2f} GFLOP a token")
    print(f"baseline  sequential model.generate: {base['tokens']} tokens in {base['seconds']} s = "
          f"{base['tokens_per_s']:.1f} tokens/s ({share(base['tokens_per_s']):.1%} of the compute bound)")

    figures = {"model": a.model, "prompts": a.n, "max_tokens": a.max_tokens, "matmul_flops": peak,
               "baseline": {k: v for k, v in base.items() if k != "texts"},
               "levels": [], "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                                         "processor": platform.processor() or platform.machine()}}
    with tempfile.TemporaryDirectory() as log_dir:
        proc, host, port = start_server(a.model, max(a.max_tokens, 16), max(max(levels), 16), log_dir)
        try:
            stream_request(host, port, prompts[0], 4)  # warm-up
            all_same = True
            print(f"{'clients':>8} {'tokens/s':>9} {'x base':>7} {'TTFT p50':>9} {'TTFT p95':>9} {'ms/token p50':>13} "
                  f"{'same text':>10} {'bound':>6}")
            for c in levels:
                level = run_level(host, port, prompts, c, a.max_tokens)
                same = sum(t == b for t, b in zip(level.pop("texts"), base["texts"]))
                all_same &= same == len(prompts)
                level.update(ratio=level["tokens_per_s"] / base["tokens_per_s"], same_texts=same,
                             compute_share=share(level["tokens_per_s"]))
                figures["levels"].append(level)
                print(f"{c:>8} {level['tokens_per_s']:>9.1f} {level['ratio']:>6.2f}x {level['ttft_p50_s']:>8.2f}s "
                      f"{level['ttft_p95_s']:>8.2f}s {level['token_latency_p50_ms']:>13.1f} {same:>5}/{len(prompts)} "
                      f"{level['compute_share']:>6.1%}")
            figures["same_texts"] = all_same
            at8 = next((lv["ratio"] for lv in figures["levels"] if lv["concurrency"] == 8), None)
            if at8 is not None:
                print(f"ratio served / sequential at 8 clients: {at8:.2f}x (goal >= 3x: {'met' if at8 >= 3 else 'NOT met'})")
            print(f"greedy texts identical to the baseline at every level: {all_same}")
            if a.load_requests:
                load = load_run(host, port, prompts, a.load_requests)
                load["peak_rss_mib"] = peak_rss_mib(proc.pid)
                figures["load"] = {**load, "wrong": load["wrong"][:10], "wrong_count": len(load["wrong"])}
                print(f"load run: {load['requests']} requests at 16 clients in {load['seconds']} s: "
                      f"{load['valid_ok']} valid answered, {load['invalid_ok']} invalid answered with their 4xx, "
                      f"{len(load['wrong'])} wrong, {load['5xx']} 5xx; server peak RSS {load['peak_rss_mib']:.0f} MiB")
                for w in load["wrong"][:5]:
                    print(f"  expected {w[0]}, got {w[1]}: {w[2]}")
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    if a.json:
        Path(a.json).write_text(json.dumps(figures, indent=2, ensure_ascii=False))
    ok = figures["same_texts"] and (not a.load_requests or (figures["load"]["5xx"] == 0 and not figures["load"]["wrong_count"]))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
