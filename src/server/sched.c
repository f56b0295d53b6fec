/*
 * sched.c - the model worker thread: job queue, slots, continuous batching,
 * prefix reuse, sampling and the token -> text pipeline (see sched.h).
 *
 * Owns: one forward context (ds_ctx) for the batched forward, one
 * ds_kvcache per slot and the token list of what each slot's cache holds,
 * the context's prefill K/V store lent to one long prompt at a time (its
 * decompressed keys and values stay across its chunks: prefill_kv.c),
 * the prefix-cache store, and per sequence the step state of a session
 * (runtime/session.h: sampler, detokenizer, stop strings; its cache is the
 * slot's). The model is shared read-only. Does not own: HTTP, JSON, request validation
 * (openai.c / http.c do those on connection threads).
 *
 * Locking: one scheduler mutex guards the submit queue and the stats; each
 * job has its own mutex + condition for its event list. The worker never
 * holds a lock while the model runs.
 */
#include "sched.h"
#include "jsonmode.h"
#include "prefix_cache.h"
#include "../core/strbuf.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---------------------------------------------------------------- jobs */

struct srv_job {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int refs;                 /* under mu */
    atomic_bool cancelled;
    bool done;                /* under mu: every choice finished */
    srv_event *ev;            /* under mu: events not yet taken */
    int n_ev, cap_ev;
    srv_job_usage usage;      /* under mu once done */
    srv_job_params p;         /* owned copies */
    double t_submit;
    struct srv_job *next;     /* submit queue link (scheduler mutex) */
    /* worker-only */
    int choices_left;
    bool shared_ready;        /* choice 0 finished its prefill (others may copy it) */
};

void srv_event_free(srv_event *ev) {
    if (!ev) return;
    free(ev->text);
    free(ev->lp);
    chat_tool_parse_free(&ev->calls);
    memset(ev, 0, sizeof *ev);
}

static void *dup_mem(const void *p, size_t n) {
    if (!p || !n) return NULL;
    void *d = malloc(n);
    if (d) memcpy(d, p, n);
    return d;
}

static void job_free(srv_job *j) {
    for (int i = 0; i < j->n_ev; i++) srv_event_free(&j->ev[i]);
    free(j->ev);
    free((void *)j->p.prompt);
    for (int i = 0; i < j->p.n_stop; i++) free((void *)j->p.stop[i]);
    free((void *)j->p.stop);
    free((void *)j->p.bias_ids);
    free((void *)j->p.bias);
    free((void *)j->p.forced);
    for (int i = 0; i < j->p.n_tool_names; i++) free((void *)j->p.tool_names[i]);
    free((void *)j->p.tool_names);
    free((void *)j->p.tool_mid);
    free((void *)j->p.tool_end);
    pthread_mutex_destroy(&j->mu);
    pthread_cond_destroy(&j->cv);
    free(j);
}

int srv_job_new(srv_job **out, const srv_job_params *p, ds_err *e) {
    *out = NULL;
    if (p->n_prompt < 1) return ds_err_set(e, DS_EINVAL, "empty prompt");
    if (p->n < 1 || p->n > SRV_MAX_N) return ds_err_set(e, DS_EINVAL, "n must be in [1, %d]", SRV_MAX_N);
    srv_job *j = calloc(1, sizeof *j);
    if (!j) return ds_err_set(e, DS_ENOMEM, "out of memory");
    pthread_mutex_init(&j->mu, NULL);
    pthread_cond_init(&j->cv, NULL);
    j->refs = 1;
    atomic_init(&j->cancelled, false);
    j->p = *p;
    j->p.prompt = dup_mem(p->prompt, (size_t)p->n_prompt * sizeof *p->prompt);
    j->p.stop = NULL;
    j->p.n_stop = 0;
    j->p.bias_ids = dup_mem(p->bias_ids, (size_t)p->n_bias * sizeof *p->bias_ids);
    j->p.bias = dup_mem(p->bias, (size_t)p->n_bias * sizeof *p->bias);
    j->p.forced = dup_mem(p->forced, (size_t)p->n_forced * sizeof *p->forced);
    j->p.tool_mid = dup_mem(p->tool_mid, (size_t)p->n_tool_mid * sizeof *p->tool_mid);
    j->p.tool_end = dup_mem(p->tool_end, (size_t)p->n_tool_end * sizeof *p->tool_end);
    j->p.tool_names = NULL;
    j->p.n_tool_names = 0;
    bool ok = j->p.prompt && (!p->n_bias || (j->p.bias_ids && j->p.bias)) && (!p->n_forced || j->p.forced) &&
              (!p->n_tool_mid || j->p.tool_mid) && (!p->n_tool_end || j->p.tool_end);
    if (ok && p->n_tool_names > 0) {
        const char **nm = calloc((size_t)p->n_tool_names, sizeof *nm);
        ok = nm != NULL;
        j->p.tool_names = nm;
        for (int i = 0; ok && i < p->n_tool_names; i++) {
            nm[i] = strdup(p->tool_names[i]);
            ok = nm[i] != NULL;
            j->p.n_tool_names = i + 1;
        }
    }
    if (ok && p->n_stop > 0) {
        const char **st = calloc((size_t)p->n_stop, sizeof *st);
        ok = st != NULL;
        j->p.stop = st;
        for (int i = 0; ok && i < p->n_stop; i++) {
            st[i] = strdup(p->stop[i]);
            ok = st[i] != NULL;
            j->p.n_stop = i + 1;
        }
    }
    if (!ok) {
        job_free(j);
        return ds_err_set(e, DS_ENOMEM, "out of memory");
    }
    *out = j;
    return DS_OK;
}

static void job_ref(srv_job *j) {
    pthread_mutex_lock(&j->mu);
    j->refs++;
    pthread_mutex_unlock(&j->mu);
}

void srv_job_release(srv_job *j) {
    if (!j) return;
    pthread_mutex_lock(&j->mu);
    int r = --j->refs;
    pthread_mutex_unlock(&j->mu);
    if (r == 0) job_free(j);
}

void srv_job_cancel(srv_job *j) {
    if (j) atomic_store(&j->cancelled, true);
}

bool srv_job_wait(srv_job *j, double timeout, srv_event **evs, int *n) {
    *evs = NULL;
    *n = 0;
    pthread_mutex_lock(&j->mu);
    if (j->n_ev == 0 && !j->done && timeout > 0) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        double t = ts.tv_sec + ts.tv_nsec * 1e-9 + timeout;
        ts.tv_sec = (time_t)t;
        ts.tv_nsec = (long)((t - (double)ts.tv_sec) * 1e9);
        while (j->n_ev == 0 && !j->done)
            if (pthread_cond_timedwait(&j->cv, &j->mu, &ts) != 0) break;
    }
    if (j->n_ev > 0) {
        *evs = j->ev;
        *n = j->n_ev;
        j->ev = NULL;
        j->n_ev = j->cap_ev = 0;
    }
    bool over = j->done && j->n_ev == 0;
    pthread_mutex_unlock(&j->mu);
    return over;
}

