#!/usr/bin/env python3
"""
test_openai_client.py - the official `openai` Python client against
`deepseek serve` (tiny-chat fixture: random weights, so text is gibberish
but every protocol property is checkable): chat, streaming, usage and the
DeepSeek cache fields, errors, tools / tool_calls, JSON mode, logprobs,
completions with FIM and echo, n > 1, stop, seeds, the prefix cache and
R1-style reasoning_content.

    python3 tests/server/test_openai_client.py ./deepseek
"""
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from common import FIXTURE, Checks, Server, http  # noqa: E402

import openai  # noqa: E402  (a missing module is a failure, not a skip)

MSG = [{"role": "user", "content": "Hello, who are you?"}]
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Get the weather of a city",
                                           "parameters": {"type": "object", "properties": {"location": {"type": "string"}},
                                                          "required": ["location"]}}}]
CALL = ("<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n```json\n"
        "{\"location\": \"Hangzhou\"}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>")


def client(srv, key="unused"):
    return openai.OpenAI(base_url=srv.base, api_key=key, max_retries=0, timeout=60)


def t_models(c, srv):
    ms = client(srv).models.list()
    c.eq([m.id for m in ms.data], ["tiny-chat"], "model ids")
    c.eq(client(srv).models.retrieve("tiny-chat").id, "tiny-chat", "retrieve")
    try:
        client(srv).models.retrieve("nope")
        c.check(False, "unknown model should be 404")
    except openai.NotFoundError:
        pass


def t_chat(c, srv):
    r = client(srv).chat.completions.create(model="deepseek-chat", messages=MSG, max_tokens=16, seed=3)
    c.check(r.id.startswith("chatcmpl-"), f"id {r.id}")
    c.eq(r.object, "chat.completion", "object")
    c.check(isinstance(r.created, int) and r.created > 0, "created")
    c.eq(r.model, "tiny-chat", "model")
    c.eq(len(r.choices), 1, "choices")
    ch = r.choices[0]
    c.eq(ch.index, 0, "index")
    c.eq(ch.message.role, "assistant", "role")
    c.check(isinstance(ch.message.content, str), "content is a string")
    c.check(ch.finish_reason in ("stop", "length"), f"finish_reason {ch.finish_reason}")
    u = r.usage
    c.check(u.prompt_tokens > 0 and 0 < u.completion_tokens <= 16, f"usage {u}")
    c.eq(u.total_tokens, u.prompt_tokens + u.completion_tokens, "total_tokens")
    extra = u.model_extra or {}
    c.eq(extra.get("prompt_cache_hit_tokens", -1) + extra.get("prompt_cache_miss_tokens", -1), u.prompt_tokens,
         "hit + miss = prompt_tokens")
    c.check(u.prompt_tokens_details is not None and u.prompt_tokens_details.cached_tokens == extra["prompt_cache_hit_tokens"],
            "prompt_tokens_details.cached_tokens")
    c.check(r.system_fingerprint, "system_fingerprint")


def collect_stream(stream):
    chunks = list(stream)
    content, reasoning, finish, usage_chunks, role_first = "", "", None, [], None
    ids = set()
    for i, ch in enumerate(chunks):
        ids.add(ch.id)
        if not ch.choices:
            usage_chunks.append(ch)
            continue
        d = ch.choices[0].delta
        if i == 0:
            role_first = d.role
        content += d.content or ""
        reasoning += (d.model_extra or {}).get("reasoning_content") or ""
        if ch.choices[0].finish_reason:
            finish = ch.choices[0].finish_reason
    return chunks, content, reasoning, finish, usage_chunks, ids, role_first


