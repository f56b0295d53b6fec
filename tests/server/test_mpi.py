"""
test_mpi.py - `deepseek serve` on several MPI ranks (rank 0 serves, the
other ranks are its expert servers; run by tests/cli_mpi_server_tests.sh,
which exports the OpenMPI settings; argv[1] = the binary):

  * the same requests (greedy, seeded sampling with n = 2 and logprobs,
    completions, concurrent ones batched together, a repeated prompt that
    hits the prefix cache) give byte-identical responses on 1, 2 and 3 ranks
    (ids and timestamps aside), and on a Q4_K GGUF on 1 and 3 ranks;
  * a rank killed with kill -9 (a worker or rank 0, with a request in flight
    or idle) ends the whole job within seconds, mpirun naming the lost rank;
    SIGTERM to mpirun ends every rank within seconds (SIGTERM to rank 0, the
    clean shutdown with exit status 0, is the server suite's own stop);
  * startup errors (a missing model, a port in use) are printed once.
"""
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(__file__))
import common  # noqa: E402
from common import Checks, Server, http  # noqa: E402

MPI = ["mpirun", "--oversubscribe", "--bind-to", "none", "-np"]

REQS = [
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "Hello there"}], "max_tokens": 24,
                              "temperature": 0}),
    ("/v1/chat/completions", {"messages": [{"role": "system", "content": "Be brief."},
                                           {"role": "user", "content": "Tell me of Rome"}],
                              "max_tokens": 20, "temperature": 0.9, "seed": 7, "n": 2, "logprobs": True,
                              "top_logprobs": 3}),
    ("/v1/completions", {"prompt": "ROMEO:\nWhat light", "max_tokens": 30, "temperature": 0.8, "seed": 3,
                         "ignore_eos": True}),
    ("/v1/completions", {"prompt": "First Citizen:\n" * 12, "max_tokens": 16, "temperature": 0}),
]


def normal(body):
    j = json.loads(body)
    for k in ("id", "created", "system_fingerprint"):
        j.pop(k, None)
    u = j.get("usage") or {}
    for k in list(u):
        if "time" in k or "per_second" in k:
            u.pop(k)
    return json.dumps(j, sort_keys=True)


def responses(binary, ranks):
    common.SERVE_RANKS = ranks
    out = []
    with Server(binary, "--parallel", "4", "--cache-min", "16") as srv:
        for path, body in REQS:   # one at a time, then again (the prompt is now in the prefix cache)
            for _ in range(2):
                st, _, b = http("POST", srv.url(path), body, timeout=120)
                out.append((st, normal(b)))
        res = [None] * len(REQS)   # all at once: batched together

        def go(i):
            st, _, b = http("POST", srv.url(REQS[i][0]), REQS[i][1], timeout=120)
            res[i] = (st, normal(b))
        ts = [threading.Thread(target=go, args=(i,)) for i in range(len(REQS))]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        out += res
        log = "".join(srv.log)
    common.SERVE_RANKS = 0
    return out, log


def t_same_responses(c, binary):
    ref, _ = responses(binary, 1)
    c.check(all(st == 200 for st, _ in ref), f"one process: every request answered: {[st for st, _ in ref]}")
    hit = json.loads(ref[7][1])["usage"].get("prompt_cache_hit_tokens", 0)
    c.check(hit > 0, f"the repeated prompt hits the prefix cache ({hit} tokens)")
    for ranks in (2, 3):
        got, log = responses(binary, ranks)
        c.check(f"{ranks} ranks" in log, f"{ranks} ranks: the server says it runs on {ranks} ranks: {log[-300:]}")
        for i, (a, b) in enumerate(zip(ref, got)):
            c.check(a == b, f"{ranks} ranks, response {i}: differs from one process:\n  {a[1][:300]}\n  {b[1][:300]}")


def t_same_responses_gguf(c, binary):
    """A Q4_K GGUF (its 4 experts split 1+1+2 on 3 ranks; the expert servers repack only their experts)."""
    model = os.path.join(common.ROOT, "tests", "fixtures", "gguf", "kq.llama-q4_k_m.gguf")
    tok = common.FIXTURE   # the GGUF carries no tokenizer; any one serves to compare ranks
    body = {"prompt": [1, 2, 3, 4, 5, 6, 7, 8], "max_tokens": 40, "temperature": 0.7, "seed": 11, "logprobs": 3, "n": 2}
    got = {}
    for ranks in (1, 3):
        common.SERVE_RANKS = ranks
        with Server(binary, "--tokenizer", tok, model=model) as srv:
            st, _, b = http("POST", srv.url("/v1/completions"), body, timeout=120)
            got[ranks] = (st, normal(b))
        common.SERVE_RANKS = 0
    c.eq(got[1][0], 200, "one process: answered")
    c.check(got[1] == got[3], f"3 ranks: the GGUF response differs from one process:\n  {got[1][1][:300]}\n  {got[3][1][:300]}")


def child_pids(proc):
    """{rank: pid} of the ranks mpirun (proc) started."""
    out = {}
    try:
        kids = open(f"/proc/{proc.pid}/task/{proc.pid}/children").read().split()
    except OSError:
        return out
    for k in kids:
        try:
            env = open(f"/proc/{k}/environ", "rb").read().split(b"\0")
        except OSError:
            continue
        for v in env:
            if v.startswith(b"OMPI_COMM_WORLD_RANK="):
                out[int(v.split(b"=")[1])] = int(k)
    return out


