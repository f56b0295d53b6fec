#!/usr/bin/env python3
"""
bench_server.py - load benchmark for `deepseek serve`: time to first token
(TTFT), inter-token latency (ITL) and aggregate tokens/s with 1, 4, 8 and
16 concurrent streaming clients, and the prefix cache's TTFT gain (cold
prompt vs. a repeated shared prefix, from memory and from --cache-dir
after a restart).

    python3 tools/bench_server.py --make-model /tmp/bench-model      # once: random V3 model, ~0.2B params
    nice -n 10 python3 tools/bench_server.py -m /tmp/bench-model [--concurrency 1,4,8,16]
        [--requests 2] [--prompt-words 48] [--max-tokens 64] [--threads N] [--json out.json]
    python3 tools/bench_server.py --url http://127.0.0.1:8080 ...    # an already running server

Each client sends --requests streaming chat requests one after another
(unique prompts, so no prefix-cache hits; ignore_eos so every request
generates exactly --max-tokens tokens). TTFT = request sent -> first
content chunk; ITL = (last chunk - first chunk) / (tokens - 1) per request;
aggregate tokens/s = all completion tokens / wall time of the level. The
server runs with --parallel = the largest concurrency.
"""
import argparse
import http.client
import json
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from urllib.parse import urlsplit

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
WORDS = ("the of and to in is was for on that with as by at from his her an were are which this be or had not but "
         "one all their there been has when who will more no if out so said what up its about into than them can only "
         "other new some could time these two may then do first any my now such like our over man me even most made "
         "after also did many before must through back years where much your way well down should because each just "
         "those people how too little state good very make world still own see men work long get here between both life "
         "being under never day same another know while last might us great old year off come since against go came "
         "right used take three").split()


def start_server(binary, model, parallel, threads, extra=()):
    args = [binary, "serve", "-m", model, "--port", "0", "--parallel", str(parallel)] + list(extra)
    if threads:
        args += ["-t", str(threads)]
    p = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    port = None
    while True:
        line = p.stderr.readline()
        if not line:
            raise SystemExit("server exited: " + (p.stderr.read() or ""))
        m = re.search(r"listening on http://[^:]+:(\d+)/", line)
        if m:
            port = int(m.group(1))
        if "model ready" in line:
            break
    threading.Thread(target=lambda: [None for _ in p.stderr], daemon=True).start()
    return p, f"http://127.0.0.1:{port}"


def stop_server(p):
    p.send_signal(signal.SIGINT)
    try:
        p.wait(timeout=30)
    except subprocess.TimeoutExpired:
        p.kill()


def stream_request(url, body, key=None):
    """-> dict(ttft, t_first, t_last, tokens, prompt_tokens, cached) for one streamed chat request."""
    u = urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=600)
    hdr = {"Content-Type": "application/json"}
    if key:
        hdr["Authorization"] = "Bearer " + key
    t0 = time.perf_counter()
    conn.request("POST", "/v1/chat/completions", json.dumps(dict(body, stream=True, stream_options={"include_usage": True})), hdr)
    r = conn.getresponse()
    if r.status != 200:
        raise RuntimeError(f"HTTP {r.status}: {r.read()[:300]!r}")
    t_first = t_last = None
    usage = None
    while True:
        line = r.readline()
        if not line:
            break
        line = line.strip()
        if not line.startswith(b"data: "):
            continue
        data = line[6:]
        if data == b"[DONE]":
            break
        j = json.loads(data)
        if j.get("usage"):
            usage = j["usage"]
        for ch in j.get("choices", []):
            d = ch.get("delta", {})
            if d.get("content") or d.get("reasoning_content"):
                now = time.perf_counter()
                t_first = t_first or now
                t_last = now
    conn.close()
    return {"ttft": (t_first or time.perf_counter()) - t0, "t_first": t_first, "t_last": t_last,
            "tokens": usage["completion_tokens"] if usage else 0, "prompt_tokens": usage["prompt_tokens"] if usage else 0,
            "cached": usage.get("prompt_cache_hit_tokens", 0) if usage else 0}


def pct(xs, p):
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def metrics(url):
    u = urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    conn.request("GET", "/metrics")
    out = {}
    for line in conn.getresponse().read().decode().splitlines():
        if line and not line.startswith("#"):
            k, v = line.rsplit(" ", 1)
            out[k] = float(v)
    conn.close()
    return out


