/*
 * bpe.c - the byte-level BPE model of a tokenizer.json: vocab and merges
 * tables, the ByteLevel byte<->char mapping, the merge loop, and the
 * pre-token cache. Mirrors HF tokenizers' models/bpe (word.rs merge_all):
 * symbols in a linked list, candidate merges in a min-heap ordered by
 * (merge rank, position), stale heap entries skipped by re-checking the pair
 * -> O(n log n) per pre-token, whatever its length.
 * Does not own: pre-tokenization (pretok.c), added tokens (tokenizer.c).
 */
#include "tok_internal.h"
#include "../io/json.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TOK_MAX_ID (1 << 22)
#define CACHE_MAX_KEY 256
#define CACHE_MAX_ENTS (1u << 16)

/* ------------------------------------------------------------- helpers */

int64_t tok_pool_add(tok_pool *pool, const void *s, size_t n) {
    if (pool->n + n + 1 > pool->cap) {
        size_t cap = pool->cap ? pool->cap : 4096;
        while (cap < pool->n + n + 1) cap *= 2;
        if (cap > ((size_t)1 << 32)) return -1;
        char *p = realloc(pool->p, cap);
        if (!p) return -1;
        pool->p = p;
        pool->cap = cap;
    }
    int64_t off = (int64_t)pool->n;
    if (n) memcpy(pool->p + pool->n, s, n);
    pool->n += n;
    pool->p[pool->n] = 0; /* keeps the pool NUL-terminated after the last string */
    return off;
}

uint64_t tok_hash(const void *data, size_t n) {
    const unsigned char *p = data;
    uint64_t h = 0x9E3779B97F4A7C15ull ^ (n * 0xff51afd7ed558ccdull);
    while (n >= 8) {
        uint64_t k;
        memcpy(&k, p, 8);
        h = (h ^ (k * 0xC2B2AE3D27D4EB4Full)) * 0x9E3779B97F4A7C15ull;
        h ^= h >> 29;
        p += 8;
        n -= 8;
    }
    uint64_t k = 0;
    memcpy(&k, p, n);
    h = (h ^ (k * 0xC2B2AE3D27D4EB4Full)) * 0x9E3779B97F4A7C15ull;
    h ^= h >> 32;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    return h;
}

/* GPT-2 bytes_to_unicode: printable Latin-1 bytes map to themselves, the
 * other 68 bytes to U+0100.. in byte order. */
uint32_t bytelevel_char(uint8_t b) {
    static uint32_t tab[256];
    static int init;
    if (!__atomic_load_n(&init, __ATOMIC_ACQUIRE)) {
        uint32_t t[256];
        uint32_t n = 0;
        for (int c = 0; c < 256; c++) {
            bool keep = (c >= '!' && c <= '~') || (c >= 0xA1 && c <= 0xAC) || (c >= 0xAE && c <= 0xFF);
            t[c] = keep ? (uint32_t)c : 256 + n++;
        }
        memcpy(tab, t, sizeof tab);
        __atomic_store_n(&init, 1, __ATOMIC_RELEASE);
    }
    return tab[b];
}

int bytelevel_byte(uint32_t cp) {
    if (cp < 256) {
        if ((cp >= '!' && cp <= '~') || (cp >= 0xA1 && cp <= 0xAC) || (cp >= 0xAE)) return (int)cp;
        return -1;
    }
    if (cp >= 256 + 68) return -1;
    /* the n-th byte outside the kept ranges maps to 256 + n */
    uint32_t n = cp - 256;
    for (int b = 0; b < 256; b++) {
        bool keep = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
        if (!keep && n-- == 0) return b;
    }
    return -1;
}

/* --------------------------------------------------------- vocab table */

int32_t bpe_vocab_get(const ds_tokenizer *t, const char *s, size_t n) {
    if (!t->vhash) return -1;
    uint32_t i = (uint32_t)tok_hash(s, n) & t->vmask;
    for (;; i = (i + 1) & t->vmask) {
        int32_t id = t->vhash[i];
        if (id < 0) return -1;
        if (t->model_len[id] == n && !memcmp(t->strs.p + t->model_off[id], s, n)) return id;
    }
}

