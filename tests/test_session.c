/*
 * test_session.c - the model / session split: one read-only model serves
 * two sessions on two threads at once with the logits each gets alone,
 * and a steady decode step (forward, sampler, detokenizer, stop strings)
 * allocates nothing.
 */
#include "test.h"
#include "../src/model/model.h"
#include "../src/model/model_internal.h"
#include "../src/runtime/generate.h"
#include "../src/tokenizer/tokenizer.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------ two sessions, two threads */

enum { N_PROMPT = 12, N_DECODE = 8 };

typedef struct {
    const ds_model *m;
    const int32_t *tok;     /* N_PROMPT + N_DECODE tokens */
    float *logits;          /* (N_PROMPT + N_DECODE, V) */
    int rc;
} run_job;

/* A session's forward passes: the prompt in one chunk (every row's
 * logits), then one token at a time. */
static void *run_session(void *arg) {
    run_job *j = arg;
    int64_t V = j->m->cfg.vocab_size;
    ds_err e = { 0 };
    ds_ctx *x = NULL;
    ds_kvcache c;
    j->rc = ds_ctx_new(&x, &e);
    if (j->rc) return NULL;
    ds_ctx_set_threads(x, 2);   /* each session runs its own parallel regions */
    if ((j->rc = ds_kvcache_init(&c, j->m, 64, &e))) { ds_ctx_free(x); return NULL; }
    ds_seq_chunk ch = { &c, j->tok, N_PROMPT, true };
    j->rc = ds_model_forward(j->m, x, &ch, 1, j->logits, NULL, &e);
    for (int i = 0; i < N_DECODE && !j->rc; i++) {
        ds_seq_chunk one = { &c, j->tok + N_PROMPT + i, 1, false };
        j->rc = ds_model_forward(j->m, x, &one, 1, j->logits + (N_PROMPT + i) * V, NULL, &e);
    }
    ds_kvcache_free(&c);
    ds_ctx_free(x);
    return NULL;
}

static void two_threads(const char *path) {
    ds_err e = { 0 };
    ds_model *m = NULL;
    if (ds_model_open(&m, path, &e)) { ds_test_fail(__FILE__, __LINE__, "open %s: %s", path, e.msg); return; }
    int64_t V = m->cfg.vocab_size;
    size_t rows = N_PROMPT + N_DECODE;
    int32_t tok[2][N_PROMPT + N_DECODE];
    for (size_t i = 0; i < rows; i++) {
        tok[0][i] = (int32_t)(1 + (i * 7919) % (uint64_t)(V - 1));
        tok[1][i] = (int32_t)(1 + (i * 104729 + 17) % (uint64_t)(V - 1));
    }
    float *alone[2], *both[2];
    for (int k = 0; k < 2; k++) {
        alone[k] = malloc(rows * (size_t)V * sizeof(float));
        both[k] = malloc(rows * (size_t)V * sizeof(float));
    }
    CHECK(alone[0] && alone[1] && both[0] && both[1]);
    for (int k = 0; k < 2 && alone[k]; k++) {
        run_job j = { m, tok[k], alone[k], 0 };
        run_session(&j);
        CHECK_EQ_INT(j.rc, 0);
    }
    for (int round = 0; round < 6; round++) {
        run_job j[2] = { { m, tok[0], both[0], -1 }, { m, tok[1], both[1], -1 } };
        pthread_t th[2];
        for (int k = 0; k < 2; k++) CHECK(pthread_create(&th[k], NULL, run_session, &j[k]) == 0);
        for (int k = 0; k < 2; k++) pthread_join(th[k], NULL);
        for (int k = 0; k < 2; k++) {
            CHECK_EQ_INT(j[k].rc, 0);
            CHECK_MSG(memcmp(alone[k], both[k], rows * (size_t)V * sizeof(float)) == 0,
                      "%s: session %d's logits on two threads differ from alone (round %d)", path, k, round);
        }
    }
    for (int k = 0; k < 2; k++) { free(alone[k]); free(both[k]); }
    ds_model_close(m);
}

TEST(session_two_threads_bf16) { two_threads("tests/fixtures/tiny-v3"); }
TEST(session_two_threads_q4_k) { two_threads("tests/fixtures/gguf/kq.llama-q4_k_m.gguf"); }

/* ------------------------------------------------- no allocation per step */

/* Allocations made by this executable's code (the library is linked in;
 * libgomp's and libc's own bookkeeping is not ours to count) while
 * counting is on. Sanitizer builds keep their own allocator. */
#if defined(__SANITIZE_ADDRESS__)
#define COUNT_ALLOCS 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define COUNT_ALLOCS 0
#endif
#endif
#ifndef COUNT_ALLOCS
#define COUNT_ALLOCS 1
#endif

#if COUNT_ALLOCS
extern char __executable_start, etext;
extern void *__libc_malloc(size_t n);
extern void *__libc_calloc(size_t n, size_t s);
extern void *__libc_realloc(void *p, size_t n);
extern void *__libc_memalign(size_t a, size_t n);

