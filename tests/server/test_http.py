#!/usr/bin/env python3
"""
test_http.py - raw HTTP against `deepseek serve`: malformed and hostile
input must give the standard error JSON with a 4xx status (never a 500,
never a crash), plus routing, methods, auth, CORS, path tricks, body
limits, loading (503 + Retry-After), overload (503 + Retry-After),
/tokenize, /detokenize, /metrics and the web page.

    python3 tests/server/test_http.py ./deepseek
"""
import json
import os
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(__file__))
from common import Checks, Server, error_shape_ok, http, sse_events  # noqa: E402

MSG = [{"role": "user", "content": "hi"}]
statuses = []


def req(srv, method, path, body=None, **kw):
    st, h, b = http(method, srv.url(path), body, **kw)
    statuses.append((st, method, path))
    return st, h, b


def chat(srv, body, **kw):
    return req(srv, "POST", "/v1/chat/completions", body, **kw)


def t_malformed(c, srv):
    for raw, what in [(b"{bad json", "bad json"), (b"", "empty body"), (b"null", "null"), (b"[]", "array"),
                      (b"\"str\"", "string"), (b"{\"messages\": [}", "broken array"), (b"\xff\xfe{}", "invalid UTF-8"),
                      (b"[" * 100000, "deep nesting"), (b"{\"messages\":[{\"role\":\"user\",\"content\":\"a\"}]} trailing", "trailing"),
                      (b"{\"a\":1,\"a\":2}", "duplicate keys")]:
        st, _, b = req(srv, "POST", "/v1/chat/completions", raw=raw)
        error_shape_ok(c, st, b, 400, what)
    cases = [
        ({"messages": "hi"}, "messages"), ({"messages": []}, "messages"), ({}, "messages"),
        ({"messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role"),
        ({"messages": [{"role": "user", "content": {"a": 1}}]}, "messages[0].content"),
        ({"messages": [{"role": "user"}]}, "messages[0].content"),
        ({"messages": [{"role": "tool", "content": "x"}]}, "messages[0]"),
        ({"messages": MSG, "max_tokens": -5}, "max_tokens"), ({"messages": MSG, "max_tokens": "10"}, "max_tokens"),
        ({"messages": MSG, "max_tokens": 10**12}, "max_tokens"), ({"messages": MSG, "n": 10**6}, "n"),
        ({"messages": MSG, "n": 0}, "n"), ({"messages": MSG, "temperature": -1}, "temperature"),
        ({"messages": MSG, "temperature": None, "top_p": "x"}, "top_p"), ({"messages": MSG, "stream": 1}, "stream"),
        ({"messages": MSG, "stop": {"a": 1}}, "stop"), ({"messages": MSG, "stop": ["x" * 10000]}, "stop"),
        ({"messages": MSG, "seed": "abc"}, "seed"), ({"messages": MSG, "logprobs": "yes"}, "logprobs"),
        ({"messages": MSG, "top_logprobs": 5}, "top_logprobs"), ({"messages": MSG, "response_format": "json"}, "response_format"),
        ({"messages": MSG, "tools": "x"}, "tools"), ({"messages": MSG, "tools": [{"type": "code"}]}, "tools[0]"),
        ({"messages": MSG, "tool_choice": 5}, "tool_choice"), ({"messages": MSG, "logit_bias": {"-1": 5}}, "logit_bias"),
        ({"messages": MSG, "stream_options": "yes"}, "stream_options"), ({"messages": MSG, "frequency_penalty": 1e308}, "frequency_penalty"),
        ({"messages": MSG, "response_format": {"type": "json_object"}, "max_tokens": 1}, "max_tokens"),
        ({"messages": [{"role": "user", "content": "x " * 6000}]}, "messages"),
        ({"messages": MSG, "max_tokens": 4095}, "max_tokens"),
    ]
    for body, param in cases:
        st, _, b = chat(srv, body)
        e = error_shape_ok(c, st, b, 400, f"{json.dumps(body)[:80]}", param)
        if param == "messages" and e and "x x" in json.dumps(body):
            c.check("4096" in e["message"] and "tokens" in e["message"], f"context error gives the counts: {e['message']}")
    # completions
    for body, param in [({"prompt": 5}, "prompt"), ({"prompt": [-1]}, "prompt"), ({"prompt": [10**9]}, "prompt"),
                        ({"prompt": []}, "prompt"), ({"prompt": "x", "logprobs": 99}, "logprobs"), ({}, "prompt")]:
        st, _, b = req(srv, "POST", "/v1/completions", body)
        error_shape_ok(c, st, b, 400, f"completions {body}", param)
    # unknown fields are fine
    st, _, b = chat(srv, {"messages": MSG, "max_tokens": 2, "frobnicate": [1, 2], "user": "u1", "metadata": {"a": "b"}})
    c.eq(st, 200, "unknown fields are ignored")


def t_content_type_and_size(c, srv):
    st, _, b = chat(srv, {"messages": MSG}, headers={"Content-Type": "text/plain"})
    error_shape_ok(c, st, b, 415, "text/plain")
    st, _, b = chat(srv, {"messages": MSG}, headers={"Content-Type": "multipart/form-data; boundary=x"})
    error_shape_ok(c, st, b, 415, "multipart")
    st, _, _ = chat(srv, {"messages": MSG, "max_tokens": 2}, headers={"Content-Type": "application/json; charset=utf-8"})
    c.eq(st, 200, "json with charset")
    big = json.dumps({"messages": [{"role": "user", "content": "a" * 300000}]}).encode()
    st, _, b = req(srv, "POST", "/v1/chat/completions", raw=big)
    error_shape_ok(c, st, b, 413, "body over --max-body")
    # the same size sent chunked (no Content-Length) is refused too
    s = socket.create_connection(("127.0.0.1", srv.port))
    s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
    for i in range(0, len(big), 65536):
        part = big[i:i + 65536]
        try:
            s.sendall(b"%x\r\n" % len(part) + part + b"\r\n")
        except OSError:
            break
    try:
        s.sendall(b"0\r\n\r\n")
    except OSError:
        pass
    resp = b""
    s.settimeout(10)
    try:
        while b"\r\n\r\n" not in resp or b"}}" not in resp:
            d = s.recv(65536)
            if not d:
                break
            resp += d
    except OSError:
        pass
    s.close()
    c.check(resp.startswith(b"HTTP/1.1 413"), f"chunked oversize: {resp[:60]!r}")
    # a huge header is refused by libmicrohttpd, and the server lives on
    st, _, _ = req(srv, "GET", "/health", headers={"X-Big": "a" * 100000})
    c.check(st in (400, 413, 431), f"huge header status {st}")


def t_routes(c, srv):
    st, h, b = req(srv, "GET", "/health")
    c.eq((st, json.loads(b)), (200, {"status": "ok"}), "health")
    st, _, b = req(srv, "GET", "/v1/nothing")
    error_shape_ok(c, st, b, 404, "unknown route")
    st, h, b = req(srv, "GET", "/v1/chat/completions")
    error_shape_ok(c, st, b, 405, "GET on a POST route")
    c.check("POST" in h.get("allow", ""), "Allow header")
    st, _, b = req(srv, "PUT", "/v1/models")
    error_shape_ok(c, st, b, 405, "PUT on models")
    st, _, b = req(srv, "GET", "//v1//models/")
    c.eq(st, 200, "path with doubled and trailing slashes")
    st, _, b = req(srv, "POST", "/chat/completions", {"messages": MSG, "max_tokens": 2})
    c.eq(st, 200, "/chat/completions without /v1")
    st, _, b = req(srv, "POST", "/beta/completions", {"prompt": "x", "max_tokens": 2})
    c.eq(st, 200, "/beta/completions")
    st, h, b = req(srv, "GET", "/")
    c.check(st == 200 and h["content-type"].startswith("text/html") and b"<html" in b.lower(), "web page at /")
    st, h, b = req(srv, "GET", "/app.js")
    c.check(st == 200 and "javascript" in h["content-type"], "app.js")
    st, _, _ = req(srv, "GET", "/vendor/../../etc/passwd")
    c.eq(st, 404, "vendor traversal")
    st, _, _ = req(srv, "GET", "/vendor/marked/%2e%2e/%2e%2e/%2e%2e/etc/passwd")
    c.eq(st, 404, "vendor encoded traversal")
    st, h, b = req(srv, "GET", "/metrics")
    text = b.decode()
    c.check(st == 200 and h["content-type"].startswith("text/plain"), "metrics type")
    for name in ("deepseek_slots_total", "deepseek_slots_busy", "deepseek_requests_queued", "deepseek_prompt_tokens_total",
                 "deepseek_tokens_predicted_total", "deepseek_prompt_tokens_cache_total", "deepseek_jobs_cancelled_total",
                 "deepseek_process_resident_memory_bytes"):
        c.check(f"\n{name} " in "\n" + text, f"metric {name}")
    c.check("# TYPE deepseek_slots_busy gauge" in text, "TYPE lines")


def t_tokenize(c, srv):
    st, _, b = req(srv, "POST", "/tokenize", {"content": "Hello world", "with_pieces": True})
    c.eq(st, 200, "tokenize")
    toks = json.loads(b)["tokens"]
    c.check("".join(t["piece"] for t in toks) == "Hello world", f"pieces {toks}")
    st, _, b = req(srv, "POST", "/detokenize", {"tokens": [t["id"] for t in toks]})
    c.eq(json.loads(b).get("content"), "Hello world", "detokenize round trip")
    st, _, b = req(srv, "POST", "/tokenize", {"content": "<｜User｜>", "parse_special": False})
    n_lit = len(json.loads(b)["tokens"])
    st, _, b = req(srv, "POST", "/tokenize", {"content": "<｜User｜>"})
    c.check(len(json.loads(b)["tokens"]) == 1 and n_lit > 1, "parse_special")
    st, _, b = req(srv, "POST", "/tokenize", {"messages": [{"role": "user", "content": "hi"}]})
    c.check(st == 200 and json.loads(b)["tokens"][0] == 0, "template tokens start with BOS")
    # a NUL character in a message is text (the model can write the byte 0 and a client sends its
    # answers back): templated whole, and a chat request with it in the history is served
    st, _, b = req(srv, "POST", "/tokenize", {"messages": [{"role": "user", "content": "a\u0000b"}]})
    c.eq(st, 200, "tokenize a message with a NUL character")
    st, _, b2 = req(srv, "POST", "/detokenize", {"tokens": json.loads(b)["tokens"]} if st == 200 else {"tokens": []})
    c.check("a\u0000b" in json.loads(b2).get("content", ""), f"the NUL character templated: {b2[:200]!r}")
    st, _, b = chat(srv, {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "x\u0000y"},
                                       {"role": "user", "content": "again"}], "max_tokens": 3})
    c.eq(st, 200, f"chat with a NUL character in the history: {b[:200]!r}")
    st, _, b = req(srv, "POST", "/detokenize", {"tokens": [1, 99999]})
    error_shape_ok(c, st, b, 400, "detokenize bad id")
    st, _, b = req(srv, "POST", "/tokenize", {"content": 5})
    error_shape_ok(c, st, b, 400, "tokenize bad content")


