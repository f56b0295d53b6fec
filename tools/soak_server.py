#!/usr/bin/env python3
"""
soak_server.py - runs `deepseek serve` under a mixed, never-ending load for
a while and records its resident memory (VmRSS) over time: a leak shows as
RSS that keeps growing after the warm-up.

    nice -n 10 python3 tools/soak_server.py [--minutes 10] [-m tests/fixtures/tiny-chat]
        [--clients 6] [--parallel 4] [--json out.json]

Load (each client loops over these at random): streamed chat with usage,
non-streamed chat with n = 2, completions with logprobs, JSON mode, a
multi-turn conversation over a shared system prompt (prefix cache; small
memory and disk budgets so entries are evicted and files replaced), tool
calls, client disconnects mid-stream, malformed requests (400s),
tokenize/detokenize and /metrics scrapes. Every response is checked
(status, JSON); the run fails on a 5xx other than 503, a dead server, or
RSS growth beyond --max-growth-mb between the end of the warm-up and the
end (default 8 MB).
"""
import argparse
import http.client
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho sigma tau".split()
CALL = ("<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>f\n```json\n{\"x\": 1}\n```"
        "<｜tool▁call▁end｜><｜tool▁calls▁end｜>")


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.counts = {}
        self.bad = []

    def add(self, what, status):
        with self.lock:
            self.counts[(what, status)] = self.counts.get((what, status), 0) + 1
            if status >= 500 and status != 503:
                self.bad.append((what, status))


def request(port, method, path, body=None, raw=None, timeout=120):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    c.request(method, path, body=data, headers={"Content-Type": "application/json"})
    r = c.getresponse()
    b = r.read()
    c.close()
    return r.status, b


