"""
common.py - helpers for the server tests (plain Python, no pytest): start
`deepseek serve` on a free port with the tiny-chat fixture, wait until it is
ready, tiny assertion helpers and a test runner that counts failures.

Every script here is run by tests/cli_server_tests.sh with the binary path
as argv[1]; a script exits non-zero if any check failed (missing Python
modules are failures too, not skips).

DS_SERVE_RANKS=N (N > 1; tests/cli_mpi_server_tests.sh) runs every server
as `mpirun -np N --oversubscribe --bind-to none BINARY serve ...`: rank 0
is the server, the other ranks its expert servers. Signals then go to rank 0
(mpirun itself would forward a SIGTERM to every rank and exit 1).
"""
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import traceback
import urllib.request

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
SERVER_PROBLEMS = []  # sanitizer reports / bad exit codes of servers that were stopped; fail the script
FIXTURE = os.path.join(ROOT, "tests", "fixtures", "tiny-chat")
SERVE_RANKS = int(os.environ.get("DS_SERVE_RANKS", "0") or 0)


def launcher():
    """The command prefix that starts a server: mpirun for DS_SERVE_RANKS > 1."""
    if SERVE_RANKS > 1:
        return ["mpirun", "-np", str(SERVE_RANKS), "--oversubscribe", "--bind-to", "none"]
    return []


def rank0_pid(proc, timeout=10):
    """The pid of rank 0 under mpirun (proc), or proc.pid without mpirun."""
    if SERVE_RANKS <= 1:
        return proc.pid
    t0 = time.time()
    while time.time() - t0 < timeout:
        try:
            kids = open(f"/proc/{proc.pid}/task/{proc.pid}/children").read().split()
        except OSError:
            kids = []
        for k in kids:
            try:
                env = open(f"/proc/{k}/environ", "rb").read().split(b"\0")
            except OSError:
                continue
            if b"OMPI_COMM_WORLD_RANK=0" in env:
                return int(k)
        time.sleep(0.05)
    raise RuntimeError("rank 0 of the mpirun job not found")


class Server:
    """A running `deepseek serve`; use as a context manager."""

    def __init__(self, binary, *args, model=FIXTURE, wait_ready=True, threads=1):
        self.binary = binary
        self.args = ["serve", "-m", model, "--port", "0", "-t", str(threads), "--test-hooks"] + list(args)
        self.wait_ready = wait_ready
        self.proc = None
        self.port = None
        self.log = []

    def __enter__(self):
        self.proc = subprocess.Popen(launcher() + [self.binary] + self.args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     text=True, bufsize=1)
        t0 = time.time()
        while time.time() - t0 < 30:
            line = self.proc.stderr.readline()
            if not line:
                raise RuntimeError("server exited early: " + "".join(self.log) + (self.proc.stderr.read() or ""))
            self.log.append(line)
            m = re.search(r"listening on http://[^:]+:(\d+)/", line)
            if m:
                self.port = int(m.group(1))
                break
        if not self.port:
            raise RuntimeError("server did not report its port")
        # drain stderr in the background so the pipe never fills
        import threading
        threading.Thread(target=self._drain, daemon=True).start()
        if self.wait_ready:
            self.ready()
        return self

    def _drain(self):
        for line in self.proc.stderr:
            self.log.append(line)

    def ready(self, timeout=30):
        t0 = time.time()
        while time.time() - t0 < timeout:
            try:
                with urllib.request.urlopen(self.url("/health"), timeout=2) as r:
                    if r.status == 200:
                        return
            except Exception:
                pass
            time.sleep(0.05)
        raise RuntimeError("server not ready")

    def url(self, path=""):
        return f"http://127.0.0.1:{self.port}{path}"

    @property
    def base(self):
        return self.url("/v1")

    def signal(self, sig):
        """Sends sig to the server (rank 0 under mpirun)."""
        os.kill(rank0_pid(self.proc), sig)

    def __exit__(self, *exc):
        if self.proc and self.proc.poll() is None:
            self.signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                SERVER_PROBLEMS.append(f"{' '.join(self.args)}: did not stop on SIGTERM")
        time.sleep(0.1)  # let the drain thread read the last lines
        log = "".join(self.log)
        if "Sanitizer" in log or "runtime error:" in log:
            SERVER_PROBLEMS.append(f"{' '.join(self.args)}: sanitizer report:\n{log[-4000:]}")
        elif self.proc.returncode != 0:
            SERVER_PROBLEMS.append(f"{' '.join(self.args)}: exit status {self.proc.returncode}:\n{log[-2000:]}")
        return False

    def metrics(self):
        with urllib.request.urlopen(self.url("/metrics"), timeout=5) as r:
            text = r.read().decode()
        out = {}
        for line in text.splitlines():
            if line.startswith("#") or not line.strip():
                continue
            k, v = line.rsplit(" ", 1)
            out[k] = float(v)
        return out


