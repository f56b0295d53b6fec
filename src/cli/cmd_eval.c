/*
 * cmd_eval.c - `deepseek eval`: a model on a verifiable task — greedy
 * pass@1, and over K samples pass@K and majority-vote@K; mean completion
 * length and format-reward rate. Generated problems come from the
 * evaluation split (tasks.h), so they never coincide with training ones.
 * Completions run through the batched rollout engine (runtime/rollout.h).
 */
#include "cli.h"
#include "cli_reason.h"
#include "../core/thread.h"
#include "../runtime/rollout.h"
#include "../train/rewards.h"

#include <stdlib.h>
#include <string.h>

static void usage(FILE *f) {
    fprintf(f,
        "usage: deepseek eval [-m MODEL] --task arithmetic|countdown|FILE.jsonl [-n 500] [--samples K] [--seed S]\n"
        "  Scores a model on held-out problems: one greedy completion per problem (pass@1, mean\n"
        "  completion length in tokens, format rate = share of completions \"<think>…</think>\" then\n"
        "  the answer, nothing after) and, with --samples K > 1, K sampled ones (pass@K: any of K\n"
        "  right; maj@K: the most frequent answer right). Prints one JSON line, then a table.\n"
        "  Generated problems (arithmetic, countdown) are drawn from the evaluation split, which\n"
        "  never meets the training split; --seed picks the set. FILE.jsonl: {\"prompt\": …,\n"
        "  \"answer\": …} per line (or Countdown: \"numbers\": [...], \"target\": N), its first n.\n"
        "  The prompt is the model's chat template with thinking opened (V2 form without one).\n"
        "  -n N                problems (default 500)\n"
        "  --samples K         samples per problem for pass@K / maj@K (default 1: greedy only)\n"
        "  --seed S            problem set (default 1); sampling seeds follow from it\n"
        "  --temperature T     for the K samples (default 0.6)   --top-p P (default 0.95)\n"
        "  --max-tokens N      completion tokens at most (default 256)\n"
        "  --digits D --ops OPS          arithmetic: operand digits (3), operators from \"+-*\" (\"+-\")\n"
        "  --numbers N --max-number M    countdown: N numbers (4) from 1..M (25)\n"
        "  --batch B           problems per batched rollout (default 32)\n"
        "  --show N            print the first N problems with their greedy completions (stderr)\n"
        "  -t, --threads N\n");
}

typedef struct {
    double acc, fmt;
    int64_t len;
    char ans[128];
} scored;

/* completions [n·G] of problems ps[0..n) scored */
static void run_batch(const char *C, const ds_model *m, ds_ctx *x, const ds_tokenizer *tok, const ds_problem *ps,
                      int64_t n, int64_t G, const ds_rollout_opts *ro, scored *out) {
    int32_t **pr = calloc((size_t)n, sizeof *pr);
    int64_t *pl = calloc((size_t)n, sizeof *pl);
    tok_ids *ids = calloc((size_t)n, sizeof *ids);
    if (!pr || !pl || !ids) cli_die(C, "out of memory");
    ds_err e = { 0 };
    for (int64_t i = 0; i < n; i++) {
        if (cli_reason_render(tok, ps[i].prompt, &ids[i], &e)) cli_die_err(C, &e);
        pr[i] = ids[i].v;
        pl[i] = ids[i].n;
    }
    ds_rollout r;
    if (ds_rollout_run(m, x, (const int32_t *const *)pr, pl, n, G, ro, &r, &e)) cli_die_err(C, &e);
    for (int64_t s = 0; s < n * G; s++) {
        char *txt = cli_reason_text(C, tok, r.tok + s * r.max_new, r.len[s]);
        ds_task_score(&ps[s / G], txt, true, &out[s].acc, &out[s].fmt, out[s].ans, sizeof out[s].ans);
        out[s].len = r.len[s];
        free(txt);
    }
    ds_rollout_free(&r);
    for (int64_t i = 0; i < n; i++) tok_ids_free(&ids[i]);
    free(ids); free(pr); free(pl);
}

/* majority vote over K scored samples: answers grouped by equality (correct
 * Countdown expressions all reach the target: one group); ties -> the first */
static double majority(const ds_problem *p, const scored *s, int64_t K) {
    int64_t best = -1, best_n = 0;
    for (int64_t i = 0; i < K; i++) {
        if (!s[i].ans[0]) continue;
        int64_t c = 0;
        for (int64_t j = 0; j < K; j++) {
            if (!s[j].ans[0]) continue;
            bool same = p->countdown ? (s[i].acc == 1 && s[j].acc == 1) || !strcmp(s[i].ans, s[j].ans)
                                     : ds_answer_equal(s[i].ans, s[j].ans);
            c += same;
        }
        if (c > best_n) { best_n = c; best = i; }
    }
    return best >= 0 ? s[best].acc : 0.0;
}

