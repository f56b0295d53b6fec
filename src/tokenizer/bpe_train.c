/*
 * bpe_train.c - byte-level BPE training (API and guarantees in bpe_train.h):
 * piece counting over our pre-tokenizer, Hugging Face BpeTrainer-exact merges
 * with incremental pair counts, and the tokenizer.json /
 * tokenizer_config.json writers.
 *
 * Data (ids are uint32):
 *   words   distinct pieces with counts: bytes while counting, then symbol
 *           arrays that merges rewrite in place
 *   toks    id -> string as written in tokenizer.json (ByteLevel chars, or a
 *           special token's content) and string -> id
 *   pairs   (a, b) -> pair id, with a count per pair. As in HF, the count of
 *           a pair is never reset when it is merged (it no longer has a heap
 *           entry, so it does not matter) and negative changes are applied
 *           to whatever pair they name.
 *   heap    entries (count, a, b, words to visit). An entry whose count no
 *           longer matches its pair's count is re-pushed with the current
 *           count (counts of existing pairs only go down); an entry is pushed
 *           whenever a merge creates new occurrences of a pair, listing the
 *           words where it did (HF's where_to_update).
 * Cost per merge: the words in the popped entry's list, each rewritten in
 * O(length) - never a recount of the corpus.
 * Does not own: the pre-tokenizer (pretok.c, reached through tok_ctx.on_piece),
 * loading/encoding (tokenizer.c, bpe.c).
 */
#include "bpe_train.h"
#include "../core/strbuf.h"
#include "tok_internal.h"
#include "../core/thread.h"
#include "../io/json.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ----------------------------------------------------------- constants */

/* DeepSeek-V3's pre-tokenizer (tokenizer.json), Split behaviour Isolated. */
static const char *const k_v3_regex[3] = {
    "\\p{N}{1,3}",
    "[一-龥぀-ゟ゠-ヿ]+",
    ("[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+| ?["
     "\\p{P}\\p{S}]+[\r\n]*|\\s*[\r\n]+|\\s+(?!\\S)|\\s+"),
};

/* DeepSeek-V3's chat_template (tokenizer_config.json), verbatim. */
static const char k_v3_chat_template[] =
    "{% if not add_generation_prompt is defined %}{% set add_generation_prompt = false %}{% endif %}{% se"
    "t ns = namespace(is_first=false, is_tool=false, is_output_first=true, system_prompt='', is_first_sp="
    "true) %}{%- for message in messages %}{%- if message['role'] == 'system' %}{%- if ns.is_first_sp %}{"
    "% set ns.system_prompt = ns.system_prompt + message['content'] %}{% set ns.is_first_sp = false %}{%-"
    " else %}{% set ns.system_prompt = ns.system_prompt + '\n\n' + message['content'] %}{%- endif %}{%- e"
    "ndif %}{%- endfor %}{{bos_token}}{{ns.system_prompt}}{%- for message in messages %}{%- if message['r"
    "ole'] == 'user' %}{%- set ns.is_tool = false -%}{{'<｜User｜>' + message['content']}}{%- endif %}{%- i"
    "f message['role'] == 'assistant' and message['content'] is none %}{%- set ns.is_tool = false -%}{%- "
    "for tool in message['tool_calls']%}{%- if not ns.is_first %}{{'<｜Assistant｜><｜tool▁calls▁begin｜><｜to"
    "ol▁call▁begin｜>' + tool['type'] + '<｜tool▁sep｜>' + tool['function']['name'] + '\n' + '```json' + '\n"
    "' + tool['function']['arguments'] + '\n' + '```' + '<｜tool▁call▁end｜>'}}{%- set ns.is_first = true -"
    "%}{%- else %}{{'\n' + '<｜tool▁call▁begin｜>' + tool['type'] + '<｜tool▁sep｜>' + tool['function']['name"
    "'] + '\n' + '```json' + '\n' + tool['function']['arguments'] + '\n' + '```' + '<｜tool▁call▁end｜>'}}{"
    "{'<｜tool▁calls▁end｜><｜end▁of▁sentence｜>'}}{%- endif %}{%- endfor %}{%- endif %}{%- if message['role'"
    "] == 'assistant' and message['content'] is not none %}{%- if ns.is_tool %}{{'<｜tool▁outputs▁end｜>' +"
    " message['content'] + '<｜end▁of▁sentence｜>'}}{%- set ns.is_tool = false -%}{%- else %}{{'<｜Assistant"
    "｜>' + message['content'] + '<｜end▁of▁sentence｜>'}}{%- endif %}{%- endif %}{%- if message['role'] == "
    "'tool' %}{%- set ns.is_tool = true -%}{%- if ns.is_output_first %}{{'<｜tool▁outputs▁begin｜><｜tool▁ou"
    "tput▁begin｜>' + message['content'] + '<｜tool▁output▁end｜>'}}{%- set ns.is_output_first = false %}{%-"
    " else %}{{'\n<｜tool▁output▁begin｜>' + message['content'] + '<｜tool▁output▁end｜>'}}{%- endif %}{%- en"
    "dif %}{%- endfor -%}{% if ns.is_tool %}{{'<｜tool▁outputs▁end｜>'}}{% endif %}{% if add_generation_pro"
    "mpt and not ns.is_tool %}{{'<｜Assistant｜>'}}{% endif %}";

static const bpe_special k_default_specials[] = {
    { "<｜begin▁of▁sentence｜>", true, false },
    { "<｜end▁of▁sentence｜>", true, false },
    { "<｜User｜>", false, true },
    { "<｜Assistant｜>", false, true },
    { "<think>", false, true },
    { "</think>", false, true },
    { "<｜tool▁calls▁begin｜>", false, true },
    { "<｜tool▁calls▁end｜>", false, true },
    { "<｜tool▁call▁begin｜>", false, true },
    { "<｜tool▁call▁end｜>", false, true },
    { "<｜tool▁outputs▁begin｜>", false, true },
    { "<｜tool▁outputs▁end｜>", false, true },
    { "<｜tool▁output▁begin｜>", false, true },
    { "<｜tool▁output▁end｜>", false, true },
    { "<｜tool▁sep｜>", false, true },
};

#define CHUNK_BYTES ((size_t)1 << 20) /* default: documents are pre-tokenized in chunks of ~1 MiB */
#define MAX_SPECIAL_BYTES 1024

const bpe_special *bpe_default_specials(int *n) {
    *n = (int)(sizeof k_default_specials / sizeof k_default_specials[0]);
    return k_default_specials;
}