def http(method, url, body=None, headers=None, raw=None, timeout=30):
    """-> (status, headers dict (lower-case), body bytes). body: a dict (sent as JSON) or bytes."""
    import http.client
    from urllib.parse import urlsplit
    u = urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)
    hdrs = {"Content-Type": "application/json"}
    if headers:
        hdrs.update(headers)
    hdrs = {k: v for k, v in hdrs.items() if v is not None}
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    conn.request(method, u.path + (("?" + u.query) if u.query else ""), body=data, headers=hdrs)
    r = conn.getresponse()
    b = r.read()
    h = {k.lower(): v for k, v in r.getheaders()}
    conn.close()
    return r.status, h, b


def sse_events(data):
    """Parses an SSE body -> list of data payloads (str), ignoring comments."""
    out = []
    for block in data.decode().split("\n\n"):
        lines = [l for l in block.split("\n") if l and not l.startswith(":")]
        payload = "\n".join(l[6:] if l.startswith("data: ") else l[5:] for l in lines if l.startswith("data:"))
        if payload:
            out.append(payload)
    return out


class Checks:
    def __init__(self, name):
        self.name = name
        self.failed = 0
        self.passed = 0

    def check(self, cond, msg):
        if cond:
            self.passed += 1
        else:
            self.failed += 1
            print(f"    FAIL: {msg}", flush=True)
        return cond

    def eq(self, a, b, msg):
        return self.check(a == b, f"{msg}: {a!r} != {b!r}")

    def run(self, fn, *args):
        t0 = time.time()
        before = self.failed
        try:
            fn(self, *args)
        except Exception:
            self.failed += 1
            print(f"    FAIL: {fn.__name__} raised:\n" + traceback.format_exc(), flush=True)
        status = "ok  " if self.failed == before else "FAIL"
        print(f"{status} {self.name}.{fn.__name__:<40} {time.time() - t0:6.2f} s", flush=True)

    def finish(self):
        for p in SERVER_PROBLEMS:
            self.failed += 1
            print(f"    FAIL: server: {p}", flush=True)
        print(f"{self.name}: {self.passed} checks passed, {self.failed} failed", flush=True)
        sys.exit(1 if self.failed else 0)


def error_shape_ok(c, status, body, want_status, what, param=None):
    """The body is {"error":{"message","type","param","code"}} with the expected status."""
    c.eq(status, want_status, f"{what}: status")
    try:
        j = json.loads(body)
    except Exception:
        c.check(False, f"{what}: body is not JSON: {body[:200]!r}")
        return None
    e = j.get("error") if isinstance(j, dict) else None
    ok = isinstance(e, dict) and all(k in e for k in ("message", "type", "param", "code")) and isinstance(e["message"], str)
    c.check(ok, f"{what}: error shape {j}")
    if ok and param is not None:
        c.eq(e["param"], param, f"{what}: param")
    return e