def t_stream(c, srv):
    cl = client(srv)
    ref = cl.chat.completions.create(messages=MSG, model="x", max_tokens=24, seed=11, temperature=0.8)
    s = cl.chat.completions.create(messages=MSG, model="x", max_tokens=24, seed=11, temperature=0.8, stream=True)
    chunks, content, _, finish, usage_chunks, ids, role = collect_stream(s)
    c.eq(role, "assistant", "first chunk carries the role")
    c.check(all(ch.object == "chat.completion.chunk" for ch in chunks), "chunk object")
    c.eq(len(ids), 1, "one id across the stream")
    c.eq(content, ref.choices[0].message.content, "streamed text == non-streamed text (same seed)")
    c.eq(finish, ref.choices[0].finish_reason, "finish_reason")
    c.eq(usage_chunks, [], "no usage chunk unless asked")
    c.check(all(ch.choices[0].delta.role is None for ch in chunks[1:] if ch.choices), "role only in the first chunk")
    s = cl.chat.completions.create(messages=MSG, model="x", max_tokens=8, seed=1, stream=True,
                                   stream_options={"include_usage": True})
    chunks, content, _, finish, usage_chunks, _, _ = collect_stream(s)
    c.eq(len(usage_chunks), 1, "one usage chunk")
    c.check(chunks[-1] is usage_chunks[0] and chunks[-1].usage.completion_tokens > 0, "usage chunk last")
    c.check(all(ch.usage is None for ch in chunks[:-1]), "usage null on the other chunks")


def t_errors(c, srv):
    cl = client(srv)
    for kwargs, param in [(dict(temperature=5), "temperature"), (dict(max_tokens=-3), "max_tokens"),
                          (dict(n=999), "n"), (dict(top_p=7), "top_p")]:
        try:
            cl.chat.completions.create(messages=MSG, model="x", **kwargs)
            c.check(False, f"{kwargs} accepted")
        except openai.BadRequestError as e:
            c.eq(e.status_code, 400, f"{kwargs} status")
            c.eq(e.body.get("param"), param, f"{kwargs} param")
            c.check(param in e.body.get("message", ""), f"{kwargs} message names the field: {e.body}")
    try:
        cl.chat.completions.create(messages=[], model="x")
        c.check(False, "empty messages accepted")
    except openai.BadRequestError as e:
        c.check("messages" in str(e), "empty messages message")
    try:
        cl.chat.completions.create(messages=[{"role": "user", "content": "x " * 5000}], model="x")
        c.check(False, "over-long prompt accepted")
    except openai.BadRequestError as e:
        c.eq(e.body.get("code"), "context_length_exceeded", "context code")
        c.check("4096" in e.body.get("message", ""), f"context message has the limit: {e.body}")


