/*
 * cmd_sft.c - the cold-start SFT of DeepSeek-R1 (`deepseek train --sft`):
 * supervised fine-tuning on prompt/response pairs with the chat template
 * applied and the loss on the response tokens only, and `deepseek sft-data`,
 * which writes such pairs for a built-in task from its step-by-step
 * solution generator (the cold-start data, made by program).
 *
 * A batch of B pairs: row b = render(prompt) ++ response ++ EOS, padded;
 *   loss = (1/Σ_b |resp_b|) Σ_b Σ_{t in resp_b (EOS included)} −log p(tok_t | tok_<t)
 * through the training step's per-token hook (weights 1/Σ|resp| on response
 * rows, 0 elsewhere; no MTP, no balance term). AdamW with warmup + cosine,
 * global-norm clipping, a NaN guard (skip the update), checkpoints and exact
 * resume (cli_posttrain.h). Pair order: a permutation per epoch from the seed,
 * so step s always sees the same pairs.
 */
#include "cli.h"
#include "cli_posttrain.h"
#include "cli_reason.h"
#include "../core/mmap_file.h"
#include "../core/thread.h"
#include "../io/json.h"

#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    char init_from[PT_STR_MAX], data[PT_STR_MAX], out[PT_STR_MAX];
    int64_t steps, batch_size, warmup_steps, seed, log_every, ckpt_every, threads, max_nan_skips, debug_nan_step;
    double lr, min_lr, weight_decay, grad_clip, beta1, beta2;
} sft_recipe;

#define K(n, t) { #n, t, offsetof(sft_recipe, n) }
static const pt_key k_keys[] = {
    K(init_from, PT_STR), K(data, PT_STR), K(out, PT_STR), K(steps, PT_INT), K(batch_size, PT_INT),
    K(warmup_steps, PT_INT), K(seed, PT_INT), K(log_every, PT_INT), K(ckpt_every, PT_INT), K(threads, PT_INT),
    K(max_nan_skips, PT_INT), K(debug_nan_step, PT_INT), K(lr, PT_NUM), K(min_lr, PT_NUM), K(weight_decay, PT_NUM), K(grad_clip, PT_NUM),
    K(beta1, PT_NUM), K(beta2, PT_NUM), { NULL, PT_INT, 0 },
};
#undef K

static void usage(FILE *f) {
    fprintf(f,
        "usage: deepseek train --sft --config RECIPE.json [--KEY VALUE ...]\n"
        "       deepseek train --sft --resume OUT|OUT/ckpt-N [--KEY VALUE ...]\n"
        "  Supervised fine-tuning on prompt/response pairs (JSONL: {\"prompt\": …, \"response\": …}),\n"
        "  the model's chat template applied to the prompt (thinking opened, as `eval` and `grpo`\n"
        "  render it), loss on the response tokens and the end-of-sequence token only.\n"
        "  Recipe keys: init_from (model folder, required), data (pairs JSONL, required), out,\n"
        "  steps (500), batch_size (16), lr (1e-3), min_lr (1e-4), warmup_steps (20), weight_decay\n"
        "  (0.1), grad_clip (1.0), beta1 (0.9), beta2 (0.95), seed (1), log_every (10), ckpt_every\n"
        "  (0 = at the end only), threads (0 = all), max_nan_skips (10), debug_nan_step (-1; tests of the\n"
        "  NaN guard: that step's gradient is poisoned and its update must be skipped).\n"
        "  OUT/ckpt-N is a model folder (F32) that eval/generate/chat/grpo take with -m;\n"
        "  OUT/metrics.jsonl has step, loss, lr, grad_norm, tokens, seconds per logged step.\n");
}

typedef struct {
    int32_t *ids;
    int64_t n, n_prompt;   /* response = ids[n_prompt, n) */
} pair;