static atomic_int g_counting;
static atomic_long g_allocs;
static atomic_long g_fail_at;   /* > 0: the allocation with this count fails (fault injection) */

/* Counts an allocation by our code; false: make it fail. */
static bool note(const void *ret) {
    if (!atomic_load_explicit(&g_counting, memory_order_relaxed) || (const char *)ret < &__executable_start ||
        (const char *)ret >= &etext)
        return true;
    long k = atomic_fetch_add(&g_allocs, 1) + 1;
    return k != atomic_load(&g_fail_at);
}

void *malloc(size_t n) { return note(__builtin_return_address(0)) ? __libc_malloc(n) : NULL; }
void *calloc(size_t n, size_t s) { return note(__builtin_return_address(0)) ? __libc_calloc(n, s) : NULL; }
void *realloc(void *p, size_t n) { return note(__builtin_return_address(0)) ? __libc_realloc(p, n) : NULL; }
void *aligned_alloc(size_t a, size_t n) { return note(__builtin_return_address(0)) ? __libc_memalign(a, n) : NULL; }
int posix_memalign(void **p, size_t a, size_t n) {
    *p = note(__builtin_return_address(0)) ? __libc_memalign(a, n) : NULL;
    return *p ? 0 : 12;   /* ENOMEM */
}

typedef struct { int64_t n; long at_start; bool count; } count_state;

/* Counting starts at the second generated token of the second reply: by
 * then the forward context, the KV cache, the decode buffers, the text
 * buffers and the kernel scratch have been sized. */
static int count_cb(void *ud, int32_t tok, const char *text, size_t len) {
    count_state *cs = ud;
    if (++cs->n == 2 && cs->count) {
        cs->at_start = atomic_load(&g_allocs);
        atomic_store(&g_counting, 1);
    }
    return 0;
}

static void decode_no_alloc(bool mtp, const char *path) {
    ds_err e = { 0 };
    ds_model *m = NULL;
    ds_tokenizer *tk = NULL;
    if (ds_model_open(&m, path, &e)) { ds_test_fail(__FILE__, __LINE__, "%s", e.msg); return; }
    if (!mtp && tok_load(&tk, path, &e)) { ds_test_fail(__FILE__, __LINE__, "%s", e.msg); ds_model_close(m); return; }
    ds_sampler_params sp;
    ds_sampler_params_default(&sp);
    sp.temperature = 0.8f;
    sp.top_k = 40;
    sp.repetition_penalty = 1.1f;
    sp.seed = 7;
    ds_session ss;
    CHECK(ds_session_init(&ss, m, tk, 200, &sp, &e) == 0);
    /* one thread: with several, the work units go to threads from a shared
     * counter, so on a loaded machine a thread may first touch a scratch
     * slot late (a one-time allocation, not a per-step one) */
    ds_ctx_set_threads(ss.ctx, 1);
    if (tk) CHECK(ds_session_add_stop(&ss, "a stop string that will not come", &e) == 0);
    int32_t prompt[6] = { 1, 5, 9, 13, 17, 21 };
    ds_gen_opts o = { .max_tokens = 40, .mtp = mtp };
    ds_gen_stats st;
    count_state cs = { 0, 0, false };
    for (int run = 0; run < 2; run++) {
        ds_kvcache_clear(ss.cache);
        CHECK(ds_session_begin(&ss, NULL, prompt, 6, &e) == 0);
        cs = (count_state){ 0, 0, run == 1 };
        atomic_store(&g_allocs, 0);
        int rc = ds_generate(&ss, prompt, 6, &o, count_cb, &cs, &st, &e);
        atomic_store(&g_counting, 0);
        CHECK_MSG(rc == 0, "%s", e.msg);
        CHECK_EQ_INT(st.n_gen, 40);
    }
    long n = atomic_load(&g_allocs) - cs.at_start;
    CHECK_MSG(n == 0, "%s%s: %ld allocations in 38 decode steps", path, mtp ? " (MTP)" : "", n);
    ds_session_free(&ss);
    if (tk) tok_free(tk);
    ds_model_close(m);
}

TEST(session_decode_allocates_nothing) { decode_no_alloc(false, "tests/fixtures/tiny-chat"); }
TEST(session_decode_allocates_nothing_mtp) { decode_no_alloc(true, "tests/fixtures/tiny-v3"); }

/* Every allocation of a first forward pass (fresh context: arena, kernel
 * scratch, job tables) made to fail in turn: the call returns DS_ENOMEM
 * or, if it got through, exactly the logits of an undisturbed run; it
 * never aborts. */