void srv_job_get_usage(srv_job *j, srv_job_usage *u) {
    pthread_mutex_lock(&j->mu);
    *u = j->usage;
    pthread_mutex_unlock(&j->mu);
}

/* Appends an event (takes ownership of its buffers). */
static void post(srv_job *j, srv_event *ev) {
    pthread_mutex_lock(&j->mu);
    if (j->n_ev == j->cap_ev) {
        int cap = j->cap_ev ? j->cap_ev * 2 : 16;
        srv_event *ne = realloc(j->ev, (size_t)cap * sizeof *ne);
        if (!ne) { /* drop the event rather than crash; the client sees a gap */
            pthread_mutex_unlock(&j->mu);
            srv_event_free(ev);
            return;
        }
        j->ev = ne;
        j->cap_ev = cap;
    }
    j->ev[j->n_ev++] = *ev;
    pthread_cond_broadcast(&j->cv);
    pthread_mutex_unlock(&j->mu);
}

static void post_text(srv_job *j, int type, int choice, const char *s, size_t n, srv_lp *lp, int n_lp) {
    srv_event ev = { .type = type, .choice = choice, .lp = lp, .n_lp = n_lp };
    ev.text = malloc(n + 1);
    if (!ev.text) { free(lp); return; }
    if (n) memcpy(ev.text, s, n);
    ev.text[n] = 0;
    ev.len = n;
    post(j, &ev);
}

/* ------------------------------------------------------------ sequences */

enum { SEQ_PENDING, SEQ_PREFILL, SEQ_DECODE };

typedef struct srv_seq {
    srv_job *job;
    int choice;
    int slot;                 /* -1 until admitted */
    int state;
    ds_session ss;            /* the step state: sampler, detokenizer, stop strings */
    int64_t n_fed;            /* prompt tokens in the cache */
    int32_t next_tok;         /* sampled, to be fed next */
    int64_t n_gen, max_gen, n_forced_used, n_reasoning;
    bool in_reasoning, content_started, in_tools;
    char think_hold[8];       /* no </think> token (byte-level reasoners): text that may begin it */
    int n_think_hold;
    tok_ids tool_ids;
    bool in_dsml;             /* V3.2 / V4: inside the DSML tool-call block (text in dsml) */
    ds_buf dhold, dsml;       /* content that may begin the block's opener; the block */
    jv_state jv;
    int tc_phase;             /* tool_constrain: TC_* */
    int64_t tc_used;          /* tokens of tool_mid / tool_end emitted */
    char tc_name[72];         /* the function name so far (names are 1-64 bytes) */
    int tc_name_len;
    double next_time;         /* token_delay_ms hook */
    struct srv_seq *next;
} srv_seq;

typedef struct srv_slot {
    ds_kvcache cache;
    tok_ids content;          /* the tokens whose latents the cache holds (n == cache.n_past) */
    int64_t canon;            /* deterministic mode: [0, canon) was computed in whole aligned chunks */
    srv_seq *seq;
    uint64_t used;
} srv_slot;

struct srv_sched {
    srv_sched_opts o;
    const ds_model *m;
    ds_ctx *ctx;              /* the batched forward's scratch */
    const ds_tokenizer *tok;
    int64_t V;
    pthread_t thread;
    bool started;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool stop;
    srv_job *q_head, *q_tail;
    int n_queued;             /* jobs in the queue + sequences not yet in a slot */
    srv_stats st;
    /* worker-only */
    srv_slot *slots;
    srv_seq *pending;         /* FIFO of sequences waiting for a slot */
    pc_store *pc;
    uint64_t clock;
    float *logits;            /* (n_slots, V) */
    float *lsm, *saved;       /* (V) log-softmax, logits copy */
    ds_seq_chunk *chunks;
    srv_seq **chunk_seq;
    int64_t *chunk_take;
    int32_t eos[2];
    int n_eos;
    int32_t calls_begin, calls_end, think_begin, think_end;
    const char **piece;       /* (V) decoded bytes of each plain token, NULL for added/unused */
    uint16_t *piece_len;
    bool json_ok;             /* every byte has a single-byte token */
    srv_seq *kvx_seq;         /* the prefilling sequence that holds ctx's prefill K/V store, or NULL */
    int64_t n_text;           /* ids below this are the tokenizer's (model rows beyond are padding) */
};

static bool is_eos(const srv_sched *s, int32_t t) {
    for (int i = 0; i < s->n_eos; i++)
        if (s->eos[i] == t) return true;
    return false;
}

static void seq_free(srv_seq *q) {
    if (!q) return;
    ds_session_free(&q->ss);
    tok_ids_free(&q->tool_ids);
    ds_buf_free(&q->dhold);
    ds_buf_free(&q->dsml);
    free(q);
}

/* Content text through the session's stop strings (final: nothing
 * follows); posts what may be shown, with the token's logprobs. Returns
 * true if a stop string matched (the text before it is posted, the rest
 * dropped). */
static bool show_content(srv_seq *q, const char *t, size_t n, bool final, srv_lp *lp) {
    const char *em;
    size_t el;
    bool hit = ds_session_show(&q->ss, t, n, final, &em, &el);
    if (el > 0 || lp) post_text(q->job, SRV_EV_CONTENT, q->choice, em, el, lp, lp ? 1 : 0);
    if (el > 0) q->content_started = true;
    return hit;
}

/* V3.2 / V4 with tools: the block that starts tool calls is text
 * ("\n\n<｜DSML｜tool_calls"), not one token. Content that may begin it is
 * held back; once it is complete the rest of the reply is the block, parsed
 * when the sequence ends (finish_seq). */
static int dsml_content(srv_seq *q, const char *op, const char *t, size_t n, srv_lp *lp) {
    ds_buf_put(&q->dhold, t, n);
    if (q->dhold.oom) return SRV_FINISH_STOP;
    const char *h = q->dhold.p ? q->dhold.p : "";
    size_t m = q->dhold.n, ol = strlen(op);
    for (size_t i = 0; i + ol <= m; i++)
        if (!memcmp(h + i, op, ol)) {
            bool hit = show_content(q, h, i, false, lp);
            if (hit) return SRV_FINISH_STOP; /* a stop string before the calls */
            ds_buf_put(&q->dsml, h + i, m - i);
            q->dhold.n = 0;
            q->in_dsml = true;
            return -1;
        }
    size_t keep = 0; /* the longest end of the held text that begins the opener */
    for (size_t k = DS_MIN(ol - 1, m); k > 0 && !keep; k--)
        if (!memcmp(h + m - k, op, k)) keep = k;
    bool hit = show_content(q, h, m - keep, false, lp);
    memmove(q->dhold.p, h + m - keep, keep);
    q->dhold.n = keep;
    return hit ? SRV_FINISH_STOP : -1;
}

/* Reasoning text of a model whose tokenizer has no </think> token (our
 * byte-level reasoner writes it as 8 bytes): the text that may begin
 * "</think>" is held back; when it completes, what precedes it is
 * reasoning and what follows it content. */
