/*
 * cmd_train.c - `deepseek train`: the DeepSeek-V3 recipe from a readable
 * JSON config and/or flags, with a live progress line, metrics.jsonl,
 * periodic evaluation and checkpoints; Ctrl-C saves and stops.
 */
#include "cli.h"
#include "../core/mmap_file.h"
#include "../core/thread.h"
#include "../dist/dist.h"
#include "../io/json.h"
#include "../train/trainer.h"
#include "../train/optim.h"

#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

static void usage(FILE *f) {
    fprintf(f,
        "usage: deepseek train [--config RECIPE.json] [options]\n"
        "       deepseek train --resume OUT [options]\n"
        "       deepseek train --sft --config SFT.json [--KEY VALUE ...]   (prompt/response pairs: train --sft --help)\n"
        "  Trains a DeepSeek-V3-architecture model on token shards from `deepseek prepare-data`.\n"
        "  RECIPE.json: {\"model\": {config.json keys}, \"data\": DIR, \"out\": DIR, recipe keys...}\n"
        "  (see models/default/recipe.json). Any recipe key is also a flag, dashes or underscores:\n"
        "    --data DIR --out DIR --steps N (0: evaluate only) --seq-len T --batch-size B --grad-accum N\n"
        "    --unit-seqs G (sequences summed as one unit, in one fixed order for any ranks/threads; default 1)\n"
        "    --lr X --min-lr X --warmup-steps N --schedule cosine|constant\n"
        "    --beta1 --beta2 --eps --weight-decay --grad-clip --init-std\n"
        "    --bias-update-speed G --bias-freeze-step N (-1 never) --balance-alpha A --mtp-weight L\n"
        "    --eval-every N --eval-tokens N --ckpt-every N --keep-checkpoints N --log-every N\n"
        "    --seed S --threads N --time-limit-min M --max-nan-skips N --peak-gflops G\n"
        "    --precision fp32|bf16  linear layers' GEMM inputs (default fp32); bf16: rounded to bf16, fp32\n"
        "                           sums (AVX512-BF16's vdpbf16ps; refused naming the flag on CPUs without\n"
        "                           it); heads, router, attention core, weights, gradients, AdamW stay fp32\n"
        "    --init-from HF_DIR     start from an existing checkpoint instead of the config's model\n"
        "  --model KEY=VALUE       set a model config.json key (e.g. --model hidden_size=128)\n"
        "  --resume OUT|CKPT       continue exactly where a run stopped (its recipe; flags override)\n"
        "  -t, --threads N         threads (default: all cores)\n"
        "  --export CKPT --out DIR [--dtype bf16|f16|f32]\n"
        "                          write a checkpoint as a plain Hugging Face folder (config.json,\n"
        "                          model.safetensors, tokenizer.json, generation_config.json), no training\n"
        "Output: OUT/ckpt-NNNNNNNN (Hugging Face folder + optimizer/data state), OUT/latest,\n"
        "OUT/metrics.jsonl (one JSON object per step; {\"step\",\"val_loss\"} lines after evaluations).\n"
        "Many processes: mpirun -np N deepseek train ... splits each step's batch_size x grad_accum\n"
        "sequences over N ranks (units of --unit-seqs, a multiple of N; --threads per rank), shards the\n"
        "AdamW state (ZeRO-1) and sums gradients in one fixed order: the same losses and weights as\n"
        "one process, bit for bit, for any N and thread count. Rank 0 writes OUT; a run saved by N\n"
        "ranks resumes on any M.\n"
        "  --expert-parallel       (recipe \"expert_parallel\": true) with mpirun: each rank holds only its\n"
        "                          routed experts [E*q/N, E*(q+1)/N) (weights, gradients, AdamW moments);\n"
        "                          rows go to the experts' owners and back; the same bits as one process;\n"
        "                          one worker thread per rank in the step; per-rank bytes printed at start\n");
}

