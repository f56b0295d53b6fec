/*
 * cmd_grpo.c - `deepseek grpo`: reinforcement learning with verifiable
 * rewards, the DeepSeek-R1-Zero / DeepSeekMath recipe (GRPO).
 *
 * Each step s:
 *   1. P problems of the task's training split, drawn from (seed, s);
 *   2. rollouts: the current policy (written as a model folder OUT/.policy and
 *      opened by the inference engine) completes each prompt G times through
 *      the batched rollout engine (runtime/rollout.h: the G completions share
 *      the prompt's prefilled cache, every live completion advances in one
 *      batched forward per token);
 *   3. scoring: R = w_acc·accuracy + w_fmt·format (rewards.h), group-normalised
 *      advantages A = (R − mean_group R) / (std_group R + 1e-4) (std with N−1,
 *      as torch.std);
 *   4. update: π_ref's log-probabilities (frozen copy of the start model;
 *      only when β > 0) by a no-grad training forward; then μ passes of
 *      ds_grpo_step (src/train/grpo.h) + AdamW. π_old = the policy that
 *      sampled: the first pass has ρ = 1 exactly and records log πθ, which the
 *      later passes use as old_logprobs.
 * Every random choice derives from (seed, step), so a resumed run repeats the
 * uninterrupted one. NaN guard: a non-finite loss or gradient skips the
 * update (max_nan_skips in a row stop the run); checkpoints as `train --sft`
 * (cli_posttrain.h). Progress line and OUT/metrics.jsonl per step.
 */
#include "cli.h"
#include "cli_posttrain.h"
#include "cli_reason.h"
#include "../core/thread.h"
#include "../io/json.h"
#include "../runtime/rollout.h"
#include "../train/grpo.h"
#include "../train/rewards.h"

#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct {
    char init_from[PT_STR_MAX], ref_from[PT_STR_MAX], out[PT_STR_MAX], task[PT_STR_MAX], ops[PT_STR_MAX], norm[PT_STR_MAX];
    int64_t digits, cd_numbers, cd_max;
    int64_t steps, prompts_per_step, group_size, max_new, mu, micro_batch;
    double temperature, top_p, epsilon, beta, reward_accuracy, reward_format;
    double lr, min_lr, weight_decay, grad_clip, beta1, beta2;
    int64_t warmup_steps, seed, log_every, ckpt_every, eval_every, eval_n, threads, max_nan_skips, sequential_rollouts;
    int64_t debug_nan_step;
} grpo_recipe;

#define K(n, t) { #n, t, offsetof(grpo_recipe, n) }
static const pt_key k_keys[] = {
    K(init_from, PT_STR), K(ref_from, PT_STR), K(out, PT_STR), K(task, PT_STR), K(ops, PT_STR), K(norm, PT_STR),
    K(digits, PT_INT), K(cd_numbers, PT_INT), K(cd_max, PT_INT), K(steps, PT_INT), K(prompts_per_step, PT_INT),
    K(group_size, PT_INT), K(max_new, PT_INT), K(mu, PT_INT), K(micro_batch, PT_INT), K(temperature, PT_NUM),
    K(top_p, PT_NUM), K(epsilon, PT_NUM), K(beta, PT_NUM), K(reward_accuracy, PT_NUM), K(reward_format, PT_NUM),
    K(lr, PT_NUM), K(min_lr, PT_NUM), K(weight_decay, PT_NUM), K(grad_clip, PT_NUM), K(beta1, PT_NUM), K(beta2, PT_NUM),
    K(warmup_steps, PT_INT), K(seed, PT_INT), K(log_every, PT_INT), K(ckpt_every, PT_INT), K(eval_every, PT_INT),
    K(eval_n, PT_INT), K(threads, PT_INT), K(max_nan_skips, PT_INT), K(sequential_rollouts, PT_INT),
    K(debug_nan_step, PT_INT),
    { NULL, PT_INT, 0 },
};
#undef K