static int reasoning_text(srv_seq *q, const char *t, size_t n, srv_lp *lp) {
    static const char close[] = "</think>";
    const size_t cl = sizeof close - 1;
    char buf[512];
    size_t h = (size_t)q->n_think_hold, m = DS_MIN(n, sizeof buf - h);
    memcpy(buf, q->think_hold, h);
    memcpy(buf + h, t, m);
    m += h;
    q->n_reasoning++;
    for (size_t i = 0; i + cl <= m; i++)
        if (!memcmp(buf + i, close, cl)) {
            q->n_think_hold = 0;
            q->in_reasoning = false;
            if (i > 0 || lp) post_text(q->job, SRV_EV_REASONING, q->choice, buf, i, lp, lp ? 1 : 0);
            return i + cl < m && show_content(q, buf + i + cl, m - i - cl, false, NULL) ? SRV_FINISH_STOP : -1;
        }
    size_t keep = 0;   /* the longest end of buf that begins "</think>" */
    for (size_t k = DS_MIN(cl - 1, m); k > 0 && !keep; k--)
        if (!memcmp(buf + m - k, close, k)) keep = k;
    memcpy(q->think_hold, buf + m - keep, keep);
    q->n_think_hold = (int)keep;
    if (m - keep > 0 || lp) post_text(q->job, SRV_EV_REASONING, q->choice, buf, m - keep, lp, lp ? 1 : 0);
    return -1;
}

/* ---------------------------------------------------------- the worker */

static void finish_job_choice(srv_sched *s, srv_seq *q) {
    srv_job *j = q->job;
    pthread_mutex_lock(&j->mu);
    j->usage.completion_tokens += q->n_gen;
    j->usage.reasoning_tokens += q->n_reasoning;
    if (--j->choices_left == 0) {
        j->done = true;
        pthread_cond_broadcast(&j->cv);
    }
    pthread_mutex_unlock(&j->mu);
    (void)s;
}

/* The forward context's prefill K/V store goes to one prompt at a time (its
 * memory is bounded: ds_ctx_prefill_begin's budget). Lent when a prompt still
 * needs more than one chunk, taken back when its prefill ends for any reason
 * (done, failed, cancelled) — before its slot's cache can change. */
static void kvx_lend(srv_sched *s, srv_seq *q, int64_t take) {
    if (s->o.no_prefill_store || s->kvx_seq || q->job->p.n_prompt - q->n_fed <= take) return;
    ds_kvcache *c = &s->slots[q->slot].cache;
    ds_err e = { 0 };
    if (ds_ctx_prefill_begin(s->ctx, s->m, c, c->n_past + (q->job->p.n_prompt - q->n_fed), 0, &e)) return; /* plain chunks */
    s->kvx_seq = q;
    pthread_mutex_lock(&s->mu);
    s->st.prefill_stores++;
    pthread_mutex_unlock(&s->mu);
}

static void kvx_take_back(srv_sched *s, srv_seq *q) {
    if (s->kvx_seq != q) return;   /* q is never NULL: NULL means nobody holds it */
    ds_ctx_prefill_end(s->ctx);
    s->kvx_seq = NULL;
}

/* Ends a sequence: flushes its text, posts FINISH (unless cancelled),
 * frees the slot (its cache stays for reuse) and drops the job reference. */
static void finish_seq(srv_sched *s, srv_seq *q, int finish) {
    srv_job *j = q->job;
    kvx_take_back(s, q);
    bool cancelled = finish == SRV_FINISH_CANCELLED;
    if (!cancelled) {
        const char *t;
        size_t n;
        ds_err e = { 0 };
        if (q->in_tools) {
            /* the tool-call block ended (or was cut off): report the calls that parse */
            char *txt = NULL;
            size_t tl = 0;
            ds_tool_parse tp;
            memset(&tp, 0, sizeof tp);
            int prc = -1;
            if (tok_decode(s->tok, q->tool_ids.v, q->tool_ids.n, false, &txt, &tl, &e) == 0)
                prc = chat_parse_tool_calls(j->p.fmt, txt, tl, &tp, &e);
            free(txt);
            if (prc == 0 && tp.n_calls > 0) {
                srv_event ev = { .type = SRV_EV_TOOL_CALLS, .choice = q->choice, .calls = tp };
                post(j, &ev);
                if (finish == SRV_FINISH_STOP) finish = SRV_FINISH_TOOL_CALLS;
            } else { /* not a valid call: show the text instead */
                chat_tool_parse_free(&tp);
                char *plain = NULL, *clean = NULL;
                size_t pl = 0, cl = 0;
                if (tok_decode(s->tok, q->tool_ids.v, q->tool_ids.n, true, &plain, &pl, &e) == 0 &&
                    tok_utf8_sanitize(plain, pl, &clean, &cl, &e) == 0 && cl > 0)
                    post_text(j, SRV_EV_CONTENT, q->choice, clean, cl, NULL, 0);
                free(plain);
                free(clean);
            }
        } else if (q->in_dsml) {
            /* the DSML block ended (or was cut off): its calls, or else its text */
            if (tok_stream_flush(&q->ss.ts, &t, &n, &e) == 0) ds_buf_put(&q->dsml, t, n);
            ds_tool_parse tp;
            memset(&tp, 0, sizeof tp);
            int prc = q->dsml.oom ? -1 : chat_parse_tool_calls(j->p.fmt, q->dsml.p, q->dsml.n, &tp, &e);
            if (prc == 0 && tp.n_calls > 0) {
                free(tp.content); /* "": the text before the block was shown */
                tp.content = NULL;
                srv_event ev = { .type = SRV_EV_TOOL_CALLS, .choice = q->choice, .calls = tp };
                post(j, &ev);
                if (finish == SRV_FINISH_STOP) finish = SRV_FINISH_TOOL_CALLS;
            } else {
                chat_tool_parse_free(&tp);
                if (q->dsml.n > 0) post_text(j, SRV_EV_CONTENT, q->choice, q->dsml.p, q->dsml.n, NULL, 0);
            }
        } else {
            if (tok_stream_flush(&q->ss.ts, &t, &n, &e) != 0) { t = ""; n = 0; }
            if (!q->in_reasoning && q->dhold.n > 0 && show_content(q, q->dhold.p, q->dhold.n, false, NULL)) n = 0;
            q->dhold.n = 0;
            if (q->in_reasoning && q->n_think_hold > 0) {   /* held text that did not become </think> */
                post_text(j, SRV_EV_REASONING, q->choice, q->think_hold, (size_t)q->n_think_hold, NULL, 0);
                q->n_think_hold = 0;
            }
            if (q->in_reasoning) {
                if (n > 0) post_text(j, SRV_EV_REASONING, q->choice, t, n, NULL, 0);
            } else {
                show_content(q, t, n, true, NULL);
            }
        }
        srv_event ev = { .type = SRV_EV_FINISH, .choice = q->choice, .finish = finish };
        post(j, &ev);
    }
    if (q->slot >= 0) {
        srv_slot *sl = &s->slots[q->slot];
        sl->seq = NULL;
        sl->used = ++s->clock;
        if (!cancelled && s->o.cache_dir && !s->o.deterministic && s->o.kv_type == DS_KV_F32 &&
            sl->content.n >= s->o.cache_min_tokens) {
            ds_err e = { 0 };
            pc_save_disk(s->pc, &sl->cache, sl->content.v, sl->content.n, &e); /* best effort */
        }
    }
    if (q->choice == 0) j->shared_ready = true; /* later choices stop waiting for its prefill */
    pthread_mutex_lock(&s->mu);
    if (q->slot < 0) s->n_queued--;
    else s->st.slots_busy--;
    if (cancelled) s->st.jobs_cancelled += q->choice == 0;
    pthread_mutex_unlock(&s->mu);
    finish_job_choice(s, q);
    srv_job_release(j);
    seq_free(q);
}