const char *bpe_v3_chat_template(void) { return k_v3_chat_template; }

/* ------------------------------------------------------------ JSON text */

/* JSON string contents (input: valid UTF-8), escaped as serde_json does. */
static void jb_esc(ds_buf *b, const char *s, size_t n) {
    size_t run = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        const char *esc = NULL;
        char u[8];
        if (c == '"') esc = "\\\"";
        else if (c == '\\') esc = "\\\\";
        else if (c == '\n') esc = "\\n";
        else if (c == '\r') esc = "\\r";
        else if (c == '\t') esc = "\\t";
        else if (c == '\b') esc = "\\b";
        else if (c == '\f') esc = "\\f";
        else if (c < 0x20) { snprintf(u, sizeof u, "\\u%04x", c); esc = u; }
        if (!esc) continue;
        ds_buf_put(b, s + run, i - run);
        ds_buf_str(b, esc);
        run = i + 1;
    }
    ds_buf_put(b, s + run, n - run);
}

static void jb_str(ds_buf *b, const char *s, size_t n) {
    ds_buf_put(b, "\"", 1);
    jb_esc(b, s, n);
    ds_buf_put(b, "\"", 1);
}
static void jb_cstr(ds_buf *b, const char *s) { jb_str(b, s, strlen(s)); }

static void pretok_json(ds_buf *b, bpe_pretok kind) {
    if (kind == BPE_PRETOK_GPT2) {
        ds_buf_str(b, "{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"trim_offsets\":true,\"use_regex\":true}");
        return;
    }
    ds_buf_str(b, "{\"type\":\"Sequence\",\"pretokenizers\":[");
    for (int i = 0; i < 3; i++) {
        ds_buf_str(b, "{\"type\":\"Split\",\"pattern\":{\"Regex\":");
        jb_cstr(b, k_v3_regex[i]);
        ds_buf_str(b, "},\"behavior\":\"Isolated\",\"invert\":false},");
    }
    ds_buf_str(b, "{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"trim_offsets\":true,\"use_regex\":false}]}");
}

char *bpe_pretok_json(bpe_pretok kind) {
    ds_buf b = {0};
    pretok_json(&b, kind);
    if (b.oom) { free(b.p); return NULL; }
    return b.p;
}

/* --------------------------------------------------------- string table */

/* Strings in a pool, each with a count, and a hash index over them. */
typedef struct strtab {
    tok_pool pool;
    uint32_t *off, *len, *hash;
    uint64_t *val;
    uint32_t n, cap;
    uint32_t *slot; /* index + 1, 0 empty */
    uint32_t mask;
} strtab;

static void strtab_free(strtab *t) {
    free(t->pool.p);
    free(t->off);
    free(t->len);
    free(t->hash);
    free(t->val);
    free(t->slot);
    memset(t, 0, sizeof *t);
}

/* Index of s, or -1 (then *slot is where it would go). */
static int64_t strtab_find(const strtab *t, const char *s, size_t n, uint32_t h, uint32_t *slot) {
    if (!t->slot) { *slot = 0; return -1; }
    for (uint32_t i = h & t->mask;; i = (i + 1) & t->mask) {
        uint32_t k = t->slot[i];
        if (!k) { *slot = i; return -1; }
        k--;
        if (t->hash[k] == h && t->len[k] == n && !memcmp(t->pool.p + t->off[k], s, n)) return k;
    }
}

static int strtab_rehash(strtab *t, uint32_t cap) {
    uint32_t *slot = calloc(cap, sizeof *slot);
    if (!slot) return -1;
    uint32_t mask = cap - 1;
    for (uint32_t k = 0; k < t->n; k++) {
        uint32_t i = t->hash[k] & mask;
        while (slot[i]) i = (i + 1) & mask;
        slot[i] = k + 1;
    }
    free(t->slot);
    t->slot = slot;
    t->mask = mask;
    return 0;
}

/* Adds s (not present; *slot from strtab_find) with value 0. Returns the
 * index, or -1 when out of memory / over 4 GiB of strings. */
static int64_t strtab_add(strtab *t, const char *s, size_t n, uint32_t h, uint32_t slot) {
    if (t->n == UINT32_MAX - 1 || n > UINT32_MAX) return -1;
    if (t->n == t->cap) {
        uint32_t cap = t->cap ? (t->cap < (1u << 30) ? 2 * t->cap : UINT32_MAX - 1) : 1024;
        uint32_t *off = realloc(t->off, (size_t)cap * 4);
        if (off) t->off = off;
        uint32_t *len = realloc(t->len, (size_t)cap * 4);
        if (len) t->len = len;
        uint32_t *hash = realloc(t->hash, (size_t)cap * 4);
        if (hash) t->hash = hash;
        uint64_t *val = realloc(t->val, (size_t)cap * 8);
        if (val) t->val = val;
        if (!off || !len || !hash || !val) return -1;
        t->cap = cap;
    }
    int64_t off = tok_pool_add(&t->pool, s, n);
    if (off < 0) return -1;
    uint32_t k = t->n++;
    t->off[k] = (uint32_t)off;
    t->len[k] = (uint32_t)n;
    t->hash[k] = h;
    t->val[k] = 0;
    if (!t->slot || (uint64_t)t->n * 2 > (uint64_t)t->mask + 1) {
        uint32_t cap = t->slot ? 2 * (t->mask + 1) : 2048;
        if (strtab_rehash(t, cap)) { t->n--; return -1; }
    } else {
        t->slot[slot] = k + 1;
    }
    return k;
}

static uint32_t str_hash(const char *s, size_t n) { return (uint32_t)tok_hash(s, n); }

/* Index of s, adding it if absent; -1 on OOM. */
static int64_t strtab_intern(strtab *t, const char *s, size_t n) {
    uint32_t h = str_hash(s, n), slot;
    int64_t k = strtab_find(t, s, n, h, &slot);
    return k >= 0 ? k : strtab_add(t, s, n, h, slot);
}

/* --------------------------------------------------------------- trainer */

typedef struct u32vec { uint32_t *v; uint32_t n, cap; } u32vec;

static int u32_push(u32vec *x, uint32_t v) {
    if (x->n == x->cap) {
        uint32_t cap = x->cap ? 2 * x->cap : 4;
        if (cap < x->cap) return -1;
        uint32_t *p = realloc(x->v, (size_t)cap * 4);
        if (!p) return -1;
        x->v = p;
        x->cap = cap;
    }
    x->v[x->n++] = v;
    return 0;
}