def t_tools(c, srv):
    cl = client(srv)
    r = cl.chat.completions.create(model="x", messages=[{"role": "user", "content": "Weather in Hangzhou?"}], tools=TOOLS,
                                   extra_body={"x_forced_output": CALL})
    ch = r.choices[0]
    c.eq(ch.finish_reason, "tool_calls", "finish_reason")
    c.check(ch.message.tool_calls and len(ch.message.tool_calls) == 1, "one tool call")
    tc = ch.message.tool_calls[0]
    c.eq(tc.type, "function", "type")
    c.eq(tc.function.name, "get_weather", "name")
    c.eq(json.loads(tc.function.arguments), {"location": "Hangzhou"}, "arguments")
    c.check(tc.id.startswith("call_"), "call id")
    # the same, streamed: tool_calls arrive as deltas with an index
    s = cl.chat.completions.create(model="x", messages=[{"role": "user", "content": "Weather?"}], tools=TOOLS, stream=True,
                                   extra_body={"x_forced_output": CALL})
    calls, finish = {}, None
    for chunk in s:
        if not chunk.choices:
            continue
        d = chunk.choices[0].delta
        for t in d.tool_calls or []:
            e = calls.setdefault(t.index, {"name": "", "arguments": ""})
            e["name"] += t.function.name or ""
            e["arguments"] += t.function.arguments or ""
        finish = chunk.choices[0].finish_reason or finish
    c.eq(finish, "tool_calls", "streamed finish_reason")
    c.eq([calls[0]["name"]] if 0 in calls else None, ["get_weather"], "streamed tool call")
    # the client sends the result back: a full tool round trip is accepted
    msgs = [{"role": "user", "content": "Weather in Hangzhou?"}, ch.message.model_dump(exclude_none=True),
            {"role": "tool", "tool_call_id": tc.id, "content": "24 degrees, sunny"}]
    r2 = cl.chat.completions.create(model="x", messages=msgs, tools=TOOLS, max_tokens=8)
    c.check(r2.choices[0].finish_reason in ("stop", "length", "tool_calls"), "tool result turn")
    # tool_choice required / named: even with random weights the decoder is constrained to one
    # well-formed call (a tool's name, JSON arguments, the call closed), whatever the seed
    more = TOOLS + [{"type": "function", "function": {"name": n, "parameters": {"type": "object"}}} for n in ("get", "get_time")]
    names = set()
    for choice, tools, seed, mt in [("required", TOOLS, 2, 64), ("required", more, 3, 40), ("required", more, 4, 100),
                                    ("required", more, 5, 64), ("required", more, 6, 64), ("required", more, 7, 64),
                                    ({"type": "function", "function": {"name": "get_weather"}}, more, 2, 29),
                                    ({"type": "function", "function": {"name": "get_time"}}, more, 8, 200)]:
        r3 = cl.chat.completions.create(model="x", messages=MSG, tools=tools, tool_choice=choice, max_tokens=mt, seed=seed,
                                        temperature=1.0)
        ch3 = r3.choices[0]
        calls = ch3.message.tool_calls or []
        what = f"tool_choice {choice}, {len(tools)} tools, seed {seed}, max_tokens {mt}"
        c.eq(ch3.finish_reason, "tool_calls", what + ": finish_reason")
        c.check(len(calls) == 1 and calls[0].function.name in [t["function"]["name"] for t in tools],
                f"{what}: one call of a given tool: {calls} {ch3.message.content!r}")
        if isinstance(choice, dict):
            c.eq([t.function.name for t in calls], [choice["function"]["name"]], what + ": the named function")
        for t in calls:
            names.add(t.function.name)
            try:
                c.check(isinstance(json.loads(t.function.arguments), dict), f"{what}: arguments are a JSON object")
            except ValueError:
                c.check(False, f"{what}: arguments do not parse: {t.function.arguments!r}")
    c.check(len(names) >= 2, f"tool_choice required: the model picks among the tools (got {names})")
    try:
        cl.chat.completions.create(model="x", messages=MSG, tools=TOOLS, tool_choice="required", max_tokens=12)
        c.check(False, "tool_choice required with max_tokens too small for a call accepted")
    except openai.BadRequestError as e:
        c.eq(e.body.get("param"), "max_tokens", "tool_choice required, max_tokens 12: the error names max_tokens")
    for choice in ("none", "auto"):
        r3 = cl.chat.completions.create(model="x", messages=MSG, tools=TOOLS, tool_choice=choice, max_tokens=12, seed=2)
        c.check(r3.choices[0].finish_reason in ("stop", "length", "tool_calls"), f"tool_choice {choice}")
        if choice == "none":
            c.check(not r3.choices[0].message.tool_calls, "tool_choice none: no calls")