static void fail_seq(srv_sched *s, srv_seq *q, const char *msg) {
    srv_job *j = q->job;
    post_text(j, SRV_EV_ERROR, q->choice, msg, strlen(msg), NULL, 0);
    if (q->slot >= 0) { /* the cache may be half-written */
        ds_kvcache_clear(&s->slots[q->slot].cache);
        s->slots[q->slot].content.n = 0;
        s->slots[q->slot].canon = 0;
    }
    pthread_mutex_lock(&s->mu);
    s->st.jobs_failed += q->choice == 0;
    pthread_mutex_unlock(&s->mu);
    finish_seq(s, q, SRV_FINISH_CANCELLED);
}

static int64_t common_prefix(const int32_t *a, int64_t na, const int32_t *b, int64_t nb) {
    int64_t n = na < nb ? na : nb, i = 0;
    while (i < n && a[i] == b[i]) i++;
    return i;
}

static int set_content(srv_slot *sl, const int32_t *ids, int64_t n, ds_err *e) {
    sl->content.n = 0;
    for (int64_t i = 0; i < n; i++)
        if (tok_ids_push(&sl->content, ids[i], e)) return DS_ENOMEM;
    return DS_OK;
}

/* Puts a pending sequence into a free slot, reusing the longest cached
 * prefix of its prompt (its slot's own cache, another slot's, or the
 * prefix store). */
/* How much of a slot's cache a prompt can reuse. Deterministic mode: only
 * whole aligned chunks, so the positions are computed exactly as the
 * prompt alone would compute them. */
static int64_t reusable(const srv_sched *s, const srv_slot *sl, const int32_t *pr, int64_t np) {
    int64_t l = DS_MIN(common_prefix(sl->content.v, sl->content.n, pr, np), np - 1); /* the last token is always computed */
    if (s->o.deterministic) l = DS_MIN(l, sl->canon) / s->o.batch_tokens * s->o.batch_tokens;
    if (!ds_kvcache_can_truncate(&sl->cache, l)) l = 0;   /* V4: its rings hold only the last rows */
    return l;
}

static int admit(srv_sched *s, srv_seq *q, ds_err *e) {
    srv_job *j = q->job;
    const int32_t *pr = j->p.prompt;
    int64_t np = j->p.n_prompt, limit = np - 1;
    int own = -1;
    int64_t own_l = -1;
    for (int i = 0; i < s->o.n_slots; i++) {
        srv_slot *sl = &s->slots[i];
        if (sl->seq) continue;
        int64_t l = reusable(s, sl, pr, np);
        if (l > own_l || (l == own_l && sl->used < s->slots[own].used)) { own = i; own_l = l; }
    }
    if (own < 0) return DS_ERANGE;
    srv_slot *sl = &s->slots[own];
    int src = -1;
    int64_t src_l = own_l;
    for (int i = 0; i < s->o.n_slots; i++) {
        if (i == own || !s->slots[i].seq) continue;
        int64_t l = reusable(s, &s->slots[i], pr, np);
        if (l > src_l) { src = i; src_l = l; }
    }
    /* the slot's old content is about to be cut: keep it in the store (before the lookup,
     * whose handle a save could evict); deterministic mode uses slots only */
    bool store = !s->o.deterministic && s->o.kv_type == DS_KV_F32;   /* the store holds fp32 rows */
    if (store && sl->content.n > own_l && sl->content.n >= s->o.cache_min_tokens) {
        ds_err le = { 0 };
        pc_save(s->pc, &sl->cache, sl->content.v, sl->content.n, &le);
    }
    pc_entry *hit = NULL;
    int64_t pc_l = !store ? 0 : DS_MIN(pc_lookup(s->pc, pr, np, &hit), limit);
    int64_t reuse = own_l;
    if (pc_l > src_l && pc_l > own_l) {
        ds_err le = { 0 };
        if (pc_restore(s->pc, hit, pr, &sl->cache, pc_l, &le) == DS_OK) {
            reuse = sl->cache.n_past; /* a bad disk block shortens what is restored */
        } else { /* nothing restored: the slot's own prefix is still there */
            reuse = ds_kvcache_truncate(&sl->cache, DS_MIN(own_l, sl->cache.n_past));
        }
        if (set_content(sl, pr, reuse, e)) return DS_ENOMEM;
        own_l = -1; /* handled */
    } else if (src >= 0) {
        int rc = ds_kvcache_copy_prefix(&sl->cache, &s->slots[src].cache, src_l, e);
        if (rc) return rc;
        reuse = src_l;
        if (set_content(sl, pr, reuse, e)) return DS_ENOMEM;
    }
    if (reuse == own_l) {
        reuse = ds_kvcache_truncate(&sl->cache, own_l);   /* own_l (reusable() checked that V4's rings allow it) */
        sl->content.n = reuse;
    }
    DS_ASSERT(sl->cache.n_past == reuse && sl->content.n == reuse);
    sl->canon = reuse;
    sl->seq = q;
    q->ss.cache = &sl->cache;   /* the session's cache is the slot's while it runs */
    sl->used = ++s->clock;
    q->slot = own;
    q->n_fed = reuse;
    q->state = SEQ_PREFILL;
    if (q->choice == 0) {
        pthread_mutex_lock(&j->mu);
        j->usage.prompt_tokens = np;
        j->usage.cached_tokens = reuse;
        pthread_mutex_unlock(&j->mu);
        pthread_mutex_lock(&s->mu);
        s->st.prompt_tokens += np;
        s->st.cached_tokens += reuse;
        pthread_mutex_unlock(&s->mu);
    }
    pthread_mutex_lock(&s->mu);
    s->n_queued--;
    s->st.slots_busy++;
    pthread_mutex_unlock(&s->mu);
    return DS_OK;
}