/* On N > 1 ranks: what each rank holds (rank 0 prints; collective). */
static void print_held(const char *C, const ds_trainer *t) {
    int n = ds_dist_size();
    if (n == 1) return;
    const ds_tmodel *m = t->m;
    int64_t E = m->cfg.n_routed_experts, lo = 0, hi = E;
    if (m->ep_n > 1) {   /* the experts held: from the table */
        lo = E, hi = 0;
        for (int64_t i = 0; i < m->n_params; i++)
            if (m->params[i].expert >= 0 && m->params[i].off >= 0) {
                lo = DS_MIN(lo, m->params[i].expert);
                hi = DS_MAX(hi, m->params[i].expert + 1);
            }
        if (hi <= lo) lo = hi = 0;
    }
    int64_t mine[6] = { m->n_floats, m->n_rep, t->opt.hi - t->opt.lo + (t->opt_ep.hi - t->opt_ep.lo), lo, hi, 0 };
    int64_t *v = calloc((size_t)(6 * n), sizeof *v);
    if (!v) cli_die(C, "out of memory");
    ds_err e = { 0 };
    for (int k = 0; k < 5; k++)
        if (ds_dist_allgather_i64(mine[k], v + k * n, &e)) cli_die_err(C, &e);
    fprintf(stderr, "  %s: per rank (MiB: parameters = replicated + routed experts; gradients; AdamW moments)\n",
            m->ep_n > 1 ? "expert parallel, each rank holds its own routed experts"
                        : "data parallel, every rank holds every expert (--expert-parallel: each only its own)");
    for (int q = 0; q < n; q++)
        fprintf(stderr, "    rank %d: experts [%lld, %lld) of %lld; parameters %.3f = %.3f + %.3f; gradients %.3f; "
                "AdamW %.3f (floats: %lld params, %lld replicated, %lld moments x2)\n", q, (long long)v[3 * n + q],
                (long long)v[4 * n + q], (long long)E, (double)v[q] * 4 / 1048576.0, (double)v[n + q] * 4 / 1048576.0,
                (double)(v[q] - v[n + q]) * 4 / 1048576.0, (double)v[q] * 4 / 1048576.0,
                (double)v[2 * n + q] * 8 / 1048576.0, (long long)v[q], (long long)v[n + q], (long long)v[2 * n + q]);
    free(v);
}

static volatile sig_atomic_t g_stop;
/* user + system CPU seconds of this process, all threads (a shared machine's
 * load stretches wall time, much less this) */
static double cpu_seconds(void) {
    struct rusage u;
    if (getrusage(RUSAGE_SELF, &u)) return 0;
    return (double)u.ru_utime.tv_sec + u.ru_utime.tv_usec * 1e-6 + (double)u.ru_stime.tv_sec + u.ru_stime.tv_usec * 1e-6;
}

static void on_sigint(int sig) { (void)sig; g_stop = 1; }

static void fmt_eta(char *buf, size_t n, double s) {
    if (!(s >= 0) || s > 1e7) { snprintf(buf, n, "?"); return; }
    long x = (long)(s + 0.5);
    if (x >= 3600) snprintf(buf, n, "%ldh%02ldm", x / 3600, x / 60 % 60);
    else snprintf(buf, n, "%ldm%02lds", x / 60, x % 60);
}

static json_t *load_row(const ds_tmodel *m, int64_t l) {
    json_t *a = json_array();
    int64_t E = m->cfg.n_routed_experts;
    for (int64_t i = 0; i < E; i++) json_array_append_new(a, json_integer(m->load[l * E + i]));
    return a;
}

static void copy_file(const char *C, const char *from_dir, const char *to_dir, const char *name, bool required) {
    char a[4200], b[4200];
    snprintf(a, sizeof a, "%s/%s", from_dir, name);
    snprintf(b, sizeof b, "%s/%s", to_dir, name);
    char *buf;
    size_t n;
    ds_err e = { 0 };
    if (ds_read_file(a, 256u << 20, &buf, &n, &e)) {
        if (required) cli_die_err(C, &e);
        return;
    }
    if (ds_write_file_atomic(b, buf, n, &e)) cli_die_err(C, &e);
    free(buf);
}