def t_json_mode(c, srv):
    cl = client(srv)
    for seed, mt, temp in [(1, 3, 1.0), (2, 9, 1.5), (3, 30, 1.0), (4, 80, 0.7), (5, 200, 1.2), (6, 40, 0.0)]:
        r = cl.chat.completions.create(model="x", messages=[{"role": "user", "content": "Answer in json"}], seed=seed,
                                       max_tokens=mt, temperature=temp, response_format={"type": "json_object"})
        txt = r.choices[0].message.content
        try:
            obj = json.loads(txt)
            c.check(isinstance(obj, dict), f"json_object is an object: {txt!r}")
        except Exception as e:
            c.check(False, f"json mode output does not parse (seed {seed}, max_tokens {mt}): {txt!r}: {e}")
        c.check(r.usage.completion_tokens <= mt, "within max_tokens")
    s = cl.chat.completions.create(model="x", messages=[{"role": "user", "content": "json please"}], seed=9, max_tokens=25,
                                   response_format={"type": "json_object"}, stream=True)
    txt = "".join((ch.choices[0].delta.content or "") for ch in s if ch.choices)
    try:
        c.check(isinstance(json.loads(txt), dict), "streamed json")
    except Exception:
        c.check(False, f"streamed json does not parse: {txt!r}")
    try:
        cl.chat.completions.create(model="x", messages=MSG, response_format={"type": "json_schema", "json_schema": {}})
        c.check(False, "json_schema accepted")
    except openai.BadRequestError:
        pass


def t_logprobs(c, srv):
    r = client(srv).chat.completions.create(model="x", messages=MSG, max_tokens=10, seed=4, logprobs=True, top_logprobs=3,
                                            extra_body={"ignore_eos": True})
    lp = r.choices[0].logprobs.content
    c.eq(len(lp), r.usage.completion_tokens, "one entry per token")
    c.check(all(e.logprob <= 0 and len(e.top_logprobs) == 3 for e in lp), "logprob <= 0, 3 alternatives")
    c.check(all(e.top_logprobs[0].logprob >= e.top_logprobs[1].logprob >= e.top_logprobs[2].logprob for e in lp), "sorted")
    c.check(all(e.logprob <= e.top_logprobs[0].logprob + 1e-5 for e in lp), "chosen <= best")
    joined = bytes(b for e in lp for b in e.bytes).decode("utf-8", errors="replace")
    c.eq(joined, r.choices[0].message.content, "token bytes concatenate to the content")
    # the values: log-softmax of the model's logits (`deepseek logits` on the
    # same tokens). A logit bias of +100 makes the continuation a known token
    # X every step; logprobs are of the unbiased distribution, so each is
    # log p(X | prefix) and the top-3 are the model's own.
    P, X, n = [0, 40, 71, 305, 122, 99], 100, 4
    r = client(srv).completions.create(model="x", prompt=P, max_tokens=n, logprobs=3, seed=1, logit_bias={str(X): 100},
                                       extra_body={"ignore_eos": True})
    L = r.choices[0].logprobs
    ref = log_softmax_rows(srv.binary, P + [X] * n)
    c.eq(len(L.token_logprobs), n, "completion logprobs: one per token")
    for i, got in enumerate(L.token_logprobs[:n]):
        want = ref[len(P) - 1 + i]
        c.check(abs(got - want[X]) < 1e-4, f"logprob of step {i}: server {got:.6f}, log-softmax of the logits {want[X]:.6f}")
        top = sorted(L.top_logprobs[i].values(), reverse=True)
        c.check(len(top) == 3 and all(abs(a - b) < 1e-4 for a, b in zip(top, sorted(want, reverse=True)[:3])),
                f"top-3 logprobs of step {i}: server {top}, log-softmax of the logits {sorted(want, reverse=True)[:3]}")


def log_softmax_rows(binary, tokens):
    """log-softmax of every row of `deepseek logits` on the tiny-chat fixture."""
    import array
    import math
    import subprocess
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "l.f32")
        subprocess.run([binary, "logits", "-m", FIXTURE, "--tokens", ",".join(map(str, tokens)), "--out", out, "-t", "1"],
                       check=True, capture_output=True)
        a = array.array("f")
        a.frombytes(open(out, "rb").read())
    V = len(a) // len(tokens)
    rows = []
    for t in range(len(tokens)):
        r = a[t * V:(t + 1) * V]
        m = max(r)
        lse = m + math.log(sum(math.exp(x - m) for x in r))
        rows.append([x - lse for x in r])
    return rows