typedef struct {
    const pair *rows;      /* this batch's rows */
    double *loss;          /* per row: −Σ lp over its response tokens */
    double inv_tokens;
} sft_hook;

static void sft_weights(void *ud, int64_t seq0, int64_t B, int64_t T, const float *lp, float *w) {
    sft_hook *h = ud;
    for (int64_t b = 0; b < B; b++) {
        const pair *p = &h->rows[seq0 + b];
        double s = 0;
        for (int64_t t = p->n_prompt; t < p->n; t++) {
            int64_t row = b * T + t - 1;
            s -= lp[row];
            w[row] = (float)h->inv_tokens;
        }
        h->loss[seq0 + b] = s;
    }
}

static pair *load_pairs(const char *C, const char *path, const ds_tokenizer *tok, int32_t eos, int64_t vocab, int64_t *np) {
    char *buf;
    size_t len;
    ds_err e = { 0 };
    if (ds_read_file(path, (size_t)1 << 31, &buf, &len, &e)) cli_die_err(C, &e);
    int64_t cap = 1024, n = 0, ln = 0;
    pair *ps = malloc((size_t)cap * sizeof *ps);
    if (!ps) cli_die(C, "out of memory");
    for (size_t i = 0; i < len;) {
        size_t j = i;
        while (j < len && buf[j] != '\n') j++;
        ln++;
        size_t k = i;
        while (k < j && (buf[k] == ' ' || buf[k] == '\t' || buf[k] == '\r')) k++;
        if (k < j) {
            char what[PT_STR_MAX + 32];
            snprintf(what, sizeof what, "%s:%lld", path, (long long)ln);
            json_t *o;
            const char *pr = NULL, *re = NULL;
            if (ds_json_load_buf(what, buf + i, j - i, &o, &e) || ds_json_get_str(o, what, "prompt", true, &pr, &e) ||
                ds_json_get_str(o, what, "response", true, &re, &e))
                cli_die_err(C, &e);
            if (!re[0]) cli_die(C, "%s: field 'response' is empty", what);
            tok_ids ids = { 0 };
            if (cli_reason_render(tok, pr, &ids, &e)) cli_die_err(C, &e);
            int64_t np0 = ids.n;
            if (tok_encode_append(tok, re, strlen(re), 0, &ids, &e) || tok_ids_push(&ids, eos, &e)) cli_die_err(C, &e);
            for (int64_t t = 0; t < ids.n; t++)
                if (ids.v[t] < 0 || ids.v[t] >= vocab) cli_die(C, "%s: token id %d outside the model's vocabulary (%lld)", what, ids.v[t], (long long)vocab);
            if (n == cap) {
                cap *= 2;
                pair *q = realloc(ps, (size_t)cap * sizeof *q);
                if (!q) cli_die(C, "out of memory");
                ps = q;
            }
            ps[n++] = (pair){ ids.v, ids.n, np0 };
            json_decref(o);
        }
        i = j + 1;
    }
    free(buf);
    if (n == 0) cli_die(C, "%s: no pairs (one {\"prompt\": …, \"response\": …} per line)", path);
    *np = n;
    return ps;
}

/* pair index of sample k (k = step·B + b): epoch k / n, a permutation per epoch */
static int64_t pick(int64_t k, int64_t n, uint64_t seed, int64_t *perm, int64_t *perm_epoch) {
    int64_t ep = k / n;
    if (ep != *perm_epoch) {
        ds_rng r;
        ds_rng_seed(&r, seed * 7919u + (uint64_t)ep);
        for (int64_t i = 0; i < n; i++) perm[i] = i;
        for (int64_t i = n - 1; i > 0; i--) {
            int64_t j = (int64_t)(ds_rng_u64(&r) % (uint64_t)(i + 1)), t = perm[i];
            perm[i] = perm[j]; perm[j] = t;
        }
        *perm_epoch = ep;
    }
    return perm[k % n];
}