def run_level(url, conc, n_req, words, max_tokens, rng):
    results, lock = [], threading.Lock()
    prompts = [[" ".join(rng.choice(WORDS) for _ in range(words)) for _ in range(n_req)] for _ in range(conc)]
    barrier = threading.Barrier(conc)

    def client(i):
        barrier.wait()
        for k in range(n_req):
            body = {"model": "bench", "messages": [{"role": "user", "content": f"[{i}.{k}] " + prompts[i][k]}],
                    "max_tokens": max_tokens, "temperature": 0.8, "seed": i * 1000 + k, "ignore_eos": True}
            res = stream_request(url, body)
            with lock:
                results.append(res)

    m0 = metrics(url)
    t0 = time.perf_counter()
    ts = [threading.Thread(target=client, args=(i,)) for i in range(conc)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    wall = time.perf_counter() - t0
    m1 = metrics(url)
    d = lambda k: m1.get(k, 0) - m0.get(k, 0)
    ttft = [r["ttft"] * 1000 for r in results]
    itl = [(r["t_last"] - r["t_first"]) * 1000 / (r["tokens"] - 1) for r in results
           if r["tokens"] > 1 and r["t_first"] and r["t_last"] > r["t_first"]]
    toks = sum(r["tokens"] for r in results)
    return {"concurrency": conc, "requests": len(results), "prompt_tokens_mean": statistics.mean(r["prompt_tokens"] for r in results),
            "ttft_ms_p50": pct(ttft, 50), "ttft_ms_p90": pct(ttft, 90), "itl_ms_p50": pct(itl, 50), "itl_ms_p90": pct(itl, 90),
            "tokens": toks, "wall_s": wall, "aggregate_tok_s": toks / wall,
            "per_request_tok_s": statistics.mean(1000 / x for x in itl) if itl else 0,
            "forward_busy": d("deepseek_forward_seconds_total") / wall,
            "seqs_per_forward": d("deepseek_forward_sequences_total") / max(d("deepseek_forward_passes_total"), 1)}


def cache_bench(binary, model, threads, sys_words, rng):
    """TTFT of a long shared system prompt: cold, then warm (memory), then after a restart from --cache-dir."""
    system = " ".join(rng.choice(WORDS) for _ in range(sys_words))
    out = {}
    cache_dir = tempfile.mkdtemp(prefix="ds_bench_cache_")
    try:
        def ask(url, q, seed):
            return stream_request(url, {"messages": [{"role": "system", "content": system}, {"role": "user", "content": q}],
                                        "max_tokens": 8, "seed": seed, "ignore_eos": True})
        p, url = start_server(binary, model, 1, threads, ["--cache-dir", cache_dir, "--cache-min", "64"])
        try:
            cold = ask(url, "First question about the text?", 1)
            warm = ask(url, "A second, different question?", 2)
            warm2 = ask(url, "And a third one?", 3)
        finally:
            stop_server(p)
        p, url = start_server(binary, model, 1, threads, ["--cache-dir", cache_dir, "--cache-min", "64"])
        try:
            disk = ask(url, "After a restart: a fourth question?", 4)
        finally:
            stop_server(p)
        for name, r in (("cold", cold), ("warm_memory", warm), ("warm_memory_2", warm2), ("after_restart_disk", disk)):
            out[name] = {"ttft_ms": r["ttft"] * 1000, "prompt_tokens": r["prompt_tokens"], "prompt_cache_hit_tokens": r["cached"]}
    finally:
        shutil.rmtree(cache_dir, ignore_errors=True)
    return out


def make_model(out):
    subprocess.check_call([sys.executable, os.path.join(ROOT, "tools", "make_random_model.py"), out, "--preset", "bench-small",
                           "--layers", "4"])
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(os.path.join(ROOT, "tests", "fixtures", "tiny-chat", f), out)
    print(f"wrote {out}: bench-small (V3 architecture, hidden 1024, 4 layers, 32 experts) + the tiny-chat tokenizer")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--binary", default=os.path.join(ROOT, "deepseek"))
    ap.add_argument("-m", "--model")
    ap.add_argument("--make-model", metavar="DIR")
    ap.add_argument("--url", help="benchmark a running server instead of starting one")
    ap.add_argument("--concurrency", default="1,4,8,16")
    ap.add_argument("--requests", type=int, default=2, help="requests per client per level")
    ap.add_argument("--prompt-words", type=int, default=48)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--cache-words", type=int, default=900, help="system prompt length for the cache benchmark (0 = skip)")
    ap.add_argument("--server-arg", action="append", default=[], help="extra flag for deepseek serve (repeatable), "
                    "e.g. --server-arg=--deterministic")
    ap.add_argument("--json", help="write the results here")
    a = ap.parse_args()
    if a.make_model:
        make_model(a.make_model)
        return
    levels = [int(x) for x in a.concurrency.split(",")]
    rng = random.Random(1)
    res = {"levels": [], "config": vars(a)}
    proc = None
    url = a.url
    if not url:
        if not a.model:
            raise SystemExit("give -m MODEL_DIR (see --make-model) or --url")
        proc, url = start_server(a.binary, a.model, max(levels), a.threads, ["--cache-ram", "0"] + a.server_arg)
    try:
        stream_request(url, {"messages": [{"role": "user", "content": "warm up"}], "max_tokens": 4})
        print(f"{'clients':>7} {'reqs':>5} {'prompt':>6} {'TTFT p50':>9} {'TTFT p90':>9} {'ITL p50':>8} {'ITL p90':>8} "
              f"{'tok/s/req':>9} {'agg tok/s':>9} {'fwd busy':>8} {'seq/fwd':>7}")
        for conc in levels:
            r = run_level(url, conc, a.requests, a.prompt_words, a.max_tokens, rng)
            res["levels"].append(r)
            print(f"{conc:>7} {r['requests']:>5} {r['prompt_tokens_mean']:>6.0f} {r['ttft_ms_p50']:>7.0f}ms {r['ttft_ms_p90']:>7.0f}ms "
                  f"{r['itl_ms_p50']:>6.1f}ms {r['itl_ms_p90']:>6.1f}ms {r['per_request_tok_s']:>9.1f} {r['aggregate_tok_s']:>9.1f} "
                  f"{100 * r['forward_busy']:>7.0f}% {r['seqs_per_forward']:>7.1f}",
                  flush=True)
    finally:
        if proc:
            stop_server(proc)
    if a.cache_words and a.model and not a.url:
        c = cache_bench(a.binary, a.model, a.threads, a.cache_words, rng)
        res["prefix_cache"] = c
        print("\nprefix cache (shared system prompt, 1 slot):")
        for k, v in c.items():
            print(f"  {k:<20} TTFT {v['ttft_ms']:8.0f} ms   prompt {v['prompt_tokens']} tokens, "
                  f"{v['prompt_cache_hit_tokens']} from the cache")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=2)


if __name__ == "__main__":
    main()