/* Piece counts with the pre-tokenizer context that produces them. */
typedef struct counter {
    strtab words;            /* raw piece bytes -> count (val) */
    uint64_t pieces;
    tok_ctx cx;
    ds_err e;
    int rc;
} counter;

typedef struct hent {
    uint64_t count;
    uint32_t a, b;   /* the pair (for ordering) */
    uint32_t pid;
    uint32_t n;      /* words in pos */
    uint32_t *pos;
} hent;

struct bpe_trainer {
    int64_t vocab_size;
    bpe_pretok pretok;
    uint64_t min_frequency;
    bool per_line, add_bos, chat_template;
    char *bos, *eos;
    bpe_special *specials; /* distinct, owned contents */
    int n_specials;
    bpe_progress_fn progress;
    void *progress_ud;
    double progress_interval;
    uint64_t total_bytes;
    size_t chunk_bytes;

    /* pre-tokenizer */
    char *pretok_text;
    ds_tokenizer *pt;        /* a shell holding only the pre-tokenizer steps */

    /* counting */
    counter main;            /* all pieces: raw bytes -> count (words.val) */
    counter *workers;        /* one per thread, merged into main after each batch */
    int n_workers;
    uint64_t bytes, next_report_bytes;
    double t_start, t_report;
    double count_seconds, merge_seconds;
    bool stopped;

    /* model */
    strtab toks;             /* token strings (tokenizer.json form); ids = indices */
    uint32_t n_init;         /* specials + alphabet */
    uint32_t byte_id[256];
    bool trained;

    /* merges, in order: pair, new id, pair id */
    uint32_t *ma, *mb, *mnew, *mpid;
    int64_t n_merges, cap_merges;
    int64_t n_written;       /* distinct pairs (a repeated pair keeps its last rank) */
};

static void counter_init(counter *c, const ds_tokenizer *pt, ds_err *e);
static void counter_free(counter *c);

void bpe_trainer_free(bpe_trainer *tr) {
    if (!tr) return;
    free(tr->bos);
    free(tr->eos);
    for (int i = 0; i < tr->n_specials; i++) free((char *)tr->specials[i].content);
    free(tr->specials);
    free(tr->pretok_text);
    if (tr->pt) {
        pretok_free(tr->pt);
        free(tr->pt);
    }
    counter_free(&tr->main);
    for (int w = 0; w < tr->n_workers; w++) counter_free(&tr->workers[w]);
    free(tr->workers);
    strtab_free(&tr->toks);
    free(tr->ma);
    free(tr->mb);
    free(tr->mnew);
    free(tr->mpid);
    free(tr);
}

static bool valid_utf8(const char *s, size_t n) {
    for (size_t i = 0; i < n;) {
        int l = utf8_seq_len((const unsigned char *)s + i, n - i);
        if (l == 1 && (unsigned char)s[i] >= 0x80) return false;
        i += (size_t)l;
    }
    return true;
}

static char *dup_str(const char *s) {
    size_t n = strlen(s) + 1;
    char *p = malloc(n);
    if (p) memcpy(p, s, n);
    return p;
}

/* The vocabulary before any merge: specials, then the 256 ByteLevel chars
 * in code-point order (HF compute_alphabet), skipping strings already there. */
static int init_vocab(bpe_trainer *tr, ds_err *e) {
    for (int i = 0; i < tr->n_specials; i++)
        if (strtab_intern(&tr->toks, tr->specials[i].content, strlen(tr->specials[i].content)) < 0)
            return ds_err_set(e, DS_ENOMEM, "train-tokenizer: out of memory");
    uint32_t cps[256];
    for (int b = 0; b < 256; b++) cps[b] = bytelevel_char((uint8_t)b);
    for (int i = 1; i < 256; i++) /* insertion sort: 256 entries */
        for (int j = i; j > 0 && cps[j - 1] > cps[j]; j--) {
            uint32_t t = cps[j];
            cps[j] = cps[j - 1];
            cps[j - 1] = t;
        }
    for (int i = 0; i < 256; i++) {
        char s[4];
        int b = bytelevel_byte(cps[i]);
        DS_ASSERT(b >= 0);
        int n = bytelevel_put(s, (uint8_t)b);
        if (strtab_intern(&tr->toks, s, (size_t)n) < 0) return ds_err_set(e, DS_ENOMEM, "train-tokenizer: out of memory");
    }
    for (int b = 0; b < 256; b++) {
        char s[4];
        int n = bytelevel_put(s, (uint8_t)b);
        uint32_t slot;
        int64_t k = strtab_find(&tr->toks, s, (size_t)n, str_hash(s, (size_t)n), &slot);
        DS_ASSERT(k >= 0);
        tr->byte_id[b] = (uint32_t)k;
    }
    tr->n_init = tr->toks.n;
    return DS_OK;
}