int cmd_eval(int argc, char **argv) {
    const char *C = "eval", *dir = NULL, *task = NULL;
    int64_t n = 500, K = 1, max_new = 256, batch = 32, show = 0;
    uint64_t seed = 1;
    double temp = 0.6, top_p = 0.95;
    ds_task_opts to = { 0 };
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (cli_is_help(a)) { usage(stdout); return 0; }
        else if (!strcmp(a, "-m") || !strcmp(a, "--model")) { dir = v; i++; }
        else if (!strcmp(a, "--task")) { task = v; i++; }
        else if (!strcmp(a, "-n")) { n = cli_parse_int(C, a, v, 1, 10000000); i++; }
        else if (!strcmp(a, "--samples")) { K = cli_parse_int(C, a, v, 1, 1024); i++; }
        else if (!strcmp(a, "--seed")) { seed = (uint64_t)cli_parse_int(C, a, v, 0, INT64_MAX); i++; }
        else if (!strcmp(a, "--temperature")) { temp = cli_parse_num(C, a, v, 0, 100); i++; }
        else if (!strcmp(a, "--top-p")) { top_p = cli_parse_num(C, a, v, 1e-6, 1); i++; }
        else if (!strcmp(a, "--max-tokens")) { max_new = cli_parse_int(C, a, v, 1, 1 << 20); i++; }
        else if (cli_reason_task_flag(C, a, v, &to)) i++;
        else if (!strcmp(a, "--batch")) { batch = cli_parse_int(C, a, v, 1, 100000); i++; }
        else if (!strcmp(a, "--show")) { show = cli_parse_int(C, a, v, 0, 1 << 20); i++; }
        else if (!strcmp(a, "-t") || !strcmp(a, "--threads")) { ds_threads_set((int)cli_parse_int(C, a, v, 1, 1024)); i++; }
        else { usage(stderr); cli_die(C, "unknown option '%s'", a); }
    }
    if (!task) { usage(stderr); cli_die(C, "--task is required (arithmetic, countdown or FILE.jsonl)"); }
    if (!dir) dir = cli_default_model();
    if (!dir) cli_die(C, "no model given (-m MODEL)");
    ds_problem *ps = cli_reason_problems(C, task, &n, seed, DS_SPLIT_EVAL, &to);
    ds_tokenizer *tok = cli_load_tokenizer(C, dir, NULL, NULL);
    ds_model *m = cli_open_model(C, dir);
    ds_ctx *x;
    ds_err e = { 0 };
    if (ds_ctx_new(&x, &e)) cli_die_err(C, &e);
    ds_ctx_set_threads(x, ds_threads_get());
    int32_t eos = tok_eos_id(tok);
    if (eos < 0) eos = (int32_t)ds_model_config(m)->eos_token_id;
    double t0 = ds_now();
    scored *g = calloc((size_t)n, sizeof *g), *smp = K > 1 ? calloc((size_t)(n * K), sizeof *smp) : NULL;
    if (!g || (K > 1 && !smp)) cli_die(C, "out of memory");
    ds_rollout_opts greedy;
    memset(&greedy, 0, sizeof greedy);
    greedy.max_new = max_new;
    greedy.stop_id = eos;
    ds_sampler_params_default(&greedy.sp);
    greedy.sp.temperature = 0;
    ds_rollout_opts sampled = greedy;
    sampled.sp.temperature = (float)temp;
    sampled.sp.top_p = (float)top_p;
    int64_t tokens = 0;
    for (int64_t i = 0; i < n; i += batch) {
        int64_t b = DS_MIN(batch, n - i);
        run_batch(C, m, x, tok, ps + i, b, 1, &greedy, g + i);
        if (K > 1) {
            sampled.sp.seed = seed * 1000003u + (uint64_t)(i * K);
            run_batch(C, m, x, tok, ps + i, b, K, &sampled, smp + i * K);
        }
    }
    double pass1 = 0, passk = 0, majk = 0, fmt = 0, len = 0;
    for (int64_t i = 0; i < n; i++) {
        pass1 += g[i].acc;
        fmt += g[i].fmt;
        len += (double)g[i].len;
        tokens += g[i].len;
        if (K > 1) {
            double any = 0;
            for (int64_t k = 0; k < K; k++) { any = any > smp[i * K + k].acc ? any : smp[i * K + k].acc; tokens += smp[i * K + k].len; }
            passk += any;
            majk += majority(&ps[i], smp + i * K, K);
        }
    }
    double secs = ds_now() - t0, N = (double)n;
    for (int64_t i = 0; i < show && i < n; i++) {
        fprintf(stderr, "--- %s\n    reference: %s   greedy answer: '%s'  %s%s\n", ps[i].prompt, ps[i].answer, g[i].ans,
                g[i].acc ? "right" : "wrong", g[i].fmt ? "" : " (format 0)");
    }
    printf("{\"task\":\"%s\",\"n\":%lld,\"samples\":%lld,\"seed\":%llu,\"pass1\":%.4f", task, (long long)n, (long long)K,
           (unsigned long long)seed, pass1 / N);
    if (K > 1) printf(",\"pass_k\":%.4f,\"maj_k\":%.4f,\"temperature\":%g", passk / N, majk / N, temp);
    printf(",\"mean_length\":%.2f,\"format_rate\":%.4f,\"tokens\":%lld,\"seconds\":%.2f}\n", len / N, fmt / N,
           (long long)tokens, secs);
    printf("%-22s %s\n", "task", task);
    printf("%-22s %lld (seed %llu)\n", "problems", (long long)n, (unsigned long long)seed);
    printf("%-22s %.1f %%\n", "pass@1 (greedy)", 100 * pass1 / N);
    if (K > 1) {
        char l1[32], l2[32];
        snprintf(l1, sizeof l1, "pass@%lld", (long long)K);
        snprintf(l2, sizeof l2, "maj@%lld", (long long)K);
        printf("%-22s %.1f %%   (T = %g, top-p %g)\n", l1, 100 * passk / N, temp, top_p);
        printf("%-22s %.1f %%\n", l2, 100 * majk / N);
    }
    printf("%-22s %.1f tokens\n", "mean length (greedy)", len / N);
    printf("%-22s %.1f %%\n", "format rate (greedy)", 100 * fmt / N);
    printf("%-22s %.1f s, %.0f tokens/s\n", "time", secs, (double)tokens / (secs > 0 ? secs : 1));
    free(g); free(smp); free(ps);
    ds_ctx_free(x);
    ds_model_close(m);
    tok_free(tok);
    return 0;
}