/* The log-probabilities of a sampled token and the top alternatives. */
static srv_lp *make_lp(srv_sched *s, const srv_seq *q, int32_t tok) {
    srv_lp *lp = calloc(1, sizeof *lp);
    if (!lp) return NULL;
    lp->id = tok;
    lp->lp = s->lsm[tok];
    int k = q->job->p.top_logprobs;
    for (int64_t i = 0; i < s->V && k > 0; i++) {
        float v = s->lsm[i];
        if (lp->n_top == k && v <= lp->top_lp[k - 1]) continue;
        int pos = lp->n_top < k ? lp->n_top++ : k - 1;
        while (pos > 0 && lp->top_lp[pos - 1] < v) {
            lp->top_lp[pos] = lp->top_lp[pos - 1];
            lp->top_id[pos] = lp->top_id[pos - 1];
            pos--;
        }
        lp->top_lp[pos] = v;
        lp->top_id[pos] = (int32_t)i;
    }
    return lp;
}

/* Tokens left after the one being sampled now. */
static int64_t budget_after(const srv_sched *s, const srv_seq *q) {
    int64_t by_max = q->max_gen - q->n_gen - 1;
    int64_t by_ctx = s->o.ctx - s->slots[q->slot].cache.n_past - 1;
    return DS_MIN(by_max, by_ctx);
}

static bool json_allows(const srv_sched *s, const srv_seq *q, int32_t t, int64_t budget) {
    if (jv_done(&q->jv)) return is_eos(s, t);
    if (t < 0 || t >= s->V || !s->piece[t]) return false;
    jv_state st = q->jv;
    return jv_feed(&st, s->piece[t], s->piece_len[t]) && jv_need(&st) <= budget;
}

/* Samples under the JSON constraint: draw from the unconstrained
 * distribution; if the token breaks the JSON prefix (or the budget),
 * mask every such token and draw again (= sampling the masked
 * distribution, without scanning the vocabulary when the model complies). */
static int32_t sample_json(srv_sched *s, srv_seq *q, float *L, int64_t reserve) {
    int64_t budget = budget_after(s, q) - reserve;
    memcpy(s->saved, L, (size_t)s->V * sizeof *L);
    int32_t t = ds_session_sample(&q->ss, L);
    if (json_allows(s, q, t, budget)) return t;
    memcpy(L, s->saved, (size_t)s->V * sizeof *L);
    int64_t n_ok = 0;
    for (int64_t i = 0; i < s->V; i++) {
        if (json_allows(s, q, (int32_t)i, budget)) n_ok++;
        else L[i] = -INFINITY;
    }
    DS_ASSERT(n_ok > 0); /* a closing byte always fits: jv_need <= budget is kept invariant */
    return ds_session_sample(&q->ss, L);
}

/* tool_choice "required" / named: the phases of a constrained call after the forced opener */
enum { TC_NAME, TC_MID, TC_ARGS, TC_END };

/* t's bytes keep the name a prefix of some tool's name */
static bool name_allows(const srv_sched *s, const srv_seq *q, int32_t t) {
    const srv_job_params *p = &q->job->p;
    if (t < 0 || t >= s->V || !s->piece[t]) return false;
    size_t n = (size_t)q->tc_name_len, k = s->piece_len[t];
    for (int i = 0; i < p->n_tool_names; i++) {
        const char *nm = p->tool_names[i];
        size_t len = strlen(nm);
        if (n + k <= len && !memcmp(nm, q->tc_name, n) && !memcmp(nm + n, s->piece[t], k)) return true;
    }
    return false;
}

/* the name so far is one of the tools' (*longer: and a longer one continues it) */
static bool name_full(const srv_seq *q, bool *longer) {
    const srv_job_params *p = &q->job->p;
    size_t n = (size_t)q->tc_name_len;
    bool full = false;
    *longer = false;
    for (int i = 0; i < p->n_tool_names; i++) {
        const char *nm = p->tool_names[i];
        size_t len = strlen(nm);
        if (len < n || memcmp(nm, q->tc_name, n)) continue;
        if (len == n) full = true;
        else *longer = true;
    }
    return full;
}

static void tool_args_start(srv_seq *q) {
    q->tc_phase = q->tc_used < q->job->p.n_tool_mid ? TC_MID : TC_ARGS;
    jv_init(&q->jv);
}

static int32_t sample_tool(srv_sched *s, srv_seq *q, float *L) {
    const srv_job_params *p = &q->job->p;
    int32_t tok;
    switch (q->tc_phase) {
    case TC_NAME: {
        /* a name that a longer one continues may also end here: then tool_mid's first token is allowed too
         * (names are [A-Za-z0-9_-], tool_mid starts with a newline or a special token: no ambiguity) */
        bool longer, full = name_full(q, &longer);
        int32_t end = full && p->n_tool_mid > 0 ? p->tool_mid[0] : -1;
        int64_t n_ok = 0;
        for (int64_t i = 0; i < s->V; i++) {
            if (i == end || name_allows(s, q, (int32_t)i)) n_ok++;
            else L[i] = -INFINITY;
        }
        DS_ASSERT(n_ok > 0); /* every byte is a token (byte-level tokenizer) */
        tok = ds_session_sample(&q->ss, L);
        q->tc_used = 0;
        if (tok == end) {
            q->tc_used = 1;
            tool_args_start(q);
            return tok;
        }
        memcpy(q->tc_name + q->tc_name_len, s->piece[tok], s->piece_len[tok]);
        q->tc_name_len += (int)s->piece_len[tok];
        if (name_full(q, &longer) && !longer) tool_args_start(q);
        return tok;
    }
    case TC_MID:
        tok = p->tool_mid[q->tc_used++];
        if (q->tc_used == p->n_tool_mid) tool_args_start(q);
        return tok;
    case TC_ARGS:
        tok = sample_json(s, q, L, p->n_tool_end);
        jv_feed(&q->jv, s->piece[tok], s->piece_len[tok]);
        if (jv_done(&q->jv)) { q->tc_phase = TC_END; q->tc_used = 0; }
        return tok;
    default:
        return q->tc_used < p->n_tool_end ? p->tool_end[q->tc_used++] : s->calls_end;
    }
}