int bpe_trainer_new(bpe_trainer **out, const bpe_train_opts *o, ds_err *e) {
    *out = NULL;
    if (!o) return ds_err_set(e, DS_EINVAL, "train-tokenizer: no options");
    if (o->pretok != BPE_PRETOK_DEEPSEEK_V3 && o->pretok != BPE_PRETOK_GPT2)
        return ds_err_set(e, DS_EINVAL, "train-tokenizer: unknown pre-tokenizer %d", (int)o->pretok);
    if (o->n_specials < 0 || (o->n_specials > 0 && !o->specials))
        return ds_err_set(e, DS_EINVAL, "train-tokenizer: bad special token list");
    bpe_trainer *tr = calloc(1, sizeof *tr);
    if (!tr) return ds_err_set(e, DS_ENOMEM, "train-tokenizer: out of memory");
    int rc = DS_OK;
    tr->vocab_size = o->vocab_size;
    tr->pretok = o->pretok;
    tr->min_frequency = o->min_frequency;
    tr->per_line = o->per_line;
    tr->add_bos = o->add_bos;
    tr->chat_template = o->chat_template;
    tr->progress = o->progress;
    tr->progress_ud = o->progress_ud;
    tr->progress_interval = o->progress_interval > 0 ? o->progress_interval : 0.5;
    tr->total_bytes = o->total_bytes;
    tr->chunk_bytes = o->chunk_bytes >= 16 ? o->chunk_bytes : CHUNK_BYTES;
    tr->specials = calloc((size_t)o->n_specials + 1, sizeof *tr->specials);
    if (!tr->specials) rc = ds_err_set(e, DS_ENOMEM, "train-tokenizer: out of memory");
    for (int i = 0; i < o->n_specials && !rc; i++) {
        const char *s = o->specials[i].content;
        size_t n = s ? strlen(s) : 0;
        if (n == 0) rc = ds_err_set(e, DS_EINVAL, "train-tokenizer: special token %d is empty", i);
        else if (n > MAX_SPECIAL_BYTES)
            rc = ds_err_set(e, DS_EINVAL, "train-tokenizer: special token %d ('%.40s...') is longer than %d bytes", i,
                            s, MAX_SPECIAL_BYTES);
        else if (!valid_utf8(s, n))
            rc = ds_err_set(e, DS_EINVAL, "train-tokenizer: special token %d is not valid UTF-8", i);
        if (rc) break;
        int k;
        for (k = 0; k < tr->n_specials; k++)
            if (!strcmp(tr->specials[k].content, s)) break;
        if (k < tr->n_specials) continue; /* HF ignores a repeated special token */
        tr->specials[tr->n_specials] = o->specials[i];
        if (!(tr->specials[tr->n_specials].content = dup_str(s))) rc = ds_err_set(e, DS_ENOMEM, "out of memory");
        else tr->n_specials++;
    }
    if (!rc && ((o->bos_token && !(tr->bos = dup_str(o->bos_token))) || (o->eos_token && !(tr->eos = dup_str(o->eos_token)))))
        rc = ds_err_set(e, DS_ENOMEM, "train-tokenizer: out of memory");
    if (!rc) rc = init_vocab(tr, e);
    if (!rc && (o->vocab_size < (int64_t)tr->n_init || o->vocab_size > (1 << 22)))
        rc = ds_err_set(e, DS_EINVAL, "train-tokenizer: vocab size %lld is out of range: it must be at least %u "
                        "(%d special tokens + 256 byte tokens) and at most %d", (long long)o->vocab_size, tr->n_init,
                        tr->n_specials, 1 << 22);
    /* the pre-tokenizer: exactly the JSON we write, through our loader */
    if (!rc && !(tr->pretok_text = bpe_pretok_json(o->pretok))) rc = ds_err_set(e, DS_ENOMEM, "out of memory");
    if (!rc && !(tr->pt = calloc(1, sizeof *tr->pt))) rc = ds_err_set(e, DS_ENOMEM, "out of memory");
    if (!rc) {
        snprintf(tr->pt->what, sizeof tr->pt->what, "train-tokenizer pre-tokenizer");
        json_t *pre = NULL;
        rc = ds_json_load_buf(tr->pt->what, tr->pretok_text, strlen(tr->pretok_text), &pre, e);
        if (!rc) rc = pretok_load(tr->pt, pre, e);
        json_decref(pre);
    }
    if (rc) {
        bpe_trainer_free(tr);
        return rc;
    }
    counter_init(&tr->main, tr->pt, e);
    *out = tr;
    return DS_OK;
}

/* ------------------------------------------------------------- counting */

static void strtab_clear(strtab *t) {
    t->n = 0;
    t->pool.n = 0;
    if (t->slot) memset(t->slot, 0, ((size_t)t->mask + 1) * sizeof *t->slot);
}

static int count_piece(void *ud, const char *s, size_t n) {
    counter *c = ud;
    int64_t k = strtab_intern(&c->words, s, n);
    if (k < 0)
        return ds_err_set(c->cx.e, DS_ENOMEM, "train-tokenizer: out of memory counting pieces (%u distinct so far)",
                          c->words.n);
    c->words.val[k]++;
    c->pieces++;
    return DS_OK;
}

static void counter_init(counter *c, const ds_tokenizer *pt, ds_err *e) {
    c->cx.t = pt;
    c->cx.on_piece = count_piece;
    c->cx.piece_ud = c;
    c->cx.e = e;
}

static void counter_free(counter *c) {
    strtab_free(&c->words);
    tok_ctx_free(&c->cx);
}

/* Adds src's counts to dst (keeping src's first-seen order) and empties src. */
static int counter_merge(counter *dst, counter *src, ds_err *e) {
    const strtab *S = &src->words;
    for (uint32_t k = 0; k < S->n; k++) {
        const char *s = S->pool.p + S->off[k];
        uint32_t slot;
        int64_t d = strtab_find(&dst->words, s, S->len[k], S->hash[k], &slot);
        if (d < 0 && (d = strtab_add(&dst->words, s, S->len[k], S->hash[k], slot)) < 0)
            return ds_err_set(e, DS_ENOMEM, "train-tokenizer: out of memory counting pieces (%u distinct so far)",
                              dst->words.n);
        dst->words.val[d] += S->val[k];
    }
    dst->pieces += src->pieces;
    src->pieces = 0;
    strtab_clear(&src->words);
    return DS_OK;
}

static int report(bpe_trainer *tr, int stage, uint64_t done, uint64_t total, double t0, bool force, ds_err *e) {
    if (!tr->progress) return DS_OK;
    double now = ds_now();
    if (!force && now - tr->t_report < tr->progress_interval) return DS_OK;
    tr->t_report = now;
    bpe_train_progress p = { stage, done, total, now - t0 };
    if (tr->progress(tr->progress_ud, &p)) {
        tr->stopped = true;
        return ds_err_set(e, DS_EINTERRUPTED, "train-tokenizer: interrupted");
    }
    return DS_OK;
}

static bool plain(unsigned char c) { return c >= 0x21 && c <= 0x7E; }

/* End of the next chunk of s[i..n). Cuts only after a '\n' between printable
 * ASCII characters: for both pre-tokenizers no piece crosses such a place and
 * the pieces after it do not depend on the text before it. */
static size_t chunk_end(const char *s, size_t i, size_t n, size_t chunk) {
    if (n - i <= chunk || n - i - chunk <= chunk / 4) return n;
    size_t max = chunk <= SIZE_MAX / 16 ? 16 * chunk : SIZE_MAX;
    size_t lim = n - i > max ? i + max : n;
    for (size_t p = i + chunk; p < lim; p++)
        if (s[p - 1] == '\n' && plain((unsigned char)s[p - 2]) && plain((unsigned char)s[p])) return p;
    if (lim == n) return n;
    for (size_t p = lim; p > i + chunk; p--) /* fallback: a line end (may split a whitespace run) */
        if (s[p - 1] == '\n') return p;
    size_t p = lim; /* no line end at all: a UTF-8 character boundary */
    while (p > i + 1 && ((unsigned char)s[p] & 0xC0) == 0x80) p--;
    return p;
}

