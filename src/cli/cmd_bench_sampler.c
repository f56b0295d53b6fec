/*
 * cmd_bench_sampler.c - `deepseek bench --sampler`: time per sampled token
 * of the sampler (runtime/sampler.c) and of its sorting twin
 * (sampler_ref.c) at vocabularies from a byte tokenizer's to DeepSeek-V3's,
 * for each sampling setting, with the ratio. No model is needed.
 */
#include "cli.h"
#include "../core/rng.h"
#include "../runtime/sampler.h"

#include <stdlib.h>
#include <string.h>

static void usage(FILE *f) {
    fprintf(f,
        "usage: deepseek bench --sampler [-r 5] [--vocab 258,32000,102400,129280] [--no-ref]\n"
        "  Time per sampled token (logits copied fresh each time, the copy's time taken off)\n"
        "  for greedy, temperature, top-p, top-k, min-p and penalties; single thread.\n"
        "  The logits are synthetic: roughly normal with sigma 3 and a peak every 97 ids.\n"
        "  ref: the plain twin (full sort of the vocabulary), as the sampler was before.\n"
        "  -r N      repeats (median reported, default 5)\n");
}

typedef struct { const char *name; float t; int32_t k; float top_p, min_p, rep, freq; } setting;

static const setting settings[] = {
    { "greedy", 0, 0, 1, 0, 1, 0 },
    { "temp 0.8", 0.8f, 0, 1, 0, 1, 0 },
    { "temp 0.8 top-p 0.9", 0.8f, 0, 0.9f, 0, 1, 0 },
    { "temp 0.8 top-k 40", 0.8f, 40, 1, 0, 1, 0 },
    { "temp 0.8 min-p 0.05", 0.8f, 0, 1, 0.05f, 1, 0 },
    { "top-p 0.95 + penalties", 1.0f, 0, 0.95f, 0, 1.1f, 0.5f },
};

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Median over reps of the mean µs per token over `iters` draws. */
static double time_us(ds_sampler *s, const float *base, float *l, int64_t V, int iters, int reps, bool ref,
                      double copy_us) {
    double t[64];
    for (int r = 0; r < reps; r++) {
        double t0 = ds_now();
        for (int i = 0; i < iters; i++) {
            memcpy(l, base, (size_t)V * sizeof *l);
            int32_t tok = ref ? ds_sampler_sample_ref(s, l) : ds_sampler_sample(s, l);
            (void)tok;
        }
        t[r] = (ds_now() - t0) / iters * 1e6 - copy_us;
        if (t[r] < 0) t[r] = 0;   /* below the copy's noise */
    }
    qsort(t, (size_t)reps, sizeof *t, cmp_d);
    return t[reps / 2];
}

int cmd_bench_sampler(int argc, char **argv) {
    const char *C = "bench --sampler";
    int reps = 5;
    bool ref = true;
    const char *vlist = "258,32000,102400,129280";
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (cli_is_help(a)) { usage(stdout); return 0; }
        else if (!strcmp(a, "--sampler")) continue;
        else if (!strcmp(a, "-r")) { reps = (int)cli_parse_int(C, a, v, 1, 63); i++; }
        else if (!strcmp(a, "--vocab")) { vlist = v; i++; if (!v) cli_die(C, "--vocab needs a list"); }
        else if (!strcmp(a, "--no-ref")) ref = false;
        else { usage(stderr); cli_die(C, "unknown argument '%s'", a); }
    }
    int64_t nv = 0;
    int32_t *vocabs = cli_parse_ids(C, "--vocab", vlist, &nv);
    printf("sampler: µs per token, median of %d (one thread)\n", reps);
    printf("%-24s %9s %12s %12s %8s\n", "setting", "vocab", "sampler", ref ? "ref (sort)" : "", ref ? "ratio" : "");
    for (int64_t vi = 0; vi < nv; vi++) {
        int64_t V = vocabs[vi];
        if (V < 2 || V > (1 << 24)) cli_die(C, "--vocab: %lld is out of range [2, 16777216]", (long long)V);
        float *base = malloc((size_t)V * sizeof *base), *l = malloc((size_t)V * sizeof *l);
        if (!base || !l) cli_die(C, "out of memory");
        ds_rng rng;
        ds_rng_seed(&rng, 1);
        for (int64_t i = 0; i < V; i++) {
            double u = ds_rng_uniform(&rng) + ds_rng_uniform(&rng) + ds_rng_uniform(&rng) - 1.5;
            base[i] = (float)(u * 6.0) + (i % 97 == 5 ? 6.0f : 0.0f);
        }
        int iters = (int)(2e6 / (double)V) + 20;
        double t0 = ds_now();
        for (int i = 0; i < iters; i++) { memcpy(l, base, (size_t)V * sizeof *l); __asm__ volatile("" ::: "memory"); }
        double copy_us = (ds_now() - t0) / iters * 1e6;
        for (size_t si = 0; si < sizeof settings / sizeof *settings; si++) {
            const setting *st = &settings[si];
            ds_sampler_params p;
            ds_sampler_params_default(&p);
            p.temperature = st->t, p.top_k = st->k, p.top_p = st->top_p, p.min_p = st->min_p;
            p.repetition_penalty = st->rep, p.frequency_penalty = st->freq, p.seed = 7;
            ds_sampler s;
            ds_err e = { 0 };
            if (ds_sampler_init(&s, &p, V, &e)) cli_die_err(C, &e);
            for (int i = 0; i < 256; i++) ds_sampler_accept(&s, (int32_t)((i * 7919) % V));  /* a 256-token history */
            double fast = time_us(&s, base, l, V, iters, reps, false, copy_us);
            double slow = ref ? time_us(&s, base, l, V, iters < 40 ? iters : 40, reps, true, copy_us) : 0;
            if (ref && fast > 0) printf("%-24s %9lld %12.2f %12.2f %7.1fx\n", st->name, (long long)V, fast, slow, slow / fast);
            else if (ref) printf("%-24s %9lld %12s %12.2f %8s\n", st->name, (long long)V, "< copy", slow, "-");
            else printf("%-24s %9lld %12.2f\n", st->name, (long long)V, fast);
            ds_sampler_free(&s);
        }
        free(base);
        free(l);
    }
    free(vocabs);
    return 0;
}
