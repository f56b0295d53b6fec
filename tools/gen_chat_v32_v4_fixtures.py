#!/usr/bin/env python3
"""Reference prompts and reply parses for the DeepSeek-V3.2 and V4 chat formats.

DeepSeek ships these formats as Python, not as Jinja templates:
encoding/encoding_dsv32.py (DeepSeek-V3.2) and encoding/encoding_dsv4.py
(DeepSeek-V4). Copies are vendored, unchanged, in
tests/fixtures/chat_v32_v4/ref/ (see the README there for their sources and
licenses). This script runs them over a set of conversations and writes
tests/fixtures/chat_v32_v4/cases.json:

  prompts: {name, format ("v3.2" | "v4"), thinking, reasoning_effort,
            messages (OpenAI style), tools (or null), text (the encoder's
            prompt string), ids (../shared/tokenizers/deepseek-v3 with
            V3.1's <think> / </think> tokens, the vocabulary V3.2 uses),
            ids_v3 (the plain V3 tokenizer: <think> as text)}
  parses:  {name, format, thinking, text (a reply as generated, without
            the end-of-sentence token), ok (the encoder's
            parse_message_from_completion_text accepted text + EOS),
            content, reasoning_content, tool_calls [{name, arguments}]}

Tools reach encode_messages as the first message's "tools" (an empty system
message is put first when there is none), as vLLM and SGLang pass a
request's tools. tests/test_chat.c compares deepseek.c byte for byte.

Usage: python3 tools/gen_chat_v32_v4_fixtures.py   (needs `tokenizers`)
"""
import copy
import importlib.util
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIX = os.path.join(ROOT, 'tests', 'fixtures', 'chat_v32_v4')
TOK = os.path.join(ROOT, '..', 'shared', 'tokenizers', 'deepseek-v3', 'tokenizer.json')


def load(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(FIX, 'ref', name + '.py'))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


ENC = {'v3.2': load('encoding_dsv32'), 'v4': load('encoding_dsv4')}

TOOLS = [
    {"type": "function", "function": {
        "name": "get_weather", "description": "Weather of a city, now. Température en °C.",
        "parameters": {"type": "object", "properties": {
            "city": {"type": "string", "description": "e.g. \"Paris\""},
            "days": {"type": "integer", "minimum": 1, "maximum": 7, "default": 1},
            "scale": {"type": "number", "default": 0.1}},
            "required": ["city"]}}},
    {"type": "function", "function": {
        "name": "search", "description": "Web search.\nReturns the top hits.",
        "parameters": {"type": "object", "properties": {"query": {"type": "string"},
                                                        "filters": {"type": "object"}}}}},
]


def call(id_, name, args):
    return {"id": id_, "type": "function", "function": {"name": name, "arguments": json.dumps(args, ensure_ascii=False)}}


SYS = {"role": "system", "content": "You are a helpful assistant."}