static size_t next_cut(const bpe_trainer *tr, const char *s, size_t i, size_t n) {
    if (!tr->per_line) return chunk_end(s, i, n, tr->chunk_bytes);
    if (n - i <= tr->chunk_bytes) return n; /* per line: any line end is exact */
    const char *nl = memchr(s + i + tr->chunk_bytes - 1, '\n', n - i - tr->chunk_bytes + 1);
    return nl ? (size_t)(nl - s) + 1 : n;
}

/* Counts the pieces of one chunk into c (line by line in per-line mode). */
static int count_span(const bpe_trainer *tr, counter *c, const char *s, size_t n) {
    if (!tr->per_line) return pretok_encode(&c->cx, s, n);
    for (size_t i = 0; i < n;) {
        const char *nl = memchr(s + i, '\n', n - i);
        size_t end = nl ? (size_t)(nl - s) + 1 : n;
        int rc = pretok_encode(&c->cx, s + i, end - i);
        if (rc) return rc;
        i = end;
    }
    return DS_OK;
}

typedef struct count_job {
    const bpe_trainer *tr;
    counter *workers;
    const char *text;
    const size_t *cuts;
} count_job;

static void count_chunks(void *ctx, int64_t i0, int64_t i1, int tid) {
    const count_job *j = ctx;
    counter *c = &j->workers[tid];
    for (int64_t k = i0; k < i1 && !c->rc; k++)
        c->rc = count_span(j->tr, c, j->text + j->cuts[k], j->cuts[k + 1] - j->cuts[k]);
}

int bpe_trainer_feed(bpe_trainer *tr, const char *text, size_t len, ds_err *e) {
    if (!tr || (!text && len)) return ds_err_set(e, DS_EINVAL, "bpe_trainer_feed: NULL argument");
    if (tr->trained) return ds_err_set(e, DS_EINVAL, "train-tokenizer: text fed after training");
    if (tr->stopped) return ds_err_set(e, DS_EINTERRUPTED, "train-tokenizer: interrupted");
    if (tr->t_start == 0) tr->t_start = tr->t_report = ds_now(); /* first report after one interval */
    double t0 = ds_now();
    tr->main.cx.e = e;
    /* a counter per thread; ds_par_for hands thread t the t-th slice of chunks, so merging
     * the counters in order keeps the sequential first-seen order of the pieces */
    int nw = ds_threads_get(), me = ds_thread_id();
    if (me >= nw) nw = me + 1;
    if (nw > 1 && tr->n_workers < nw) {
        for (int w = 0; w < tr->n_workers; w++) counter_free(&tr->workers[w]);
        free(tr->workers);
        tr->n_workers = 0;
        if (!(tr->workers = calloc((size_t)nw, sizeof *tr->workers)))
            return ds_err_set(e, DS_ENOMEM, "train-tokenizer: out of memory");
        tr->n_workers = nw;
        for (int w = 0; w < nw; w++) counter_init(&tr->workers[w], tr->pt, &tr->workers[w].e);
    }
    size_t cuts[4 * 64 + 1];
    size_t max_chunks = (size_t)DS_MIN(4 * nw, 4 * 64);
    int rc = DS_OK;
    uint64_t base = tr->bytes;
    for (size_t i = 0; i < len && !rc;) {
        size_t nc = 0;
        cuts[0] = i;
        while (nc < max_chunks && cuts[nc] < len) {
            cuts[nc + 1] = next_cut(tr, text, cuts[nc], len);
            nc++;
        }
        if (nw == 1 || nc == 1) {
            for (size_t k = 0; k < nc && !rc; k++) rc = count_span(tr, &tr->main, text + cuts[k], cuts[k + 1] - cuts[k]);
        } else {
            count_job job = { tr, tr->workers, text, cuts };
            ds_par_for((int64_t)nc, 1, count_chunks, &job);
            for (int w = 0; w < nw; w++) {
                counter *c = &tr->workers[w];
                if (!rc && c->rc) rc = ds_err_set(e, c->rc, "%s", c->e.msg);
                if (!rc) rc = counter_merge(&tr->main, c, e);
                c->rc = 0;
                ds_err_clear(&c->e);
            }
        }
        i = cuts[nc];
        tr->bytes = base + i;
        if (!rc && tr->bytes >= tr->next_report_bytes) {
            tr->next_report_bytes = tr->bytes + (64u << 10);
            rc = report(tr, BPE_STAGE_COUNT, tr->bytes, tr->total_bytes, tr->t_start, false, e);
        }
    }
    tr->count_seconds += ds_now() - t0;
    return rc;
}

/* --------------------------------------------------------------- merging */

typedef struct mstate {
    bpe_trainer *tr;
    /* pairs */
    uint64_t *pkey;
    int64_t *pcount;
    uint32_t *pstamp;
    u32vec *plist;
    uint32_t np, pcap;
    uint32_t *pslot; /* pid + 1 */
    uint32_t pmask;
    /* words as symbols */
    uint32_t *syms;
    size_t *woff;
    uint32_t *wlen;
    /* heap */
    hent *heap;
    size_t nh, hcap;
    /* this merge */
    uint32_t iter;
    u32vec touched;
    bool oom;
} mstate;

static inline uint32_t pair_hash(uint64_t key) { return (uint32_t)((key * 0x9E3779B97F4A7C15ull) >> 32); }

static int pairs_rehash(mstate *m, uint32_t cap) {
    uint32_t *slot = calloc(cap, sizeof *slot);
    if (!slot) return -1;
    for (uint32_t p = 0; p < m->np; p++) {
        uint32_t i = pair_hash(m->pkey[p]) & (cap - 1);
        while (slot[i]) i = (i + 1) & (cap - 1);
        slot[i] = p + 1;
    }
    free(m->pslot);
    m->pslot = slot;
    m->pmask = cap - 1;
    return 0;
}