static uint32_t pow2_at_least(uint64_t n) {
    uint32_t c = 16;
    while (c < n) c <<= 1;
    return c;
}

static merge_ent *merge_find(const ds_tokenizer *t, int32_t a, int32_t b) {
    uint64_t key = ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
    uint32_t i = (uint32_t)(key * 0x9E3779B97F4A7C15ull >> 32) & t->mmask;
    for (;; i = (i + 1) & t->mmask) {
        merge_ent *m = &t->mhash[i];
        if (m->key == key || m->key == UINT64_MAX) return m;
    }
}

/* ---------------------------------------------------------------- load */

static int load_vocab(ds_tokenizer *t, const json_t *vocab, ds_err *e) {
    const char *what = t->what;
    if (!json_is_object(vocab))
        return ds_err_set(e, DS_EFORMAT, "%s: model.vocab must be an object", what);
    size_t n = json_object_size(vocab);
    if (n == 0) return ds_err_set(e, DS_EFORMAT, "%s: model.vocab is empty", what);
    int64_t max_id = -1;
    const char *key;
    json_t *val;
    json_object_foreach((json_t *)vocab, key, val) {
        if (!json_is_integer(val) || json_integer_value(val) < 0 || json_integer_value(val) >= TOK_MAX_ID)
            return ds_err_set(e, DS_EFORMAT, "%s: model.vocab['%.60s'] must be an id in [0, %d)", what, key,
                              TOK_MAX_ID);
        if (json_integer_value(val) > max_id) max_id = json_integer_value(val);
    }
    t->n_ids = max_id + 1;
    t->n_model = (int64_t)n;
    t->model_off = calloc((size_t)t->n_ids, sizeof *t->model_off);
    t->model_len = calloc((size_t)t->n_ids, sizeof *t->model_len);
    t->flags = calloc((size_t)t->n_ids, 1);
    t->vmask = pow2_at_least(2 * (uint64_t)n) - 1;
    t->vhash = malloc(((size_t)t->vmask + 1) * sizeof *t->vhash);
    if (!t->model_off || !t->model_len || !t->flags || !t->vhash)
        return ds_err_set(e, DS_ENOMEM, "%s: out of memory for the vocab", what);
    memset(t->vhash, 0xff, ((size_t)t->vmask + 1) * sizeof *t->vhash);
    json_object_foreach((json_t *)vocab, key, val) {
        int32_t id = (int32_t)json_integer_value(val);
        size_t klen = strlen(key); /* byte-level vocab keys never contain NUL */
        if (t->flags[id] & TOK_ID_USED)
            return ds_err_set(e, DS_EFORMAT, "%s: model.vocab: id %d is used by two tokens ('%.40s')", what, id,
                              key);
        int64_t off = tok_pool_add(&t->strs, key, klen);
        if (off < 0) return ds_err_set(e, DS_ENOMEM, "%s: out of memory for the vocab", what);
        t->model_off[id] = (uint32_t)off;
        t->model_len[id] = (uint32_t)klen;
        t->flags[id] |= TOK_ID_USED;
        uint32_t i = (uint32_t)tok_hash(key, klen) & t->vmask;
        while (t->vhash[i] >= 0) i = (i + 1) & t->vmask;
        t->vhash[i] = id;
    }
    return DS_OK;
}

