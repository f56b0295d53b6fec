#!/usr/bin/env python3
"""
bench_tokenizer.py - encode speed of `deepseek tokenize` vs Hugging Face
`tokenizers` (single-threaded: RAYON_NUM_THREADS=1, TOKENIZERS_PARALLELISM=false)
on the same text, plus the worst cases (1 MB without spaces, 1 MB of one
character, ...). Run by hand; not part of the tests.

usage: python3 tools/bench_tokenizer.py [--bin ./deepseek] [--model DIR] [--mb 4] [--sweep]

--sweep also checks that every Unicode code point (U+0000..U+10FFFF minus
surrogates), alone in a run, space-separated and between random neighbours,
gets the same ids as HF (about two minutes).

The text is the committed test corpus (tests/fixtures/tokenizer/corpus.bin:
English, code, CJK, numbers, emoji, whitespace, random Unicode) repeated to
--mb megabytes. Both sides encode it as one string with special-token
parsing on, and the ids are checked to be identical. Times exclude loading.
"""
import argparse
import os
import random
import re
import struct
import subprocess
import sys
import tempfile
import time

os.environ['RAYON_NUM_THREADS'] = '1'
os.environ['TOKENIZERS_PARALLELISM'] = 'false'
from tokenizers import Tokenizer  # noqa: E402  (after the env vars)


def corpus_text(path):
    b = open(path, 'rb').read()
    assert b[:8] == b'DSTKCORP'
    n = struct.unpack_from('<I', b, 12)[0]
    p, docs = 16, []
    for _ in range(n):
        ln = struct.unpack_from('<I', b, p)[0]
        docs.append(b[p + 4:p + 4 + ln].decode('utf-8'))
        p += 4 + ln
    return '\n'.join(docs)


def ours(binary, model, text):
    with tempfile.NamedTemporaryFile('wb', suffix='.txt', delete=False) as f:
        f.write(text.encode('utf-8'))
        path = f.name
    try:
        r = subprocess.run([binary, 'tokenize', '-m', model, '--file', path, '--stats'],
                           capture_output=True, text=True, check=True)
    finally:
        os.unlink(path)
    m = re.search(r'encode (\d+) bytes -> (\d+) tokens in ([0-9.]+) s', r.stderr)
    ids = [int(x) for x in r.stdout.strip()[1:-1].split(',') if x]
    return float(m.group(3)), ids


def hf(tk, text):
    t0 = time.perf_counter()
    ids = tk.encode(text).ids
    return time.perf_counter() - t0, ids


def row(name, nbytes, t_ours, t_hf, ntok):
    print('%-22s %8.2f MB  ours %7.3f s %7.2f MB/s %9.0f tok/s | HF %7.3f s %7.2f MB/s %9.0f tok/s | %5.2fx' % (
        name, nbytes / 1e6, t_ours, nbytes / 1e6 / t_ours, ntok / t_ours, t_hf, nbytes / 1e6 / t_hf, ntok / t_hf,
        t_hf / t_ours))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--bin', default='./deepseek')
    ap.add_argument('--model', default='../shared/tokenizers/deepseek-v3')
    ap.add_argument('--mb', type=float, default=4)
    ap.add_argument('--sweep', action='store_true')
    args = ap.parse_args()
    tk = Tokenizer.from_file(os.path.join(args.model, 'tokenizer.json'))
    base = corpus_text('tests/fixtures/tokenizer/corpus.bin')
    text = base
    while len(text.encode()) < args.mb * 1e6:
        text += '\n' + base
    rng = random.Random(1)
    cases = [('corpus x%d' % round(len(text) / len(base)), text),
             ('corpus once', base),
             ("'a' x 1M", 'a' * (1 << 20)),
             ('random letters 1M', ''.join(rng.choice('abcdefghijklmnopqrstuvwxyz') for _ in range(1 << 20))),
             ('digits 1M', ''.join(rng.choice('0123456789') for _ in range(1 << 20))),
             ('spaces 1M', ' ' * (1 << 20)),
             ('CJK 1M', ''.join(chr(rng.randint(0x4E00, 0x9FA5)) for _ in range(350000)))]
    print('single thread; %s' % os.uname().machine)
    for name, t in cases:
        t_o, ids_o = ours(args.bin, args.model, t)
        t_h, ids_h = hf(tk, t)
        if ids_o != ids_h:
            print('MISMATCH on %s' % name)
            sys.exit(1)
        row(name, len(t.encode()), t_o, t_h, len(ids_h))
    if args.sweep:
        cps = [c for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF]
        texts = {'run': ''.join(map(chr, cps)), 'spaced': ' '.join(map(chr, cps)),
                 'neighbours': ''.join(chr(c) + rng.choice(['a', ' ', '1', '!', '\n', '中', ' x', '']) for c in cps)}
        for name, t in texts.items():
            for i in range(0, len(t), 200000):
                if ours(args.bin, args.model, t[i:i + 200000])[1] != tk.encode(t[i:i + 200000]).ids:
                    print('sweep MISMATCH: %s chunk at char %d' % (name, i))
                    sys.exit(1)
        print('sweep: all %d code points identical to HF in 3 contexts' % len(cps))


if __name__ == '__main__':
    main()
