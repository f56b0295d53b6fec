#!/usr/bin/env python3
"""
gen_tokenizer_fixtures.py - regenerates tests/fixtures/tokenizer/* with the
Hugging Face `tokenizers` and `transformers` libraries (PyPI). The C tests
(tests/test_tokenizer.c, tests/test_chat.c) compare against these files and
never need Python.

usage: python3 tools/gen_tokenizer_fixtures.py [--shared ../shared]

Writes (all deterministic for a given tokenizers/transformers/Python):
  corpus.bin           ~1.3 MB of varied text as documents (English prose,
                       code, Chinese, Japanese, Korean, numbers, emoji,
                       whitespace runs, CRLF, long words, random code points
                       from every plane, U+FFFD from invalid bytes decoded
                       with errors='replace', special-token strings)
  ds3_ids.bin          DeepSeek-V3 Tokenizer.encode(doc).ids for every doc
  ds3_literal_ids.bin  ids with no added-token matching (pre_tokenizer +
                       model only) for the docs that contain added-token text
  gpt2/tokenizer.json  small ByteLevel BPE trained here (GPT-2 regex, prefix
                       space, "a b" merges, added tokens with lstrip/rstrip/
                       single_word/normalized)
  llama3/tokenizer.json  small BPE with a Split regex + ByteLevel(use_regex
                       false), ignore_merges, [a, b] merges and a BOS
                       TemplateProcessing post-processor
  gpt2_ids.bin, llama3_ids.bin   encode(doc).ids for a corpus subset
  variants.json        pre_tokenizer variants (Split behaviours, invert,
                       literal patterns) on the gpt2 model, with ids
  chat_cases.json      conversations and apply_chat_template(...) ids for the
                       V3, R1, V3.1 (thinking and not) and V2 templates
  r1/tokenizer_config.json, v31/tokenizer_config.json, v2/tokenizer_config.json
                       the official chat templates (R1: deepseek-ai/DeepSeek-R1,
                       V3.1: deepseek-ai/DeepSeek-V3.1, V2: DeepSeek-V2-Chat)

Binary formats (little-endian):
  corpus.bin: b"DSTKCORP", u32 version=1, u32 ndocs, then per doc u32 nbytes + bytes
  *_ids.bin:  b"DSTKIDS1", u32 ndocs, then per doc u32 doc index, u32 nids,
              then nids LEB128 varints
"""
import argparse
import copy
import inspect
import json
import os
import random
import struct
import sys

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers

OUT = 'tests/fixtures/tokenizer'

# ------------------------------------------------------------------ corpus

ENGLISH = [
    "The quick brown fox jumps over the lazy dog. It's not the fox's fault; the dog wasn't paying attention.",
    "We'll see what they've done, and I'm sure you'd agree that it's better than what we'd planned.",
    "DeepSeek-V3 is a strong Mixture-of-Experts (MoE) language model with 671B total parameters, of which 37B are activated for each token.",
    "To achieve efficient inference and cost-effective training, DeepSeek-V3 adopts Multi-head Latent Attention (MLA) and DeepSeekMoE architectures.",
    "Mr. O'Neil said: \"Don't worry -- it'll be fine!\" (He was wrong.) Then again, who isn't?",
    "Prices rose 3.5% in Q3 2024, to $1,234.56 per unit; analysts expected ~2.1% (±0.3).",
    "E-mail me at someone@example.com or visit https://www.example.org/path?query=1&lang=en#section-2.",
    "IN ALL CAPS THIS SENTENCE SHOUTS, while this one whispers... and THIS one MiXeS CaSeS oddly.",
    "Supercalifragilisticexpialidocious and pneumonoultramicroscopicsilicovolcanoconiosis are long words.",
    "Tabs\tand\tspaces   mixed  together\t \t  make whitespace handling interesting.",
    "Résumé, naïve, café, coöperate, façade, jalapeño, Zürich, Ångström, Øresund, Straße.",
    "Παρακαλώ, μιλάτε αγγλικά; Ναι, λίγο. Русский язык тоже интересен: съешь же ещё этих мягких французских булок.",
    "مرحبا بالعالم! هذا نص عربي للاختبار. שלום עולם, זהו טקסט בעברית. नमस्ते दुनिया, यह हिंदी है।",
    "ภาษาไทยไม่มีช่องว่างระหว่างคำ. Tiếng Việt có dấu: Xin chào các bạn! ქართული ენა. Հայերեն լեզու.",
]
CHINESE = [
    "深度求索是一家专注于人工智能基础技术研究的公司。我们的目标是探索通用人工智能的本质。",
    "今天天气很好，我们去公园散步吧！你觉得怎么样？",
    "机器学习（Machine Learning）是人工智能的一个分支，它使计算机能够从数据中学习。",
    "北京、上海、广州和深圳是中国的一线城市；杭州、成都、武汉也发展迅速。",
    "他说：“这个问题很难，但是我们一定能解决。”大家都点头同意。",
    "数学公式：E=mc²，圆周率π≈3.14159，一百二十三万四千五百六十七。",
]
JAPANESE = [
    "こんにちは、世界！今日はいい天気ですね。東京タワーに行きましょう。",
    "日本語の文章には、ひらがな、カタカナ、漢字が混在しています。",
    "コンピューターサイエンスは面白い分野です。プログラミングを勉強しています。",
    "「吾輩は猫である。名前はまだ無い。」と夏目漱石は書いた。ｶﾀｶﾅ半角もある。",
]
KOREAN = [
    "안녕하세요, 세계! 오늘 날씨가 정말 좋네요. 한국어는 한글로 씁니다.",
    "인공지능은 컴퓨터 과학의 한 분야입니다. 기계 학습과 딥러닝이 중요합니다.",
    "서울특별시는 대한민국의 수도이며, 부산은 제2의 도시입니다.",
]
EMOJI = ["😀", "👍🏽", "👨‍👩‍👧‍👦", "🇯🇵", "🇺🇸", "❤️", "🔥", "🚀", "🤖", "🩵", "🫨", "🪿", "🧑🏿‍💻", "☕", "✅", "⚠️",
         "🏳️‍🌈", "1️⃣", "🙂‍↔️", "🫩"]