static int export_model(const char *C, const char *ckpt, const char *out, const char *dtype_name) {
    ds_dtype dt = DS_DTYPE_BF16;
    if (!strcmp(dtype_name, "f32")) dt = DS_DTYPE_F32;
    else if (!strcmp(dtype_name, "f16")) dt = DS_DTYPE_F16;
    else if (strcmp(dtype_name, "bf16")) cli_die(C, "--dtype must be bf16, f16 or f32");
    ds_err e = { 0 };
    ds_tmodel *m;
    if (ds_tmodel_load(&m, ckpt, &e)) cli_die_err(C, &e);
    if (!ds_params_finite(m)) cli_die(C, "%s: parameters are not finite", ckpt);
    char path[4200];
    snprintf(path, sizeof path, "%s/config.json", ckpt);
    json_t *cfg;
    if (ds_json_load_file(path, 16u << 20, &cfg, &e)) cli_die_err(C, &e);
    const char *tn = dt == DS_DTYPE_F32 ? "float32" : dt == DS_DTYPE_BF16 ? "bfloat16" : "float16";
    json_object_set_new(cfg, "dtype", json_string(tn));
    json_object_set_new(cfg, "torch_dtype", json_string(tn));
    if (ds_mkdir_p(out, &e)) cli_die_err(C, &e);
    char *js = json_dumps(cfg, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(10));
    snprintf(path, sizeof path, "%s/config.json", out);
    if (!js || ds_write_file_atomic(path, js, strlen(js), &e)) cli_die_err(C, &e);
    snprintf(path, sizeof path, "%s/model.safetensors", out);
    if (ds_tmodel_save_as(m, path, dt, "{\"format\":\"pt\"}", &e)) cli_die_err(C, &e);
    copy_file(C, ckpt, out, "tokenizer.json", true);
    copy_file(C, ckpt, out, "generation_config.json", false);
    int64_t n = 0;
    for (int64_t i = 0; i < m->n_params; i++) n += m->params[i].numel;
    printf("{\"exported\":\"%s\",\"to\":\"%s\",\"dtype\":\"%s\",\"parameters\":%lld}\n", ckpt, out, tn, (long long)n);
    free(js);
    json_decref(cfg);
    ds_tmodel_free(m);
    return 0;
}

int cmd_sft(int argc, char **argv);   /* cmd_sft.c: `train --sft` */