def t_auth_cors(c, binary):
    with Server(binary, "--api-key", "sk-1", "--cors", "http://app.example") as srv:
        st, h, b = req(srv, "POST", "/v1/chat/completions", {"messages": MSG})
        e = error_shape_ok(c, st, b, 401, "no key")
        c.check(e and e["type"] == "authentication_error", "authentication_error")
        c.check(h.get("www-authenticate") == "Bearer", "WWW-Authenticate")
        st, _, b = req(srv, "POST", "/v1/chat/completions", {"messages": MSG}, headers={"Authorization": "Bearer sk-2"})
        error_shape_ok(c, st, b, 401, "wrong key")
        st, _, b = req(srv, "POST", "/v1/chat/completions", {"messages": MSG}, headers={"Authorization": "Bearer sk-1x"})
        error_shape_ok(c, st, b, 401, "key with a suffix")
        st, _, _ = req(srv, "POST", "/v1/chat/completions", {"messages": MSG, "max_tokens": 2}, headers={"Authorization": "Bearer sk-1"})
        c.eq(st, 200, "Bearer key")
        st, _, _ = req(srv, "POST", "/v1/chat/completions", {"messages": MSG, "max_tokens": 2}, headers={"X-Api-Key": "sk-1"})
        c.eq(st, 200, "X-Api-Key")
        for p in ("/v1/models", "//v1/models", "/v1/models/", "/metrics", "/tokenize", "/v1//chat/completions", "/nope"):
            st, _, _ = req(srv, "GET", p)
            c.eq(st, 401, f"{p} needs the key")
        st, _, _ = req(srv, "GET", "/health")
        c.eq(st, 200, "/health stays open")
        st, _, _ = req(srv, "GET", "/")
        c.eq(st, 200, "web page stays open")
        st, h, _ = req(srv, "OPTIONS", "/v1/chat/completions", headers={"Origin": "http://app.example",
                                                                         "Access-Control-Request-Method": "POST"})
        c.check(st == 204 and h.get("access-control-allow-origin") == "http://app.example" and "POST" in
                h.get("access-control-allow-methods", "") and "Authorization" in h.get("access-control-allow-headers", ""),
                f"preflight {st} {h}")
        st, h, _ = req(srv, "GET", "/health", headers={"Origin": "http://app.example"})
        c.eq(h.get("access-control-allow-origin"), "http://app.example", "CORS on responses")
        st, h, _ = req(srv, "GET", "/health", headers={"Origin": "http://evil.example"})
        c.check("access-control-allow-origin" not in h, "other origins get no CORS header")
    with Server(binary) as srv:
        st, h, _ = req(srv, "GET", "/health", headers={"Origin": "http://app.example"})
        c.check("access-control-allow-origin" not in h, "CORS off by default")
        st, _, _ = req(srv, "OPTIONS", "/v1/chat/completions", headers={"Origin": "http://app.example"})
        c.eq(st, 405, "no preflight without --cors")