int cmd_sft(int argc, char **argv) {
    const char *C = "train --sft", *resume = NULL;
    sft_recipe r = { "", "", "runs/sft", 500, 16, 20, 1, 10, 0, 0, 10, -1, 1e-3, 1e-4, 0.1, 1.0, 0.9, 0.95 };
    /* the recipe file first, then overrides in order */
    for (int i = 1; i < argc; i++) {
        if (cli_is_help(argv[i])) { usage(stdout); return 0; }
        if ((!strcmp(argv[i], "--config") || !strcmp(argv[i], "-c")) && i + 1 < argc) pt_recipe_load(C, k_keys, &r, argv[i + 1]);
        if (!strcmp(argv[i], "--resume") && i + 1 < argc) resume = argv[i + 1];
    }
    json_t *state = NULL;
    char ckdir[4200] = "";
    if (resume) {   /* the checkpoint's recipe, then the command line */
        pt_resolve(resume, ckdir, sizeof ckdir);
        char p[4400];
        snprintf(p, sizeof p, "%s/state.json", ckdir);
        ds_err e = { 0 };
        if (ds_json_load_file(p, DS_JSON_MAX_BYTES, &state, &e)) cli_die_err(C, &e);
        pt_recipe_apply(C, k_keys, &r, json_object_get(state, "recipe"), p);
    }
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--sft")) continue;
        if (!strcmp(a, "--config") || !strcmp(a, "-c") || !strcmp(a, "--resume")) { i++; continue; }
        if (pt_recipe_set(C, k_keys, &r, a, v)) { i++; continue; }
        usage(stderr);
        cli_die(C, "unknown option or recipe key '%s'", a);
    }
    if (!r.init_from[0]) cli_die(C, "recipe key init_from (the model folder to start from) is required");
    if (!r.data[0]) cli_die(C, "recipe key data (prompt/response pairs, JSONL) is required");
    if (r.steps < 1 || r.batch_size < 1 || !(r.lr > 0)) cli_die(C, "steps, batch_size and lr must be positive");
    if (r.threads > 0) ds_threads_set((int)r.threads);
    ds_err e = { 0 };
    ds_tokenizer *tok = cli_load_tokenizer(C, r.init_from, NULL, NULL);
    ds_tmodel *m;
    if (ds_tmodel_load(&m, r.init_from, &e)) cli_die_err(C, &e);
    int32_t eos = tok_eos_id(tok) >= 0 ? tok_eos_id(tok) : (int32_t)m->cfg.eos_token_id;
    if (eos < 0) cli_die(C, "%s: no end-of-sequence token (tokenizer or config.json)", r.init_from);
    int64_t n_pairs;
    pair *pairs = load_pairs(C, r.data, tok, eos, m->cfg.vocab_size, &n_pairs);
    ds_adamw opt;
    if (ds_adamw_init(&opt, m, (float)r.beta1, (float)r.beta2, 1e-8f, (float)r.weight_decay, &e)) cli_die_err(C, &e);
    int64_t step = 0;
    if (resume) {
        json_decref(state);
        if (pt_load(ckdir, m, &opt, &state, &e)) cli_die_err(C, &e);
        step = json_integer_value(json_object_get(state, "step"));
        json_decref(state);
        fprintf(stderr, "deepseek train --sft: resumed %s at step %lld\n", ckdir, (long long)step);
    }
    if (ds_mkdir_p(r.out, &e)) cli_die_err(C, &e);
    char mp[PT_STR_MAX + 32];
    snprintf(mp, sizeof mp, "%s/metrics.jsonl", r.out);
    FILE *mf = fopen(mp, resume ? "a" : "w");
    if (!mf) cli_die(C, "cannot open %s", mp);
    int64_t *perm = malloc((size_t)n_pairs * sizeof *perm), perm_epoch = -1;
    pair *rows = malloc((size_t)r.batch_size * sizeof *rows);
    double *rl = calloc((size_t)r.batch_size, sizeof *rl);
    if (!perm || !rows || !rl) cli_die(C, "out of memory");
    fprintf(stderr, "deepseek train --sft: %lld pairs from %s, model %s (%lld parameters), batch %lld, %lld steps -> %s\n",
            (long long)n_pairs, r.data, r.init_from, (long long)m->n_floats, (long long)r.batch_size, (long long)r.steps, r.out);
    int64_t nan_run = 0;
    double t_start = ds_now();
    int32_t *tokb = NULL;
    for (; step < r.steps; step++) {
        double t0 = ds_now();
        int64_t T = 2, ntok = 0;
        for (int64_t b = 0; b < r.batch_size; b++) {
            rows[b] = pairs[pick(step * r.batch_size + b, n_pairs, (uint64_t)r.seed, perm, &perm_epoch)];
            T = DS_MAX(T, rows[b].n);
            ntok += rows[b].n - rows[b].n_prompt;
        }
        int32_t *nt = realloc(tokb, (size_t)(r.batch_size * T) * sizeof *nt);
        if (!nt) cli_die(C, "out of memory");
        tokb = nt;
        for (int64_t b = 0; b < r.batch_size; b++) {
            memcpy(tokb + b * T, rows[b].ids, (size_t)rows[b].n * sizeof *tokb);
            for (int64_t t = rows[b].n; t < T; t++) tokb[b * T + t] = rows[b].ids[rows[b].n - 1];
        }
        sft_hook h = { rows, rl, 1.0 / (double)ntok };
        ds_token_loss tl = { sft_weights, &h };
        ds_loss_opts lo = { 0.0f, 0.0f, 1.0f, false };
        ds_losses ls;
        ds_tmodel_zero_grad(m);
        if (ds_tmodel_step_weighted(m, tokb, r.batch_size, T, &lo, &tl, &ls, &e)) cli_die_err(C, &e);
        double loss = 0;
        for (int64_t b = 0; b < r.batch_size; b++) loss += rl[b];
        loss /= (double)ntok;
        if (step == r.debug_nan_step) pt_poison_grad(m);
        double gn = ds_grad_norm(m, &opt);
        float lr = ds_lr_at(step, r.warmup_steps, r.steps, (float)r.lr, (float)r.min_lr, DS_SCHED_COSINE);
        bool skip = !isfinite(gn) || !isfinite(loss);
        if (skip) {
            if (++nan_run > r.max_nan_skips) cli_die(C, "step %lld: %lld non-finite steps in a row; stopping", (long long)step, (long long)nan_run);
            fprintf(stderr, "deepseek train --sft: step %lld: non-finite loss or gradient, update skipped\n", (long long)step);
        } else {
            nan_run = 0;
            float sc = r.grad_clip > 0 && gn > r.grad_clip ? (float)(r.grad_clip / gn) : 1.0f;
            ds_adamw_step_scaled(&opt, m, lr, sc);
        }
        double dt = ds_now() - t0;
        int64_t done = step + 1;
        if (done % r.log_every == 0 || done == r.steps || done == 1) {
            fprintf(stderr, "step %6lld/%lld | loss %.4f | lr %.2e | gnorm %.3f | %.0f tok/s | %.1f s\n", (long long)done,
                    (long long)r.steps, loss, lr, gn, (double)(r.batch_size * T) / dt, ds_now() - t_start);
            fprintf(mf, "{\"step\":%lld,\"loss\":%.6f,\"lr\":%.4g,\"grad_norm\":%.4f,\"tokens\":%lld,\"seconds\":%.3f%s}\n",
                    (long long)done, loss, lr, gn, (long long)ntok, dt, skip ? ",\"skipped\":true" : "");
            fflush(mf);
        }
        if ((r.ckpt_every > 0 && done % r.ckpt_every == 0) || done == r.steps) {
            json_t *st = json_pack("{s:s, s:I, s:o}", "format", "deepseek.c sft state v1", "step", (json_int_t)done, "recipe",
                                   pt_recipe_json(k_keys, &r));
            if (pt_save(r.out, done, m, &opt, r.init_from, st, &e)) cli_die_err(C, &e);
        }
    }
    fprintf(stderr, "deepseek train --sft: done, %s/latest (%.1f s)\n", r.out, ds_now() - t_start);
    fclose(mf);
    for (int64_t i = 0; i < n_pairs; i++) free(pairs[i].ids);
    free(pairs); free(perm); free(rows); free(rl); free(tokb);
    ds_adamw_free(&opt);
    ds_tmodel_free(m);
    tok_free(tok);
    return 0;
}