/* Handles one sampled token. Returns -1 to continue, else a SRV_FINISH_*. */
static int on_token(srv_sched *s, srv_seq *q, int32_t tok, srv_lp *lp) {
    srv_job *j = q->job;
    const srv_job_params *p = &j->p;
    ds_err e = { 0 };
    if (q->in_tools) {
        free(lp);
        if (is_eos(s, tok)) return SRV_FINISH_STOP;
        tok_ids_push(&q->tool_ids, tok, &e);
        if (tok == s->calls_end) return SRV_FINISH_STOP;
        return -1;
    }
    if (q->in_dsml) {
        free(lp);
        if (is_eos(s, tok)) return SRV_FINISH_STOP;
        const char *t;
        size_t n;
        ds_session_text(&q->ss, tok, &t, &n);
        ds_buf_put(&q->dsml, t, n);
        return -1;
    }
    if (p->json_mode && !q->in_reasoning) {
        if (!jv_done(&q->jv) && s->piece[tok]) jv_feed(&q->jv, s->piece[tok], s->piece_len[tok]);
    }
    if (is_eos(s, tok)) {
        if (lp) post_text(j, q->in_reasoning ? SRV_EV_REASONING : SRV_EV_CONTENT, q->choice, "", 0, lp, 1);
        return SRV_FINISH_STOP;
    }
    if (p->chat && p->tools != SRV_TOOLS_OFF && tok == s->calls_begin && s->calls_begin >= 0) {
        free(lp);
        const char *t;
        size_t n;
        if (tok_stream_flush(&q->ss.ts, &t, &n, &e) != 0) { t = ""; n = 0; }
        show_content(q, t, n, true, NULL);
        q->in_tools = true;
        q->in_reasoning = false;
        tok_ids_push(&q->tool_ids, tok, &e);
        return -1;
    }
    if (p->chat && tok == s->think_end && s->think_end >= 0 && q->in_reasoning) {
        const char *t;
        size_t n;
        if (tok_stream_flush(&q->ss.ts, &t, &n, &e) == 0 && (n > 0 || lp))
            post_text(j, SRV_EV_REASONING, q->choice, t, n, lp, lp ? 1 : 0);
        else free(lp);
        q->in_reasoning = false;
        q->n_reasoning++;
        return -1;
    }
    if (p->chat && tok == s->think_begin && s->think_begin >= 0 && !q->in_reasoning && !q->content_started &&
        q->ss.stop.n_held == 0) {
        q->in_reasoning = true;
        q->n_reasoning++;
        if (lp) post_text(j, SRV_EV_REASONING, q->choice, "", 0, lp, 1);
        return -1;
    }
    const char *t;
    size_t n;
    ds_session_text(&q->ss, tok, &t, &n);
    if (q->in_reasoning && s->think_end < 0) return reasoning_text(q, t, n, lp);
    if (q->in_reasoning) {
        q->n_reasoning++;
        if (n > 0 || lp) post_text(j, SRV_EV_REASONING, q->choice, t, n, lp, lp ? 1 : 0);
        return -1;
    }
    /* (a JSON-mode sequence has no stop strings: they do not apply inside the JSON) */
    const char *op = p->chat && p->tools != SRV_TOOLS_OFF && !p->json_mode ? chat_dsml_opener(p->fmt) : NULL;
    if (op) return dsml_content(q, op, t, n, lp);
    return show_content(q, t, n, false, lp) ? SRV_FINISH_STOP : -1;
}

/* Samples the next token of q from its logits row and processes it. */
static void sample_seq(srv_sched *s, srv_seq *q, float *L) {
    srv_job *j = q->job;
    const srv_job_params *p = &j->p;
    if (p->logprobs) ds_log_softmax(s->lsm, L, s->V);
    for (int i = 0; i < p->n_bias; i++) L[p->bias_ids[i]] += p->bias[i];
    bool json = p->json_mode && !q->in_reasoning && !q->in_tools;
    if (p->ignore_eos && !json)
        for (int i = 0; i < s->n_eos; i++) L[s->eos[i]] = -INFINITY;
    if ((p->mask_tool_calls || p->json_mode) && s->calls_begin >= 0) L[s->calls_begin] = -INFINITY;
    for (int64_t i = s->n_text; i < s->V; i++) L[i] = -INFINITY; /* padding rows the tokenizer cannot decode */
    int32_t tok;
    if (q->n_forced_used < p->n_forced) {
        tok = p->forced[q->n_forced_used++];
    } else if (p->tool_constrain && q->in_tools) {
        tok = sample_tool(s, q, L);
    } else if (json) {
        tok = sample_json(s, q, L, 0);
    } else if (p->json_mode && q->in_reasoning && s->think_end >= 0 && budget_after(s, q) <= jv_need(&q->jv)) {
        tok = s->think_end; /* close the reasoning while "{}" still fits */
    } else {
        tok = ds_session_sample(&q->ss, L);
    }
    ds_session_accept(&q->ss, tok);
    if (q->n_gen == 0 && q->choice == 0) {
        pthread_mutex_lock(&j->mu);
        j->usage.t_first_token = ds_now() - j->t_submit;
        pthread_mutex_unlock(&j->mu);
    }
    q->n_gen++;
    pthread_mutex_lock(&s->mu);
    s->st.gen_tokens++;
    pthread_mutex_unlock(&s->mu);
    srv_lp *lp = p->logprobs ? make_lp(s, q, tok) : NULL;
    int fin = on_token(s, q, tok, lp);
    if (fin < 0 && (q->n_gen >= q->max_gen || s->slots[q->slot].cache.n_past + 1 > s->o.ctx))
        fin = SRV_FINISH_LENGTH;
    if (fin >= 0) {
        finish_seq(s, q, fin);
        return;
    }
    q->next_tok = tok;
    q->state = SEQ_DECODE;
    if (p->token_delay_ms > 0) q->next_time = ds_now() + p->token_delay_ms * 1e-3;
}

static srv_seq *new_seq(srv_sched *s, srv_job *j, int choice, ds_err *e) {
    srv_seq *q = calloc(1, sizeof *q);
    if (!q) { ds_err_set(e, DS_ENOMEM, "out of memory"); return NULL; }
    q->job = j;
    q->choice = choice;
    q->slot = -1;
    q->state = SEQ_PENDING;
    ds_sampler_params sp = j->p.sp;
    sp.seed += (uint64_t)choice;
    if (ds_session_init_step(&q->ss, s->m, s->tok, &sp, e)) { free(q); return NULL; }
    for (int i = 0; !j->p.json_mode && i < j->p.n_stop; i++)
        if (ds_session_add_stop(&q->ss, j->p.stop[i], e)) { seq_free(q); return NULL; }
    ds_session_begin(&q->ss, NULL, j->p.prompt, j->p.n_prompt, e);
    q->in_reasoning = j->p.chat && j->p.starts_in_reasoning;
    jv_init(&q->jv);
    q->tc_phase = j->p.n_tool_names > 0 ? TC_NAME : j->p.n_tool_mid > 0 ? TC_MID : TC_ARGS;
    q->max_gen = DS_MIN(j->p.max_tokens, s->o.ctx - j->p.n_prompt);
    if (q->max_gen < 1) q->max_gen = 1;
    if (j->p.token_delay_ms > 0) q->next_time = ds_now() + j->p.token_delay_ms * 1e-3;
    return q;
}

/* Moves submitted jobs into the pending FIFO, one sequence per choice. */
static void take_queue(srv_sched *s, srv_job *jobs) {
    srv_seq **tail = &s->pending;
    while (*tail) tail = &(*tail)->next;
    while (jobs) {
        srv_job *j = jobs;
        jobs = j->next;
        j->next = NULL;
        j->choices_left = j->p.n;
        for (int c = 0; c < j->p.n; c++) {
            ds_err e = { 0 };
            srv_seq *q = new_seq(s, j, c, &e);
            if (c > 0) job_ref(j);
            if (!q) {
                post_text(j, SRV_EV_ERROR, c, e.msg, strlen(e.msg), NULL, 0);
                pthread_mutex_lock(&s->mu);
                s->n_queued--;
                pthread_mutex_unlock(&s->mu);
                pthread_mutex_lock(&j->mu);
                if (--j->choices_left == 0) { j->done = true; pthread_cond_broadcast(&j->cv); }
                pthread_mutex_unlock(&j->mu);
                srv_job_release(j);
                continue;
            }
            *tail = q;
            tail = &q->next;
        }
    }
}