SPECIALS = ["<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜▁pad▁｜>", "<｜User｜>", "<｜Assistant｜>",
            "<|EOT|>", "<｜tool▁calls▁begin｜>", "<｜tool▁call▁begin｜>", "<｜tool▁sep｜>", "<｜tool▁call▁end｜>",
            "<｜tool▁calls▁end｜>", "<｜tool▁outputs▁begin｜>", "<｜tool▁output▁begin｜>", "<｜fim▁hole｜>",
            "<｜fim▁begin｜>", "<｜fim▁end｜>", "<｜place▁holder▁no▁17｜>", "<｜place▁holder▁no▁799｜>"]
NEAR_SPECIALS = ["<｜User", "｜User｜>", "<|User|>", "<｜end of sentence｜>", "<｜place▁holder▁no▁800｜>",
                 "<<｜User｜>>", "<｜User｜｜>", "<|EOT|", "<think>", "</think>"]


def rand_cjk(rng, n):
    return ''.join(chr(rng.randint(0x4E00, 0x9FA5)) for _ in range(n))


def rand_codepoint(rng):
    while True:
        plane = rng.choice([0, 0, 0, 0, 1, 1, 2, 3, 14, 15])
        c = rng.randint(plane * 0x10000, plane * 0x10000 + 0xFFFF)
        if not 0xD800 <= c <= 0xDFFF:
            return chr(c)


def numbers(rng):
    parts = []
    for _ in range(rng.randint(5, 30)):
        k = rng.randint(0, 9)
        if k == 0: parts.append(str(rng.randint(0, 10 ** rng.randint(1, 25))))
        elif k == 1: parts.append('%.*f' % (rng.randint(1, 6), rng.uniform(-1e6, 1e6)))
        elif k == 2: parts.append('{:,}'.format(rng.randint(0, 10 ** 12)))
        elif k == 3: parts.append('%04d-%02d-%02d %02d:%02d:%02d' % (rng.randint(1900, 2100), rng.randint(1, 12), rng.randint(1, 28), rng.randint(0, 23), rng.randint(0, 59), rng.randint(0, 59)))
        elif k == 4: parts.append('+1 (%03d) %03d-%04d' % (rng.randint(100, 999), rng.randint(100, 999), rng.randint(0, 9999)))
        elif k == 5: parts.append(''.join(chr(0xFF10 + int(d)) for d in str(rng.randint(0, 10 ** 8))))  # fullwidth
        elif k == 6: parts.append(''.join(chr(0x0660 + int(d)) for d in str(rng.randint(0, 10 ** 8))))  # Arabic-Indic
        elif k == 7: parts.append('0x%X 0b%s 1e-%d ½ ² Ⅻ ⑦' % (rng.getrandbits(32), bin(rng.getrandbits(12))[2:], rng.randint(1, 300)))
        elif k == 8: parts.append(str(rng.getrandbits(200)))
        else: parts.append('v%d.%d.%d' % (rng.randint(0, 20), rng.randint(0, 99), rng.randint(0, 999)))
    return rng.choice([' ', ', ', '\n', '']).join(parts)


def whitespace(rng):
    pieces = [' ', '  ', '    ', '\t', '\n', '\n\n', '\r\n', '\r\n\r\n', ' \n', '\n ', '\u00a0', '\u3000', '\u2028',
              '\u0085', '\u2009', '\u200b', '\u180e', '\x0b', '\x0c', '\r', ' \t \n']
    out = []
    for _ in range(rng.randint(10, 60)):
        out.append(rng.choice(pieces) * rng.randint(1, 8))
        out.append(rng.choice(['word', 'x', '1', '!', '中', 'é', '', '.', 'Ab']))
    return ''.join(out)


def long_words(rng):
    k = rng.randint(0, 5)
    if k == 0: return 'a' * rng.randint(100, 5000)
    if k == 1: return ''.join(rng.choice('abcdefghijklmnopqrstuvwxyz') for _ in range(rng.randint(100, 3000)))
    if k == 2: return ''.join(rng.choice('ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/') for _ in range(rng.randint(100, 3000)))
    if k == 3: return '!' * rng.randint(10, 2000) + '?' * rng.randint(1, 50)
    if k == 4: return '-' * rng.randint(10, 500) + '\n' + '=' * rng.randint(10, 500)
    return rand_cjk(rng, rng.randint(100, 2000))


