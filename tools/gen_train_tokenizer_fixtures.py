#!/usr/bin/env python3
"""
gen_train_tokenizer_fixtures.py - regenerates tests/fixtures/train_tokenizer/*
for tests/test_train_tokenizer.c, and compares our trainer with Hugging Face's
BpeTrainer (PyPI `tokenizers`).

usage: python3 tools/gen_train_tokenizer_fixtures.py [--shared ../shared] [--bin ./deepseek]
       (from the repository root, after `make`)

Steps:
  1. writes mixed.txt: ~30 KB of deterministic mixed-language text (English,
     Chinese, Japanese, Korean, Russian, Greek, Arabic, Hindi, code, numbers,
     emoji, CRLF lines)
  2. trains with OUR binary:
       deepseek train-tokenizer --vocab-size 2048 --special '<|extra|>' -q
           -o tests/fixtures/train_tokenizer/tok SHARED/data/tinyshakespeare.txt mixed.txt
     (tok/tokenizer.json + tok/tokenizer_config.json; the C test re-trains and
     requires byte-identical files)
  3. cases.json: varied test documents (scripts, code, digits, emoji, rare and
     astral code points, whitespace runs, CRLF, special-token strings and near
     misses) and the ids HF's Tokenizer.from_file(tok/tokenizer.json).encode(doc)
     gives; the C test requires our encoder to give the same ids
  4. hf_model.json: model.vocab and model.merges of HF's BpeTrainer trained
     with the same settings on the same documents (train_from_iterator, one
     document per file); the C test requires ours to be identical
  5. reports (stdout): identity with HF's trainer also for --per-line vs
     Tokenizer.train(files) and for the GPT-2 pre-tokenizer, and the
     compression (tokens per byte) and training time of ours vs HF's trainer.
"""
import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time

from tokenizers import AddedToken, Tokenizer, models, normalizers, pre_tokenizers, trainers

OUT = 'tests/fixtures/train_tokenizer'
VOCAB = 2048
EXTRA = '<|extra|>'

SENTENCES = [
    "The quick brown fox jumps over the lazy dog; it wasn't the fox's fault.",
    "DeepSeek-V3 is a Mixture-of-Experts language model with 671B parameters, 37B active per token.",
    "Multi-head Latent Attention compresses the key-value cache into a small latent vector.",
    "Prices rose 3.5% in Q3 2024 to $1,234.56 per unit (analysts expected ~2.1%).",
    "深度求索是一家专注于人工智能基础技术研究的公司。",
    "今天天气很好，我们去公园散步吧！你觉得怎么样？",
    "机器学习是人工智能的一个分支，它使计算机能够从数据中学习。",
    "こんにちは、世界！今日はいい天気ですね。東京タワーに行きましょう。",
    "日本語の文章には、ひらがな、カタカナ、漢字が混在しています。",
    "안녕하세요, 세계! 오늘 날씨가 정말 좋네요. 한국어는 한글로 씁니다.",
    "Съешь же ещё этих мягких французских булок, да выпей чаю.",
    "Παρακαλώ, μιλάτε αγγλικά; Ναι, λίγο.",
    "مرحبا بالعالم! هذا نص عربي للاختبار.",
    "नमस्ते दुनिया, यह हिंदी में लिखा गया वाक्य है।",
    "Résumé, naïve, café, façade, jalapeño, Zürich, Ångström, Straße.",
    "def add(a, b):\n    return a + b\n",
    "for (int i = 0; i < n; i++) { sum += x[i] * w[i]; }",
    '{"name": "deepseek", "layers": 61, "experts": 256, "top_k": 8}',
    "E-mail someone@example.com or visit https://www.example.org/path?q=1&lang=en",
    "1234567890 3.14159 2.71828 1e-9 0xDEADBEEF 2025-01-31 12:34:56",
    "Emoji: 😀 👍🏽 🚀 🤖 ❤️ 👨‍👩‍👧‍👦 🇯🇵",
]


def mixed_text(rng):
    """~30 KB: shuffled sentences, some CRLF lines, some doubled spaces."""
    out = []
    while sum(len(s.encode()) for s in out) < 30000:
        s = rng.choice(SENTENCES)
        if rng.random() < 0.1:
            s = s.upper()
        out.append(s)
        out.append(rng.choice(['\n', '\n', ' ', '\r\n', '\n\n', '  ']))
    return ''.join(out)


def rand_codepoint(rng):
    while True:
        plane = rng.choice([0, 0, 0, 1, 2, 14])
        c = rng.randint(plane * 0x10000, plane * 0x10000 + 0xFFFF)
        if not 0xD800 <= c <= 0xDFFF:
            return chr(c)