/* Pair id of (a, b), created with count 0 if new; UINT32_MAX on OOM. */
static uint32_t pair_get(mstate *m, uint32_t a, uint32_t b) {
    uint64_t key = ((uint64_t)a << 32) | b;
    uint32_t i = pair_hash(key) & m->pmask;
    for (;; i = (i + 1) & m->pmask) {
        uint32_t k = m->pslot[i];
        if (!k) break;
        if (m->pkey[k - 1] == key) return k - 1;
    }
    if (m->np == m->pcap) {
        uint32_t cap = m->pcap * 2;
        if (cap <= m->pcap) return UINT32_MAX;
        uint64_t *pk = realloc(m->pkey, (size_t)cap * sizeof *pk);
        if (pk) m->pkey = pk;
        int64_t *pc = realloc(m->pcount, (size_t)cap * sizeof *pc);
        if (pc) m->pcount = pc;
        uint32_t *ps = realloc(m->pstamp, (size_t)cap * sizeof *ps);
        if (ps) m->pstamp = ps;
        u32vec *pl = realloc(m->plist, (size_t)cap * sizeof *pl);
        if (pl) m->plist = pl;
        if (!pk || !pc || !ps || !pl) return UINT32_MAX;
        m->pcap = cap;
    }
    uint32_t p = m->np++;
    m->pkey[p] = key;
    m->pcount[p] = 0;
    m->pstamp[p] = 0;
    m->plist[p] = (u32vec){0};
    if ((uint64_t)m->np * 2 > (uint64_t)m->pmask + 1) {
        if (pairs_rehash(m, 2 * (m->pmask + 1))) return UINT32_MAX;
    } else {
        m->pslot[i] = p + 1;
    }
    return p;
}

/* HF Merge order: higher count first, then the smaller pair. */
static inline bool hent_before(const hent *x, const hent *y) {
    if (x->count != y->count) return x->count > y->count;
    if (x->a != y->a) return x->a < y->a;
    return x->b < y->b;
}

static int heap_push(mstate *m, hent x) {
    if (m->nh == m->hcap) {
        size_t cap = m->hcap ? 2 * m->hcap : 1024;
        hent *h = realloc(m->heap, cap * sizeof *h);
        if (!h) return -1;
        m->heap = h;
        m->hcap = cap;
    }
    size_t i = m->nh++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!hent_before(&x, &m->heap[p])) break;
        m->heap[i] = m->heap[p];
        i = p;
    }
    m->heap[i] = x;
    return 0;
}

static hent heap_pop(mstate *m) {
    hent *h = m->heap;
    hent top = h[0], x = h[--m->nh];
    size_t n = m->nh, i = 0;
    if (n == 0) return top;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, c = l;
        if (l >= n) break;
        if (r < n && hent_before(&h[r], &h[l])) c = r;
        if (!hent_before(&h[c], &x)) break;
        h[i] = h[c];
        i = c;
    }
    h[i] = x;
    return top;
}

/* One entry of a word's change list (HF Word::merge). */
static inline void change(mstate *m, uint32_t a, uint32_t b, int delta, uint32_t w, uint64_t count) {
    uint32_t p = pair_get(m, a, b);
    if (p == UINT32_MAX) { m->oom = true; return; }
    m->pcount[p] += delta * (int64_t)count;
    if (delta < 0) return;
    if (m->pstamp[p] != m->iter) {
        m->pstamp[p] = m->iter;
        m->plist[p].n = 0;
        if (u32_push(&m->touched, p)) { m->oom = true; return; }
    }
    u32vec *l = &m->plist[p];
    if ((!l->n || l->v[l->n - 1] != w) && u32_push(l, w)) m->oom = true;
}

/* Merges every non-overlapping (a, b) of word w, left to right, into x. */
static void merge_word(mstate *m, uint32_t w, uint32_t a, uint32_t b, uint32_t x) {
    uint32_t *s = m->syms + m->woff[w];
    uint32_t len = m->wlen[w], r = 0, o = 0;
    uint64_t c = m->tr->main.words.val[w];
    while (r < len) {
        if (s[r] == a && r + 1 < len && s[r + 1] == b) {
            if (o > 0) {
                change(m, s[o - 1], a, -1, w, c);
                change(m, s[o - 1], x, +1, w, c);
            }
            if (r + 2 < len) {
                change(m, b, s[r + 2], -1, w, c);
                change(m, x, s[r + 2], +1, w, c);
            }
            s[o++] = x;
            r += 2;
        } else {
            s[o++] = s[r++];
        }
    }
    m->wlen[w] = o;
}

static void mstate_free(mstate *m) {
    for (uint32_t p = 0; p < m->np; p++) free(m->plist[p].v);
    for (size_t i = 0; i < m->nh; i++) free(m->heap[i].pos);
    free(m->pkey);
    free(m->pcount);
    free(m->pstamp);
    free(m->plist);
    free(m->pslot);
    free(m->syms);
    free(m->woff);
    free(m->wlen);
    free(m->heap);
    free(m->touched.v);
}

static int push_merge(bpe_trainer *tr, uint32_t a, uint32_t b, uint32_t x, uint32_t pid) {
    if (tr->n_merges == tr->cap_merges) {
        int64_t cap = tr->cap_merges ? 2 * tr->cap_merges : 1024;
        uint32_t *pa = realloc(tr->ma, (size_t)cap * 4);
        if (pa) tr->ma = pa;
        uint32_t *pb = realloc(tr->mb, (size_t)cap * 4);
        if (pb) tr->mb = pb;
        uint32_t *pn = realloc(tr->mnew, (size_t)cap * 4);
        if (pn) tr->mnew = pn;
        uint32_t *pp = realloc(tr->mpid, (size_t)cap * 4);
        if (pp) tr->mpid = pp;
        if (!pa || !pb || !pn || !pp) return -1;
        tr->cap_merges = cap;
    }
    tr->ma[tr->n_merges] = a;
    tr->mb[tr->n_merges] = b;
    tr->mnew[tr->n_merges] = x;
    tr->mpid[tr->n_merges] = pid;
    tr->n_merges++;
    return 0;
}

#define OOM(what) ds_err_set(e, DS_ENOMEM, "train-tokenizer: out of memory (%s)", what)

