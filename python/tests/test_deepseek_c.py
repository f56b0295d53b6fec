"""Tests of the Python bindings (deepseek_c) against the CLI: the same text for
the same prompt, settings and seed, the same logits as `deepseek logits`, errors
as exceptions, Ctrl-C stopping a stream, sessions on threads.

Plain script (python3 python/tests/test_deepseek_c.py) or pytest. Environment:
DEEPSEEK_BIN (default ./deepseek), DEEPSEEK_LIB (the library to test),
run from the repository root (models/default, tests/fixtures/tiny-chat)."""
import os
import signal
import struct
import subprocess
import sys
import tempfile
import threading

import deepseek_c
from deepseek_c import DeepSeekError, Model

BIN = os.environ.get("DEEPSEEK_BIN", "./deepseek")
MODEL = "models/default"
CHAT_MODEL = "tests/fixtures/tiny-chat"
_m = None


def model():
    global _m
    if _m is None:
        _m = Model(MODEL)
    return _m


def cli(*args):
    r = subprocess.run([BIN, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=True)
    return r.stdout.decode("utf-8")


def test_info_and_version():
    m = model()
    assert deepseek_c.library_version().count(".") == 2
    assert m.info["architecture"] == "deepseek_v3" and m.vocab_size == 258 and m.info["n_layer"] == 4


def test_tokenize_roundtrip_vs_cli():
    m = model()
    text = "ROMEO: caf\u00e9 \u20ac!"
    ids = m.tokenize(text)
    assert cli("tokenize", "-m", MODEL, "--text", text).strip() == "[" + ",".join(map(str, ids)) + "]"
    assert m.detokenize(ids) == text
    assert m.detokenize(ids, raw=True) == text.encode("utf-8")
    assert m.tokenize(text, add_bos=True)[1:] == ids or m.tokenize(text, add_bos=True) == ids


def test_generate_equals_cli():
    m = model()
    cases = [dict(), dict(temperature=0.8, top_p=0.9, seed=7), dict(temperature=1.0, top_k=20, seed=3),
             dict(temperature=0.7, min_p=0.05, repetition_penalty=1.3, seed=11)]
    for kw in cases:
        args = ["generate", "-m", MODEL, "--prompt", "ROMEO:", "-n", "40"]
        names = {"temperature": "--temperature", "top_p": "--top-p", "top_k": "--top-k", "seed": "--seed",
                 "min_p": "--min-p", "repetition_penalty": "--repeat-penalty"}
        for k, v in kw.items():
            args += [names[k], str(v)]
        want = cli(*args)
        got = m.generate("ROMEO:", max_tokens=40, **kw)
        assert got + "\n" == want, (kw, got, want)
        assert "".join(m.generate("ROMEO:", max_tokens=40, stream=True, **kw)) == got


def test_stop_string_equals_cli():
    m = model()
    want = cli("generate", "-m", MODEL, "--prompt", "ROMEO:", "-n", "40", "--stop", "the")
    got = m.generate("ROMEO:", max_tokens=40, stop=["the"])
    assert got + "\n" == want and "the" not in got


def test_logits_equal_cli():
    m = model()
    ids = m.tokenize("ROMEO: What")
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "l.f32")
        cli("logits", "-m", MODEL, "--tokens", ",".join(map(str, ids)), "--out", out)
        raw = open(out, "rb").read()
        ref = struct.unpack("<%df" % (len(raw) // 4), raw)
        cli("logits", "-m", MODEL, "--tokens", ",".join(map(str, ids)), "--out", out, "--mtp")
        raw = open(out, "rb").read()
        ref_mtp = struct.unpack("<%df" % (len(raw) // 4), raw)
    L = m.logits(ids)
    V = m.vocab_size
    rows = [list(r) for r in L]
    assert len(rows) == len(ids) and len(rows[0]) == V
    diff = max(abs(rows[t][v] - ref[t * V + v]) for t in range(len(ids)) for v in range(V))
    assert diff < 1e-5, diff
    # the greedy first token is the argmax of the last row
    first = max(range(V), key=lambda v: (rows[-1][v], -v))
    assert m.generate(ids, max_tokens=1, ignore_eos=True) == m.detokenize([first])
    # MTP: row t predicts token t+2 from h_t and token t+1
    with m.session(mtp=True) as s:
        for t in range(len(ids) - 1):
            s.decode(ids[t:t + 1])
            got = list(s.mtp_logits(ids[t + 1]))
            d = max(abs(got[v] - ref_mtp[t * V + v]) for v in range(V))
            assert d < 1e-4, (t, d)


def test_errors_raise():
    try:
        Model("/nonexistent/model")
    except DeepSeekError as e:
        assert e.code < 0 and "/nonexistent/model" in str(e)
    else:
        raise AssertionError("no exception")
    m = model()
    for call in (lambda: m.detokenize([99999]), lambda: m.generate("ROMEO:", temperature=-1),
                 lambda: m.session(n_ctx=4).decode([1, 2, 3, 4, 5])):
        try:
            call()
        except DeepSeekError as e:
            assert str(e)
        else:
            raise AssertionError("no exception")


def test_keyboard_interrupt_stops_stream():
    m = model()
    it = m.generate("ROMEO:", max_tokens=200, ignore_eos=True, stream=True)
    pieces = []
    try:
        for p in it:
            pieces.append(p)
            if len(pieces) == 3:
                os.kill(os.getpid(), signal.SIGINT)   # Ctrl-C
        raise AssertionError("the stream was not interrupted")
    except KeyboardInterrupt:
        pass
    it.close()
    assert 3 <= len(pieces) < 200 and list(it) == []


def test_sessions_and_threads():
    m = model()
    want = m.generate("ROMEO:", max_tokens=30)
    out = [None] * 3

    def run(i):
        out[i] = m.generate("ROMEO:", max_tokens=30)

    th = [threading.Thread(target=run, args=(i,)) for i in range(3)]
    for t in th:
        t.start()
    for t in th:
        t.join()
    assert out == [want] * 3
    # a session continues: prompt, then more
    with m.session() as s:
        ids = m.tokenize("ROMEO:", add_bos=True)
        s.decode(ids)
        assert s.n_past == len(ids) and s.tokens == ids and s.logits() is not None
        text = s.generate([int(max(range(m.vocab_size), key=lambda v: (s.logits()[v], -v)))], max_tokens=10)
        assert isinstance(text, str) and s.n_past == len(ids) + 10
        s.truncate(len(ids))
        assert s.tokens == ids


def test_gguf_ids_equal_cli():
    g = "tests/fixtures/gguf/tiny-v3.llama-q8_0.gguf"
    m = Model(g)
    assert not m.info["has_tokenizer"]
    want = cli("generate", "-m", g, "--prompt-ids", "1,2,3", "-n", "8", "--ignore-eos").strip()
    with m.session(n_ctx=64) as s:
        assert ",".join(map(str, s.generate_tokens([1, 2, 3], max_tokens=8, ignore_eos=True))) == want
    try:
        m.tokenize("x")
    except DeepSeekError as e:
        assert "tokenizer" in str(e)
    else:
        raise AssertionError("no exception")


def test_chat_reasoning_separated():
    m = Model(CHAT_MODEL)
    msgs = [{"role": "user", "content": "Hi"}]
    ids = m.apply_chat_template(msgs, format="r1")
    assert m.detokenize(ids).endswith("<\uff5cAssistant\uff5c><think>\n")
    r = m.chat(msgs, format="r1", max_tokens=24, temperature=0.9, seed=5)
    assert r.reasoning is not None   # R1 replies start inside <think>
    if r.reasoning_done:
        assert r.text.startswith(r.reasoning) and r.text.endswith(r.content)
    else:
        assert r.reasoning == r.text and r.content == ""
    parts = list(m.chat(msgs, format="r1", max_tokens=24, temperature=0.9, seed=5, stream=True))
    assert "".join(t for k, t in parts if k == "reasoning") == r.reasoning
    assert "".join(t for k, t in parts if k == "content") == r.content
    r3 = m.chat(msgs, format="v3", max_tokens=16)
    assert r3.reasoning is None or r3.text.startswith("<think>")


if __name__ == "__main__":
    fails = 0
    for name, fn in sorted(globals().items()):
        if name.startswith("test_") and callable(fn):
            try:
                fn()
                print("ok   " + name)
            except Exception as e:   # noqa: BLE001 - report every failure
                fails += 1
                print("FAIL %s: %r" % (name, e))
    sys.exit(1 if fails else 0)