def test_docs(rng, shakespeare):
    docs = []
    # unseen Shakespeare-like text and plain English
    for _ in range(20):
        i = rng.randint(0, len(shakespeare) - 2000)
        docs.append(shakespeare[i:i + rng.randint(50, 2000)])
    docs += SENTENCES
    # mixtures across scripts and separators
    for _ in range(30):
        docs.append(''.join(rng.choice(SENTENCES) + rng.choice([' ', '\n', '', '\r\n', '\t', '  \n'])
                            for _ in range(rng.randint(2, 8))))
    # digits of every length (the \p{N}{1,3} split), numbers in scripts
    docs.append(' '.join(str(rng.getrandbits(rng.randint(1, 120))) for _ in range(60)))
    docs.append('١٢٣٤٥ ０１２３４ ⅫⅣ ½ ² 3.0e+10 -42 +7 1,000,000')
    # whitespace runs
    ws = [' ', '  ', '    ', '\t', '\n', '\n\n', '\r\n', ' \n', '\u00a0', '\u3000', '\u2028', '\u0085', '\x0b']
    docs.append(''.join(rng.choice(ws) * rng.randint(1, 6) + rng.choice(['word', 'x', '1', '!', '中', 'é', ''])
                        for _ in range(200)))
    # rare and astral code points, combining marks
    docs.append(''.join(rand_codepoint(rng) + rng.choice(['', ' ', 'a', '\n']) for _ in range(400)))
    docs.append('e\u0301 a\u0308 n\u0303 \u0915\u094d\u0937 Z\u0351\u0364\u0363 ' * 5)
    # long runs
    docs.append('a' * 3000)
    docs.append('!' * 500 + '?' * 20 + ' ' + '-' * 300 + '\n' + '=' * 300)
    docs.append(''.join(chr(rng.randint(0x4E00, 0x9FA5)) for _ in range(1500)))
    # special tokens (default and --special), near misses
    sp = ['<｜begin▁of▁sentence｜>', '<｜end▁of▁sentence｜>', '<｜User｜>', '<｜Assistant｜>', '<think>', '</think>',
          '<｜tool▁calls▁begin｜>', '<｜tool▁call▁begin｜>', '<｜tool▁sep｜>', '<｜tool▁call▁end｜>',
          '<｜tool▁calls▁end｜>', '<｜tool▁outputs▁begin｜>', '<｜tool▁output▁begin｜>', '<｜tool▁output▁end｜>',
          '<｜tool▁outputs▁end｜>', EXTRA]
    near = ['<｜User', '｜User｜>', '<|User|>', '<think', 'think>', '<|extra', '<<｜User｜>>', '<｜end of sentence｜>']
    for _ in range(10):
        docs.append(''.join(rng.choice([rng.choice(sp), rng.choice(near), rng.choice(SENTENCES)[:30], ' ', '\n'])
                            for _ in range(rng.randint(5, 30))))
    docs.append('<｜begin▁of▁sentence｜>You are helpful.<｜User｜>Hi!<｜Assistant｜><think>\nhmm\n</think>\n\nHello.'
                '<｜end▁of▁sentence｜>')
    docs.append('')
    return docs