def random_unicode(rng):
    out = []
    for _ in range(rng.randint(20, 200)):
        w = ''.join(rand_codepoint(rng) for _ in range(rng.randint(1, 6)))
        out.append(w)
        out.append(rng.choice([' ', '', 'a', '1', '\n', '.', ' x']))
    return ''.join(out)


def invalid_bytes(rng):
    b = bytearray()
    for _ in range(rng.randint(20, 200)):
        k = rng.randint(0, 4)
        if k == 0: b += bytes([rng.randint(0x80, 0xFF)])
        elif k == 1: b += 'é中😀'.encode()[:rng.randint(1, 9)]
        elif k == 2: b += b'abc '
        elif k == 3: b += bytes([0xED, 0xA0, 0x80])  # encoded surrogate
        else: b += bytes([rng.randint(0, 255) for _ in range(rng.randint(1, 6))])
    return bytes(b).decode('utf-8', errors='replace')


def specials_doc(rng):
    out = []
    for _ in range(rng.randint(5, 40)):
        k = rng.randint(0, 3)
        if k == 0: out.append(rng.choice(SPECIALS))
        elif k == 1: out.append(rng.choice(NEAR_SPECIALS))
        elif k == 2: out.append(rng.choice(ENGLISH + CHINESE)[:rng.randint(1, 40)])
        else: out.append(rng.choice([' ', '\n', '', '  ']))
    return ''.join(out)


def mixed_prose(rng):
    pools = [ENGLISH, CHINESE, JAPANESE, KOREAN]
    out = []
    for _ in range(rng.randint(3, 25)):
        pool = rng.choice(pools)
        s = rng.choice(pool)
        if rng.random() < 0.2: s = s.upper()
        if rng.random() < 0.2: s = s.replace(' ', rng.choice(['  ', '\t', '\n', ' \n']))
        out.append(s)
        if rng.random() < 0.3: out.append(rng.choice(EMOJI) * rng.randint(1, 3))
        if rng.random() < 0.1: out.append(rand_cjk(rng, rng.randint(1, 30)))
        out.append(rng.choice([' ', '\n', '\n\n', '\r\n', '', '  ']))
    return ''.join(out)


def code_docs():
    import argparse as m1, json.decoder as m2, textwrap as m3, string as m4, heapq as m5, csv as m6, difflib as m7
    docs = []
    for m in (m1, m2, m3, m4, m5, m6, m7):
        docs.append(inspect.getsource(m))
    docs.append('#include <stdio.h>\nint main(void) {\n\tfor (int i = 0; i < 10; i++) printf("%d\\n", i * i);\n\treturn 0;\n}\n')
    docs.append('<!DOCTYPE html>\n<html><head><title>Test &amp; check</title></head>\r\n<body><p class="x">Hi</p></body></html>')
    docs.append(json.dumps({"model": "deepseek", "messages": [{"role": "user", "content": "你好 😀"}], "n": [1, 2.5, None, True]}, indent=2, ensure_ascii=False))
    return docs


def license_docs():
    docs = []
    for name in ('GPL-3', 'Apache-2.0', 'LGPL-2.1', 'MPL-2.0', 'Artistic'):
        p = os.path.join('/usr/share/common-licenses', name)
        if os.path.exists(p):
            docs.append(open(p, encoding='utf-8').read())
        else:
            print('warning: %s not found; corpus will differ' % p, file=sys.stderr)
    return docs


def build_corpus():
    rng = random.Random(20240229)
    docs = []
    docs += license_docs()
    docs += code_docs()
    gens = [mixed_prose] * 6 + [numbers, whitespace, long_words, random_unicode, invalid_bytes, specials_doc] * 2
    while sum(len(d.encode()) for d in docs) < 1_020_000:
        docs.append(rng.choice(gens)(rng))
    # edge cases and worst cases (moderate sizes; the 1 MB ones are in the benchmark)
    docs += ['', ' ', '\n', 'a', '中', '😀', '\r\n', '  \n  ', 'Hello', ' Hello', 'Hello ', '123456789', '1234',
             "it's", "IT'S", " 's", '\ufffd', '\u0000abc\u0000', '<｜User｜>', '<｜User｜><｜User｜>',
             'x<｜end▁of▁sentence｜>y', ' ' * 20000, 'a' * 60000, '7' * 30000, '\n' * 5000, '\r\n' * 3000,
             '!' * 20000, rand_cjk(rng, 20000), ' a' * 10000, '\t' * 3000 + 'x', 'ab' * 20000]
    return docs


# ------------------------------------------------------------------ writers

def write_corpus(path, docs):
    with open(path, 'wb') as f:
        f.write(b'DSTKCORP' + struct.pack('<II', 1, len(docs)))
        for d in docs:
            b = d.encode('utf-8')
            f.write(struct.pack('<I', len(b)) + b)


def varint(x):
    out = bytearray()
    while True:
        b = x & 0x7F
        x >>= 7
        if x:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def write_ids(path, entries):
    """entries: list of (doc index, ids)"""
    with open(path, 'wb') as f:
        f.write(b'DSTKIDS1' + struct.pack('<I', len(entries)))
        for i, ids in entries:
            f.write(struct.pack('<II', i, len(ids)))
            f.write(b''.join(varint(x) for x in ids))