def t_loading(c, binary):
    with Server(binary, "--test-load-delay", "1.5", wait_ready=False) as srv:
        st, h, b = req(srv, "GET", "/health")
        e = error_shape_ok(c, st, b, 503, "health while loading")
        c.check(e and e["message"] == "Loading model", "Loading model message")
        c.check("retry-after" in h, "Retry-After while loading")
        st, h, b = chat(srv, {"messages": MSG})
        error_shape_ok(c, st, b, 503, "chat while loading")
        srv.ready()
        st, _, _ = req(srv, "GET", "/health")
        c.eq(st, 200, "ready after loading")


def t_overload(c, binary):
    with Server(binary, "--parallel", "1", "--max-queue", "0") as srv:
        def slow():
            http("POST", srv.url("/v1/chat/completions"), {"messages": MSG, "max_tokens": 30, "x_token_delay_ms": 40,
                                                            "extra": 1, "ignore_eos": True})
        t = threading.Thread(target=slow)
        t.start()
        for _ in range(100):
            if srv.metrics().get("deepseek_slots_busy") == 1:
                break
            time.sleep(0.02)
        st, h, b = chat(srv, {"messages": MSG, "max_tokens": 2})
        e = error_shape_ok(c, st, b, 503, "overloaded")
        c.check("retry-after" in h, "Retry-After when overloaded")
        t.join()
        st, _, _ = chat(srv, {"messages": MSG, "max_tokens": 2})
        c.eq(st, 200, "accepted again once the slot is free")