static void recipe_default(grpo_recipe *r) {
    memset(r, 0, sizeof *r);
    strcpy(r->out, "runs/grpo");
    strcpy(r->task, "arithmetic");
    strcpy(r->norm, "seq");
    r->steps = 100; r->prompts_per_step = 8; r->group_size = 8; r->max_new = 128; r->mu = 1;
    r->temperature = 1.0; r->top_p = 1.0; r->epsilon = 0.2; r->beta = 0.04;
    r->reward_accuracy = 1.0; r->reward_format = 0.2;
    r->lr = 1e-5; r->min_lr = 1e-5; r->weight_decay = 0.0; r->grad_clip = 1.0; r->beta1 = 0.9; r->beta2 = 0.99;
    r->warmup_steps = 0; r->seed = 1; r->log_every = 1; r->eval_n = 200; r->max_nan_skips = 10;
    r->debug_nan_step = -1;
}

static void usage(FILE *f) {
    fprintf(f,
        "usage: deepseek grpo --config RECIPE.json [--KEY VALUE ...]\n"
        "       deepseek grpo --resume OUT|OUT/ckpt-N [--KEY VALUE ...]\n"
        "  GRPO with verifiable rewards (DeepSeek-R1-Zero): per step P problems, G sampled completions\n"
        "  each through the batched rollout engine, rewards w_acc·accuracy + w_fmt·format, group-\n"
        "  normalised advantages, μ passes of the clipped objective with the k3 KL to a frozen\n"
        "  reference (the objective `grad --grpo` computes), AdamW.\n"
        "  Recipe keys (defaults):\n"
        "    init_from (required: a model folder), ref_from (init_from), out (runs/grpo)\n"
        "    task (arithmetic | countdown | FILE.jsonl), digits (3), ops (\"+-\"), cd_numbers (4), cd_max (25)\n"
        "    steps (100), prompts_per_step P (8), group_size G (8), max_new (128), temperature (1.0), top_p (1.0)\n"
        "    epsilon (0.2), beta (0.04), mu (1), norm (seq | token: DAPO | const: Dr. GRPO, / max_new)\n"
        "    reward_accuracy (1.0), reward_format (0.2)\n"
        "    lr (1e-5), min_lr (1e-5), warmup_steps (0), weight_decay (0), grad_clip (1.0), beta1 (0.9), beta2 (0.99)\n"
        "    seed (1), log_every (1), ckpt_every (0 = at the end), eval_every (0 = never; greedy pass@1 on\n"
        "    eval_n (200) held-out problems, eval seed 1), threads (0 = all), max_nan_skips (10),\n"
        "    micro_batch (0 = all samples in one forward), sequential_rollouts (0; 1 = the one-at-a-time baseline)\n"
        "    debug_nan_step (-1; tests of the NaN guard: that step's gradient is poisoned, its update skipped)\n"
        "  --bench-rollouts   no training: P prompts x G completions of the task through the batched\n"
        "    engine and one at a time (same seeds, so the same tokens: checked); prints tokens/s of both\n"
        "    by wall time and by process CPU time (steadier on a shared machine)\n"
        "  OUT/metrics.jsonl per step: reward, reward_accuracy, reward_format, accuracy, length, kl, clip_frac,\n"
        "  loss, rollout_tok_s, t_rollout, t_score, t_update (seconds), eval_pass1 when evaluated.\n");
}

/* one evaluation: greedy pass@1 on n problems of the eval split */
static double eval_pass1(const char *C, const ds_model *pm, ds_ctx *x, const ds_tokenizer *tok, const grpo_recipe *r,
                         const ds_task_opts *to, int32_t eos, double *len_out) {
    int64_t n = r->eval_n;
    ds_problem *ps = cli_reason_problems(C, r->task, &n, 1, DS_SPLIT_EVAL, to);
    ds_rollout_opts ro;
    memset(&ro, 0, sizeof ro);
    ro.max_new = r->max_new;
    ro.stop_id = eos;
    ds_sampler_params_default(&ro.sp);
    ro.sp.temperature = 0;
    double acc = 0, len = 0;
    ds_err e = { 0 };
    for (int64_t i0 = 0; i0 < n; i0 += 64) {
        int64_t b = DS_MIN(64, n - i0);
        tok_ids *ids = calloc((size_t)b, sizeof *ids);
        const int32_t **pr = calloc((size_t)b, sizeof *pr);
        int64_t *pl = calloc((size_t)b, sizeof *pl);
        if (!ids || !pr || !pl) cli_die(C, "out of memory");
        for (int64_t i = 0; i < b; i++) {
            if (cli_reason_render(tok, ps[i0 + i].prompt, &ids[i], &e)) cli_die_err(C, &e);
            pr[i] = ids[i].v; pl[i] = ids[i].n;
        }
        ds_rollout ro_out;
        if (ds_rollout_run(pm, x, pr, pl, b, 1, &ro, &ro_out, &e)) cli_die_err(C, &e);
        for (int64_t i = 0; i < b; i++) {
            char *txt = cli_reason_text(C, tok, ro_out.tok + i * ro_out.max_new, ro_out.len[i]);
            double a;
            ds_task_score(&ps[i0 + i], txt, true, &a, NULL, NULL, 0);
            acc += a;
            len += (double)ro_out.len[i];
            free(txt);
            tok_ids_free(&ids[i]);
        }
        ds_rollout_free(&ro_out);
        free(ids); free(pr); free(pl);
    }
    free(ps);
    *len_out = len / (double)n;
    return acc / (double)n;
}