static int add_merge(ds_tokenizer *t, size_t rank, const char *a, size_t alen, const char *b, size_t blen,
                     char **buf, size_t *cap, ds_err *e) {
    int32_t ia = bpe_vocab_get(t, a, alen), ib = bpe_vocab_get(t, b, blen);
    if (ia < 0 || ib < 0)
        return ds_err_set(e, DS_EFORMAT, "%s: model.merges[%zu]: token '%.*s' is not in the vocab", t->what,
                          rank, ia < 0 ? (int)DS_MIN(alen, 60) : (int)DS_MIN(blen, 60), ia < 0 ? a : b);
    if (alen + blen + 1 > *cap) {
        size_t c = (alen + blen + 1) * 2;
        char *p = realloc(*buf, c);
        if (!p) return ds_err_set(e, DS_ENOMEM, "%s: out of memory", t->what);
        *buf = p;
        *cap = c;
    }
    memcpy(*buf, a, alen);
    memcpy(*buf + alen, b, blen);
    int32_t nid = bpe_vocab_get(t, *buf, alen + blen);
    if (nid < 0)
        return ds_err_set(e, DS_EFORMAT, "%s: model.merges[%zu]: merged token '%.*s' is not in the vocab", t->what,
                          rank, (int)DS_MIN(alen + blen, 60), *buf);
    merge_ent *m = merge_find(t, ia, ib);
    m->key = ((uint64_t)(uint32_t)ia << 32) | (uint32_t)ib;
    m->rank = (uint32_t)rank; /* a repeated pair keeps its last rank, as HF's HashMap */
    m->new_id = nid;
    return DS_OK;
}

static int load_merges(ds_tokenizer *t, const json_t *merges, ds_err *e) {
    if (!json_is_array(merges)) return ds_err_set(e, DS_EFORMAT, "%s: model.merges must be an array", t->what);
    size_t n = json_array_size(merges);
    t->mmask = pow2_at_least(2 * (uint64_t)n + 2) - 1;
    t->mhash = malloc(((size_t)t->mmask + 1) * sizeof *t->mhash);
    if (!t->mhash) return ds_err_set(e, DS_ENOMEM, "%s: out of memory for merges", t->what);
    for (size_t i = 0; i <= t->mmask; i++) t->mhash[i].key = UINT64_MAX;
    char *buf = NULL;
    size_t cap = 0, rank = 0;
    int rc = DS_OK;
    for (size_t i = 0; i < n && !rc; i++) {
        const json_t *m = json_array_get(merges, i);
        if (json_is_string(m)) {
            const char *s = json_string_value(m);
            size_t len = json_string_length(m);
            if (len >= 8 && !strncmp(s, "#version", 8)) continue;
            const char *sp = memchr(s, ' ', len);
            if (!sp || memchr(sp + 1, ' ', len - (size_t)(sp + 1 - s)))
                rc = ds_err_set(e, DS_EFORMAT, "%s: model.merges[%zu] = '%.60s' is not two tokens separated by one space",
                                t->what, i, s);
            else
                rc = add_merge(t, rank++, s, (size_t)(sp - s), sp + 1, len - (size_t)(sp + 1 - s), &buf, &cap, e);
        } else if (json_is_array(m) && json_array_size(m) == 2 && json_is_string(json_array_get(m, 0)) &&
                   json_is_string(json_array_get(m, 1))) {
            const json_t *a = json_array_get(m, 0), *b = json_array_get(m, 1);
            rc = add_merge(t, rank++, json_string_value(a), json_string_length(a), json_string_value(b),
                           json_string_length(b), &buf, &cap, e);
        } else {
            rc = ds_err_set(e, DS_EFORMAT, "%s: model.merges[%zu] must be \"a b\" or [\"a\", \"b\"]", t->what, i);
        }
    }
    free(buf);
    return rc;
}

