#!/usr/bin/env python3
"""serve with the V3.2 / V4 chat formats: DSML tool calls in the reply become
OpenAI tool_calls (streaming and not), reasoning becomes reasoning_content, a
malformed block stays text, and the request fields thinking /
reasoning_effort / tool_choice are checked. The model's output is forced
(--test-hooks' x_forced_output), so a tiny random model serves.

Usage: python3 tests/chat/dsml_serve_test.py PORT FORMAT   (v3.2 or v4)
"""
import json
import sys
import urllib.error
import urllib.request

PORT, FMT = int(sys.argv[1]), sys.argv[2]
D = '｜DSML｜'
BLK = 'tool_calls' if FMT == 'v4' else 'function_calls'
CALL = (f'\n\n<{D}{BLK}>\n<{D}invoke name="get_weather">\n<{D}parameter name="city" string="true">Paris "12e"</{D}parameter>\n'
        f'<{D}parameter name="days" string="false">3</{D}parameter>\n</{D}invoke>\n<{D}invoke name="ping">\n</{D}invoke>\n</{D}{BLK}>')
EOS = '<｜end▁of▁sentence｜>'
TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}},
         {"type": "function", "function": {"name": "ping", "parameters": {"type": "object"}}}]
MSGS = [{"role": "user", "content": "Weather?"}]
WANT = [("get_weather", '{"city": "Paris \\"12e\\"", "days": 3}'), ("ping", "{}")]
fails = 0


def check(cond, what):
    global fails
    print(("  ok   " if cond else "  FAIL ") + f"serve {FMT}: {what}")
    fails += not cond


def req(body, stream=False):
    body = dict(body, temperature=0, max_tokens=body.get("max_tokens", 1000))
    if stream:
        body["stream"] = True
    r = urllib.request.Request(f"http://127.0.0.1:{PORT}/v1/chat/completions", json.dumps(body).encode(),
                               {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(r, timeout=120) as f:
            data = f.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read().decode())
    if not stream:
        return 200, json.loads(data)
    chunks = [json.loads(l[6:]) for l in data.splitlines() if l.startswith("data: {")]
    msg, finish, calls = {"content": "", "reasoning_content": ""}, None, []
    for c in chunks:
        ch = c["choices"][0]
        d = ch.get("delta", {})
        msg["content"] += d.get("content") or ""
        msg["reasoning_content"] += d.get("reasoning_content") or ""
        calls += d.get("tool_calls") or []
        finish = ch.get("finish_reason") or finish
    msg["tool_calls"] = calls
    return 200, {"choices": [{"message": msg, "finish_reason": finish}]}


def calls_of(m):
    return [(c["function"]["name"], c["function"]["arguments"]) for c in m.get("tool_calls") or []]


for stream in ((False, True) if FMT == "v4" else (False,)):
    tag = " (stream)" if stream else ""
    code, r = req({"messages": MSGS, "tools": TOOLS, "thinking": {"type": "disabled"}, "x_forced_output": "Checking." + CALL + EOS}, stream)
    m = r["choices"][0]["message"] if code == 200 else {}
    check(code == 200 and calls_of(m) == WANT and m.get("content") == "Checking." and r["choices"][0]["finish_reason"] == "tool_calls",
          f"DSML -> tool_calls{tag}: {code} {json.dumps(m)[:300]}")
    code, r = req({"messages": MSGS, "tools": TOOLS, "thinking": {"type": "enabled"},
                   "x_forced_output": "I need the weather.</think>" + CALL + EOS}, stream)
    m = r["choices"][0]["message"] if code == 200 else {}
    check(code == 200 and calls_of(m) == WANT and m.get("reasoning_content") == "I need the weather." and not m.get("content"),
          f"thinking -> reasoning_content, then tool_calls{tag}: {json.dumps(m)[:300]}")
    bad = CALL.replace('string="false"', 'string="maybe"')
    code, r = req({"messages": MSGS, "tools": TOOLS, "thinking": {"type": "disabled"}, "x_forced_output": "Checking." + bad + EOS}, stream)
    m = r["choices"][0]["message"] if code == 200 else {}
    check(code == 200 and not m.get("tool_calls") and m.get("content") == "Checking." + bad, f"malformed DSML stays text{tag}")
    if stream:
        continue
    # a cut-off block (max_tokens) is text too
    code, r = req({"messages": MSGS, "tools": TOOLS, "thinking": {"type": "disabled"}, "x_forced_output": "Checking." + CALL + EOS,
                   "max_tokens": 60}, stream)
    m = r["choices"][0]["message"] if code == 200 else {}
    check(code == 200 and not m.get("tool_calls") and r["choices"][0]["finish_reason"] == "length" and
          ("Checking." + CALL).startswith((m.get("content") or "x").rstrip("\ufffd")),  # a cut character: U+FFFD
          f"cut-off DSML stays text{tag}: {json.dumps(m)[:200]}")

# the request fields
code, r = req({"messages": MSGS, "reasoning_effort": "extreme"})
check(code == 400 and r["error"]["param"] == "reasoning_effort", f"bad reasoning_effort -> 400 naming it: {code}")
code, r = req({"messages": MSGS, "tools": TOOLS, "tool_choice": "required", "thinking": {"type": "enabled"}})
check(code == 400 and r["error"]["param"] == "tool_choice", f"tool_choice required in thinking mode -> 400: {code}")
code, r = req({"messages": MSGS, "tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "ping"}},
               "thinking": {"type": "disabled"}, "max_tokens": 4})
check(code == 200, f"named tool_choice (non-thinking) is served: {code}")
# prompt sizes: the tools section, and V4's max-effort preface in thinking mode only
sizes = {}
for name, extra in (("plain", {}), ("tools", {"tools": TOOLS}), ("max", {"reasoning_effort": "max"}), ("high", {"reasoning_effort": "high"})):
    for th in ("enabled", "disabled"):
        code, r = req(dict({"messages": MSGS, "thinking": {"type": th}, "max_tokens": 1}, **extra))
        sizes[name, th] = r["usage"]["prompt_tokens"] if code == 200 else -1
check(sizes["tools", "disabled"] > sizes["plain", "disabled"] + 100, f"the tools section is in the prompt: {sizes}")
if FMT == "v4":
    check(sizes["max", "enabled"] > sizes["plain", "enabled"] + 50 and sizes["high", "enabled"] == sizes["plain", "enabled"]
          and sizes["max", "disabled"] == sizes["plain", "disabled"], f"reasoning_effort max adds the preface in thinking mode: {sizes}")
else:
    check(sizes["max", "enabled"] == sizes["plain", "enabled"], f"V3.2 has no reasoning effort: {sizes}")
sys.exit(1 if fails else 0)