def t_limits(c, binary):
    with Server(binary, "--max-messages", "3", "--max-n", "2", "--max-tokens", "50", "--max-body", "20000") as srv:
        st, _, b = chat(srv, {"messages": MSG * 4})
        error_shape_ok(c, st, b, 400, "too many messages", "messages")
        st, _, b = chat(srv, {"messages": MSG, "n": 3})
        error_shape_ok(c, st, b, 400, "n above --max-n", "n")
        st, _, b = chat(srv, {"messages": MSG, "max_tokens": 51})
        error_shape_ok(c, st, b, 400, "max_tokens above --max-tokens", "max_tokens")
        st, _, b = chat(srv, {"messages": MSG, "max_tokens": 50})
        c.eq(st, 200, "max_tokens at the cap")


def t_stream_shape(c, srv):
    st, h, b = chat(srv, {"messages": MSG, "stream": True, "max_tokens": 5, "seed": 1})
    c.check(st == 200 and h["content-type"].startswith("text/event-stream"), "SSE content type")
    ev = sse_events(b)
    c.eq(ev[-1], "[DONE]", "ends with [DONE]")
    chunks = [json.loads(e) for e in ev[:-1]]
    c.eq(chunks[0]["choices"][0]["delta"].get("role"), "assistant", "role first")
    c.check(chunks[-1]["choices"][0]["finish_reason"] in ("stop", "length"), "finish last")
    c.check(b.endswith(b"data: [DONE]\n\n"), "blank line after [DONE]")


def main():
    binary = sys.argv[1] if len(sys.argv) > 1 else "./deepseek"
    c = Checks("http")
    with Server(binary, "--max-body", "200000") as srv:
        for fn in (t_malformed, t_content_type_and_size, t_routes, t_tokenize, t_stream_shape):
            c.run(fn, srv)
        st, _, _ = req(srv, "GET", "/health")
        c.eq(st, 200, "server alive after the hostile input")
        c.check(srv.proc.poll() is None, "process alive")
    for fn in (t_auth_cors, t_loading, t_overload, t_limits):
        c.run(fn, binary)
    c.check(not [s for s in statuses if s[0] >= 500 and s[0] != 503], f"no 5xx other than 503: {[s for s in statuses if s[0] >= 500]}")
    c.finish()


if __name__ == "__main__":
    main()