int cmd_train(int argc, char **argv) {
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--sft")) return cmd_sft(argc, argv);
    const char *C = "train", *config = NULL, *resume = NULL, *export_from = NULL, *dtype = "bf16", *export_to = NULL;
    char **sets = calloc((size_t)argc + 1, sizeof *sets);
    char **model_sets = calloc((size_t)argc + 1, sizeof *model_sets);
    int n_sets = 0, n_model = 0;
    int64_t debug_nan = -1, debug_delay = 0;
    if (!sets || !model_sets) cli_die(C, "out of memory");
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (cli_is_help(a)) { usage(stdout); free(sets); free(model_sets); return 0; }
        else if (!strcmp(a, "--config") || !strcmp(a, "-c")) { config = v; i++; }
        else if (!strcmp(a, "--resume")) { resume = v; i++; }
        else if (!strcmp(a, "--export")) { export_from = v; i++; }
        else if (!strcmp(a, "--dtype")) { dtype = v ? v : ""; i++; }
        else if (export_from && !strcmp(a, "--out")) { export_to = v; i++; }
        else if (!strcmp(a, "--model")) {
            if (!v || !strchr(v, '=')) cli_die(C, "--model needs KEY=VALUE");
            model_sets[n_model++] = (char *)v; i++;
        } else if (!strcmp(a, "--set")) {
            if (!v) cli_die(C, "--set needs KEY=VALUE");
            sets[n_sets++] = strdup(v); i++;
        } else if (!strcmp(a, "--debug-nan-step")) { debug_nan = cli_parse_int(C, a, v, 0, INT64_MAX); i++; }
        else if (!strcmp(a, "--debug-step-delay")) { debug_delay = cli_parse_int(C, a, v, 0, 60000); i++; }
        else if (!strcmp(a, "--expert-parallel")) sets[n_sets++] = strdup("expert_parallel=true");
        else if (!strcmp(a, "-t")) { sets[n_sets] = malloc(32); snprintf(sets[n_sets++], 32, "threads=%s", v ? v : ""); i++; }
        else if (a[0] == '-' && a[1] == '-' && a[2]) {
            if (!v) cli_die(C, "%s needs a value", a);
            size_t n = strlen(a + 2) + strlen(v) + 2;
            char *kv = malloc(n);
            snprintf(kv, n, "%s=%s", a + 2, v);
            for (char *p = kv; *p && *p != '='; p++) if (*p == '-') *p = '_';
            sets[n_sets++] = kv;
            i++;
        } else { usage(stderr); cli_die(C, "unknown argument '%s'", a); }
    }
    if (export_from) {
        if (!export_to) cli_die(C, "--export needs --out DIR");
        for (int i = 0; i < n_sets; i++) free(sets[i]);
        free(sets);
        free(model_sets);
        return export_model(C, export_from, export_to, dtype);
    }
    ds_err e = { 0 };
    ds_recipe r;
    ds_recipe_default(&r);
    json_t *cfgj = NULL, *model = NULL;
    if (config) {
        if (ds_json_load_file(config, 16u << 20, &cfgj, &e)) cli_die_err(C, &e);
        if (ds_recipe_apply(&r, cfgj, &model, config, &e)) cli_die_err(C, &e);
    }
    if (model) model = json_deep_copy(model);
    else model = json_object();
    for (int i = 0; i < n_model; i++) {
        char *eq = strchr(model_sets[i], '=');
        *eq = 0;
        json_t *val = json_loads(eq + 1, JSON_DECODE_ANY, NULL);
        if (!val) val = json_string(eq + 1);
        json_object_set_new(model, model_sets[i], val);
        *eq = '=';
    }
    /* threads first (the recipe's, or flags') so the peak measurement uses them */
    for (int i = 0; i < n_sets; i++)
        if (!resume && ds_recipe_set(&r, sets[i], &e)) cli_die_err(C, &e);
    ds_trainer t;
    if (resume) {
        if (config || n_model) cli_die(C, "--resume takes the run's own recipe and model; only flags may override");
        /* resume reads the recipe first; threads must be set before its peak measurement */
        int64_t th = 0;
        for (int i = 0; i < n_sets; i++)
            if (!strncmp(sets[i], "threads=", 8)) th = atoll(sets[i] + 8);
        char sp[4096];
        snprintf(sp, sizeof sp, "%s/trainer_state.json", resume);
        json_t *st = NULL;
        ds_err e2 = { 0 };
        if (!th) {
            char p2[4200];
            snprintf(p2, sizeof p2, "%s/latest/trainer_state.json", resume);
            if (ds_json_load_file(access(sp, F_OK) == 0 ? sp : p2, 16u << 20, &st, &e2) == 0) {
                json_t *rc = json_object_get(json_object_get(st, "recipe"), "threads");
                if (json_is_integer(rc)) th = json_integer_value(rc);
                json_decref(st);
            }
        }
        ds_threads_set((int)th);
        int rc = ds_trainer_resume(&t, resume, sets, n_sets, &e);
        /* on many ranks: the lowest rank that failed says why, once */
        cli_all_ok(C, rc ? (e.msg[0] ? e.msg : ds_status_str(e.code)) : NULL, "could not resume the run");
    } else {
        ds_threads_set((int)r.threads);
        int rc = ds_trainer_init(&t, &r, model, &e);
        cli_all_ok(C, rc ? (e.msg[0] ? e.msg : ds_status_str(e.code)) : NULL, "could not start training");
    }
    t.debug_nan_step = debug_nan;
    t.debug_step_delay_ms = (int)debug_delay;   /* tests: ms of sleep after each step (kill -9 mid-run) */
    if (ds_dist_size() > 1) {
        /* every rank must start from the same parameters (same recipe, data, checkpoint, binary) */
        int diff;
        /* (the replicated region: with expert_parallel each rank holds other experts after it) */
        if (ds_dist_agree(ds_dist_hash(DS_DIST_HASH0, t.m->w, (size_t)t.m->n_rep * sizeof(float)), &diff, &e))
            cli_die_err(C, &e);
        if (diff >= 0)
            cli_die(C, "rank %d starts from different parameters than rank 0 (its recipe, data, checkpoint or binary "
                    "differ); every rank must run the same command on the same files", diff);
    }
    const ds_recipe *R = &t.r;
    ds_tmodel *m = t.m;
    int64_t total = 0;
    for (int64_t i = 0; i < m->n_params; i++) total += m->params[i].numel;
    int64_t n_moe = ds_tmodel_moe_layers(m, NULL);
    int64_t *moe_idx = calloc((size_t)DS_MAX(n_moe, 1), sizeof(int64_t));
    ds_tmodel_moe_layers(m, moe_idx);
    fprintf(stderr,
            "deepseek train: %s model, %lld layers%s, %lld parameters (%lld active per token), vocab %lld\n"
            "  data %s: %lld train / %lld val tokens; batch %lld x %lld tokens x %lld accum; %lld steps\n"
            "  %.3g GFLOP per step (%s GEMMs); peak %.1f GFLOP/s (%s) on %d ranks x %d threads; out %s\n",
            m->cfg.model_type, (long long)m->cfg.n_layer, m->n_mtp ? " + MTP" : "", (long long)total,
            (long long)ds_tmodel_active_params(m), (long long)m->cfg.vocab_size, R->data, (long long)t.data.train_tokens,
            (long long)t.data.val_tokens, (long long)R->batch_size, (long long)R->seq_len, (long long)R->grad_accum,
            (long long)R->steps, t.step_flops / 1e9, R->precision == DS_PREC_BF16 ? "bf16" : "fp32", t.peak_flops / 1e9,
            R->peak_gflops > 0 ? "--peak-gflops" : R->precision == DS_PREC_BF16 ? "measured fp32 x 2 for vdpbf16ps" : "measured fp32",
            ds_dist_size(), ds_threads_get(), R->out);
    if (resume) fprintf(stderr, "  resumed at step %lld (%lld tokens)\n", (long long)t.step, (long long)t.tokens);
    print_held(C, &t);
    signal(SIGINT, on_sigint);
    bool tty = isatty(2);
    double ema = 0, win_t = 0, win_cpu = 0;   /* win_cpu: process CPU seconds in the window's steps */
    int64_t win_tok = 0, last_eval = -1, last_ckpt = resume ? t.step : -1;
    double win_flops = 0, win_mm = 0, win_mmf = 0;
    int64_t win_n = 0;
    if (!resume && R->eval_every > 0) {
        double vl;
        if (ds_trainer_eval(&t, &vl, &e)) cli_die_err(C, &e);
        ds_trainer_log(&t, json_pack("{s:I, s:f}", "step", (json_int_t)0, "val_loss", vl));
        last_eval = 0;
    }
    double tok_s = 0, mfu = 0, mm_gflops = 0, mm_frac = 0;
    int64_t start_step = t.step;   /* --steps 0 (or a finished run): evaluate only, write nothing */
    bool stopped = false;
    while (t.step < R->steps && !g_stop) {
        ds_step_info s;
        double cpu0 = cpu_seconds();
        if (ds_trainer_step(&t, &s, &e)) {
            if (tty) fputc('\n', stderr);
            cli_die_err(C, &e);
        }
        ema = ema ? 0.9 * ema + 0.1 * s.seconds : s.seconds;
        win_t += s.seconds;
        win_cpu += cpu_seconds() - cpu0;
        win_tok += s.tokens;
        win_flops += s.flops;
        win_mm += s.mm_rate;
        win_mmf += s.mm_frac;
        win_n++;
        bool do_eval = R->eval_every > 0 && t.step % R->eval_every == 0;
        double vl = NAN;
        if (do_eval) {
            if (ds_trainer_eval(&t, &vl, &e)) cli_die_err(C, &e);
            last_eval = t.step;
        }
        if (t.step % R->log_every == 0 || do_eval || t.step == R->steps) {
            tok_s = win_t > 0 ? (double)win_tok / win_t : 0;
            mfu = win_t > 0 && t.peak_flops > 0 ? win_flops / win_t / t.peak_flops : 0;
            mm_gflops = win_n ? win_mm / (double)win_n / 1e9 : 0;
            mm_frac = win_n ? win_mmf / (double)win_n : 0;
            json_t *line = json_pack("{s:I, s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:I, s:f, s:b}",
                                     "step", (json_int_t)t.step, "loss", s.loss, "ce", s.ce, "mtp", s.mtp, "balance",
                                     s.balance, "lr", s.lr, "grad_norm", s.grad_norm, "tok_s", tok_s, "mfu", mfu,
                                     "matmul_gflops", mm_gflops, "matmul_frac", mm_frac, "maxvio", s.maxvio, "tokens",
                                     (json_int_t)t.tokens, "time_s", t.elapsed, "skipped", s.skipped);
            json_object_set_new(line, "cpu_s", json_real(win_n ? win_cpu / (double)win_n : 0));   /* per step */
            if (do_eval) json_object_set_new(line, "val_loss", json_real(vl));
            if (n_moe) {
                json_t *ld = json_array();
                for (int64_t i = 0; i < n_moe; i++) json_array_append_new(ld, load_row(m, moe_idx[i]));
                json_object_set_new(line, "load", ld);
                json_t *ids = json_array();
                for (int64_t i = 0; i < n_moe; i++) json_array_append_new(ids, json_integer(moe_idx[i]));
                json_object_set_new(line, "load_layers", ids);
            }
            ds_trainer_log(&t, line);
            char eta[32], val[32];
            fmt_eta(eta, sizeof eta, ema * (double)(R->steps - t.step));
            if (isfinite(t.last_val)) snprintf(val, sizeof val, "%.4f", t.last_val);
            else snprintf(val, sizeof val, "-");
            fprintf(stderr, "%sstep %lld/%lld | loss %.4f | val %s | %.0f tok/s | MFU %.1f%% | lr %.2e | maxvio %.2f | ETA %s%s%s",
                    tty ? "\r\033[K" : "", (long long)t.step, (long long)R->steps, s.loss, val, tok_s, 100 * mfu, s.lr,
                    s.maxvio, eta, s.skipped ? " | SKIPPED (non-finite)" : "", tty && !do_eval ? "" : "\n");
            win_t = 0; win_cpu = 0; win_tok = 0; win_flops = 0; win_mm = 0; win_mmf = 0; win_n = 0;
        }
        if (R->ckpt_every > 0 && t.step % R->ckpt_every == 0) {
            const char *p;
            if (ds_trainer_save(&t, &p, &e)) { if (tty) fputc('\n', stderr); cli_die_err(C, &e); }
            last_ckpt = t.step;
        }
        if (R->time_limit_min > 0 && t.elapsed > R->time_limit_min * 60) {
            stopped = true;
            break;
        }
        uint64_t stop = g_stop;   /* rank 0's Ctrl-C stops every rank at the same step */
        cli_bcast_u64(C, &stop);
        g_stop = (sig_atomic_t)stop;
    }
    if (tty) fputc('\n', stderr);
    if (g_stop) fprintf(stderr, "interrupted at step %lld: saving\n", (long long)t.step);
    if (stopped) fprintf(stderr, "time limit (%.1f min) reached at step %lld\n", R->time_limit_min, (long long)t.step);
    if (last_eval != t.step && R->eval_every > 0) {
        double vl;
        if (ds_trainer_eval(&t, &vl, &e)) cli_die_err(C, &e);
        ds_trainer_log(&t, json_pack("{s:I, s:f}", "step", (json_int_t)t.step, "val_loss", vl));
    }
    const char *path = NULL;
    if (t.step != start_step && last_ckpt != t.step && ds_trainer_save(&t, &path, &e)) cli_die_err(C, &e);
    char vbuf[32] = "null";
    if (isfinite(t.last_val)) snprintf(vbuf, sizeof vbuf, "%.6g", t.last_val);
    printf("{\"step\":%lld,\"tokens\":%lld,\"val_loss\":%s,\"train_seconds\":%.1f,\"tok_s\":%.1f,\"mfu\":%.4f,"
           "\"matmul_gflops\":%.2f,\"matmul_frac\":%.3f,\"peak_gflops\":%.2f,\"nan_skips\":%lld,"
           "\"checkpoint\":%s%s%s}\n",
           (long long)t.step, (long long)t.tokens, vbuf, t.elapsed, t.elapsed > 0 ? (double)t.tokens / t.elapsed : 0,
           mfu, mm_gflops, mm_frac, t.peak_flops / 1e9, (long long)t.nan_skips, t.step ? "\"" : "null",
           t.step ? R->out : "", t.step ? "/latest\"" : "");
    ds_trainer_free(&t);
    json_decref(cfgj);
    json_decref(model);
    for (int i = 0; i < n_sets; i++) free(sets[i]);
    free(sets);
    free(model_sets);
    free(moe_idx);
    return 0;
}