int bpe_load(ds_tokenizer *t, const json_t *model, ds_err *e) {
    const char *what = t->what;
    if (!json_is_object(model)) return ds_err_set(e, DS_EFORMAT, "%s: missing 'model' object", what);
    const char *type = NULL;
    int rc = ds_json_get_str(model, what, "type", false, &type, e);
    if (rc) return rc;
    if (type && strcmp(type, "BPE"))
        return ds_err_set(e, DS_EUNSUPPORTED, "%s: model.type '%s' is not supported (only BPE)", what, type);
    const json_t *v;
    if ((v = json_object_get(model, "dropout")) && !json_is_null(v) &&
        !(json_is_number(v) && json_number_value(v) == 0.0))
        return ds_err_set(e, DS_EUNSUPPORTED, "%s: model.dropout is not supported (inference is deterministic)", what);
    if (((v = json_object_get(model, "continuing_subword_prefix")) && !json_is_null(v)) ||
        ((v = json_object_get(model, "end_of_word_suffix")) && !json_is_null(v)))
        return ds_err_set(e, DS_EUNSUPPORTED, "%s: BPE continuing_subword_prefix/end_of_word_suffix are not supported",
                          what);
    t->ignore_merges = json_is_true(json_object_get(model, "ignore_merges"));
    t->byte_fallback = json_is_true(json_object_get(model, "byte_fallback"));
    t->fuse_unk = json_is_true(json_object_get(model, "fuse_unk"));
    if ((rc = load_vocab(t, json_object_get(model, "vocab"), e))) return rc;
    if (!json_object_get(model, "merges"))
        return ds_err_set(e, DS_EFORMAT, "%s: model.merges is missing", what);
    if ((rc = load_merges(t, json_object_get(model, "merges"), e))) return rc;
    t->unk_id = -1;
    const json_t *unk = json_object_get(model, "unk_token");
    if (unk && json_is_string(unk)) {
        t->unk_id = bpe_vocab_get(t, json_string_value(unk), json_string_length(unk));
        if (t->unk_id < 0)
            return ds_err_set(e, DS_EFORMAT, "%s: model.unk_token '%.40s' is not in the vocab", what,
                              json_string_value(unk));
    }
    for (int b = 0; b < 256; b++) {
        char s[4];
        int n = bytelevel_put(s, (uint8_t)b);
        t->byte_id[b] = bpe_vocab_get(t, s, (size_t)n);
        t->byte_fb[b][0] = t->byte_fb[b][1] = -1;
        if (t->byte_fallback) {
            int32_t ids[2] = {-1, -1};
            bool ok = true;
            for (int k = 0; k < n; k++) {
                char name[8];
                snprintf(name, sizeof name, "<0x%02X>", (unsigned char)s[k]);
                ids[k] = bpe_vocab_get(t, name, strlen(name));
                if (ids[k] < 0) ok = false;
            }
            if (ok) { t->byte_fb[b][0] = ids[0]; t->byte_fb[b][1] = ids[1]; }
        }
    }
    return DS_OK;
}

/* ---------------------------------------------------------------- cache */

void tok_cache_init(tok_cache *c) {
    memset(c, 0, sizeof *c);
    pthread_mutex_init(&c->mu, NULL);
    c->max = CACHE_MAX_ENTS;
}

void tok_cache_free(tok_cache *c) {
    free(c->slots);
    free(c->ents);
    free(c->data.p);
    pthread_mutex_destroy(&c->mu);
}

/* Under c->mu. Returns the entry index or -1. */
static int64_t cache_find(tok_cache *c, uint64_t h, const char *s, size_t n, uint32_t *slot) {
    uint32_t i = (uint32_t)h & c->mask;
    for (;; i = (i + 1) & c->mask) {
        uint32_t k = c->slots[i];
        if (!k) { *slot = i; return -1; }
        struct cache_ent *en = &c->ents[k - 1];
        if (en->h == h && en->key_len == n && !memcmp(c->data.p + en->key_off, s, n)) return k - 1;
    }
}

static bool cache_get(tok_cache *c, uint64_t h, const char *s, size_t n, tok_ids *out, ds_err *e, int *rc) {
    *rc = DS_OK;
    if (!c->slots || pthread_mutex_trylock(&c->mu)) return false;
    uint32_t slot;
    int64_t k = cache_find(c, h, s, n, &slot);
    bool hit = false;
    if (k >= 0) {
        struct cache_ent *en = &c->ents[k];
        const char *vals = c->data.p + en->val_off;
        for (uint32_t i = 0; i < en->val_n && !*rc; i++) {
            int32_t id;
            memcpy(&id, vals + 4 * (size_t)i, 4);
            *rc = tok_ids_push(out, id, e);
        }
        hit = true;
    }
    pthread_mutex_unlock(&c->mu);
    return hit;
}