def literal_ids(tk, text):
    """HF pipeline with no added-token matching: pre_tokenizer + model."""
    out = []
    for piece, _ in tk.pre_tokenizer.pre_tokenize_str(text):
        out += [t.id for t in tk.model.tokenize(piece)]
    return out


# ------------------------------------------------------------------ small tokenizers

GPT2_ADDED = [
    AddedToken('<|endoftext|>', special=True),
    AddedToken('<|im_start|>', special=True, normalized=False),
    AddedToken('[MASK]', lstrip=True, special=True, normalized=False),
    AddedToken('<R>', rstrip=True, normalized=False),
    AddedToken('<LR>', lstrip=True, rstrip=True, normalized=True),
    AddedToken('word', single_word=True, normalized=False),
    AddedToken('ing', single_word=True, normalized=True),
    AddedToken('hello world', normalized=True),
    AddedToken('hello', normalized=False),
    AddedToken('中文', normalized=True),
]
LLAMA3_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")


def train_small(texts, regex_split, vocab_size):
    tk = Tokenizer(models.BPE(ignore_merges=regex_split))
    if regex_split:
        tk.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(LLAMA3_REGEX), behavior='isolated'),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
        special = ['<|begin_of_text|>', '<|end_of_text|>']
    else:
        tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True, use_regex=True)
        special = ['<|endoftext|>']
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  special_tokens=special, show_progress=False)
    tk.train_from_iterator(texts, trainer=trainer)
    if regex_split:
        tk.post_processor = processors.TemplateProcessing(
            single='<|begin_of_text|> $A', special_tokens=[('<|begin_of_text|>', tk.token_to_id('<|begin_of_text|>'))])
        tk.add_special_tokens([AddedToken('<|eot_id|>', special=True), AddedToken('<tool>', single_word=True)])
        tk.add_tokens([AddedToken(' spaced', lstrip=False), AddedToken('über', normalized=False)])
    else:
        tk.post_processor = processors.ByteLevel(trim_offsets=False)
        tk.add_special_tokens([t for t in GPT2_ADDED if t.special])
        tk.add_tokens([t for t in GPT2_ADDED if not t.special])
    return tk


def small_docs(docs, rng):
    sub = [d for d in docs if len(d) < 4000]
    rng.shuffle(sub)
    out, total = [], 0
    for d in sub:
        out.append(d)
        total += len(d.encode())
        if total > 150_000:
            break
    extra = ['hello world hello worldly', ' [MASK] x  [MASK]', 'a<R>   b<R>\n\nc', 'x <LR>  y<LR>z',
             'word words sword word_ word, (word) 中word', 'sing ing king ing.', 'hello中文hello world中文',
             '<|endoftext|><|im_start|>[MASK]', 'über Über <tool> a<tool>b <tool>. spaced  spaced',
             '<|begin_of_text|>x<|eot_id|>', "I'LL WE'VE it's It'S"]
    return extra + out


# ------------------------------------------------------------------ chat