def t_completions(c, srv):
    cl = client(srv)
    r = cl.completions.create(model="x", prompt="Once upon a time", max_tokens=12, seed=5)
    c.eq(r.object, "text_completion", "object")
    c.check(r.id.startswith("cmpl-") and isinstance(r.choices[0].text, str), "text")
    c.check(r.choices[0].finish_reason in ("stop", "length"), "finish_reason")
    e = cl.completions.create(model="x", prompt="Once upon a time", max_tokens=12, seed=5, echo=True)
    c.eq(e.choices[0].text, "Once upon a time" + r.choices[0].text, "echo")
    # FIM: the prompt the model sees is BOS <fim_begin> prompt <fim_hole> suffix <fim_end> (prefix-suffix-middle,
    # DeepSeek's layout): the same token ids sent as a plain prompt give the same usage and the same text
    pre, suf = "def fib(a):", "    return fib(a-1) + fib(a-2)"
    f = cl.completions.create(model="x", prompt=pre, suffix=suf, max_tokens=10, seed=8, temperature=0.9,
                              extra_body={"ignore_eos": True})

    def tokenize(text, **kw):
        st, _, b = http("POST", srv.url("/tokenize"), dict({"content": text}, **kw))
        return json.loads(b)["tokens"]
    fb, fh, fe = (tokenize(t) for t in ("<｜fim▁begin｜>", "<｜fim▁hole｜>", "<｜fim▁end｜>"))
    c.check(all(len(x) == 1 for x in (fb, fh, fe)), "FIM markers are single tokens")
    psm = tokenize("", add_special=True) + fb + tokenize(pre, parse_special=False) + fh + \
        tokenize(suf, parse_special=False) + fe
    c.eq(f.usage.prompt_tokens, len(psm), "FIM prompt length = BOS + markers + prompt + suffix")
    same = cl.completions.create(model="x", prompt=psm, max_tokens=10, seed=8, temperature=0.9, extra_body={"ignore_eos": True})
    c.eq(f.choices[0].text, same.choices[0].text, "FIM text == the text of its prefix-suffix-middle token layout")
    spm = psm[:2] + tokenize(suf, parse_special=False) + fh + tokenize(pre, parse_special=False) + fe  # swapped
    other = cl.completions.create(model="x", prompt=spm, max_tokens=10, seed=8, temperature=0.9, extra_body={"ignore_eos": True})
    c.check(other.choices[0].text != f.choices[0].text, "the comparison sees the layout: another layout, another text")
    lp = cl.completions.create(model="x", prompt="Hello", max_tokens=5, logprobs=2, seed=1, extra_body={"ignore_eos": True})
    L = lp.choices[0].logprobs
    c.check(len(L.tokens) == 5 and len(L.token_logprobs) == 5 and len(L.top_logprobs) == 5 and len(L.text_offset) == 5,
            "completion logprobs shape")
    s = cl.completions.create(model="x", prompt="Once upon a time", max_tokens=12, seed=5, stream=True)
    txt = "".join(ch.choices[0].text for ch in s if ch.choices)
    c.eq(txt, r.choices[0].text, "streamed completion == non-streamed")
    s = cl.completions.create(model="x", prompt="Once upon a time", max_tokens=12, seed=5, stream=True, echo=True)
    c.eq("".join(ch.choices[0].text for ch in s if ch.choices), "Once upon a time" + r.choices[0].text, "streamed echo")
    ids = cl.completions.create(model="x", prompt=[0, 5, 17, 30], max_tokens=4, seed=1)
    c.eq(ids.usage.prompt_tokens, 4, "token-id prompt")