int bpe_trainer_train(bpe_trainer *tr, ds_err *e) {
    if (!tr) return ds_err_set(e, DS_EINVAL, "bpe_trainer_train: NULL trainer");
    if (tr->trained) return ds_err_set(e, DS_EINVAL, "train-tokenizer: already trained");
    if (tr->stopped) return ds_err_set(e, DS_EINTERRUPTED, "train-tokenizer: interrupted");
    if (tr->main.words.n == 0)
        return ds_err_set(e, DS_EINVAL, "train-tokenizer: empty corpus: the input has no text (%llu bytes)",
                          (unsigned long long)tr->bytes);
    double t0 = ds_now();
    strtab *W = &tr->main.words;
    mstate m = { .tr = tr };
    int rc = DS_OK;

    /* words -> symbol arrays */
    size_t total = 0;
    for (uint32_t w = 0; w < W->n; w++) total += W->len[w];
    m.syms = malloc((total ? total : 1) * sizeof *m.syms);
    m.woff = malloc((size_t)W->n * sizeof *m.woff);
    m.wlen = malloc((size_t)W->n * sizeof *m.wlen);
    m.pcap = 1u << 16;
    m.pkey = malloc((size_t)m.pcap * sizeof *m.pkey);
    m.pcount = malloc((size_t)m.pcap * sizeof *m.pcount);
    m.pstamp = malloc((size_t)m.pcap * sizeof *m.pstamp);
    m.plist = malloc((size_t)m.pcap * sizeof *m.plist);
    if (!m.syms || !m.woff || !m.wlen || !m.pkey || !m.pcount || !m.pstamp || !m.plist || pairs_rehash(&m, 1u << 17)) {
        mstate_free(&m);
        return OOM("word symbols");
    }
    size_t at = 0;
    for (uint32_t w = 0; w < W->n; w++) {
        const unsigned char *s = (const unsigned char *)W->pool.p + W->off[w];
        m.woff[w] = at;
        m.wlen[w] = W->len[w];
        for (uint32_t i = 0; i < W->len[w]; i++) m.syms[at++] = tr->byte_id[s[i]];
    }
    /* the piece bytes are no longer needed */
    free(W->pool.p);
    W->pool = (tok_pool){0};
    free(W->slot);
    W->slot = NULL;

    /* initial pair counts and the words each pair occurs in */
    for (uint32_t w = 0; w < W->n && !m.oom; w++) {
        const uint32_t *s = m.syms + m.woff[w];
        for (uint32_t i = 0; i + 1 < m.wlen[w]; i++) {
            uint32_t p = pair_get(&m, s[i], s[i + 1]);
            if (p == UINT32_MAX) { m.oom = true; break; }
            m.pcount[p] += (int64_t)W->val[w];
            u32vec *l = &m.plist[p];
            if ((!l->n || l->v[l->n - 1] != w) && u32_push(l, w)) { m.oom = true; break; }
        }
    }
    for (uint32_t p = 0; p < m.np && !m.oom; p++) {
        u32vec *l = &m.plist[p];
        if (m.pcount[p] > 0) {
            hent h = { (uint64_t)m.pcount[p], (uint32_t)(m.pkey[p] >> 32), (uint32_t)m.pkey[p], p, l->n, l->v };
            if (heap_push(&m, h)) { m.oom = true; break; }
        } else {
            free(l->v);
        }
        *l = (u32vec){0};
    }
    if (m.oom) {
        mstate_free(&m);
        return OOM("pair counts");
    }

    /* merges */
    uint64_t want = (uint64_t)(tr->vocab_size - (int64_t)tr->toks.n);
    char *buf = NULL;
    size_t bcap = 0;
    tr->t_report = t0;
    while ((int64_t)tr->toks.n < tr->vocab_size && m.nh && !rc) {
        hent top = heap_pop(&m);
        uint64_t cur = (uint64_t)m.pcount[top.pid];
        if (top.count != cur) { /* stale: re-queue with the current count */
            top.count = cur;
            if (heap_push(&m, top)) { free(top.pos); rc = OOM("heap"); }
            continue;
        }
        if (top.count < 1 || tr->min_frequency > top.count) {
            free(top.pos);
            break;
        }
        /* the new token: concatenated strings, reusing an existing id (HF) */
        size_t la = tr->toks.len[top.a], lb = tr->toks.len[top.b];
        if (la + lb > bcap) {
            bcap = 2 * (la + lb);
            char *p = realloc(buf, bcap);
            if (!p) { free(top.pos); rc = OOM("token"); break; }
            buf = p;
        }
        memcpy(buf, tr->toks.pool.p + tr->toks.off[top.a], la);
        memcpy(buf + la, tr->toks.pool.p + tr->toks.off[top.b], lb);
        int64_t x = strtab_intern(&tr->toks, buf, la + lb);
        if (x < 0 || push_merge(tr, top.a, top.b, (uint32_t)x, top.pid)) {
            free(top.pos);
            rc = OOM("vocabulary");
            break;
        }
        m.iter++;
        m.touched.n = 0;
        for (uint32_t i = 0; i < top.n && !m.oom; i++) merge_word(&m, top.pos[i], top.a, top.b, (uint32_t)x);
        free(top.pos);
        for (uint32_t i = 0; i < m.touched.n && !m.oom; i++) {
            uint32_t p = m.touched.v[i];
            u32vec *l = &m.plist[p];
            if (m.pcount[p] > 0) {
                hent h = { (uint64_t)m.pcount[p], (uint32_t)(m.pkey[p] >> 32), (uint32_t)m.pkey[p], p, l->n, l->v };
                if (heap_push(&m, h)) { m.oom = true; break; }
                *l = (u32vec){0};
            }
        }
        if (m.oom) { rc = OOM("pair counts"); break; }
        rc = report(tr, BPE_STAGE_MERGE, (uint64_t)tr->n_merges, want, t0, false, e);
    }
    free(buf);
    /* a repeated pair keeps its last rank (HF stores merges in a map) */
    int64_t *last = rc ? NULL : malloc(((size_t)m.np + 1) * sizeof *last);
    if (!rc && !last) rc = OOM("merges");
    if (!rc) {
        for (int64_t i = 0; i < tr->n_merges; i++) last[tr->mpid[i]] = i;
        tr->n_written = 0;
        for (int64_t i = 0; i < tr->n_merges; i++) {
            if (last[tr->mpid[i]] == i) tr->n_written++;
            else tr->mpid[i] = UINT32_MAX; /* dropped */
        }
    }
    free(last);
    mstate_free(&m);
    if (!rc) rc = report(tr, BPE_STAGE_MERGE, (uint64_t)tr->n_merges, want, t0, true, e);
    tr->merge_seconds = ds_now() - t0;
    if (rc) return rc;
    tr->trained = true;
    return DS_OK;
}

void bpe_trainer_stats(const bpe_trainer *tr, bpe_train_stats *st) {
    memset(st, 0, sizeof *st);
    st->bytes = tr->bytes;
    st->pieces = tr->main.pieces;
    st->words = tr->main.words.n;
    st->vocab_size = tr->toks.n;
    st->merges = tr->trained ? tr->n_written : 0;
    st->count_seconds = tr->count_seconds;
    st->merge_seconds = tr->merge_seconds;
}

