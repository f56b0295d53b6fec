#!/usr/bin/env python3
"""
pty_test.py - drives `deepseek chat` through a pseudo-terminal, as a person
would: prompt, streamed reply, /set, /think, multi-line input, Ctrl-C during
an answer (stops it, stays in the chat), Ctrl-C at the prompt, /exit, and
Ctrl-D after a terminal resize (a second chat).

    python3 tests/chat/pty_test.py ./deepseek tests/fixtures/tiny-chat
Exit status 0 on success; prints the failed check otherwise.
"""
import os
import pty
import select
import signal
import sys
import time

BIN, MODEL = sys.argv[1], sys.argv[2]
fails = []


def check(cond, what):
    if not cond:
        fails.append(what)
        print("FAIL:", what)


def spawn(args):
    pid, fd = pty.fork()
    if pid == 0:
        os.environ["HOME"] = "/tmp/ds_pty_home"
        os.makedirs("/tmp/ds_pty_home", exist_ok=True)
        os.execv(BIN, [BIN] + args)
    return pid, fd


def read_until(fd, needle, timeout=20.0):
    buf = b""
    end = time.time() + timeout
    while time.time() < end:
        r, _, _ = select.select([fd], [], [], 0.1)
        if r:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            buf += chunk
            if needle in buf:
                return buf, True
    return buf, False


pid, fd = spawn(["chat", "-m", MODEL, "-n", "12", "--temperature", "0", "--verbose"])
out, ok = read_until(fd, b">>> ")
check(ok, "first prompt shown")
check(b"/help" in out, "banner mentions /help")

os.write(fd, b"Hello\r")
out, ok = read_until(fd, b">>> ")
check(ok, "prompt returns after a reply")
check(b"tok/s" in out, "--verbose prints tokens/s")

os.write(fd, b"/set temperature 0.5\r")
out, ok = read_until(fd, b">>> ")
check(b"temperature = 0.5" in out, "/set temperature acknowledged")

os.write(fd, b"/think off\r")
out, ok = read_until(fd, b">>> ")
check(b"reasoning hidden" in out, "/think off acknowledged")

os.write(fd, b"first line \\\r")
out, ok = read_until(fd, b"... ")
check(ok, "continuation prompt for a line ending in backslash")
os.write(fd, b"second line\r")
out, ok = read_until(fd, b">>> ")
check(ok, "multi-line turn answered")

# long answer, interrupted with Ctrl-C
os.write(fd, b"/set max_tokens 100000\r")
read_until(fd, b">>> ")
# wait until the answer is streaming (some output after the echoed line),
# however slow the machine is, then interrupt it. The sampling seed is not
# fixed (temperature 0.5), so a reply can end with EOS before it has
# streamed enough: then ask again (15 tries: the tiny model ends a reply that
# early often enough that 5 tries all did, about 1 run in 100).
for attempt in range(15):
    os.write(fd, b"Tell me everything\r")
    out, _ = read_until(fd, b"everything\r\n", timeout=10)
    streamed = b""
    t_end = time.time() + 30
    while len(streamed) < 40 and b"tok/s" not in streamed and time.time() < t_end:
        more, _ = read_until(fd, b"\0", timeout=0.2)
        streamed += more
    if b"tok/s" not in streamed:
        break
    read_until(fd, b">>> ", timeout=20)   # finished on its own: back at the prompt
check(len(streamed) >= 40 and b"tok/s" not in streamed, "long answer streaming when Ctrl-C is sent (try %d)" % (attempt + 1))
os.write(fd, b"\x03")
out, ok = read_until(fd, b">>> ", timeout=20)
check(ok and b"[stopped]" in out, "Ctrl-C stops the answer and returns to the prompt: %r" % out[-300:])

# Ctrl-C at the prompt does not leave
os.write(fd, b"\x03")
time.sleep(0.3)
os.write(fd, b"/help\r")
out, ok = read_until(fd, b"temperature 0.50")
check(ok, "still alive after Ctrl-C at the prompt")

os.write(fd, b"/exit\r")
t0 = time.time()
status = None
while time.time() - t0 < 10:
    p, st = os.waitpid(pid, os.WNOHANG)
    if p == pid:
        status = st
        break
    try:
        read_until(fd, b"\0", timeout=0.2)
    except OSError:
        pass
check(status is not None and os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, "/exit leaves with status 0")
if status is None:
    os.kill(pid, signal.SIGKILL)

# Ctrl-D at the prompt leaves, also after the terminal was resized (libedit
# handles SIGWINCH itself and leaves EINTR in errno, which must not read as Ctrl-C)
pid, fd = spawn(["chat", "-m", MODEL, "-n", "4"])
out, ok = read_until(fd, b">>> ")
check(ok, "second chat: first prompt shown")
os.kill(pid, signal.SIGWINCH)
time.sleep(0.3)
os.write(fd, b"\x04")
t0 = time.time()
status = None
while time.time() - t0 < 10:
    p, st = os.waitpid(pid, os.WNOHANG)
    if p == pid:
        status = st
        break
    try:
        read_until(fd, b"\0", timeout=0.2)
    except OSError:
        pass
check(status is not None and os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0,
      "Ctrl-D after a terminal resize leaves with status 0")
if status is None:
    os.kill(pid, signal.SIGKILL)

print("pty_test: %d failed" % len(fails) if fails else "pty_test: all checks passed")
sys.exit(1 if fails else 0)