def t_n_stop_seed(c, srv):
    cl = client(srv)
    r = cl.chat.completions.create(model="x", messages=MSG, max_tokens=8, n=3, seed=7, extra_body={"ignore_eos": True})
    c.eq(sorted(ch.index for ch in r.choices), [0, 1, 2], "n=3 indexes")
    c.eq(r.usage.completion_tokens, 24, "usage counts every choice")
    c.check(len({ch.message.content for ch in r.choices}) > 1, "choices differ")
    one = cl.chat.completions.create(model="x", messages=MSG, max_tokens=8, seed=7, extra_body={"ignore_eos": True})
    c.eq(one.choices[0].message.content, r.choices[0].message.content, "choice 0 of n=3 == n=1 with the same seed")
    a = cl.chat.completions.create(model="x", messages=MSG, max_tokens=20, seed=99)
    b = cl.chat.completions.create(model="x", messages=MSG, max_tokens=20, seed=99)
    d = cl.chat.completions.create(model="x", messages=MSG, max_tokens=20, seed=100)
    c.eq(a.choices[0].message.content, b.choices[0].message.content, "same seed, same text")
    c.check(a.choices[0].message.content != d.choices[0].message.content, "other seed, other text")
    st = cl.chat.completions.create(model="x", messages=MSG, stop=["STOP"], extra_body={"x_forced_output": "Hello world STOP more"})
    c.eq(st.choices[0].message.content, "Hello world ", "stop string cut")
    c.eq(st.choices[0].finish_reason, "stop", "stop finish_reason")
    s = cl.chat.completions.create(model="x", messages=MSG, stop="ST", stream=True, extra_body={"x_forced_output": "abc STOP"})
    c.eq("".join(ch.choices[0].delta.content or "" for ch in s if ch.choices), "abc ", "streamed stop")


def t_prefix_cache(c, srv):
    cl = client(srv)
    system = {"role": "system", "content": "You are a helpful assistant. " * 30}
    q1 = [system, {"role": "user", "content": "First question?"}]
    r1 = cl.chat.completions.create(model="x", messages=q1, max_tokens=8, seed=1)
    x1 = r1.usage.model_extra
    q2 = [system, {"role": "user", "content": "A different question?"}]
    r2 = cl.chat.completions.create(model="x", messages=q2, max_tokens=8, seed=1)
    x2 = r2.usage.model_extra
    c.check(x2["prompt_cache_hit_tokens"] >= 150, f"shared system prompt reused: {x2}")
    c.eq(x2["prompt_cache_hit_tokens"] + x2["prompt_cache_miss_tokens"], r2.usage.prompt_tokens, "hit + miss")
    # multi-turn: the whole first exchange is reused
    q3 = q1 + [{"role": "assistant", "content": r1.choices[0].message.content}, {"role": "user", "content": "And then?"}]
    r3 = cl.chat.completions.create(model="x", messages=q3, max_tokens=8, seed=1)
    x3 = r3.usage.model_extra
    c.check(x3["prompt_cache_hit_tokens"] >= r1.usage.prompt_tokens - 1, f"multi-turn reuse {x3} vs {r1.usage.prompt_tokens}")
    c.check(x1["prompt_cache_miss_tokens"] > 0, "first request misses")


