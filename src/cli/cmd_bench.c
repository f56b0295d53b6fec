/*
 * cmd_bench.c - `deepseek bench`: prompt processing (ppN) and generation
 * (tgN) speed, like llama-bench, with medians over repeats, the KV-cache
 * size, the weight bytes a decoded token reads (by part and type), the
 * fraction of the machine's measured read bandwidth reached and the CPU
 * time per token.
 */
#include "cli.h"
#include "../core/cpu.h"
#include "../dist/dist.h"
#include "../core/thread.h"
#include "../model/config.h"
#include "../model/model.h"
#include "../runtime/generate.h"
#include "../tensor/ops.h"

#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static void usage(FILE *f) {
    fprintf(f,
        "usage: deepseek bench [-m MODEL_DIR|MODEL.gguf] [-p 512] [-n 128] [-t 1,2] [-r 3]\n"
        "  pp: prefill of -p tokens into an empty cache; tg: -n decode steps after one token.\n"
        "  -d LIST   depths (default 0): pp and tg run after DEPTH tokens are already in the\n"
        "            cache (filled once, untimed), like llama-bench's -d; the table is followed by\n"
        "            the bytes the cache holds at each depth\n"
        "  --synthetic-depth  fill the depth with random cache rows instead of running the model\n"
        "            over DEPTH tokens (decode's cost depends on the cache's size, not its values;\n"
        "            prefilling 256K tokens takes hours on a small machine); label such numbers\n"
        "  -t LIST   thread counts to test (default: all cores)\n"
        "  -r N      repeats per test; the median is reported (default 3)\n  --rounds N  run the whole comparison N times (with --compare-llama: ours, then llama.cpp,\n            alternating) and print per test the medians over the rounds and the median of\n            the per-round ratios (default 1; a shared machine wants 3 or more)\n"
        "  --no-bw   skip the memory-bandwidth probe\n"
        "  --passes  after each tg row: its one-token matmul passes by weight type and size (per token:\n"
        "            passes, MB; GB/s of the pass time; passes inside another pass's units, like MLA's\n"
        "            per-head slices, per thread): where decode stands against the read probe\n"
        "  --kv-type T  KV cache storage: f32 (default), q8, fp8, bf16, or i8 (fastest at depth:\n"
        "               int8 rows read by int8 attention)\n"
        "  --compare-llama PATH  also run llama.cpp's llama-bench (PATH to the binary) on the same\n"
        "            .gguf with the same threads, -p, -n, -r and -d (flash attention off and on,\n"
        "            -fa 0,1), and print both and the ratio to llama.cpp's better one\n"
        "            (llama.cpp's per-repetition samples, median taken the same way)\n"
        "  --sampler  time the sampler alone at several vocabulary sizes (see bench --sampler --help)\n"
        "  --expert-servers  on N ranks (mpirun -np N): the exchange `serve` uses (rank 0 runs the forward,\n"
        "            the other ranks only their experts) instead of every rank running the forward\n"
        "            with an all-gather of expert outputs\n"
        "  on N ranks a second table gives the bytes communicated per token and MoE layer and the\n"
        "  share of time spent communicating\n"
        "  tg: GB/s weights = tokens/s x the weight bytes a decoded token reads (printed by part: head,\n"
        "  attention, dense FFN, shared and routed experts, router; and by weight type), of bandwidth =\n"
        "  that against the read probe (one streaming pass over 512 MiB on huge pages with the same\n"
        "  threads, best of 10, run before the tests; run again after them, a line says so when\n"
        "  the two differ by more than 10 %%: the machine's bandwidth changed during the tests);\n"
        "  CPU ms/token = the process's CPU time per token (all threads; at 1 thread a loaded machine's\n"
        "  scheduling does not inflate it, use it to compare builds when the load is not low); at 1\n"
        "  thread with (NN%%): the weight bytes per CPU second against the probe's rate by CPU time\n");
}

/* CPU time of the whole process (all threads), seconds: with 1 thread, the
 * time per token a loaded machine's scheduling does not inflate */