/* CPU seconds of the whole process (all threads): on a shared machine a
 * steadier measure than wall time of how much work a run took. */
static double cpu_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* `grpo --bench-rollouts`: batched vs sequential rollouts of the same
 * prompts and seeds (so the same tokens, checked), tokens/s of each by
 * wall time and by process CPU time. */
static int bench_rollouts(grpo_recipe *r) {
    const char *C = "grpo --bench-rollouts";
    if (r->threads > 0) ds_threads_set((int)r->threads);
    ds_task_opts to = { (int)r->digits, r->ops[0] ? r->ops : NULL, (int)r->cd_numbers, (int)r->cd_max };
    int64_t P = r->prompts_per_step, G = r->group_size;
    ds_problem *ps = cli_reason_problems(C, r->task, &P, (uint64_t)r->seed, DS_SPLIT_TRAIN, &to);
    ds_tokenizer *tok = cli_load_tokenizer(C, r->init_from, NULL, NULL);
    ds_model *m = cli_open_model(C, r->init_from);
    ds_ctx *x;
    ds_err e = { 0 };
    if (ds_ctx_new(&x, &e)) cli_die_err(C, &e);
    ds_ctx_set_threads(x, ds_threads_get());
    tok_ids *ids = calloc((size_t)P, sizeof *ids);
    const int32_t **pr = calloc((size_t)P, sizeof *pr);
    int64_t *pl = calloc((size_t)P, sizeof *pl);
    if (!ids || !pr || !pl) cli_die(C, "out of memory");
    for (int64_t p = 0; p < P; p++) {
        if (cli_reason_render(tok, ps[p].prompt, &ids[p], &e)) cli_die_err(C, &e);
        pr[p] = ids[p].v; pl[p] = ids[p].n;
    }
    ds_rollout_opts ro;
    memset(&ro, 0, sizeof ro);
    ro.max_new = r->max_new;
    ro.stop_id = tok_eos_id(tok);
    ds_sampler_params_default(&ro.sp);
    ro.sp.temperature = (float)r->temperature;
    ro.sp.top_p = (float)r->top_p;
    ro.sp.seed = (uint64_t)r->seed;
    ds_rollout a, b;
    double t0 = ds_now(), c0 = cpu_now();
    if (ds_rollout_run(m, x, pr, pl, P, G, &ro, &a, &e)) cli_die_err(C, &e);
    double ta = ds_now() - t0, ca = cpu_now() - c0;
    ro.sequential = true;
    t0 = ds_now();
    c0 = cpu_now();
    if (ds_rollout_run(m, x, pr, pl, P, G, &ro, &b, &e)) cli_die_err(C, &e);
    double tb = ds_now() - t0, cb = cpu_now() - c0;
    bool same = a.n_tokens == b.n_tokens && !memcmp(a.len, b.len, (size_t)a.n * sizeof *a.len) &&
                !memcmp(a.tok, b.tok, (size_t)(a.n * a.max_new) * sizeof *a.tok);
    printf("{\"prompts\":%lld,\"group_size\":%lld,\"threads\":%d,\"tokens\":%lld,\"batched_s\":%.3f,\"sequential_s\":%.3f,"
           "\"batched_tok_s\":%.1f,\"sequential_tok_s\":%.1f,\"speedup\":%.2f,\"same_tokens\":%s,"
           "\"batched_prefill_s\":%.3f,\"sequential_prefill_s\":%.3f,\"batched_cpu_s\":%.3f,\"sequential_cpu_s\":%.3f,"
           "\"cpu_speedup\":%.2f}\n",
           (long long)P, (long long)G, ds_threads_get(), (long long)a.n_tokens, ta, tb, (double)a.n_tokens / ta,
           (double)b.n_tokens / tb, tb / ta, same ? "true" : "false", a.t_prefill, b.t_prefill, ca, cb, cb / ca);
    ds_rollout_free(&a);
    ds_rollout_free(&b);
    for (int64_t p = 0; p < P; p++) tok_ids_free(&ids[p]);
    free(ids); free(pr); free(pl); free(ps);
    ds_ctx_free(x);
    ds_model_close(m);
    tok_free(tok);
    return same ? 0 : 1;
}