/* ---------------------------------------------------------------- sft-data */

static void usage_data(FILE *f) {
    fprintf(f,
        "usage: deepseek sft-data --task arithmetic|countdown --out PAIRS.jsonl [-n N] [--seed S] [task options]\n"
        "  Writes N prompt/response pairs of the task's training split (never an `eval` problem):\n"
        "  {\"prompt\": \"What is 347 + 589?\", \"response\": \"7 + 9 = 16, write 6 carry 1\\n…</think>\\n<answer>936</answer>\"}\n"
        "  The response is the generator's step-by-step working, then the answer; it starts inside\n"
        "  the reasoning, since the rendered prompt opens \"<think>\\n\" (see `train --sft`).\n"
        "  -n N (default 10000)  --seed S (default 1)\n"
        "  --digits D --ops OPS          arithmetic: operand digits (3), operators from \"+-*\" (\"+-\")\n"
        "  --numbers N --max-number M    countdown: N numbers (4) from 1..M (25)\n");
}

int cmd_sft_data(int argc, char **argv) {
    const char *C = "sft-data", *task = NULL, *out = NULL;
    int64_t n = 10000;
    uint64_t seed = 1;
    ds_task_opts to = { 0 };
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (cli_is_help(a)) { usage_data(stdout); return 0; }
        else if (!strcmp(a, "--task")) { task = v; i++; }
        else if (!strcmp(a, "--out") || !strcmp(a, "-o")) { out = v; i++; }
        else if (!strcmp(a, "-n")) { n = cli_parse_int(C, a, v, 1, 100000000); i++; }
        else if (!strcmp(a, "--seed")) { seed = (uint64_t)cli_parse_int(C, a, v, 0, INT64_MAX); i++; }
        else if (cli_reason_task_flag(C, a, v, &to)) i++;
        else { usage_data(stderr); cli_die(C, "unknown option '%s'", a); }
    }
    if (!task || ds_task_kind_of(task) == DS_TASK_FILE) cli_die(C, "--task arithmetic or countdown is required");
    if (!out) cli_die(C, "--out is required");
    ds_err e = { 0 };
    if (ds_mkdir_parent(out, &e)) cli_die_err(C, &e);
    FILE *f = fopen(out, "w");
    if (!f) cli_die(C, "cannot write %s", out);
    ds_problem *ps = cli_reason_problems(C, task, &n, seed, DS_SPLIT_TRAIN, &to);
    char sol[4096];
    for (int64_t i = 0; i < n; i++) {
        if (!ds_task_solution(&ps[i], sol, sizeof sol)) cli_die(C, "no solution for problem %lld", (long long)i);
        const char *resp = !strncmp(sol, "<think>\n", 8) ? sol + 8 : sol;
        json_t *j = json_pack("{s:s, s:s}", "prompt", ps[i].prompt, "response", resp);
        char *s = json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER);
        fprintf(f, "%s\n", s);
        free(s);
        json_decref(j);
    }
    if (fclose(f)) cli_die(C, "write error on %s", out);
    fprintf(stderr, "deepseek sft-data: %lld %s pairs -> %s\n", (long long)n, task, out);
    free(ps);
    return 0;
}