/* --------------------------------------------------------------- output */

static void jb_tok(ds_buf *b, const bpe_trainer *tr, uint32_t id) {
    jb_str(b, tr->toks.pool.p + tr->toks.off[id], tr->toks.len[id]);
}

int bpe_trainer_tokenizer_json(const bpe_trainer *tr, char **out, size_t *len, ds_err *e) {
    *out = NULL;
    *len = 0;
    if (!tr || !tr->trained) return ds_err_set(e, DS_EINVAL, "train-tokenizer: not trained yet");
    ds_buf b = {0};
    ds_buf_str(&b, "{\n  \"version\": \"1.0\",\n  \"truncation\": null,\n  \"padding\": null,\n  \"added_tokens\": [");
    for (int i = 0; i < tr->n_specials; i++) {
        const bpe_special *s = &tr->specials[i];
        uint32_t slot;
        int64_t id = strtab_find(&tr->toks, s->content, strlen(s->content), str_hash(s->content, strlen(s->content)),
                                 &slot);
        DS_ASSERT(id >= 0);
        ds_buf_printf(&b, "%s\n    {\"id\": %lld, \"content\": ", i ? "," : "", (long long)id);
        jb_cstr(&b, s->content);
        ds_buf_printf(&b, ", \"single_word\": false, \"lstrip\": false, \"rstrip\": false, \"normalized\": %s, "
                 "\"special\": %s}", s->normalized ? "true" : "false", s->special ? "true" : "false");
    }
    ds_buf_str(&b, tr->n_specials ? "\n  ],\n" : "],\n");
    ds_buf_str(&b, "  \"normalizer\": {\"type\": \"Sequence\", \"normalizers\": []},\n  \"pre_tokenizer\": ");
    ds_buf_str(&b, tr->pretok_text);
    ds_buf_str(&b, ",\n  \"post_processor\": {\"type\": \"ByteLevel\", \"add_prefix_space\": true, \"trim_offsets\": false, "
             "\"use_regex\": true},\n"
             "  \"decoder\": {\"type\": \"ByteLevel\", \"add_prefix_space\": true, \"trim_offsets\": true, "
             "\"use_regex\": true},\n"
             "  \"model\": {\n    \"type\": \"BPE\",\n    \"dropout\": null,\n    \"unk_token\": null,\n"
             "    \"continuing_subword_prefix\": null,\n    \"end_of_word_suffix\": null,\n"
             "    \"fuse_unk\": false,\n    \"byte_fallback\": false,\n    \"ignore_merges\": false,\n"
             "    \"vocab\": {");
    for (uint32_t id = 0; id < tr->toks.n; id++) {
        ds_buf_str(&b, id ? ",\n      " : "\n      ");
        jb_tok(&b, tr, id);
        ds_buf_printf(&b, ": %u", id);
    }
    ds_buf_str(&b, "\n    },\n    \"merges\": [");
    bool first = true;
    for (int64_t i = 0; i < tr->n_merges; i++) {
        if (tr->mpid[i] == UINT32_MAX) continue;
        /* "a b": byte-level token strings never contain a space */
        const char *a = tr->toks.pool.p + tr->toks.off[tr->ma[i]], *bb = tr->toks.pool.p + tr->toks.off[tr->mb[i]];
        size_t la = tr->toks.len[tr->ma[i]], lb = tr->toks.len[tr->mb[i]];
        DS_ASSERT(!memchr(a, ' ', la) && !memchr(bb, ' ', lb));
        ds_buf_str(&b, first ? "\n      \"" : ",\n      \"");
        first = false;
        jb_esc(&b, a, la);
        ds_buf_str(&b, " ");
        jb_esc(&b, bb, lb);
        ds_buf_str(&b, "\"");
    }
    ds_buf_str(&b, first ? "]\n  }\n}\n" : "\n    ]\n  }\n}\n");
    if (b.oom) {
        free(b.p);
        return ds_err_set(e, DS_ENOMEM, "train-tokenizer: out of memory writing tokenizer.json");
    }
    *out = b.p;
    *len = b.n;
    return DS_OK;
}

static void jb_added_token(ds_buf *b, const char *content) {
    ds_buf_str(b, "{\"__type\": \"AddedToken\", \"content\": ");
    jb_cstr(b, content);
    ds_buf_str(b, ", \"lstrip\": false, \"normalized\": true, \"rstrip\": false, \"single_word\": false}");
}

int bpe_trainer_config_json(const bpe_trainer *tr, char **out, size_t *len, ds_err *e) {
    *out = NULL;
    *len = 0;
    if (!tr) return ds_err_set(e, DS_EINVAL, "bpe_trainer_config_json: NULL trainer");
    /* DeepSeek-V3's tokenizer_config.json, less model_max_length */
    ds_buf b = {0};
    ds_buf_printf(&b, "{\n  \"add_bos_token\": %s,\n  \"add_eos_token\": false,\n", tr->add_bos && tr->bos ? "true" : "false");
    if (tr->bos) {
        ds_buf_str(&b, "  \"bos_token\": ");
        jb_added_token(&b, tr->bos);
        ds_buf_str(&b, ",\n");
    }
    ds_buf_str(&b, "  \"clean_up_tokenization_spaces\": false,\n");
    if (tr->eos) {
        ds_buf_str(&b, "  \"eos_token\": ");
        jb_added_token(&b, tr->eos);
        ds_buf_str(&b, ",\n");
    }
    ds_buf_str(&b, "  \"legacy\": true,\n");
    if (tr->eos) {
        ds_buf_str(&b, "  \"pad_token\": ");
        jb_added_token(&b, tr->eos);
        ds_buf_str(&b, ",\n");
    }
    ds_buf_str(&b, "  \"sp_model_kwargs\": {},\n  \"unk_token\": null,\n  \"tokenizer_class\": \"LlamaTokenizerFast\"");
    if (tr->chat_template) {
        ds_buf_str(&b, ",\n  \"chat_template\": ");
        jb_cstr(&b, k_v3_chat_template);
    }
    ds_buf_str(&b, "\n}\n");
    if (b.oom) {
        free(b.p);
        return ds_err_set(e, DS_ENOMEM, "train-tokenizer: out of memory writing tokenizer_config.json");
    }
    *out = b.p;
    *len = b.n;
    return DS_OK;
}