V3_CONFIG = None  # loaded from shared
R1_TEMPLATE = ("{% if not add_generation_prompt is defined %}{% set add_generation_prompt = false %}{% endif %}{% set ns = namespace(is_first=false, is_tool=false, is_output_first=true, system_prompt='', is_first_sp=true) %}{%- for message in messages %}{%- if message['role'] == 'system' %}{%- if ns.is_first_sp %}{% set ns.system_prompt = ns.system_prompt + message['content'] %}{% set ns.is_first_sp = false %}{%- else %}{% set ns.system_prompt = ns.system_prompt + '\n\n' + message['content'] %}{%- endif %}{%- endif %}{%- endfor %}{{ bos_token }}{{ ns.system_prompt }}{%- for message in messages %}{%- if message['role'] == 'user' %}{%- set ns.is_tool = false -%}{{'<｜User｜>' + message['content']}}{%- endif %}{%- if message['role'] == 'assistant' and 'tool_calls' in message %}{%- set ns.is_tool = false -%}{%- for tool in message['tool_calls'] %}{%- if not ns.is_first %}{%- if message['content'] is none %}{{'<｜Assistant｜><｜tool▁calls▁begin｜><｜tool▁call▁begin｜>' + tool['type'] + '<｜tool▁sep｜>' + tool['function']['name'] + '\n' + '```json' + '\n' + tool['function']['arguments'] + '\n' + '```' + '<｜tool▁call▁end｜>'}}{%- else %}{{'<｜Assistant｜>' + message['content'] + '<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>' + tool['type'] + '<｜tool▁sep｜>' + tool['function']['name'] + '\n' + '```json' + '\n' + tool['function']['arguments'] + '\n' + '```' + '<｜tool▁call▁end｜>'}}{%- endif %}{%- set ns.is_first = true -%}{%- else %}{{'\n' + '<｜tool▁call▁begin｜>' + tool['type'] + '<｜tool▁sep｜>' + tool['function']['name'] + '\n' + '```json' + '\n' + tool['function']['arguments'] + '\n' + '```' + '<｜tool▁call▁end｜>'}}{%- endif %}{%- endfor %}{{'<｜tool▁calls▁end｜><｜end▁of▁sentence｜>'}}{%- endif %}{%- if message['role'] == 'assistant' and 'tool_calls' not in message %}{%- if ns.is_tool %}{{'<｜tool▁outputs▁end｜>' + message['content'] + '<｜end▁of▁sentence｜>'}}{%- set ns.is_tool = false -%}{%- else %}{% set content = message['content'] %}{% if '</think>' in content %}{% set content = content.split('</think>')[-1] %}{% endif %}{{'<｜Assistant｜>' + content + '<｜end▁of▁sentence｜>'}}{%- endif %}{%- endif %}{%- if message['role'] == 'tool' %}{%- set ns.is_tool = true -%}{%- if ns.is_output_first %}{{'<｜tool▁outputs▁begin｜><｜tool▁output▁begin｜>' + message['content'] + '<｜tool▁output▁end｜>'}}{%- set ns.is_output_first = false %}{%- else %}{{'<｜tool▁output▁begin｜>' + message['content'] + '<｜tool▁output▁end｜>'}}{%- endif %}{%- endif %}{%- endfor -%}{% if ns.is_tool %}{{'<｜tool▁outputs▁end｜>'}}{% endif %}{% if add_generation_prompt and not ns.is_tool %}{{'<｜Assistant｜><think>\n'}}{% endif %}")
V31_TEMPLATE = ("{% if not add_generation_prompt is defined %}{% set add_generation_prompt = false %}{% endif %}{% if not thinking is defined %}{% set thinking = false %}{% endif %}{% set ns = namespace(is_first=false, is_tool=false, system_prompt='', is_first_sp=true, is_last_user=false) %}{%- for message in messages %}{%- if message['role'] == 'system' %}{%- if ns.is_first_sp %}{% set ns.system_prompt = ns.system_prompt + message['content'] %}{% set ns.is_first_sp = false %}{%- else %}{% set ns.system_prompt = ns.system_prompt + '\n\n' + message['content'] %}{%- endif %}{%- endif %}{%- endfor %}{{ bos_token }}{{ ns.system_prompt }}{%- for message in messages %}{%- if message['role'] == 'user' %}{%- set ns.is_tool = false -%}{%- set ns.is_first = false -%}{%- set ns.is_last_user = true -%}{{'<｜User｜>' + message['content']}}{%- endif %}{%- if message['role'] == 'assistant' and message['tool_calls'] is defined and message['tool_calls'] is not none %}{%- if ns.is_last_user %}{{'<｜Assistant｜></think>'}}{%- endif %}{%- set ns.is_last_user = false -%}{%- set ns.is_first = false %}{%- set ns.is_tool = false -%}{%- for tool in message['tool_calls'] %}{%- if not ns.is_first %}{%- if message['content'] is none %}{{'<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>'+ tool['function']['name'] + '<｜tool▁sep｜>' + tool['function']['arguments'] + '<｜tool▁call▁end｜>'}}{%- else %}{{message['content'] + '<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>' + tool['function']['name'] + '<｜tool▁sep｜>' + tool['function']['arguments'] + '<｜tool▁call▁end｜>'}}{%- endif %}{%- set ns.is_first = true -%}{%- else %}{{'<｜tool▁call▁begin｜>'+ tool['function']['name'] + '<｜tool▁sep｜>' + tool['function']['arguments'] + '<｜tool▁call▁end｜>'}}{%- endif %}{%- endfor %}{{'<｜tool▁calls▁end｜><｜end▁of▁sentence｜>'}}{%- endif %}{%- if message['role'] == 'assistant' and (message['tool_calls'] is not defined or message['tool_calls'] is none) %}{%- if ns.is_last_user %}{{'<｜Assistant｜>'}}{%- if message['prefix'] is defined and message['prefix'] and thinking %}{{'<think>'}}  {%- else %}{{'</think>'}}{%- endif %}{%- endif %}{%- set ns.is_last_user = false -%}{%- if ns.is_tool %}{{message['content'] + '<｜end▁of▁sentence｜>'}}{%- set ns.is_tool = false -%}{%- else %}{%- set content = message['content'] -%}{%- if '</think>' in content %}{%- set content = content.split('</think>', 1)[1] -%}{%- endif %}{{content + '<｜end▁of▁sentence｜>'}}{%- endif %}{%- endif %}{%- if message['role'] == 'tool' %}{%- set ns.is_last_user = false -%}{%- set ns.is_tool = true -%}{{'<｜tool▁output▁begin｜>' + message['content'] + '<｜tool▁output▁end｜>'}}{%- endif %}{%- endfor -%}{%- if add_generation_prompt and ns.is_last_user and not ns.is_tool %}{{'<｜Assistant｜>'}}{%- if not thinking %}{{'</think>'}}{%- else %}{{'<think>'}}{%- endif %}{% endif %}")
V2_TEMPLATE = ("{% if not add_generation_prompt is defined %}{% set add_generation_prompt = false %}{% endif %}{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}{{ 'User: ' + message['content'] + '\n\n' }}{% elif message['role'] == 'assistant' %}{{ 'Assistant: ' + message['content'] + eos_token }}{% elif message['role'] == 'system' %}{{ message['content'] + '\n\n' }}{% endif %}{% endfor %}{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}")