/* One iteration: cancellations, admissions, one batched forward, sampling.
 * Returns false when nothing could run (all idle or waiting on delays);
 * *wake is then the time of the next delayed token (0 if none). */
static bool iterate(srv_sched *s, double *wake) {
    *wake = 0;
    /* cancelled sequences free their slots now */
    for (int i = 0; i < s->o.n_slots; i++) {
        srv_seq *q = s->slots[i].seq;
        if (q && atomic_load(&q->job->cancelled)) finish_seq(s, q, SRV_FINISH_CANCELLED);
    }
    for (srv_seq **pp = &s->pending; *pp;) {
        srv_seq *q = *pp;
        if (atomic_load(&q->job->cancelled)) { *pp = q->next; finish_seq(s, q, SRV_FINISH_CANCELLED); }
        else pp = &q->next;
    }
    /* admissions, in arrival order; later choices of a job wait for choice 0's prefill to share it */
    for (srv_seq **pp = &s->pending; *pp;) {
        srv_seq *q = *pp;
        if (q->choice > 0 && !q->job->shared_ready) { pp = &q->next; continue; }
        ds_err e = { 0 };
        int rc = admit(s, q, &e);
        if (rc == DS_ERANGE) break; /* no free slot */
        *pp = q->next;
        q->next = NULL;
        if (rc) fail_seq(s, q, e.msg);
    }
    /* build the batch: one token per decoding sequence, then prefill chunks */
    int nc = 0;
    int64_t used = 0;
    double now = ds_now();
    for (int pass = 0; pass < 2; pass++) {
        for (int i = 0; i < s->o.n_slots; i++) {
            srv_seq *q = s->slots[i].seq;
            if (!q) continue;
            if (q->next_time > now) {
                if (*wake == 0 || q->next_time < *wake) *wake = q->next_time;
                continue;
            }
            if (pass == 0 && q->state == SEQ_DECODE) {
                s->chunks[nc] = (ds_seq_chunk){ &s->slots[i].cache, &q->next_tok, 1, false };
                s->chunk_take[nc] = 1;
                s->chunk_seq[nc++] = q;
                used++;
            } else if (pass == 1 && q->state == SEQ_PREFILL) {
                /* prefill chunks end at multiples of batch_tokens, whatever else
                 * is running: with the batch-invariant forward, a prompt's
                 * numbers then never depend on the load */
                int64_t budget = s->o.batch_tokens - q->n_fed % s->o.batch_tokens;
                int64_t take = DS_MIN(q->job->p.n_prompt - q->n_fed, budget);
                if (take <= 0) continue;
                kvx_lend(s, q, take);
                s->chunks[nc] = (ds_seq_chunk){ &s->slots[i].cache, q->job->p.prompt + q->n_fed, take, false };
                s->chunk_take[nc] = take;
                s->chunk_seq[nc++] = q;
                used += take;
            }
        }
    }
    if (nc == 0) return false;
    ds_err e = { 0 };
    double t0 = ds_now();
    int rc = DS_OK;
    /* one pass over every active sequence; ds_model_forward is batch-invariant
     * (each sequence computes exactly what it would alone) */
    rc = ds_model_forward(s->m, s->ctx, s->chunks, nc, s->logits, NULL, &e);
    double dt = ds_now() - t0;
    pthread_mutex_lock(&s->mu);
    s->st.forward_passes++;
    s->st.forward_tokens += used;
    s->st.forward_seqs += nc;
    s->st.forward_seconds += dt;
    pthread_mutex_unlock(&s->mu);
    if (rc) {
        char msg[600];
        snprintf(msg, sizeof msg, "model error: %s", e.msg);
        for (int i = 0; i < nc; i++) fail_seq(s, s->chunk_seq[i], msg);
        return true;
    }
    for (int i = 0; i < nc; i++) {
        srv_seq *q = s->chunk_seq[i];
        srv_slot *sl = &s->slots[q->slot];
        const int32_t *fed = s->chunks[i].tokens;
        for (int64_t k = 0; k < s->chunk_take[i]; k++) tok_ids_push(&sl->content, fed[k], &e);
        if (sl->content.n != sl->cache.n_past) { /* out of memory for the token list: forget the reuse info */
            sl->content.n = 0;
        }
        if (q->state == SEQ_PREFILL) {
            if (sl->canon == q->n_fed && q->n_fed % s->o.batch_tokens == 0 && s->chunk_take[i] == s->o.batch_tokens)
                sl->canon += s->chunk_take[i];
            q->n_fed += s->chunk_take[i];
            if (q->n_fed < q->job->p.n_prompt) continue;
            kvx_take_back(s, q);
            if (q->choice == 0) q->job->shared_ready = true;
        }
        sample_seq(s, q, s->logits + (size_t)i * (size_t)s->V);
    }
    return true;
}

static void *worker_main(void *arg) {
    srv_sched *s = arg;
    pthread_mutex_lock(&s->mu);
    for (;;) {
        if (s->stop) break;
        srv_job *jobs = s->q_head;
        s->q_head = s->q_tail = NULL;
        pthread_mutex_unlock(&s->mu);
        take_queue(s, jobs);
        double wake = 0;
        bool ran = iterate(s, &wake);
        pthread_mutex_lock(&s->mu);
        int busy = 0;
        for (int i = 0; i < s->o.n_slots; i++) busy += s->slots[i].seq != NULL;
        DS_ASSERT(busy == s->st.slots_busy);
        pc_stats ps;
        pc_get_stats(s->pc, &ps);
        s->st.cache_entries = ps.entries;
        s->st.cache_bytes = ps.ram_bytes;
        s->st.disk_entries = ps.disk_entries;
        s->st.disk_bytes = ps.disk_bytes;
        s->st.disk_hits = ps.disk_hits;
        s->st.disk_writes = ps.disk_writes;
        if (ran || s->q_head || s->stop) continue;
        if (s->pending && busy < s->o.n_slots) continue; /* admissions became possible */
        if (wake > 0) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            double t = ts.tv_sec + ts.tv_nsec * 1e-9 + DS_MAX(wake - ds_now(), 0.0) + 1e-4;
            ts.tv_sec = (time_t)t;
            ts.tv_nsec = (long)((t - (double)ts.tv_sec) * 1e9);
            pthread_cond_timedwait(&s->cv, &s->mu, &ts);
        } else if (busy > 0 || s->pending) {
            /* sequences waiting on cancellation checks only: poll gently */
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_nsec += 20 * 1000000L;
            if (ts.tv_nsec >= 1000000000L) { ts.tv_sec++; ts.tv_nsec -= 1000000000L; }
            pthread_cond_timedwait(&s->cv, &s->mu, &ts);
        } else {
            pthread_cond_wait(&s->cv, &s->mu);
        }
    }
    pthread_mutex_unlock(&s->mu);
    /* shutting down: every job still here ends with an error */
    const char *msg = "the server is shutting down";
    for (int i = 0; i < s->o.n_slots; i++)
        if (s->slots[i].seq) fail_seq(s, s->slots[i].seq, msg);
    take_queue(s, s->q_head);
    s->q_head = s->q_tail = NULL;
    while (s->pending) {
        srv_seq *q = s->pending;
        s->pending = q->next;
        fail_seq(s, q, msg);
    }
    return NULL;
}