def conversations():
    """(name, messages, tools, formats) — the formats a case applies to."""
    both = ('v3.2', 'v4')
    calls = [call("call_1", "get_weather", {"city": "Paris", "days": 3, "scale": 0.1}),
             call("call_2", "search", {"query": "C11 atomics \"memory order\"", "filters": {"lang": ["en", "fr"], "safe": True, "n": None}})]
    yield 'single_user', [{"role": "user", "content": "Hello!"}], None, both
    yield 'system_user', [SYS, {"role": "user", "content": "What is 2+2?"}], None, both
    yield 'multi_turn_reasoning', [
        SYS, {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "Hello! How can I help?", "reasoning_content": "The user greets me."},
        {"role": "user", "content": "1+1=?"}], None, both
    yield 'three_turns_unicode', [
        {"role": "user", "content": "Bonjour, ça va ? 你好"},
        {"role": "assistant", "content": "Très bien. 很好！", "reasoning_content": "Réponse polie."},
        {"role": "user", "content": "Et toi ?\nDeux lignes."},
        {"role": "assistant", "content": "Oui.", "reasoning_content": "short"},
        {"role": "user", "content": "end"}], None, both
    yield 'tools_in_system', [SYS, {"role": "user", "content": "Weather in Paris?"}], TOOLS, both
    yield 'tools_no_system', [{"role": "user", "content": "Weather in Paris?"}], TOOLS, both
    yield 'tool_round_trip', [
        SYS, {"role": "user", "content": "Weather in Paris, and search atomics."},
        {"role": "assistant", "content": "", "reasoning_content": "Two tools are needed.", "tool_calls": calls},
        {"role": "tool", "tool_call_id": "call_1", "content": "{\"temp\": 21}"},
        {"role": "tool", "tool_call_id": "call_2", "content": "hit 1\nhit 2"}], TOOLS, both
    yield 'tool_results_out_of_order', [
        SYS, {"role": "user", "content": "Both please."},
        {"role": "assistant", "content": "Let me look.", "reasoning_content": "ok", "tool_calls": calls},
        {"role": "tool", "tool_call_id": "call_2", "content": "second"},
        {"role": "tool", "tool_call_id": "call_1", "content": "first"}], TOOLS, both
    yield 'tool_then_answer_then_user', [
        SYS, {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": None, "reasoning_content": "call it", "tool_calls": calls[:1]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
        {"role": "assistant", "content": "It is sunny.", "reasoning_content": "The tool says sunny."},
        {"role": "user", "content": "Thanks. Tomorrow?"}], TOOLS, both
    yield 'user_after_tool_result', [
        SYS, {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": "", "reasoning_content": "r", "tool_calls": calls[:1]},
        {"role": "tool", "tool_call_id": "call_1", "content": "rain"},
        {"role": "user", "content": "Also, bring an umbrella?"}], TOOLS, ('v4',)
    yield 'two_users_in_a_row', [
        {"role": "user", "content": "first"}, {"role": "user", "content": "second"}], None, both
    yield 'history_no_reasoning', [
        SYS, {"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
        {"role": "user", "content": "c"}], None, both
    yield 'answer_after_last_user', [
        SYS, {"role": "user", "content": "q"},
        {"role": "assistant", "content": "final", "reasoning_content": "thought"}], None, both
    # V3.2 rejects these (thinking: an answer after the last user turn with no
    # reasoning; a tool result answering no call); V4 renders them
    yield 'answer_without_reasoning', [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], None, both
    yield 'orphan_tool_result', [{"role": "user", "content": "q"}, {"role": "tool", "content": "r"}], None, both


def parse_texts(fmt):
    blk = 'function_calls' if fmt == 'v3.2' else 'tool_calls'
    D = '｜DSML｜'
    one = (f'\n\n<{D}{blk}>\n<{D}invoke name="get_weather">\n'
           f'<{D}parameter name="city" string="true">Paris "centre"</{D}parameter>\n'
           f'<{D}parameter name="days" string="false">3</{D}parameter>\n</{D}invoke>\n</{D}{blk}>')
    two = (f'\n\n<{D}{blk}>\n<{D}invoke name="get_weather">\n'
           f'<{D}parameter name="city" string="true">Zürich\nline2</{D}parameter>\n</{D}invoke>\n'
           f'<{D}invoke name="search">\n<{D}parameter name="query" string="true">x</{D}parameter>\n'
           f'<{D}parameter name="filters" string="false">{{"a": [1, 2.5]}}</{D}parameter>\n</{D}invoke>\n</{D}{blk}>')
    noargs = f'\n\n<{D}{blk}>\n<{D}invoke name="ping">\n</{D}invoke>\n</{D}{blk}>'
    yield 'plain', False, 'Just an answer.'
    yield 'thinking_plain', True, 'Let me think.</think>The answer is 4.'
    yield 'one_call', False, 'Checking.' + one
    yield 'one_call_thinking', True, 'I need the weather.</think>' + one
    yield 'two_calls', False, two
    yield 'no_args', False, noargs
    # malformed: the official parser rejects these; we show the text as content
    yield 'bad_unclosed', False, 'x' + one[:-5]
    yield 'bad_param', False, one.replace('string="false"', 'string="maybe"')
    yield 'bad_trailing', False, one + ' trailing'
    yield 'bad_dup_param', False, one.replace('name="days"', 'name="city"')
    yield 'bad_no_newline', False, one.replace('<' + D + 'invoke name="get_weather">\n', '<' + D + 'invoke name="get_weather">')
    other = 'tool_calls' if fmt == 'v3.2' else 'function_calls'
    yield 'other_block_name', False, one.replace(blk, other)


def tokenizers():
    from tokenizers import Tokenizer
    with open(TOK, encoding='utf-8') as f:
        v3 = json.load(f)
    think = copy.deepcopy(v3)
    for t in think['added_tokens']:
        if t['id'] == 128798: t['content'], t['special'] = '<think>', False
        if t['id'] == 128799: t['content'], t['special'] = '</think>', False
    return Tokenizer.from_str(json.dumps(think)), Tokenizer.from_str(json.dumps(v3))


def with_tools(messages, tools):
    msgs = copy.deepcopy(messages)
    if tools:
        if msgs and msgs[0]['role'] == 'system':
            msgs[0]['tools'] = tools
        else:
            msgs.insert(0, {"role": "system", "content": "", "tools": tools})
    return msgs


def main():
    tk_think, tk_v3 = tokenizers()
    prompts, parses = [], []
    for name, msgs, tools, fmts in conversations():
        for fmt in fmts:
            for thinking in (False, True):
                efforts = (None, 'high', 'max') if fmt == 'v4' else (None,)
                for eff in efforts:
                    kw = {'reasoning_effort': eff} if fmt == 'v4' else {}
                    try:
                        text = ENC[fmt].encode_messages(with_tools(msgs, tools), 'thinking' if thinking else 'chat', **kw)
                    except Exception as ex:  # the encoder rejects it: so must we
                        text = None
                        err = f'{type(ex).__name__}: {ex}'
                    case = {"name": name, "format": fmt, "thinking": thinking, "reasoning_effort": eff,
                            "messages": msgs, "tools": tools}
                    if text is None:
                        case["error"] = err
                    else:
                        case["text"] = text
                        case["ids"] = tk_think.encode(text, add_special_tokens=False).ids
                        case["ids_v3"] = tk_v3.encode(text, add_special_tokens=False).ids
                    prompts.append(case)
    for fmt in ('v3.2', 'v4'):
        for name, thinking, text in parse_texts(fmt):
            enc = ENC[fmt]
            case = {"name": name, "format": fmt, "thinking": thinking, "text": text}
            try:
                r = enc.parse_message_from_completion_text(text + enc.eos_token, 'thinking' if thinking else 'chat')
                case.update(ok=True, content=r['content'], reasoning_content=r['reasoning_content'],
                            tool_calls=[{"name": c['function']['name'], "arguments": c['function']['arguments']}
                                        for c in r['tool_calls']])
            except Exception:
                case.update(ok=False)
            parses.append(case)
    out = os.path.join(FIX, 'cases.json')
    with open(out, 'w', encoding='utf-8') as f:
        json.dump({"prompts": prompts, "parses": parses}, f, ensure_ascii=False, indent=None, separators=(',', ':'))
        f.write('\n')
    print(f'{out}: {len(prompts)} prompts ({sum("error" in c for c in prompts)} rejected), {len(parses)} parses')


if __name__ == '__main__':
    sys.exit(main())