static void forward_oom(const char *path) {
    ds_err e = { 0 };
    ds_model *m = NULL;
    if (ds_model_open(&m, path, &e)) { ds_test_fail(__FILE__, __LINE__, "%s", e.msg); return; }
    int64_t V = m->cfg.vocab_size;
    int32_t tok[20];
    for (int i = 0; i < 20; i++) tok[i] = (int32_t)(1 + (i * 7919) % (V - 1));
    float *ref = malloc((size_t)V * sizeof(float)), *got = malloc((size_t)V * sizeof(float));
    CHECK(ref && got);
    long n_allocs = 0;
    int n_enomem = 0;
    for (long k = 0; k <= n_allocs; k++) {   /* k = 0: the reference, counting how many there are */
        ds_kvcache c;
        CHECK(ds_kvcache_init(&c, m, 64, &e) == 0);
        CHECK(ds_kvcache_reserve(&c, 32, &e) == 0);
        atomic_store(&g_allocs, 0);
        atomic_store(&g_fail_at, k);
        atomic_store(&g_counting, 1);
        ds_ctx *x = NULL;
        int rc = ds_ctx_new(&x, &e);
        if (!rc) {
            ds_ctx_set_threads(x, 1);
            ds_seq_chunk ch = { &c, tok, 20, false };
            rc = ds_model_forward(m, x, &ch, 1, k ? got : ref, NULL, &e);
            ds_seq_chunk one = { &c, tok + 20 - 1, 1, false };
            if (!rc) rc = ds_model_forward(m, x, &one, 1, k ? got : ref, NULL, &e);
        }
        atomic_store(&g_counting, 0);
        atomic_store(&g_fail_at, 0);
        if (k == 0) {
            CHECK_MSG(rc == 0, "%s", e.msg);
            n_allocs = atomic_load(&g_allocs);
        } else if (rc) {
            CHECK_MSG(rc == DS_ENOMEM, "allocation %ld failing: %s", k, e.msg);
            n_enomem++;
        } else {
            CHECK_MSG(memcmp(ref, got, (size_t)V * sizeof(float)) == 0, "allocation %ld failed silently", k);
        }
        ds_ctx_free(x);
        ds_kvcache_free(&c);
    }
    CHECK(n_allocs > 5);
    CHECK_EQ_INT(n_enomem, n_allocs);
    if (getenv("DS_TEST_VERBOSE")) fprintf(stderr, "%s: %ld allocations, each failing -> DS_ENOMEM\n", path, n_allocs);
    free(ref);
    free(got);
    ds_model_close(m);
}

/* A prefill of a size seen before allocates nothing: the first one grows
 * the forward arena block by block, and the context consolidates it when
 * that call ends (not when the next one starts), so a second prefill of
 * the same length (bench's first timed run after its warm-up, a server's
 * next prompt) neither allocates nor page-faults a fresh block. */
static void prefill_again_no_alloc(const char *path, int64_t n) {
    ds_err e = { 0 };
    ds_model *m = NULL;
    if (ds_model_open(&m, path, &e)) { ds_test_fail(__FILE__, __LINE__, "%s", e.msg); return; }
    int64_t V = m->cfg.vocab_size;
    int32_t *tok = malloc((size_t)n * sizeof *tok);
    float *logits = malloc((size_t)V * sizeof(float));
    CHECK(tok && logits);
    for (int64_t i = 0; i < n; i++) tok[i] = (int32_t)(1 + (i * 7919) % (V - 1));
    ds_kvcache c;
    CHECK(ds_kvcache_init(&c, m, n + 8, &e) == 0);
    ds_ctx *x = NULL;
    CHECK(ds_ctx_new(&x, &e) == 0);
    ds_ctx_set_threads(x, 1);
    CHECK_MSG(ds_prefill(m, x, &c, tok, n, n, logits, &e) == 0, "%s", e.msg);
    CHECK(ds_kvcache_truncate(&c, 0) == 0);
    atomic_store(&g_allocs, 0);
    atomic_store(&g_counting, 1);
    int rc = ds_prefill(m, x, &c, tok, n, n, logits, &e);
    atomic_store(&g_counting, 0);
    CHECK_MSG(rc == 0, "%s", e.msg);
    long k = atomic_load(&g_allocs);
    CHECK_MSG(k == 0, "%s: %ld allocations in a second prefill of %lld tokens", path, k, (long long)n);
    ds_ctx_free(x);
    ds_kvcache_free(&c);
    free(tok);
    free(logits);
    ds_model_close(m);
}

TEST(session_prefill_again_allocates_nothing) {
    prefill_again_no_alloc("tests/fixtures/gguf/kq.llama-q4_k_m.gguf", 200);
    prefill_again_no_alloc("tests/fixtures/tiny-v3", 200);
}

TEST(session_forward_out_of_memory_q4_k) { forward_oom("tests/fixtures/gguf/kq.llama-q4_k_m.gguf"); }
TEST(session_forward_out_of_memory_moe_bf16) { forward_oom("tests/fixtures/tiny-v3"); }
TEST(session_forward_out_of_memory_fp8) { forward_oom("tests/fixtures/tiny-v3-fp8"); }
#endif