/* -------------------------------------------------------------- public */

int srv_sched_init(srv_sched **out, const ds_model *m, const ds_tokenizer *tok, const srv_sched_opts *o, ds_err *e) {
    *out = NULL;
    if (o->n_slots < 1 || o->ctx < 2 || o->batch_tokens < 1)
        return ds_err_set(e, DS_EINVAL, "scheduler: need >= 1 slot, a context >= 2 and a batch >= 1");
    srv_sched *s = calloc(1, sizeof *s);
    if (!s) return ds_err_set(e, DS_ENOMEM, "out of memory");
    s->o = *o;
    s->m = m;
    s->tok = tok;
    s->V = m->cfg.vocab_size;
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    int rc = DS_OK;
    s->slots = calloc((size_t)o->n_slots, sizeof *s->slots);
    s->logits = malloc((size_t)o->n_slots * (size_t)s->V * sizeof(float));
    s->lsm = malloc((size_t)s->V * sizeof(float));
    s->saved = malloc((size_t)s->V * sizeof(float));
    s->chunks = calloc((size_t)o->n_slots, sizeof *s->chunks);
    s->chunk_seq = calloc((size_t)o->n_slots, sizeof *s->chunk_seq);
    s->chunk_take = calloc((size_t)o->n_slots, sizeof *s->chunk_take);
    s->piece = calloc((size_t)s->V, sizeof *s->piece);
    s->piece_len = calloc((size_t)s->V, sizeof *s->piece_len);
    if (!s->slots || !s->logits || !s->lsm || !s->saved || !s->chunks || !s->chunk_seq || !s->chunk_take ||
        !s->piece || !s->piece_len) {
        rc = ds_err_set(e, DS_ENOMEM, "out of memory");
        goto fail;
    }
    if ((rc = ds_ctx_new(&s->ctx, e))) goto fail;
    for (int i = 0; i < o->n_slots; i++)
        if ((rc = ds_kvcache_init(&s->slots[i].cache, m, o->ctx, e)) ||
            (rc = ds_kvcache_set_type(&s->slots[i].cache, o->kv_type, e)))
            goto fail;
    int64_t tv = tok_vocab_size(tok);
    s->n_text = DS_MIN(tv, s->V);
    for (int64_t i = 0; i < s->V && i < tv; i++) {
        size_t n = 0;
        const char *pc = tok_is_added(tok, (int32_t)i) ? NULL : tok_id_to_piece(tok, (int32_t)i, &n);
        if (pc && n > 0 && n < 65536) { s->piece[i] = pc; s->piece_len[i] = (uint16_t)n; }
    }
    bool byte_tok[256] = { false };
    for (int64_t i = 0; i < s->V; i++)
        if (s->piece_len[i] == 1) byte_tok[(unsigned char)s->piece[i][0]] = true;
    s->json_ok = true;
    for (int b = 0; b < 256; b++) s->json_ok &= byte_tok[b];
    int32_t eos = (int32_t)m->cfg.eos_token_id;
    if (eos >= 0 && eos < s->V) s->eos[s->n_eos++] = eos;
    int32_t te = tok_eos_id(tok);
    if (te >= 0 && te < s->V && te != eos) s->eos[s->n_eos++] = te;
#define ADDED(str) tok_added_token_id(tok, str, strlen(str))
    s->calls_begin = ADDED("<｜tool▁calls▁begin｜>");
    s->calls_end = ADDED("<｜tool▁calls▁end｜>");
    s->think_begin = ADDED("<think>");
    s->think_end = ADDED("</think>");
#undef ADDED
    pc_opts po = { o->cache_ram_bytes, o->cache_min_tokens, o->cache_dir, o->cache_disk_bytes };
    if ((rc = pc_open(&s->pc, m, &po, e))) goto fail;
    s->st.n_slots = o->n_slots;
    if (pthread_create(&s->thread, NULL, worker_main, s) != 0) {
        rc = ds_err_set(e, DS_ENOMEM, "cannot start the model worker thread");
        goto fail;
    }
    s->started = true;
    *out = s;
    return DS_OK;
fail:
    srv_sched_free(s);
    return rc;
}

void srv_sched_stop(srv_sched *s) {
    if (!s || !s->started) return;
    pthread_mutex_lock(&s->mu);
    s->stop = true;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    pthread_join(s->thread, NULL);
    s->started = false;
}

void srv_sched_free(srv_sched *s) {
    if (!s) return;
    srv_sched_stop(s);
    for (int i = 0; s->slots && i < s->o.n_slots; i++) {
        ds_kvcache_free(&s->slots[i].cache);
        tok_ids_free(&s->slots[i].content);
    }
    pc_close(s->pc);
    ds_ctx_free(s->ctx);
    free(s->slots);
    free(s->logits);
    free(s->lsm);
    free(s->saved);
    free(s->chunks);
    free(s->chunk_seq);
    free(s->chunk_take);
    free(s->piece);
    free(s->piece_len);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
    free(s);
}

int srv_sched_submit(srv_sched *s, srv_job *j, ds_err *e) {
    pthread_mutex_lock(&s->mu);
    if (s->stop) {
        pthread_mutex_unlock(&s->mu);
        return ds_err_set(e, DS_EINTERRUPTED, "the server is shutting down");
    }
    int free_slots = s->o.n_slots - s->st.slots_busy;
    if (s->n_queued + j->p.n > s->o.max_queue + free_slots) {
        pthread_mutex_unlock(&s->mu);
        return ds_err_set(e, DS_ERANGE, "the server is overloaded: %d requests are already waiting", s->n_queued);
    }
    job_ref(j);
    j->t_submit = ds_now();
    j->next = NULL;
    if (s->q_tail) s->q_tail->next = j;
    else s->q_head = j;
    s->q_tail = j;
    s->n_queued += j->p.n;
    s->st.jobs_total++;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    return DS_OK;
}

void srv_sched_stats(srv_sched *s, srv_stats *st) {
    pthread_mutex_lock(&s->mu);
    *st = s->st;
    st->queued = s->n_queued;
    pthread_mutex_unlock(&s->mu);
}

bool srv_sched_json_supported(const srv_sched *s) { return s->json_ok; }