static void cache_put(tok_cache *c, uint64_t h, const char *s, size_t n, const int32_t *ids, int64_t nids) {
    if (pthread_mutex_trylock(&c->mu)) return;
    if (!c->slots) {
        c->mask = 2 * c->max - 1;
        c->slots = calloc((size_t)c->mask + 1, sizeof *c->slots);
        c->ents = malloc(c->max * sizeof *c->ents);
        if (!c->slots || !c->ents) {
            free(c->slots);
            free(c->ents);
            c->slots = NULL;
            c->ents = NULL;
            goto out;
        }
    }
    if (c->n >= c->max || c->data.n > (64u << 20)) { /* full: start over */
        memset(c->slots, 0, ((size_t)c->mask + 1) * sizeof *c->slots);
        c->n = 0;
        c->data.n = 0;
    }
    uint32_t slot;
    if (cache_find(c, h, s, n, &slot) >= 0) goto out;
    int64_t ko = tok_pool_add(&c->data, s, n);
    int64_t vo = ko < 0 ? -1 : tok_pool_add(&c->data, ids, (size_t)nids * 4);
    if (vo < 0) goto out;
    c->ents[c->n] = (struct cache_ent){ h, (uint32_t)ko, (uint32_t)n, (uint32_t)vo, (uint32_t)nids };
    c->slots[slot] = ++c->n;
out:
    pthread_mutex_unlock(&c->mu);
}

/* ---------------------------------------------------------------- merge */

static inline bool heap_less(const bpe_heap_ent *a, const bpe_heap_ent *b) {
    return a->rank != b->rank ? a->rank < b->rank : a->pos < b->pos;
}

static void heap_push(bpe_heap_ent *h, size_t *n, bpe_heap_ent x) {
    size_t i = (*n)++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!heap_less(&x, &h[p])) break;
        h[i] = h[p];
        i = p;
    }
    h[i] = x;
}

static bpe_heap_ent heap_pop(bpe_heap_ent *h, size_t *n) {
    bpe_heap_ent top = h[0], x = h[--(*n)];
    size_t m = *n, i = 0;
    if (m == 0) return top;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, c = l;
        if (l >= m) break;
        if (r < m && heap_less(&h[r], &h[l])) c = r;
        if (!heap_less(&h[c], &x)) break;
        h[i] = h[c];
        i = c;
    }
    h[i] = x;
    return top;
}

static int grow(void **p, size_t *cap, size_t need, size_t elem, ds_err *e) {
    if (need <= *cap) return DS_OK;
    size_t c = *cap ? *cap : 256;
    while (c < need) c *= 2;
    size_t bytes;
    if (!ds_size_mul(c, elem, &bytes)) return ds_err_set(e, DS_ENOMEM, "tokenizer: piece too large");
    void *q = realloc(*p, bytes);
    if (!q) return ds_err_set(e, DS_ENOMEM, "tokenizer: out of memory for a %zu-byte piece", need);
    *p = q;
    *cap = c;
    return DS_OK;
}