THINK_TOKENS = {128796: '<｜search▁begin｜>', 128797: '<｜search▁end｜>', 128798: '<think>', 128799: '</think>'}


def think_tokenizer_json(v3_json):
    """The V3 tokenizer.json with placeholders 128796-128799 renamed as in R1/V3.1."""
    d = copy.deepcopy(v3_json)
    for t in d['added_tokens']:
        if t['id'] in THINK_TOKENS:
            t['content'] = THINK_TOKENS[t['id']]
            t['special'] = False
    return d


def tc(name, args, type_='function'):
    return {'type': type_, 'function': {'name': name, 'arguments': args}}


def conversations(rng):
    U = ['Hello!', 'What is 2+2?', '用中文回答：天空为什么是蓝色的？', 'Write a haiku about the sea.\nMake it sad.',
         '  leading and trailing spaces  ', 'Tab\there', 'emoji 😀👍🏽 test', "It's 3:45pm; what's next?",
         'コンピューターとは？', '안녕하세요', 'x' * 300, 'code: `print("hi")`\n```python\nx = 1\n```', '',
         'numbers 1234567 and 3.14159', 'line1\r\nline2\r\n']
    A = ['Hi there! How can I help?', '4', 'Because of Rayleigh scattering.', 'Waves fold and fall\nsalt tears', '',
         'Sure — here you go: 😀', '  spaced answer  ', '答：因为瑞利散射。', "Here's code:\n```c\nint x;\n```"]
    THINK = ['<think>\nLet me think.\n</think>\n\nThe answer is 4.', '<think>a</think>b</think>c',
             'no think here', '</think>only closing', '<think>\n\n</think>\n\nHi!']
    SYS = ['You are a helpful assistant.', 'Answer briefly.', '你是一个有帮助的助手。', '']
    calls1 = [tc('get_weather', '{"location": "Paris", "unit": "celsius"}')]
    calls2 = [tc('get_weather', '{"location": "Paris"}'), tc('get_time', '{"tz": "Europe/Paris"}')]
    calls3 = [tc('search', '{"q": "中文 query"}'), tc('calc', '{"expr": "2*3"}'), tc('noop', '{}')]
    convs = []
    convs.append([{'role': 'user', 'content': 'Hello!'}])
    convs.append([{'role': 'system', 'content': SYS[0]}, {'role': 'user', 'content': 'Hi'}])
    convs.append([{'role': 'system', 'content': SYS[0]}, {'role': 'system', 'content': SYS[1]},
                  {'role': 'user', 'content': 'Two systems'}])
    convs.append([{'role': 'user', 'content': 'q1'}, {'role': 'assistant', 'content': 'a1'},
                  {'role': 'user', 'content': 'q2'}])
    convs.append([{'role': 'user', 'content': 'q1'}, {'role': 'assistant', 'content': 'a1'}])
    convs.append([{'role': 'user', 'content': 'Weather?'}, {'role': 'assistant', 'content': None, 'tool_calls': calls1},
                  {'role': 'tool', 'content': '{"temp": 21}'}])
    convs.append([{'role': 'user', 'content': 'Weather?'}, {'role': 'assistant', 'content': None, 'tool_calls': calls2},
                  {'role': 'tool', 'content': '{"temp": 21}'}, {'role': 'tool', 'content': '12:00'},
                  {'role': 'assistant', 'content': 'It is 21°C at noon.'}, {'role': 'user', 'content': 'Thanks'}])
    convs.append([{'role': 'system', 'content': SYS[2]}, {'role': 'user', 'content': '搜索'},
                  {'role': 'assistant', 'content': None, 'tool_calls': calls3},
                  {'role': 'tool', 'content': 'r1'}, {'role': 'tool', 'content': 'r2'}, {'role': 'tool', 'content': 'r3'},
                  {'role': 'assistant', 'content': 'done'}, {'role': 'user', 'content': 'again'},
                  {'role': 'assistant', 'content': None, 'tool_calls': calls1}, {'role': 'tool', 'content': 'r4'}])
    convs.append([{'role': 'user', 'content': 'q'}, {'role': 'assistant', 'content': THINK[0]},
                  {'role': 'user', 'content': 'q2'}])
    convs.append([{'role': 'user', 'content': 'q'}, {'role': 'assistant', 'content': THINK[1]},
                  {'role': 'user', 'content': 'q2'}, {'role': 'assistant', 'content': THINK[3]},
                  {'role': 'user', 'content': 'q3'}])
    convs.append([{'role': 'user', 'content': 'prefix test'},
                  {'role': 'assistant', 'content': 'Partial answer', 'prefix': True}])
    for _ in range(40):
        msgs = []
        if rng.random() < 0.5:
            msgs.append({'role': 'system', 'content': rng.choice(SYS)})
        for turn in range(rng.randint(1, 4)):
            msgs.append({'role': 'user', 'content': rng.choice(U)})
            if turn + 1 < 4 and rng.random() < 0.8:
                if rng.random() < 0.25:
                    msgs.append({'role': 'assistant', 'content': None,
                                 'tool_calls': rng.choice([calls1, calls2, calls3])})
                    for _ in range(rng.randint(1, 3)):
                        msgs.append({'role': 'tool', 'content': rng.choice(A)})
                    if rng.random() < 0.6:
                        msgs.append({'role': 'assistant', 'content': rng.choice(A)})
                else:
                    msgs.append({'role': 'assistant', 'content': rng.choice(A + THINK)})
        if rng.random() < 0.5 and msgs[-1]['role'] == 'assistant':
            msgs.pop()
        convs.append(msgs)
    return convs