def client(port, stop, stats, seed):
    rng = random.Random(seed)
    system = "You are a soak-test assistant. " + " ".join(rng.choice(WORDS) for _ in range(120))
    history = []
    while not stop.is_set():
        kind = rng.choice(["stream", "stream", "n2", "completion", "json", "multiturn", "multiturn", "tools", "disconnect",
                           "bad", "tokenize", "metrics"])
        q = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 40)))
        try:
            if kind == "stream":
                st, b = request(port, "POST", "/v1/chat/completions", {
                    "messages": [{"role": "user", "content": q}], "stream": True, "max_tokens": rng.randint(1, 64),
                    "stream_options": {"include_usage": True}, "seed": rng.randint(0, 1 << 30)})
                ok = st == 200 and b.rstrip().endswith(b"data: [DONE]")
            elif kind == "n2":
                st, b = request(port, "POST", "/v1/chat/completions", {
                    "messages": [{"role": "user", "content": q}], "n": 2, "max_tokens": rng.randint(1, 32)})
                ok = st == 200 and len(json.loads(b)["choices"]) == 2
            elif kind == "completion":
                st, b = request(port, "POST", "/v1/completions", {"prompt": q, "max_tokens": rng.randint(1, 32), "logprobs": 3})
                ok = st == 200 and "choices" in json.loads(b)
            elif kind == "json":
                st, b = request(port, "POST", "/v1/chat/completions", {
                    "messages": [{"role": "user", "content": q + " json"}], "response_format": {"type": "json_object"},
                    "max_tokens": rng.randint(2, 48)})
                ok = st == 200 and isinstance(json.loads(json.loads(b)["choices"][0]["message"]["content"]), dict)
            elif kind == "multiturn":
                if len(history) > 12:
                    history = []
                msgs = [{"role": "system", "content": system}] + history + [{"role": "user", "content": q}]
                st, b = request(port, "POST", "/v1/chat/completions", {"messages": msgs, "max_tokens": rng.randint(4, 24)})
                ok = st == 200 or st == 400  # 400 once the conversation outgrows the context
                if st == 200:
                    history += [{"role": "user", "content": q},
                                {"role": "assistant", "content": json.loads(b)["choices"][0]["message"]["content"]}]
                else:
                    history = []
            elif kind == "tools":
                st, b = request(port, "POST", "/v1/chat/completions", {
                    "messages": [{"role": "user", "content": q}], "x_forced_output": CALL, "stream": rng.random() < 0.5,
                    "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]})
                ok = st == 200 and b"tool_calls" in b
            elif kind == "disconnect":
                s = socket.create_connection(("127.0.0.1", port), timeout=30)
                data = json.dumps({"messages": [{"role": "user", "content": q}], "stream": rng.random() < 0.7,
                                   "max_tokens": 500, "ignore_eos": True, "x_token_delay_ms": 5}).encode()
                s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                          b"Content-Length: %d\r\n\r\n" % len(data) + data)
                time.sleep(rng.uniform(0.01, 0.3))
                s.close()
                st, ok = 200, True
            elif kind == "bad":
                raw = rng.choice([b"{bad", b"[]", b"{\"messages\": 5}", b"{\"messages\":[{\"role\":\"x\"}]}", b"\xff" * 50])
                st, b = request(port, "POST", "/v1/chat/completions", raw=raw)
                ok = st == 400 and "error" in json.loads(b)
            elif kind == "tokenize":
                st, b = request(port, "POST", "/tokenize", {"content": q})
                ids = json.loads(b)["tokens"]
                st, b = request(port, "POST", "/detokenize", {"tokens": ids})
                ok = st == 200 and json.loads(b)["content"] == q
            else:
                st, b = request(port, "GET", "/metrics")
                ok = st == 200 and b"deepseek_slots_busy" in b
            stats.add(kind if ok else kind + "!", st)
        except Exception as e:  # noqa: BLE001
            stats.add(kind + ":" + type(e).__name__, 0)
            time.sleep(0.05)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--binary", default=os.path.join(ROOT, "deepseek"))
    ap.add_argument("-m", "--model", default=os.path.join(ROOT, "tests", "fixtures", "tiny-chat"))
    ap.add_argument("--minutes", type=float, default=10)
    ap.add_argument("--warmup", type=float, default=60, help="seconds before the baseline RSS")
    ap.add_argument("--clients", type=int, default=6)
    ap.add_argument("--parallel", type=int, default=4)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--sample", type=float, default=10, help="seconds between RSS samples")
    ap.add_argument("--max-growth-mb", type=float, default=8)
    ap.add_argument("--json")
    a = ap.parse_args()
    cache_dir = tempfile.mkdtemp(prefix="ds_soak_cache_")
    log_path = os.path.join(cache_dir + ".log")
    log = open(log_path, "w")
    p = subprocess.Popen([a.binary, "serve", "-m", a.model, "--port", "0", "--parallel", str(a.parallel), "-t", str(a.threads),
                          "--test-hooks", "--cache-ram", "2", "--cache-min", "32", "--cache-dir", cache_dir, "--cache-disk", "4",
                          "--max-queue", "256"], stdout=subprocess.DEVNULL, stderr=log)
    port = None
    t_start = time.time()
    while port is None or "model ready" not in open(log_path).read():
        if p.poll() is not None or time.time() - t_start > 60:
            raise SystemExit("server did not start:\n" + open(log_path).read())
        m = re.search(r"listening on http://[^:]+:(\d+)/", open(log_path).read())
        port = int(m.group(1)) if m else None
        time.sleep(0.05)
    stats, stop = Stats(), threading.Event()
    ts = [threading.Thread(target=client, args=(port, stop, stats, i), daemon=True) for i in range(a.clients)]
    for t in ts:
        t.start()
    t0 = time.time()
    samples = []
    print(f"{'time s':>7} {'RSS MB':>8} {'requests':>9}", flush=True)
    try:
        while time.time() - t0 < a.minutes * 60:
            time.sleep(a.sample)
            if p.poll() is not None:
                break
            n = sum(stats.counts.values())
            samples.append((time.time() - t0, rss_kb(p.pid) / 1024, n))
            print(f"{samples[-1][0]:>7.0f} {samples[-1][1]:>8.1f} {n:>9}", flush=True)
    finally:
        stop.set()
        for t in ts:
            t.join(timeout=30)
        alive = p.poll() is None
        if alive:
            p.send_signal(signal.SIGTERM)
            p.wait(timeout=60)
        shutil.rmtree(cache_dir, ignore_errors=True)
        log.close()
    base = [s for s in samples if s[0] >= a.warmup]
    growth = (base[-1][1] - base[0][1]) if len(base) >= 2 else float("nan")
    n = len(base)
    slope = 0.0
    if n >= 2:
        mx = sum(s[0] for s in base) / n
        my = sum(s[1] for s in base) / n
        slope = sum((s[0] - mx) * (s[1] - my) for s in base) / max(sum((s[0] - mx) ** 2 for s in base), 1e-9) * 60
    print("\nrequests by kind and status:")
    for (k, st), v in sorted(stats.counts.items()):
        print(f"  {k:<24} {st:>4} {v:>7}")
    print(f"\nRSS after warm-up {base[0][1] if base else float('nan'):.1f} MB, at the end {base[-1][1] if base else float('nan'):.1f} MB, "
          f"max {max(s[1] for s in samples) if samples else float('nan'):.1f} MB; growth {growth:+.1f} MB, "
          f"trend {slope:+.3f} MB/min over {len(base)} samples")
    failed_kinds = {k: v for k, v in stats.counts.items() if k[0].endswith("!") or ":" in k[0]}
    server_log = open(log_path).read()
    clean_exit = alive and p.returncode == 0 and "Sanitizer" not in server_log and "runtime error" not in server_log
    ok = alive and clean_exit and not stats.bad and growth <= a.max_growth_mb and not failed_kinds
    if alive and not clean_exit:
        print(f"FAIL: exit status {p.returncode} or a sanitizer report:\n" + server_log[-6000:])
    if not alive:
        print("FAIL: the server died; its log ends with:\n" + open(log_path).read()[-6000:])
    if stats.bad:
        print(f"FAIL: 5xx responses: {stats.bad[:10]}")
    if failed_kinds:
        print(f"FAIL: unexpected responses: {failed_kinds}")
    if growth > a.max_growth_mb:
        print(f"FAIL: RSS grew {growth:.1f} MB (limit {a.max_growth_mb} MB)")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"samples": samples, "counts": {f"{k}/{s}": v for (k, s), v in stats.counts.items()},
                       "growth_mb": growth, "trend_mb_per_min": slope, "ok": ok}, f, indent=2)
    print("soak:", "ok" if ok else "FAILED", f"(server log: {log_path})")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