int cmd_grpo(int argc, char **argv) {
    const char *C = "grpo", *resume = NULL;
    grpo_recipe r;
    recipe_default(&r);
    bool bench = false;
    for (int i = 1; i < argc; i++) {
        if (cli_is_help(argv[i])) { usage(stdout); return 0; }
        if ((!strcmp(argv[i], "--config") || !strcmp(argv[i], "-c")) && i + 1 < argc) pt_recipe_load(C, k_keys, &r, argv[i + 1]);
        if (!strcmp(argv[i], "--resume") && i + 1 < argc) resume = argv[i + 1];
    }
    ds_err e = { 0 };
    json_t *state = NULL;
    char ckdir[4200] = "";
    if (resume) {
        pt_resolve(resume, ckdir, sizeof ckdir);
        char p[4400];
        snprintf(p, sizeof p, "%s/state.json", ckdir);
        if (ds_json_load_file(p, DS_JSON_MAX_BYTES, &state, &e)) cli_die_err(C, &e);
        pt_recipe_apply(C, k_keys, &r, json_object_get(state, "recipe"), p);
        json_decref(state);
        state = NULL;
    }
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--config") || !strcmp(a, "-c") || !strcmp(a, "--resume")) { i++; continue; }
        if (!strcmp(a, "--bench-rollouts")) { bench = true; continue; }
        if (pt_recipe_set(C, k_keys, &r, a, v)) { i++; continue; }
        usage(stderr);
        cli_die(C, "unknown option or recipe key '%s'", a);
    }
    if (!r.init_from[0]) cli_die(C, "recipe key init_from (the model folder to start from) is required");
    if (bench) return bench_rollouts(&r);
    if (!r.ref_from[0]) strcpy(r.ref_from, r.init_from);
    if (r.steps < 1 || r.prompts_per_step < 1 || r.group_size < 2 || r.max_new < 1 || r.mu < 1)
        cli_die(C, "steps, prompts_per_step, max_new and mu must be >= 1 and group_size >= 2");
    if (!(r.epsilon > 0 && r.epsilon < 1) || !(r.beta >= 0) || !(r.lr > 0) || !(r.temperature >= 0) || !(r.top_p > 0 && r.top_p <= 1))
        cli_die(C, "need 0 < epsilon < 1, beta >= 0, lr > 0, temperature >= 0, 0 < top_p <= 1");
    ds_grpo_norm norm = !strcmp(r.norm, "seq") ? DS_GRPO_NORM_SEQ : !strcmp(r.norm, "token") ? DS_GRPO_NORM_TOKEN
                      : !strcmp(r.norm, "const") ? DS_GRPO_NORM_CONST : (ds_grpo_norm)-1;
    if ((int)norm < 0) cli_die(C, "norm: seq, token or const (got '%s')", r.norm);
    if (r.threads > 0) ds_threads_set((int)r.threads);
    if (r.log_every < 1) r.log_every = 1;
    ds_task_opts to = { (int)r.digits, r.ops[0] ? r.ops : NULL, (int)r.cd_numbers, (int)r.cd_max };
    if (r.ops[0] && strspn(r.ops, "+-*") != strlen(r.ops)) cli_die(C, "ops: operators from \"+-*\" (got '%s')", r.ops);
    /* user problems: loaded once, drawn by index */
    ds_problem *user = NULL;
    int64_t n_user = 0;
    if (ds_task_kind_of(r.task) == DS_TASK_FILE) user = cli_reason_problems(C, r.task, &n_user, 0, DS_SPLIT_TRAIN, &to);

    ds_tokenizer *tok = cli_load_tokenizer(C, r.init_from, NULL, NULL);
    ds_tmodel *m, *ref = NULL;
    if (ds_tmodel_load(&m, r.init_from, &e)) cli_die_err(C, &e);
    if (r.beta > 0 && ds_tmodel_load(&ref, r.ref_from, &e)) cli_die_err(C, &e);
    if (ref && ref->n_floats != m->n_floats) cli_die(C, "ref_from %s is not the architecture of init_from %s", r.ref_from, r.init_from);
    int32_t eos = tok_eos_id(tok) >= 0 ? tok_eos_id(tok) : (int32_t)m->cfg.eos_token_id;
    ds_adamw opt;
    if (ds_adamw_init(&opt, m, (float)r.beta1, (float)r.beta2, 1e-8f, (float)r.weight_decay, &e)) cli_die_err(C, &e);
    int64_t step = 0;
    if (resume) {
        if (pt_load(ckdir, m, &opt, &state, &e)) cli_die_err(C, &e);
        step = json_integer_value(json_object_get(state, "step"));
        json_decref(state);
        fprintf(stderr, "deepseek grpo: resumed %s at step %lld\n", ckdir, (long long)step);
    }
    if (ds_mkdir_p(r.out, &e)) cli_die_err(C, &e);
    char mp[PT_STR_MAX + 32], pol[PT_STR_MAX + 32];
    snprintf(mp, sizeof mp, "%s/metrics.jsonl", r.out);
    snprintf(pol, sizeof pol, "%s/.policy", r.out);
    FILE *mf = fopen(mp, resume ? "a" : "w");
    if (!mf) cli_die(C, "cannot open %s", mp);
    ds_ctx *x;
    if (ds_ctx_new(&x, &e)) cli_die_err(C, &e);
    ds_ctx_set_threads(x, ds_threads_get());

    int64_t P = r.prompts_per_step, G = r.group_size, S = P * G;
    ds_problem *ps = calloc((size_t)P, sizeof *ps);
    tok_ids *pids = calloc((size_t)P, sizeof *pids);
    const int32_t **pr = calloc((size_t)P, sizeof *pr);
    int64_t *pl = calloc((size_t)P, sizeof *pl);
    ds_grpo_sample *smp = calloc((size_t)S, sizeof *smp);
    double *R = calloc((size_t)S, sizeof *R), *racc = calloc((size_t)S, sizeof *racc), *rfmt = calloc((size_t)S, sizeof *rfmt);
    float *lp_old = malloc((size_t)(S * r.max_new) * sizeof(float)), *lp_ref = malloc((size_t)(S * r.max_new) * sizeof(float));
    if (!ps || !pids || !pr || !pl || !smp || !R || !racc || !rfmt || !lp_old || !lp_ref) cli_die(C, "out of memory");
    fprintf(stderr, "deepseek grpo: task %s, policy %s (%lld parameters), ref %s, %lld steps of %lld prompts x %lld samples -> %s\n",
            r.task, r.init_from, (long long)m->n_floats, ref ? r.ref_from : "(none, beta = 0)", (long long)r.steps,
            (long long)P, (long long)G, r.out);
    int64_t nan_run = 0;
    double t_start = ds_now();
    for (; step < r.steps; step++) {
        double t0 = ds_now();
        /* ---- problems of this step */
        ds_rng rng;
        ds_rng_seed(&rng, (uint64_t)r.seed * 1000003u + (uint64_t)step);
        for (int64_t p = 0; p < P; p++) {
            if (user) ps[p] = user[ds_rng_u64(&rng) % (uint64_t)n_user];
            else ds_task_generate(&ps[p], ds_task_kind_of(r.task), &to, DS_SPLIT_TRAIN, &rng);
            pids[p].n = 0;
            if (cli_reason_render(tok, ps[p].prompt, &pids[p], &e)) cli_die_err(C, &e);
            pr[p] = pids[p].v;
            pl[p] = pids[p].n;
        }
        /* ---- rollouts with the current policy */
        ds_model *pm;
        if (pt_write_model(pol, m, r.init_from, &e) || ds_model_open(&pm, pol, &e)) cli_die_err(C, &e);
        double t_sync = ds_now() - t0;
        ds_rollout_opts ro;
        memset(&ro, 0, sizeof ro);
        ro.max_new = r.max_new;
        ro.stop_id = eos;
        ro.sequential = r.sequential_rollouts != 0;
        ds_sampler_params_default(&ro.sp);
        ro.sp.temperature = (float)r.temperature;
        ro.sp.top_p = (float)r.top_p;
        ro.sp.seed = ((uint64_t)r.seed << 32) + (uint64_t)step * (uint64_t)S;
        ds_rollout rs;
        double t1 = ds_now();
        if (ds_rollout_run(pm, x, pr, pl, P, G, &ro, &rs, &e)) cli_die_err(C, &e);
        double t_roll = ds_now() - t1;
        double eval_acc = NAN, eval_len = NAN;
        bool do_eval = r.eval_every > 0 && (step % r.eval_every == 0);
        if (do_eval) eval_acc = eval_pass1(C, pm, x, tok, &r, &to, eos, &eval_len);
        ds_model_close(pm);
        /* ---- scoring and advantages */
        double t2 = ds_now();
        double sum_r = 0, sum_acc = 0, sum_fmt = 0, sum_len = 0;
        for (int64_t s = 0; s < S; s++) {
            char *txt = cli_reason_text(C, tok, rs.tok + s * rs.max_new, rs.len[s]);
            ds_task_score(&ps[s / G], txt, true, &racc[s], &rfmt[s], NULL, 0);
            free(txt);
            R[s] = r.reward_accuracy * racc[s] + r.reward_format * rfmt[s];
            sum_r += R[s]; sum_acc += racc[s]; sum_fmt += rfmt[s]; sum_len += (double)rs.len[s];
        }
        for (int64_t p = 0; p < P; p++) {
            double mean = 0, var = 0;
            for (int64_t g = 0; g < G; g++) mean += R[p * G + g];
            mean /= (double)G;
            for (int64_t g = 0; g < G; g++) var += (R[p * G + g] - mean) * (R[p * G + g] - mean);
            double sd = sqrt(var / (double)(G - 1));
            for (int64_t g = 0; g < G; g++) {
                int64_t s = p * G + g;
                smp[s] = (ds_grpo_sample){ pids[p].v, pids[p].n, rs.tok + s * rs.max_new, rs.len[s], (R[s] - mean) / (sd + 1e-4),
                                           NULL, NULL };
            }
        }
        double t_score = ds_now() - t2;
        /* ---- update: π_ref, then μ passes */
        double t3 = ds_now();
        ds_grpo_opts go = { r.epsilon, r.beta, norm, r.max_new, r.micro_batch };
        ds_grpo_stats st0 = { 0 }, st = { 0 };
        if (ref) {
            if (ds_grpo_step(ref, smp, S, &go, true, &st, lp_ref, &e)) cli_die_err(C, &e);
            int64_t off = 0;
            for (int64_t s = 0; s < S; s++) { smp[s].ref_lp = lp_ref + off; off += smp[s].n_completion; }
        }
        float lr = ds_lr_at(step, r.warmup_steps, r.steps, (float)r.lr, (float)r.min_lr, DS_SCHED_COSINE);
        double gn = 0;
        bool skipped = false;
        for (int64_t k = 0; k < r.mu; k++) {
            ds_tmodel_zero_grad(m);
            if (ds_grpo_step(m, smp, S, &go, false, &st, k == 0 ? lp_old : NULL, &e)) cli_die_err(C, &e);
            if (k == 0) {
                st0 = st;
                int64_t off = 0;
                for (int64_t s = 0; s < S; s++) { smp[s].old_lp = lp_old + off; off += smp[s].n_completion; }
            }
            if (step == r.debug_nan_step) pt_poison_grad(m);
            gn = ds_grad_norm(m, &opt);
            if (!isfinite(gn) || !isfinite(st.loss)) {
                skipped = true;
                break;
            }
            float sc = r.grad_clip > 0 && gn > r.grad_clip ? (float)(r.grad_clip / gn) : 1.0f;
            ds_adamw_step_scaled(&opt, m, lr, sc);
        }
        if (skipped) {
            if (++nan_run > r.max_nan_skips) cli_die(C, "step %lld: %lld non-finite steps in a row; stopping", (long long)step, (long long)nan_run);
            fprintf(stderr, "deepseek grpo: step %lld: non-finite loss or gradient, update skipped\n", (long long)step);
        } else {
            nan_run = 0;
        }
        if (!ds_params_finite(m)) cli_die(C, "step %lld: parameters became non-finite", (long long)step);
        double t_update = ds_now() - t3, t_step = ds_now() - t0, N = (double)S;
        double tok_s = (double)rs.n_tokens / (t_roll > 0 ? t_roll : 1e-9);
        int64_t done = step + 1;
        fprintf(mf, "{\"step\":%lld,\"reward\":%.6f,\"reward_accuracy\":%.6f,\"reward_format\":%.6f,\"accuracy\":%.6f,"
                    "\"length\":%.3f,\"kl\":%.6g,\"clip_frac\":%.6g,\"loss\":%.6g,\"grad_norm\":%.6g,\"lr\":%.4g,"
                    "\"rollout_tokens\":%lld,\"rollout_tok_s\":%.2f,\"t_sync\":%.4f,\"t_rollout\":%.4f,\"t_score\":%.4f,"
                    "\"t_update\":%.4f,\"t_step\":%.4f%s",
                (long long)done, sum_r / N, r.reward_accuracy * sum_acc / N, r.reward_format * sum_fmt / N, sum_acc / N,
                sum_len / N, st0.kl, st.clip_frac, st0.loss, gn, lr, (long long)rs.n_tokens, tok_s, t_sync, t_roll, t_score,
                t_update, t_step, skipped ? ",\"skipped\":true" : "");
        if (do_eval) fprintf(mf, ",\"eval_pass1\":%.4f,\"eval_length\":%.2f", eval_acc, eval_len);
        fprintf(mf, "}\n");
        fflush(mf);
        if (done % r.log_every == 0 || done == r.steps || done == 1 || do_eval) {
            fprintf(stderr, "step %5lld/%lld | reward %.3f (acc %.3f fmt %.3f) | len %.1f | kl %.4f | clip %.3f | %.0f tok/s | "
                            "rollout %.1fs score %.2fs update %.1fs (%.0f/%.0f/%.0f %%) | %.0f s",
                    (long long)done, (long long)r.steps, sum_r / N, sum_acc / N, sum_fmt / N, sum_len / N, st0.kl, st.clip_frac,
                    tok_s, t_sync + t_roll, t_score, t_update, 100 * (t_sync + t_roll) / t_step, 100 * t_score / t_step,
                    100 * t_update / t_step, ds_now() - t_start);
            if (do_eval) fprintf(stderr, " | eval pass@1 %.3f", eval_acc);
            fprintf(stderr, "\n");
        }
        ds_rollout_free(&rs);
        if ((r.ckpt_every > 0 && done % r.ckpt_every == 0) || done == r.steps) {
            json_t *stj = json_pack("{s:s, s:I, s:o}", "format", "deepseek.c grpo state v1", "step", (json_int_t)done, "recipe",
                                    pt_recipe_json(k_keys, &r));
            if (pt_save(r.out, done, m, &opt, r.init_from, stj, &e)) cli_die_err(C, &e);
        }
    }
    fprintf(stderr, "deepseek grpo: done, %s/latest (%.1f s)\n", r.out, ds_now() - t_start);
    fclose(mf);
    for (int64_t p = 0; p < P; p++) tok_ids_free(&pids[p]);
    free(ps); free(pids); free(pr); free(pl); free(smp); free(R); free(racc); free(rfmt); free(lp_old); free(lp_ref); free(user);
    ds_ctx_free(x);
    ds_adamw_free(&opt);
    ds_tmodel_free(m);
    ds_tmodel_free(ref);
    tok_free(tok);
    return 0;
}