def has_added_text(fmt, msgs, added):
    """Whether message text, as the template will use it, contains an added-token string."""
    for m in msgs:
        c = m.get('content') or ''
        if m['role'] == 'assistant' and not m.get('tool_calls') and '</think>' in c:
            if fmt == 'r1':
                c = c.split('</think>')[-1]
            elif fmt == 'v31':
                c = c.split('</think>', 1)[1]
        texts = [c] + [x['function']['name'] + x['function']['arguments'] for x in m.get('tool_calls') or []]
        if any(a in t for a in added for t in texts):
            return True
    return False


def chat_cases(v3_json, v3_cfg):
    import transformers
    from transformers import PreTrainedTokenizerFast
    rng = random.Random(7)
    convs = conversations(rng)
    formats = [('v3', v3_cfg['chat_template'], v3_json), ('r1', R1_TEMPLATE, think_tokenizer_json(v3_json)),
               ('v31', V31_TEMPLATE, think_tokenizer_json(v3_json)), ('v2', V2_TEMPLATE, v3_json)]
    import jinja2
    from jinja2.sandbox import ImmutableSandboxedEnvironment
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
    cases = []
    n_checked = 0
    for fmt, tmpl, tj in formats:
        raw = Tokenizer.from_str(json.dumps(tj))
        hf = PreTrainedTokenizerFast(tokenizer_object=raw, bos_token='<｜begin▁of▁sentence｜>',
                                     eos_token='<｜end▁of▁sentence｜>')
        hf.chat_template = tmpl
        added = [t['content'] for t in tj['added_tokens']]
        for ci, msgs in enumerate(convs):
            if has_added_text(fmt, msgs, added):
                continue  # HF would parse that text as markers; we keep message text literal (tested in C)
            if fmt in ('v3', 'v2') and any(m.get('prefix') for m in msgs):
                continue
            if fmt == 'v2' and any(m['role'] == 'tool' or m.get('tool_calls') for m in msgs):
                continue
            for gen in (True, False):
                for thinking in ((False, True) if fmt == 'v31' else (False,)):
                    kw = {'thinking': thinking} if fmt == 'v31' else {}
                    # the official template, rendered as transformers does (sandboxed jinja2,
                    # trim_blocks, lstrip_blocks), then tokenized with special-token parsing on
                    text = env.from_string(tmpl).render(messages=msgs, add_generation_prompt=gen,
                                                        bos_token='<｜begin▁of▁sentence｜>',
                                                        eos_token='<｜end▁of▁sentence｜>', **kw)
                    ids = raw.encode(text, add_special_tokens=False).ids
                    try:  # and cross-checked with transformers where it can render the conversation
                        hf_ids = hf.apply_chat_template(msgs, tokenize=True, add_generation_prompt=gen, **kw)
                        if isinstance(hf_ids, dict) or hasattr(hf_ids, 'keys'):
                            hf_ids = hf_ids['input_ids']
                        assert list(hf_ids) == ids, (fmt, ci)
                        n_checked += 1
                    except jinja2.exceptions.UndefinedError:
                        pass  # transformers 5 drops content=None from tool-call messages
                    cases.append({'format': fmt, 'add_generation_prompt': gen, 'thinking': thinking,
                                  'messages': msgs, 'text': text, 'ids': ids})
    print('chat: %d of %d cases cross-checked with transformers apply_chat_template' % (n_checked, len(cases)))
    return cases, transformers.__version__