def t_reasoning(c, binary):
    with Server(binary, "--chat-format", "r1") as srv:
        cl = client(srv)
        r = cl.chat.completions.create(model="deepseek-reasoner", messages=MSG,
                                       extra_body={"x_forced_output": "Let me think.</think>The answer is 4.<｜end▁of▁sentence｜>"})
        m = r.choices[0].message
        c.eq((m.model_extra or {}).get("reasoning_content"), "Let me think.", "reasoning_content")
        c.eq(m.content, "The answer is 4.", "content")
        c.eq(r.choices[0].finish_reason, "stop", "finish")
        c.check(r.usage.completion_tokens_details.reasoning_tokens > 0, "reasoning_tokens")
        s = cl.chat.completions.create(model="deepseek-reasoner", messages=MSG, stream=True,
                                       extra_body={"x_forced_output": "Hmm, two plus two.</think>4<｜end▁of▁sentence｜>"})
        _, content, reasoning, finish, _, _, role = collect_stream(s)
        c.eq(reasoning, "Hmm, two plus two.", "streamed reasoning")
        c.eq(content, "4", "streamed content")
        # random weights: reasoning_content is always present for a reasoning reply
        r = cl.chat.completions.create(model="x", messages=MSG, max_tokens=10, seed=3)
        c.check("reasoning_content" in (r.choices[0].message.model_extra or {}), "reasoning_content field present")
        # earlier turns' reasoning_content is accepted (and dropped from the prompt)
        r = cl.chat.completions.create(model="x", max_tokens=4, messages=[
            {"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello", "reasoning_content": "greet"},
            {"role": "user", "content": "again"}])
        c.check(r.choices[0].finish_reason in ("stop", "length"), "history with reasoning_content")


def t_disk_cache(c, binary):
    import shutil
    import tempfile
    d = tempfile.mkdtemp(prefix="ds_srv_cache_")
    try:
        system = {"role": "system", "content": "Context: " + "the quick brown fox jumps over the lazy dog. " * 20}
        with Server(binary, "--cache-dir", d, "--cache-min", "32") as srv:
            r = client(srv).chat.completions.create(model="x", messages=[system, {"role": "user", "content": "q1"}],
                                                    max_tokens=4, seed=1)
            n1 = r.usage.prompt_tokens
            c.eq(r.usage.model_extra["prompt_cache_hit_tokens"], 0, "cold start")
            # the blocks are written after the response is sent (the client does not wait for the disk):
            # poll the gauge, which the worker refreshes after each step
            deadline = time.time() + 10
            while True:
                m = srv.metrics()
                if m["deepseek_prefix_cache_disk_entries"] >= n1 // 32 or time.time() > deadline:
                    break
                time.sleep(0.05)
            c.check(m["deepseek_prefix_cache_disk_entries"] >= n1 // 32, f"blocks written: {m['deepseek_prefix_cache_disk_entries']}")
        with Server(binary, "--cache-dir", d, "--cache-min", "32") as srv:
            r = client(srv).chat.completions.create(model="x", messages=[system, {"role": "user", "content": "q2"}],
                                                    max_tokens=4, seed=1)
            hit = r.usage.model_extra["prompt_cache_hit_tokens"]
            c.check(hit >= 32 * ((n1 - 8) // 32) and hit % 32 == 0, f"after a restart the prefix comes from disk: {hit} of {n1}")
            c.check(srv.metrics()["deepseek_prefix_cache_disk_hits_total"] > 0, "disk hits counted")
    finally:
        shutil.rmtree(d, ignore_errors=True)


def t_auth(c, binary):
    with Server(binary, "--api-key", "sk-secret,sk-other") as srv:
        try:
            client(srv, "wrong").chat.completions.create(model="x", messages=MSG, max_tokens=2)
            c.check(False, "wrong key accepted")
        except openai.AuthenticationError as e:
            c.eq(e.status_code, 401, "401")
            c.eq(e.body.get("type"), "authentication_error", "type")
        r = client(srv, "sk-other").chat.completions.create(model="x", messages=MSG, max_tokens=2)
        c.check(r.choices, "right key works")


def main():
    binary = sys.argv[1] if len(sys.argv) > 1 else "./deepseek"
    c = Checks("openai_client")
    with Server(binary, "--parallel", "4") as srv:
        for fn in (t_models, t_chat, t_stream, t_errors, t_tools, t_json_mode, t_logprobs, t_completions, t_n_stop_seed,
                   t_prefix_cache):
            c.run(fn, srv)
    c.run(t_reasoning, binary)
    c.run(t_disk_cache, binary)
    c.run(t_auth, binary)
    c.finish()


if __name__ == "__main__":
    main()