def hf_trainer_model(pre_json, specials, files, vocab, per_line):
    """HF BpeTrainer with the same settings; returns (tokenizer, seconds)."""
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.Sequence([])
    tok.pre_tokenizer = Tokenizer.from_str(json.dumps({
        'version': '1.0', 'truncation': None, 'padding': None, 'added_tokens': [], 'normalizer': None,
        'pre_tokenizer': pre_json, 'post_processor': None, 'decoder': None,
        'model': {'type': 'BPE', 'vocab': {}, 'merges': []}})).pre_tokenizer
    tr = trainers.BpeTrainer(vocab_size=vocab, special_tokens=[AddedToken(s, special=True) for s in specials],
                             initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    t0 = time.time()
    if per_line:
        tok.train(files, tr)  # HF reads the files line by line
    else:
        docs = [open(f, encoding='utf-8', newline='').read() for f in files]
        tok.train_from_iterator(docs, tr)
    return tok, time.time() - t0


def merges_of(model):
    return [' '.join(m) if isinstance(m, list) else m for m in model['merges']]


def same_model(ours, hf):
    return ours['model']['vocab'] == hf['model']['vocab'] and merges_of(ours['model']) == merges_of(hf['model'])


def run_ours(binary, args):
    t0 = time.time()
    r = subprocess.run([binary, 'train-tokenizer', '-q'] + args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                       text=True)
    if r.returncode:
        sys.exit('train-tokenizer failed: ' + r.stderr)
    return time.time() - t0


def tokens_per_byte(tok, docs):
    n_bytes = sum(len(d.encode()) for d in docs)
    n_tok = sum(len(tok.encode(d, add_special_tokens=False).ids) for d in docs)
    return n_tok / n_bytes


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--shared', default='../shared')
    ap.add_argument('--bin', default='./deepseek')
    a = ap.parse_args()
    shakespeare_path = os.path.join(a.shared, 'data', 'tinyshakespeare.txt')
    shakespeare = open(shakespeare_path, encoding='utf-8', newline='').read()
    os.makedirs(OUT + '/tok', exist_ok=True)
    rng = random.Random(20250131)

    mixed_path = OUT + '/mixed.txt'
    with open(mixed_path, 'w', encoding='utf-8', newline='') as f:
        f.write(mixed_text(rng))
    files = [shakespeare_path, mixed_path]

    # 2. ours
    secs_ours = run_ours(a.bin, ['--vocab-size', str(VOCAB), '--special', EXTRA, '-o', OUT + '/tok'] + files)
    ours_json = json.load(open(OUT + '/tok/tokenizer.json', encoding='utf-8'))
    specials = [t['content'] for t in ours_json['added_tokens']]

    # 3. HF encodes the test documents with our file
    hf_ours = Tokenizer.from_file(OUT + '/tok/tokenizer.json')
    docs = test_docs(rng, shakespeare)
    cases = [{'text': d, 'ids': hf_ours.encode(d).ids} for d in docs]
    for c in cases:  # sanity: HF round-trips them too
        assert hf_ours.decode(c['ids'], skip_special_tokens=False) == c['text'], c['text'][:80]
    with open(OUT + '/cases.json', 'w', encoding='utf-8') as f:
        json.dump({'tokenizer': 'tok/tokenizer.json', 'cases': cases}, f, ensure_ascii=False, separators=(',', ':'))

    # 4. HF's trainer, same settings
    hf_tok, secs_hf = hf_trainer_model(ours_json['pre_tokenizer'], specials, files, VOCAB, per_line=False)
    hf_json = json.loads(hf_tok.to_str())
    with open(OUT + '/hf_model.json', 'w', encoding='utf-8') as f:
        json.dump({'vocab': hf_json['model']['vocab'], 'merges': merges_of(hf_json['model'])}, f,
                  ensure_ascii=False, separators=(',', ':'))
    print('fixture: vocab %d, merges identical to HF BpeTrainer (train_from_iterator): %s'
          % (VOCAB, same_model(ours_json, hf_json)))
    print('fixture: %d test documents, %d ids; ours %.2f s (CLI, incl. load-back check), HF trainer %.2f s'
          % (len(cases), sum(len(c['ids']) for c in cases), secs_ours, secs_hf))

    # 5. more comparisons (not stored)
    held_out = [c['text'] for c in cases]
    train_text = [shakespeare, open(mixed_path, encoding='utf-8', newline='').read()]
    with tempfile.TemporaryDirectory() as tmp:
        rows = []
        for vocab in (2048, 4096, 32000):
            for pre in ('deepseek-v3', 'gpt2'):
                for per_line in (False, True):
                    out = os.path.join(tmp, 'o.json')
                    args = ['--vocab-size', str(vocab), '--pre-tokenizer', pre, '--special', EXTRA, '-o', out] + files
                    if per_line:
                        args.insert(0, '--per-line')
                    s_ours = run_ours(a.bin, args)
                    oj = json.load(open(out, encoding='utf-8'))
                    ht, s_hf = hf_trainer_model(oj['pre_tokenizer'], specials, files, vocab, per_line)
                    same = same_model(oj, json.loads(ht.to_str()))
                    ot = Tokenizer.from_file(out)
                    rows.append((vocab, len(oj['model']['vocab']), pre, 'per-line' if per_line else 'whole', same,
                                 s_ours, s_hf,
                                 tokens_per_byte(ot, train_text), tokens_per_byte(ht, train_text),
                                 tokens_per_byte(ot, held_out), tokens_per_byte(ht, held_out)))
        print('\n(vocab: asked, got - the corpus runs out of pairs before 32000)')
        print('%-6s %-6s %-11s %-8s %-9s %8s %8s  %-17s %-17s' % ('vocab', 'got', 'pre-tok', 'mode', 'same-as-HF',
                                                                'ours s', 'HF s', 'tok/byte train', 'tok/byte held-out'))
        print('%-6s %-6s %-11s %-8s %-9s %8s %8s  %-8s %-8s %-8s %-8s' % (('',) * 7 + ('ours', 'HF', 'ours', 'HF')))
        for r in rows:
            print('%-6d %-6d %-11s %-8s %-9s %8.2f %8.2f  %.4f   %.4f   %.4f   %.4f' % r)
        # HF's usual recipe is Tokenizer.train(files), i.e. per line: our default (whole files) vs that
        for vocab in (2048, 4096, 32000):
            w = [r for r in rows if r[0] == vocab and r[2] == 'deepseek-v3' and r[3] == 'whole'][0]
            l = [r for r in rows if r[0] == vocab and r[2] == 'deepseek-v3' and r[3] == 'per-line'][0]
            print('vocab %d deepseek-v3: ours (whole files) %.4f tok/byte on the training text vs HF '
                  'Tokenizer.train(files) %.4f (%.1f%% fewer tokens)' % (vocab, w[7], l[8], 100 * (1 - w[7] / l[8])))


if __name__ == '__main__':
    sys.exit(main())