int bpe_encode_piece(tok_ctx *cx, const char *s, size_t n) {
    const ds_tokenizer *t = cx->t;
    ds_err *e = cx->e;
    int rc;
    if (n == 0) return DS_OK;
    tok_cache *cache = (tok_cache *)&t->cache;
    uint64_t h = 0;
    bool cacheable = n < CACHE_MAX_KEY;
    if (cacheable) {
        h = tok_hash(s, n);
        if (cache_get(cache, h, s, n, cx->out, e, &rc)) return rc;
    }
    if (t->ignore_merges) {
        if ((rc = grow((void **)&cx->cbuf, &cx->cbuf_cap, 2 * n, 1, e))) return rc;
        size_t m = 0;
        for (size_t i = 0; i < n; i++) m += (size_t)bytelevel_put(cx->cbuf + m, (uint8_t)s[i]);
        int32_t id = bpe_vocab_get(t, cx->cbuf, m);
        if (id >= 0) return tok_ids_push(cx->out, id, e);
    }
    /* initial symbols: one per byte (HF: one per ByteLevel char) */
    if ((rc = grow((void **)&cx->syms, &cx->syms_cap, 2 * n + 1, sizeof *cx->syms, e))) return rc;
    bpe_sym *sym = cx->syms;
    int64_t ns = 0;
    int32_t unk = -1; /* pending unknown run (HF merge_word) */
    for (size_t i = 0; i < n; i++) {
        uint8_t b = (uint8_t)s[i];
        int32_t id = t->byte_id[b];
        if (id >= 0) {
            if (unk >= 0) { sym[ns++].id = unk; unk = -1; }
            sym[ns++].id = id;
            continue;
        }
        if (t->byte_fallback && t->byte_fb[b][0] >= 0) {
            sym[ns++].id = t->byte_fb[b][0];
            if (t->byte_fb[b][1] >= 0) sym[ns++].id = t->byte_fb[b][1];
            continue;
        }
        if (t->unk_id >= 0) {
            if (unk >= 0 && !t->fuse_unk) sym[ns++].id = unk;
            unk = t->unk_id;
        }
        /* no unk token: the byte is dropped, as HF does */
    }
    if (unk >= 0) sym[ns++].id = unk;
    for (int64_t i = 0; i < ns; i++) {
        sym[i].prev = (int32_t)i - 1;
        sym[i].next = i + 1 < ns ? (int32_t)i + 1 : -1;
    }
    if ((rc = grow((void **)&cx->heap, &cx->heap_cap, 3 * (size_t)ns + 1, sizeof *cx->heap, e))) return rc;
    bpe_heap_ent *heap = cx->heap;
    size_t nh = 0;
    for (int64_t i = 0; i + 1 < ns; i++) {
        const merge_ent *m = merge_find(t, sym[i].id, sym[i + 1].id);
        if (m->key != UINT64_MAX) heap_push(heap, &nh, (bpe_heap_ent){ m->rank, (uint32_t)i, m->new_id });
    }
    while (nh) {
        bpe_heap_ent top = heap_pop(heap, &nh);
        bpe_sym *cur = &sym[top.pos];
        if (cur->id < 0 || cur->next < 0) continue; /* removed, or last */
        bpe_sym *right = &sym[cur->next];
        const merge_ent *m = merge_find(t, cur->id, right->id);
        if (m->key == UINT64_MAX || m->new_id != top.new_id) continue; /* stale */
        cur->id = top.new_id;
        int32_t rnext = right->next;
        right->id = -1;
        cur->next = rnext;
        if (rnext >= 0) sym[rnext].prev = (int32_t)top.pos;
        if (cur->prev >= 0) {
            m = merge_find(t, sym[cur->prev].id, cur->id);
            if (m->key != UINT64_MAX) heap_push(heap, &nh, (bpe_heap_ent){ m->rank, (uint32_t)cur->prev, m->new_id });
        }
        if (rnext >= 0) {
            m = merge_find(t, cur->id, sym[rnext].id);
            if (m->key != UINT64_MAX) heap_push(heap, &nh, (bpe_heap_ent){ m->rank, top.pos, m->new_id });
        }
    }
    int64_t first = cx->out->n;
    for (int64_t i = 0; i < ns; i++)
        if (sym[i].id >= 0 && (rc = tok_ids_push(cx->out, sym[i].id, e))) return rc;
    /* (a hostile vocabulary can leave a piece no ids: nothing to cache, and no
     * pointer arithmetic on a still-empty id buffer) */
    if (cacheable && cx->out->n > first) cache_put(cache, h, s, n, cx->out->v + first, cx->out->n - first);
    return DS_OK;
}