# ------------------------------------------------------------------ main

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--shared', default='../shared')
    args = ap.parse_args()
    import tokenizers
    os.makedirs(OUT, exist_ok=True)
    tok_dir = os.path.join(args.shared, 'tokenizers/deepseek-v3')
    v3_path = os.path.join(tok_dir, 'tokenizer.json')
    v3_json = json.load(open(v3_path, encoding='utf-8'))
    v3_cfg = json.load(open(os.path.join(tok_dir, 'tokenizer_config.json'), encoding='utf-8'))
    tk = Tokenizer.from_file(v3_path)

    docs = build_corpus()
    write_corpus(os.path.join(OUT, 'corpus.bin'), docs)
    ids = [(i, tk.encode(d).ids) for i, d in enumerate(docs)]
    for (i, x), d in zip(ids, docs):  # decode(encode(x)) == x on this corpus
        assert tk.decode(x, skip_special_tokens=False) == d, i
    write_ids(os.path.join(OUT, 'ds3_ids.bin'), ids)
    lit = [(i, literal_ids(tk, d)) for i, d in enumerate(docs) if any(s in d for s in SPECIALS + ['<think>'])]
    write_ids(os.path.join(OUT, 'ds3_literal_ids.bin'), lit)
    print('corpus: %d docs, %d bytes, %d ids; %d literal docs' % (
        len(docs), sum(len(d.encode()) for d in docs), sum(len(x) for _, x in ids), len(lit)))

    rng = random.Random(99)
    train_texts = [d for d in docs if len(d) < 20000][:400]
    sdocs = small_docs(docs, rng)
    sidx = {}
    for name, regex_split, vs in (('gpt2', False, 2000), ('llama3', True, 3000)):
        small = train_small(train_texts, regex_split, vs)
        d = json.loads(small.to_str())
        if name == 'gpt2':  # legacy "a b" merges
            d['model']['merges'] = [' '.join(m) if isinstance(m, list) else m for m in d['model']['merges']]
        os.makedirs(os.path.join(OUT, name), exist_ok=True)
        p = os.path.join(OUT, name, 'tokenizer.json')
        json.dump(d, open(p, 'w', encoding='utf-8'), ensure_ascii=False)
        small = Tokenizer.from_file(p)
        write_ids(os.path.join(OUT, name + '_ids.bin'), [(i, small.encode(s).ids) for i, s in enumerate(sdocs)])
        sidx[name] = small
    write_corpus(os.path.join(OUT, 'small_corpus.bin'), sdocs)

    # pre_tokenizer variants on the gpt2 model
    base = json.load(open(os.path.join(OUT, 'gpt2', 'tokenizer.json'), encoding='utf-8'))
    variants = []
    bl = {'type': 'ByteLevel', 'add_prefix_space': False, 'trim_offsets': True, 'use_regex': False}
    specs = [
        [{'type': 'Split', 'pattern': {'String': ' '}, 'behavior': b, 'invert': False}, bl]
        for b in ('Removed', 'Isolated', 'MergedWithPrevious', 'MergedWithNext', 'Contiguous')
    ] + [
        [{'type': 'Split', 'pattern': {'Regex': r'\d+|\s+'}, 'behavior': b, 'invert': inv}, bl]
        for b in ('Removed', 'MergedWithPrevious', 'MergedWithNext', 'Contiguous') for inv in (False, True)
    ] + [
        [{'type': 'Split', 'pattern': {'Regex': r'\s'}, 'behavior': 'Contiguous', 'invert': False},
         {'type': 'Split', 'pattern': {'Regex': r'\w+|[^\w\s]+'}, 'behavior': 'Isolated', 'invert': False},
         dict(bl, add_prefix_space=True)],
        [{'type': 'Split', 'pattern': {'Regex': r'x*'}, 'behavior': 'Isolated', 'invert': False}, bl],
        [{'type': 'Split', 'pattern': {'Regex': r'(?<=a)b|\bc|^d|e$|\h+|\p{Lu}\p{Ll}*|\P{L}'}, 'behavior': 'Isolated',
          'invert': False}, bl],
        [{'type': 'Split', 'pattern': {'String': '.*+?'}, 'behavior': 'Isolated', 'invert': False}, bl],
        [bl],
    ]
    vtexts = sdocs[:16] + ['aab c d e\nd e f ABC Ab x.*+?y  .*+?', 'xx yxxz', '1 22 333  4444\t\t55555']
    for spec in specs:
        d = copy.deepcopy(base)
        d['pre_tokenizer'] = {'type': 'Sequence', 'pretokenizers': spec}
        d['added_tokens'] = []
        t = Tokenizer.from_str(json.dumps(d))
        variants.append({'pre_tokenizer': d['pre_tokenizer'], 'ids': [t.encode(x).ids for x in vtexts]})
    json.dump({'texts': vtexts, 'variants': variants}, open(os.path.join(OUT, 'variants.json'), 'w', encoding='utf-8'),
              ensure_ascii=False)

    cases, tf_version = chat_cases(v3_json, v3_cfg)
    json.dump({'generator': 'tools/gen_tokenizer_fixtures.py', 'tokenizers': tokenizers.__version__,
               'transformers': tf_version, 'cases': cases},
              open(os.path.join(OUT, 'chat_cases.json'), 'w', encoding='utf-8'), ensure_ascii=False, indent=0)
    for name, tmpl in (('r1', R1_TEMPLATE), ('v31', V31_TEMPLATE), ('v2', V2_TEMPLATE)):
        os.makedirs(os.path.join(OUT, name), exist_ok=True)
        cfg = {'add_bos_token': True, 'add_eos_token': False,
               'bos_token': {'__type': 'AddedToken', 'content': '<｜begin▁of▁sentence｜>', 'lstrip': False,
                             'normalized': True, 'rstrip': False, 'single_word': False},
               'eos_token': {'__type': 'AddedToken', 'content': '<｜end▁of▁sentence｜>', 'lstrip': False,
                             'normalized': True, 'rstrip': False, 'single_word': False},
               'tokenizer_class': 'LlamaTokenizerFast', 'chat_template': tmpl}
        json.dump(cfg, open(os.path.join(OUT, name, 'tokenizer_config.json'), 'w', encoding='utf-8'),
                  ensure_ascii=False, indent=2)
    print('chat: %d cases' % len(cases))
    with open(os.path.join(OUT, 'README'), 'w') as f:
        f.write('Generated by tools/gen_tokenizer_fixtures.py (tokenizers %s, transformers %s); see its header '
                'for the formats. Do not edit by hand.\n' % (tokenizers.__version__, tf_version))


if __name__ == '__main__':
    main()