static double cpu_now(void) {
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static bool g_passes;   /* --passes */

/* --passes: the profile of n·reps decoded tokens, one line per (type, size) */
static void print_passes(const ds_pass_stat st[DS_DTYPE_COUNT][DS_PASS_SIZES], double tokens) {
    static const char *const sz[DS_PASS_SIZES] = { "< 1 MB", "1-4 MB", "4-16 MB", "16-64 MB", ">= 64 MB" };
    for (int d = 0; d < DS_DTYPE_COUNT; d++)
        for (int k = 0; k < DS_PASS_SIZES; k++) {
            const ds_pass_stat *p = &st[d][k];
            if (!p->passes || p->seconds <= 0) continue;
            printf("|         |   passes %-6s %-8s: %6.1f per token, %7.2f MB per token, %6.1f GB/s |\n",
                   ds_dtype_name((ds_dtype)d), sz[k], (double)p->passes / tokens, p->bytes / tokens / 1e6,
                   p->bytes / p->seconds / 1e9);
        }
}

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

typedef struct { const uint8_t *buf; size_t n; uint64_t acc[256]; } bw_ctx;

static void bw_worker(void *vctx, int64_t i0, int64_t i1, int tid) {
    bw_ctx *c = vctx;
    c->acc[tid] = ds_read_stream(c->buf + (size_t)i0 * 4096, (size_t)(i1 - i0) * 4096);
}

/* Read bandwidth of the machine with the current thread count (GB/s), on
 * transparent huge pages like the repacked weights decode reads (ds_alloc_huge;
 * repack_model.c): on 4 KiB pages the same loop read 15-17 % slower here
 * (TLB misses every 4 KiB), a bound decode could beat. */
static double probe_bandwidth(double *by_cpu) {
    size_t n = (size_t)512 << 20;
    *by_cpu = 0;
    uint8_t *buf = ds_alloc_huge(n);
    if (!buf) return 0;
    memset(buf, 1, n);
    bw_ctx c = { buf, n, { 0 } };
    double best = 0;
    for (int r = 0; r < 10; r++) {
        double t = ds_now(), c0 = cpu_now();
        ds_par_for((int64_t)(n / 4096), 1, bw_worker, &c);
        t = ds_now() - t;
        c0 = cpu_now() - c0;
        if (n / t / 1e9 > best) best = n / t / 1e9;
        /* by process CPU time: with 1 thread, the rate while it ran */
        if (ds_threads_get() == 1 && c0 > 0 && n / c0 / 1e9 > *by_cpu) *by_cpu = n / c0 / 1e9;
    }
    ds_free(buf);
    return best;
}

/* Runs llama-bench and returns the median tokens/s of its pp (test 0) and
 * tg (test 1) samples in out[2] (0 when absent). */
static void run_llama_bench(const char *bin, const char *model, int threads, int64_t pp, int64_t tg, int64_t reps,
                            int64_t depth, int fa, double out[2]) {
    out[0] = out[1] = 0;
    char cmd[8192];
    snprintf(cmd, sizeof cmd, "'%s' -m '%s' -t %d -p %lld -n %lld -r %lld -d %lld -fa %d -o jsonl 2>/dev/null", bin, model,
             threads, (long long)pp, (long long)tg, (long long)reps, (long long)depth, fa);
    FILE *p = popen(cmd, "r");
    if (!p) return;
    char *line = NULL;
    size_t cap = 0;
    while (getline(&line, &cap, p) > 0) {
        json_error_t je;
        json_t *j = json_loads(line, 0, &je);
        if (!j) continue;
        json_int_t np = json_integer_value(json_object_get(j, "n_prompt")), ng = json_integer_value(json_object_get(j, "n_gen"));
        json_t *smp = json_object_get(j, "samples_ts");
        size_t n = json_array_size(smp);
        if (n > 0) {
            double *v = malloc(n * sizeof *v);
            if (v) {
                for (size_t i = 0; i < n; i++) v[i] = json_number_value(json_array_get(smp, i));
                qsort(v, n, sizeof *v, cmp_d);
                if (np > 0 && ng == 0) out[0] = v[n / 2];
                if (ng > 0 && np == 0) out[1] = v[n / 2];
                free(v);
            }
        } else {
            double avg = json_number_value(json_object_get(j, "avg_ts"));
            if (np > 0 && ng == 0) out[0] = avg;
            if (ng > 0 && np == 0) out[1] = avg;
        }
        json_decref(j);
    }
    free(line);
    pclose(p);
}

/* One round of our measurements: loads the model, runs pp and tg at each
 * thread count, prints the table and fills ours[thread][pp|tg] (medians),
 * then closes the model (llama-bench runs with the memory free). */
static void test_name(char *buf, size_t n, int test, int64_t len, int64_t depth) {
    if (depth > 0) snprintf(buf, n, "%s%lld @ d%lld", test == 0 ? "pp" : "tg", (long long)len, (long long)depth);
    else snprintf(buf, n, "%s%lld", test == 0 ? "pp" : "tg", (long long)len);
}

static void bench_ours(const char *C, const char *dir, const int32_t *thr, int64_t nthr, int64_t pp, int64_t tg,
                       const int64_t *depths, int64_t ndep, int64_t reps, bool bw, ds_kv_type kvt, bool first,
                       bool servers, bool synth, double *ours) {
    ds_err e = { 0 };
    ds_model *m;
    double t_load = ds_now();
    servers = servers && ds_dist_size() > 1;
    m = servers ? cli_open_model_servers(C, dir) : cli_open_model(C, dir);
    t_load = ds_now() - t_load;
    if (servers) {
        /* ranks > 0 serve their experts until rank 0 has run every test */
        if (first) cli_print_split(stdout, C, m);
        if (ds_dist_rank() > 0) {
            if (ds_model_serve_experts(m, &e)) cli_die_err(C, &e);
            ds_model_close(m);
            return;
        }
    }
    const ds_config *cfg = ds_model_config(m);
    int64_t V = cfg->vocab_size;
    ds_model_storage si;
    ds_model_storage_info(m, &si);
    double act = si.decode_bytes;
    if (first) {
        char cpu[256] = "unknown CPU";
        FILE *f = fopen("/proc/cpuinfo", "r");
        if (f) {
            char line[512];
            while (fgets(line, sizeof line, f))
                if (!strncmp(line, "model name", 10)) {
                    char *p = strchr(line, ':');
                    if (p) { snprintf(cpu, sizeof cpu, "%s", p + 2); cpu[strcspn(cpu, "\n")] = 0; }
                    break;
                }
            fclose(f);
        }
        char isa[256];
        ds_cpu_describe(isa, sizeof isa);
        printf("machine: %s, %d cores, kernels: %s, %s\n", cpu, ds_threads_get(), ds_ops_isa(), isa);
    }
    if (first && cfg->arch == DS_ARCH_V4)
        printf("model:   %s, %.2f GiB of weights, %.1f MiB read per decoded token, KV cache compact (V4: rings and "
               "entries; held bytes per depth below the table)\n", dir, (double)si.mapped_bytes / (1 << 30), act / (1 << 20));
    else if (first) printf("model:   %s, %.2f GiB of weights, %.1f MiB read per decoded token, KV cache %lld bytes/token (%s)\n", dir,
           (double)si.mapped_bytes / (1 << 30), act / (1 << 20),
           (long long)ds_kv_row_bytes(kvt, cfg->kv_lora_rank + cfg->qk_rope_head_dim) * (long long)cfg->n_layer,
           ds_kv_type_name(kvt));
    if (first) {
        /* what those bytes are: by part and by weight type (the kernels' time goes by type) */
        printf("         per decoded token:");
        for (int p = 0; p < DS_DEC_PARTS; p++)
            if (si.decode_part[p] > 0) printf("%s %s %.1f MiB", p ? "," : "", ds_decode_part_names[p], si.decode_part[p] / (1 << 20));
        printf("\n         by type:");
        for (int t = 0; t < DS_DTYPE_COUNT; t++)
            if (si.decode_dtype[t] > 0)
                printf(" %s %.1f MiB (%.0f%%)", ds_dtype_name((ds_dtype)t), si.decode_dtype[t] / (1 << 20), 100 * si.decode_dtype[t] / act);
        printf("; plus the KV cache rows up to the position\n");
    }
    if (first && !servers) cli_print_split(stdout, C, m);
    printf("load:    %.1f s%s", t_load, si.repacked_bytes ? "" : "\n");
    if (si.repacked_bytes) printf(" (incl. repacking %.2f GiB of quantized weights into 8-row interleaved blocks)\n",
                                  (double)si.repacked_bytes / (1 << 30));
    if (si.repack_skipped_bytes)
        printf("         (quantized weights used from the mapping: a %.2f GiB repacked copy would not fit in the %.2f GiB "
               "this process may use)\n", (double)si.repack_skipped_bytes / (1 << 30), (double)si.repack_budget / (1 << 30));
    printf("\n| threads | test            |   tokens/s (median) |   min |   max | GB/s weights | of bandwidth | CPU ms/token |\n");
    printf("|--------:|:----------------|--------------------:|------:|------:|-------------:|-------------:|-------------:|\n");
    int64_t dmax = 0;
    for (int64_t di = 0; di < ndep; di++) dmax = DS_MAX(dmax, depths[di]);
    int64_t ntok = dmax + pp + 1;
    int32_t *tok = malloc((size_t)ntok * sizeof *tok);
    float *logits = malloc((size_t)V * sizeof(float));
    double *ts = malloc((size_t)reps * sizeof(double)), *cs = malloc((size_t)reps * sizeof(double));
    if (!tok || !logits || !ts || !cs) cli_die(C, "out of memory");
    for (int64_t i = 0; i < ntok; i++) tok[i] = (int32_t)(1 + (i * 7919) % (V - 1));
    ds_ctx *x;
    if (ds_ctx_new(&x, &e)) cli_die_err(C, &e);
    /* on N ranks: communication per test, [thread][depth][pp|tg] x {bytes per token and
     * MoE layer on rank 0, rank 0's share of time in communication, the largest share} */
    int n_ranks = ds_dist_size();
    int64_t n_moe = 0;
    for (int64_t l = 0; l < cfg->n_layer; l++) n_moe += ds_config_layer_is_moe(cfg, l);
    double *comm = calloc((size_t)(nthr * ndep * 2 * 3), sizeof(double));
    int64_t *kvb = calloc((size_t)ndep, sizeof(int64_t));   /* [depth] bytes the cache holds after filling it */
    if (!comm || !kvb) cli_die(C, "out of memory");
    for (int64_t ti = 0; ti < nthr; ti++) {
        ds_threads_set(thr[ti]);
        double bw_cpu = 0, membw = bw ? probe_bandwidth(&bw_cpu) : 0;
        for (int64_t di = 0; di < ndep; di++) {
        int64_t depth = depths[di];
        ds_kvcache cache;
        /* V4: the rings keep the rows of the pp + tg (+ warm-up) positions every repeat truncates back */
        if (ds_kvcache_init(&cache, m, depth + pp + tg + 2, &e) || ds_kvcache_set_type(&cache, kvt, &e) ||
            ds_kvcache_set_v4_slack(&cache, pp + tg + 8, &e))
            cli_die_err(C, &e);
        /* the depth: DEPTH tokens prefilled once (untimed), or random rows
         * (--synthetic-depth); every repeat truncates the cache back to it */
        if (depth > 0 && synth && ds_kvcache_fill_synthetic(&cache, depth, 1, &e)) cli_die_err(C, &e);
        if (depth > 0 && !synth && ds_prefill(m, x, &cache, tok, depth, 512, logits, &e)) cli_die_err(C, &e);
        kvb[di] = ds_kvcache_bytes(&cache);
        /* warm-up (untimed, like llama-bench's): one prefill of the test's
         * size and a few decode steps, so scratch and caches are sized and
         * the weights touched */
        if (ds_prefill(m, x, &cache, tok + depth, pp > 0 ? pp : 1, 512, logits, &e)) cli_die_err(C, &e);
        for (int64_t i = 0; i < DS_MIN(tg, 4); i++) {   /* (the tokens the timed decode feeds: tok holds depth + pp + 1) */
            ds_seq_chunk ch = { &cache, tok + depth + (pp > 0 ? i % pp : 0), 1, false };
            if (ds_model_forward(m, x, &ch, 1, logits, NULL, &e)) cli_die_err(C, &e);
        }
        for (int test = 0; test < 2; test++) {
            int64_t n = test == 0 ? pp : tg;
            if (n == 0) continue;
            ds_dist_stats_reset();
            if (g_passes && test == 1) ds_pass_profile_start();
            double t_all = 0;
            for (int64_t r = 0; r < reps; r++) {
                if (ds_kvcache_truncate(&cache, depth) != depth) cli_die(C, "the cache cannot go back to depth %lld", (long long)depth);
                double t = ds_now(), c0 = cpu_now();
                if (test == 0) {
                    if (ds_prefill(m, x, &cache, tok + depth, pp, 512, logits, &e)) cli_die_err(C, &e);
                } else {
                    for (int64_t i = 0; i < tg; i++) {
                        ds_seq_chunk ch = { &cache, tok + depth + (pp > 0 ? i % pp : 0), 1, false };
                        if (ds_model_forward(m, x, &ch, 1, logits, NULL, &e)) cli_die_err(C, &e);
                    }
                }
                ts[r] = (double)n / (ds_now() - t);
                cs[r] = (cpu_now() - c0) / (double)n;
                t_all += (double)n / ts[r];
            }
            if (n_ranks > 1) {
                ds_dist_stats st;
                ds_dist_stats_get(&st);
                int64_t *ns = malloc((size_t)n_ranks * sizeof *ns);
                if (!ns) cli_die(C, "out of memory");
                /* each rank's own share, in parts per billion (expert servers: rank 0's alone) */
                ns[0] = (int64_t)(st.seconds / t_all * 1e9);
                for (int q = 1; q < n_ranks; q++) ns[q] = 0;
                if (!servers && ds_dist_allgather_i64(ns[0], ns, &e)) cli_die_err(C, &e);
                double *cm = comm + ((ti * ndep + di) * 2 + test) * 3, mx = 0;
                for (int q = 0; q < n_ranks; q++) mx = DS_MAX(mx, (double)ns[q] * 1e-9);
                cm[0] = (double)(st.bytes_sent + st.bytes_recv) / (double)(n * reps) / (double)DS_MAX(n_moe, 1);
                cm[1] = st.seconds / t_all;
                cm[2] = mx;
                free(ns);
            }
            qsort(ts, (size_t)reps, sizeof *ts, cmp_d);
            qsort(cs, (size_t)reps, sizeof *cs, cmp_d);
            double med = ts[reps / 2];
            ours[(ti * ndep + di) * 2 + test] = med;
            char name[40];
            test_name(name, sizeof name, test, n, depth);
            if (test == 1) {
                double gbs = med * act / 1e9;
                char frac[16] = "(--no-bw)";
                if (membw > 0) snprintf(frac, sizeof frac, "%.0f%%", 100 * gbs / membw);
                /* 1 thread: also the fraction by CPU time (decode's and the probe's), what a loaded machine leaves meaningful */
                char cpu[40];
                snprintf(cpu, sizeof cpu, "%.2f", 1e3 * cs[reps / 2]);
                if (bw_cpu > 0 && cs[reps / 2] > 0)
                    snprintf(cpu, sizeof cpu, "%.2f (%.0f%%)", 1e3 * cs[reps / 2], 100 * act / cs[reps / 2] / 1e9 / bw_cpu);
                printf("| %7d | %-15s | %19.2f | %5.1f | %5.1f | %12.1f | %12s | %12s |\n", thr[ti], name, med, ts[0],
                       ts[reps - 1], gbs, frac, cpu);
                if (g_passes) {
                    ds_pass_stat st[DS_DTYPE_COUNT][DS_PASS_SIZES];
                    ds_pass_profile_stop(st);
                    print_passes(st, (double)(n * reps));
                }
            } else {
                printf("| %7d | %-15s | %19.2f | %5.1f | %5.1f |              |              | %12.3f |\n", thr[ti], name, med,
                       ts[0], ts[reps - 1], 1e3 * cs[reps / 2]);
            }
            fflush(stdout);
        }
        ds_kvcache_free(&cache);
        }
        if (bw && bw_cpu > 0)
            printf("|         | read bandwidth probe: %.1f GB/s with %d threads (huge pages; %.1f GB/s by CPU time) |\n", membw,
                   thr[ti], bw_cpu);
        else if (bw) printf("|         | read bandwidth probe: %.1f GB/s with %d threads (huge pages) |\n", membw, thr[ti]);
        if (bw) {   /* again after the tests: a shared machine's bandwidth can change under a run */
            double cpu_after, after = probe_bandwidth(&cpu_after);
            if (after > 0 && fabs(after - membw) > 0.1 * membw)
                printf("|         | the probe after these tests read %.1f GB/s: the machine's memory bandwidth changed during them "
                       "(\"of bandwidth\" is against the %.1f before); compare runs whose probes agree |\n", after, membw);
        }
    }
    printf("KV cache held after filling the depth%s:", synth ? " (synthetic rows)" : "");
    for (int64_t di = 0; di < ndep; di++)
        printf(" d%lld %.2f MiB%s", (long long)depths[di], (double)kvb[di] / (1 << 20), di + 1 == ndep ? "\n" : ";");
    free(kvb);
    if (n_ranks > 1) {
        printf("\ncommunication on %d ranks (%s; counted inside src/dist), over %lld MoE layers; bytes sent + received "
               "by rank 0 per token and MoE layer; share of the timed wall clock spent inside the calls (waiting for "
               "other ranks included)\n", n_ranks,
               servers ? "expert servers: rank 0 sends each rank its routed rows and receives their outputs"
                       : "every rank runs the forward; all-gather of expert outputs, per-step agreement",
               (long long)n_moe);
        printf("\n| threads | test            | bytes/token/layer (rank 0) | comm time, rank 0 | comm time, max over ranks |\n");
        printf("|--------:|:----------------|---------------------------:|------------------:|--------------------------:|\n");
        for (int64_t ti = 0; ti < nthr; ti++)
            for (int64_t di = 0; di < ndep; di++)
                for (int test = 0; test < 2; test++) {
                    int64_t n = test == 0 ? pp : tg;
                    if (n == 0) continue;
                    const double *cm = comm + ((ti * ndep + di) * 2 + test) * 3;
                    char name[40];
                    test_name(name, sizeof name, test, n, depths[di]);
                    if (servers)   /* the servers' time waiting for rank 0 is not communication */
                        printf("| %7d | %-15s | %26.0f | %16.1f%% | %25s |\n", thr[ti], name, cm[0], 100 * cm[1], "-");
                    else
                        printf("| %7d | %-15s | %26.0f | %16.1f%% | %24.1f%% |\n", thr[ti], name, cm[0], 100 * cm[1],
                               100 * cm[2]);
                }
        fflush(stdout);
    }
    free(comm);
    ds_ctx_free(x);
    if (servers && ds_model_stop_expert_servers(&e)) cli_die_err(C, &e);
    ds_model_close(m);
    free(tok); free(logits); free(ts); free(cs);
}

/* lla: [thread][depth][fa off|on][pp|tg]; the ratio is to llama.cpp's better one */
static void print_compare(const int32_t *thr, int64_t nthr, int64_t pp, int64_t tg, const int64_t *depths, int64_t ndep,
                          const double *ours, const double *lla) {
    printf("\n| threads | test            | deepseek.c t/s | llama.cpp t/s (fa off) | llama.cpp t/s (fa on) | ratio to best |\n");
    printf("|--------:|:----------------|---------------:|-----------------------:|----------------------:|--------------:|\n");
    for (int64_t ti = 0; ti < nthr; ti++)
        for (int64_t di = 0; di < ndep; di++)
            for (int test = 0; test < 2; test++) {
                int64_t n = test == 0 ? pp : tg;
                if (n == 0) continue;
                char name[40], lf[2][32];
                test_name(name, sizeof name, test, n, depths[di]);
                double o = ours[(ti * ndep + di) * 2 + test], best = 0;
                for (int fa = 0; fa < 2; fa++) {
                    double l = lla[((ti * ndep + di) * 2 + fa) * 2 + test];
                    if (l > 0) snprintf(lf[fa], sizeof lf[fa], "%.2f", l);
                    else snprintf(lf[fa], sizeof lf[fa], "(failed)");
                    best = DS_MAX(best, l);
                }
                if (best > 0) printf("| %7d | %-15s | %14.2f | %22s | %21s | %13.2f |\n", thr[ti], name, o, lf[0], lf[1], o / best);
                else printf("| %7d | %-15s | %14.2f | %22s | %21s |               |\n", thr[ti], name, o, lf[0], lf[1]);
            }
    fflush(stdout);
}

int cmd_bench(int argc, char **argv) {
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--sampler")) return cmd_bench_sampler(argc, argv);
    const char *dir = NULL, *tlist = NULL, *llama = NULL, *dlist = NULL;
    int64_t pp = 512, tg = 128, reps = 3, rounds = 1;
    bool bw = true, servers = false, synth = false;
    ds_kv_type kvt = DS_KV_F32;
    const char *C = "bench";
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (cli_is_help(a)) { usage(stdout); return 0; }
        else if (!strcmp(a, "-m") || !strcmp(a, "--model")) { dir = v; i++; }
        else if (!strcmp(a, "-p")) { pp = cli_parse_int(C, a, v, 0, 1 << 20); i++; }
        else if (!strcmp(a, "-n")) { tg = cli_parse_int(C, a, v, 0, 1 << 20); i++; }
        else if (!strcmp(a, "-r")) { reps = cli_parse_int(C, a, v, 1, 1000); i++; }
        else if (!strcmp(a, "--rounds")) { rounds = cli_parse_int(C, a, v, 1, 100); i++; }
        else if (!strcmp(a, "-t") || !strcmp(a, "--threads")) { tlist = v; i++; }
        else if (!strcmp(a, "-d") || !strcmp(a, "--depth")) { dlist = v; i++; }
        else if (!strcmp(a, "--no-bw")) bw = false;
        else if (!strcmp(a, "--passes")) g_passes = true;
        else if (!strcmp(a, "--synthetic-depth")) synth = true;
        else if (!strcmp(a, "--expert-servers")) servers = true;
        else if (!strcmp(a, "--compare-llama")) { llama = v; i++; }
        else if (!strcmp(a, "--kv-type")) {
            int k = v ? ds_kv_type_from_name(v) : -1;
            if (k < 0) cli_die(C, "--kv-type: expected f32, q8, fp8, bf16 or i8");
            kvt = (ds_kv_type)k;
            i++;
        }
        else { usage(stderr); cli_die(C, "unknown option '%s'", a); }
    }
    if (!dir) dir = cli_default_model();
    if (!dir) cli_die(C, "no model given (-m MODEL_DIR)");
    cli_check_model(C, dir);
    if (llama && !ds_path_is_gguf(dir)) cli_die(C, "--compare-llama needs a .gguf model (-m MODEL.gguf)");
    if (llama && ds_dist_size() > 1) cli_die(C, "--compare-llama runs in one process only (not under mpirun -np N)");
    int64_t nthr = 0;
    int32_t *thr = NULL;
    if (tlist) thr = cli_parse_ids(C, "-t", tlist, &nthr);
    else { thr = malloc(sizeof *thr); thr[0] = ds_threads_get(); nthr = 1; }
    int64_t ndep = 1;
    int64_t *depths = calloc(1, sizeof *depths);
    if (!depths) cli_die(C, "out of memory");
    if (dlist) {
        int64_t nd = 0;
        int32_t *d = cli_parse_ids(C, "-d", dlist, &nd);
        free(depths);
        depths = malloc((size_t)nd * sizeof *depths);
        if (!depths) cli_die(C, "out of memory");
        for (int64_t i = 0; i < nd; i++) depths[i] = d[i];
        ndep = nd;
        free(d);
    }
    int64_t nt = nthr * ndep;   /* (thread, depth) pairs */
    double *ours = calloc((size_t)(nt * 2 * rounds), sizeof(double));   /* [round][thread][depth][pp|tg] */
    double *lla = calloc((size_t)(nt * 4 * rounds), sizeof(double));   /* [round][thread][depth][fa][pp|tg] */
    if (!ours || !lla) cli_die(C, "out of memory");
    for (int64_t rd = 0; rd < rounds; rd++) {
        if (rounds > 1) printf("%s== round %lld of %lld\n", rd ? "\n" : "", (long long)rd + 1, (long long)rounds);
        bench_ours(C, dir, thr, nthr, pp, tg, depths, ndep, reps, bw, kvt, rd == 0, servers, synth, ours + rd * nt * 2);
        if (llama) {
            for (int64_t ti = 0; ti < nthr; ti++)
                for (int64_t di = 0; di < ndep; di++)
                    for (int fa = 0; fa < 2; fa++)
                        run_llama_bench(llama, dir, thr[ti], pp, tg, reps, depths[di], fa,
                                        lla + rd * nt * 4 + ((ti * ndep + di) * 2 + fa) * 2);
            print_compare(thr, nthr, pp, tg, depths, ndep, ours + rd * nt * 2, lla + rd * nt * 4);
        }
    }
    if (llama && rounds > 1) {
        /* per test: medians over the rounds, and the median of the per-round ratios */
        printf("\n== all %lld rounds: medians\n", (long long)rounds);
        printf("\n| threads | test            | deepseek.c t/s | llama.cpp t/s (best of fa) | ratio (median of rounds) | ratios per round |\n");
        printf("|--------:|:----------------|---------------:|---------------------------:|-------------------------:|:-----------------|\n");
        double *v = malloc((size_t)rounds * sizeof(double));
        if (!v) cli_die(C, "out of memory");
        for (int64_t ti = 0; ti < nthr; ti++)
            for (int64_t di = 0; di < ndep; di++)
                for (int test = 0; test < 2; test++) {
                    int64_t n = test == 0 ? pp : tg;
                    if (n == 0) continue;
                    double med[3];
                    char per[512] = "";
                    for (int k = 0; k < 3; k++) {
                        for (int64_t rd = 0; rd < rounds; rd++) {
                            int64_t at = rd * nt + ti * ndep + di;
                            double o = ours[at * 2 + test];
                            double l = DS_MAX(lla[(at * 2 + 0) * 2 + test], lla[(at * 2 + 1) * 2 + test]);
                            v[rd] = k == 0 ? o : k == 1 ? l : (l > 0 ? o / l : 0);
                            if (k == 2) {
                                size_t len = strlen(per);
                                snprintf(per + len, sizeof per - len, "%s%.2f", rd ? ", " : "", v[rd]);
                            }
                        }
                        qsort(v, (size_t)rounds, sizeof *v, cmp_d);
                        med[k] = v[rounds / 2];
                    }
                    char name[40];
                    test_name(name, sizeof name, test, n, depths[di]);
                    if (med[1] > 0)
                        printf("| %7d | %-15s | %14.2f | %26.2f | %24.2f | %s |\n", thr[ti], name, med[0], med[1], med[2], per);
                    else
                        printf("| %7d | %-15s | %14.2f | %26s | %24s | |\n", thr[ti], name, med[0], "(failed)", "");
                }
        free(v);
    }
    free(thr); free(ours); free(lla); free(depths);
    return 0;
}