def kill_case(c, binary, victim, busy):
    what = f"kill -9 of rank {victim} ({'a request in flight' if busy else 'idle'})"
    common.SERVE_RANKS = 2
    srv = Server(binary, "--parallel", "2")
    srv.__enter__()
    common.SERVE_RANKS = 0
    try:
        if busy:
            body = {"messages": [{"role": "user", "content": "go"}], "max_tokens": 2000, "ignore_eos": True,
                    "stream": True, "x_token_delay_ms": 5}
            th = threading.Thread(target=lambda: _swallow(http, "POST", srv.url("/v1/chat/completions"), body, timeout=60),
                                  daemon=True)
            th.start()
            t0 = time.time()
            while time.time() - t0 < 15 and srv.metrics().get("deepseek_slots_busy", 0) < 1:
                time.sleep(0.05)
            c.check(srv.metrics().get("deepseek_slots_busy", 0) >= 1, f"{what}: the request is running")
            time.sleep(0.3)   # tokens flowing: rank 0 in the forward, the worker in its expert requests
        pids = child_pids(srv.proc)
        if not c.check(victim in pids, f"{what}: rank {victim} not found ({pids})"):
            srv.proc.kill()
            srv.proc.wait()
            return
        t0 = time.time()
        os.kill(pids[victim], signal.SIGKILL)
        try:
            srv.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            c.check(False, f"{what}: the job still runs 20 s later")
            for p in child_pids(srv.proc).values():
                os.kill(p, signal.SIGKILL)
            srv.proc.kill()
            srv.proc.wait()
            return
        dt = time.time() - t0
        time.sleep(0.2)
        log = "".join(srv.log)
        print(f"     {what}: the job ended {dt:.2f} s later, exit {srv.proc.returncode}", flush=True)
        c.check(dt < 10, f"{what}: ended within 10 s ({dt:.1f} s)")
        c.check(srv.proc.returncode != 0, f"{what}: the job exits non-zero")
        c.check(f"process rank {victim} " in log and "signal 9" in log, f"{what}: no message naming rank {victim}: {log[-600:]}")
        left = [p for p in pids.values() if os.path.exists(f"/proc/{p}") and open(f"/proc/{p}/stat").read().split()[2] != "Z"]
        c.check(not left, f"{what}: ranks still running: {left}")
    finally:
        if srv.proc.poll() is None:
            srv.proc.kill()
            srv.proc.wait()


def _swallow(fn, *a, **k):
    try:
        fn(*a, **k)
    except Exception:
        pass


def t_kill(c, binary):
    for victim, busy in ((1, True), (0, True), (1, False), (0, False)):
        kill_case(c, binary, victim, busy)


def t_sigterm_mpirun(c, binary):
    """SIGTERM (or Ctrl-C) to mpirun: it forwards SIGTERM to every rank; all end within seconds (mpirun exits 1,
    its convention for a job it was told to end)."""
    common.SERVE_RANKS = 2
    srv = Server(binary)
    srv.__enter__()
    common.SERVE_RANKS = 0
    pids = child_pids(srv.proc)
    c.eq(sorted(pids), [0, 1], "both ranks found")
    t0 = time.time()
    srv.proc.send_signal(signal.SIGTERM)
    try:
        srv.proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        c.check(False, "SIGTERM to mpirun: still running 20 s later")
        srv.proc.kill()
        srv.proc.wait()
        return
    dt = time.time() - t0
    print(f"     SIGTERM to mpirun: the job ended {dt:.2f} s later, exit {srv.proc.returncode}", flush=True)
    c.check(dt < 10, f"SIGTERM to mpirun: ended within 10 s ({dt:.1f} s)")
    time.sleep(0.2)
    left = [p for p in pids.values() if os.path.exists(f"/proc/{p}") and open(f"/proc/{p}/stat").read().split()[2] != "Z"]
    c.check(not left, f"SIGTERM to mpirun: ranks still running: {left}")


def run_job(args, timeout=60):
    p = subprocess.run(MPI + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=timeout)
    return p.returncode, p.stdout + p.stderr


def t_errors_once(c, binary):
    rc, out = run_job(["2", binary, "serve", "-m", "/nonexistent/model", "--port", "0", "-t", "1"])
    c.check(rc != 0, "missing model: exit non-zero")
    c.eq(out.count("/nonexistent/model"), 1, f"missing model: the error printed once: {out[-600:]}")
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    port = s.getsockname()[1]
    try:
        rc, out = run_job(["2", binary, "serve", "-m", common.FIXTURE, "--port", str(port), "-t", "1"])
    finally:
        s.close()
    c.check(rc != 0, "port in use: exit non-zero")
    c.eq(out.count("cannot listen"), 1, f"port in use: the error printed once: {out[-600:]}")
    rc, out = run_job(["2", binary, "serve", "--bogus"])
    c.check(rc != 0, "unknown option: exit non-zero")
    c.eq(out.count("unknown option '--bogus'"), 1, f"unknown option: printed once: {out[-600:]}")


def main():
    binary = sys.argv[1] if len(sys.argv) > 1 else "./deepseek"
    c = Checks("mpi_serve")
    for fn in (t_same_responses, t_same_responses_gguf, t_kill, t_sigterm_mpirun, t_errors_once):
        c.run(fn, binary)
    c.finish()


if __name__ == "__main__":
    main()
