/*
 * cmd_logits.c - `deepseek logits`: one forward pass, all positions, raw
 * little-endian float32 logits to a file (for parity checks).
 */
#include "cli.h"
#include "../core/mmap_file.h"
#include "../core/thread.h"
#include "../dist/dist.h"
#include "../model/model.h"

#include <stdlib.h>
#include <string.h>

static void usage(FILE *f) {
    fprintf(f,
        "usage: deepseek logits -m MODEL_DIR --tokens 0,5,17 --out FILE [options]\n"
        "  Writes little-endian float32 logits [T x vocab_size] of one full forward pass.\n"
        "  --mtp          write the MTP module's logits instead, [(T-1) x vocab_size]:\n"
        "                 row t predicts token t+2 from h_t and token t+1 (V4: h_t is the\n"
        "                 main model's residual streams, the mtp.0 block's input)\n"
        "  --incremental  feed the tokens one at a time through the KV cache\n"
        "  --naive        use the decompressed (non-absorbed) attention path\n"
        "  --kv-type T    KV cache storage: f32 (default), q8, fp8, bf16 or i8\n"
        "  -t, --threads N\n");
}

int cmd_logits(int argc, char **argv) {
    const char *dir = NULL, *out = NULL, *toks = NULL;
    bool mtp = false, incremental = false, naive = false;
    ds_kv_type kvt = DS_KV_F32;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (cli_is_help(a)) { usage(stdout); return 0; }
        else if (!strcmp(a, "-m") || !strcmp(a, "--model")) dir = i + 1 < argc ? argv[++i] : NULL;
        else if (!strcmp(a, "--tokens")) toks = i + 1 < argc ? argv[++i] : NULL;
        else if (!strcmp(a, "--out") || !strcmp(a, "-o")) out = i + 1 < argc ? argv[++i] : NULL;
        else if (!strcmp(a, "--mtp")) mtp = true;
        else if (!strcmp(a, "--incremental")) incremental = true;
        else if (!strcmp(a, "--naive")) naive = true;
        else if (!strcmp(a, "--kv-type")) {
            int k = i + 1 < argc ? ds_kv_type_from_name(argv[i + 1]) : -1;
            if (k < 0) cli_die("logits", "--kv-type: expected f32, q8, fp8, bf16 or i8");
            kvt = (ds_kv_type)k;
            i++;
        }
        else if (!strcmp(a, "-t") || !strcmp(a, "--threads"))
            ds_threads_set((int)cli_parse_int("logits", a, i + 1 < argc ? argv[++i] : NULL, 1, 1024));
        else { usage(stderr); cli_die("logits", "unknown option '%s'", a); }
    }
    if (!dir) dir = cli_default_model();
    if (!dir) cli_die("logits", "no model given (-m MODEL_DIR)");
    cli_check_model("logits", dir);
    if (!toks) cli_die("logits", "--tokens is required");
    if (!out) cli_die("logits", "--out is required");
    int64_t T;
    int32_t *tok = cli_parse_ids("logits", "--tokens", toks, &T);
    ds_err e = { 0 };
    ds_model *m;
    m = cli_open_model("logits", dir);
    int64_t V = ds_model_config(m)->vocab_size, D = ds_model_hidden_width(m);   /* D = hidden row (V4: hc·D) */
    for (int64_t i = 0; i < T; i++)
        if (tok[i] >= V) cli_die("logits", "--tokens: token id %d at position %lld is >= vocab_size %lld", tok[i], (long long)i, (long long)V);
    if (mtp && T < 2) cli_die("logits", "--mtp needs at least 2 tokens");
    if (mtp && ds_model_mtp_stored(m) < 1) cli_die("logits", "%s: the model has no MTP module stored", dir);
    int64_t rows = mtp ? T - 1 : T;
    float *logits = malloc((size_t)(T * V) * sizeof(float));
    float *hidden = malloc((size_t)(T * D) * sizeof(float));
    if (!logits || !hidden) cli_die("logits", "out of memory");
    ds_kvcache cache;
    ds_ctx *x;
    if (ds_ctx_new(&x, &e)) cli_die_err("logits", &e);
    if (ds_kvcache_init(&cache, m, T + 1, &e) || ds_kvcache_set_type(&cache, kvt, &e)) cli_die_err("logits", &e);
    if (naive) {
        if (mtp) cli_die("logits", "--naive and --mtp cannot be combined");
        if (ds_model_forward_naive(m, x, tok, T, logits, &e)) cli_die_err("logits", &e);
    } else if (incremental) {
        for (int64_t t = 0; t < T; t++) {
            ds_seq_chunk ch = { &cache, tok + t, 1, true };
            if (ds_model_forward(m, x, &ch, 1, logits + t * V, hidden + t * D, &e)) cli_die_err("logits", &e);
        }
    } else {
        ds_seq_chunk ch = { &cache, tok, T, true };
        if (ds_model_forward(m, x, &ch, 1, logits, hidden, &e)) cli_die_err("logits", &e);
    }
    if (mtp) {
        if (incremental) {
            for (int64_t t = 0; t < T - 1; t++)
                if (ds_model_forward_mtp(m, x, &cache, hidden + t * D, tok + t + 1, 1, logits + t * V, &e)) cli_die_err("logits", &e);
        } else {
            if (ds_model_forward_mtp(m, x, &cache, hidden, tok + 1, T - 1, logits, &e)) cli_die_err("logits", &e);
        }
    }
    /* rank 0 owns the output (every rank of an mpirun job holds the same logits) */
    if (ds_dist_rank() == 0 &&
        (ds_mkdir_parent(out, &e) || ds_write_file_atomic(out, logits, (size_t)(rows * V) * sizeof(float), &e)))
        cli_die_err("logits", &e);
    fprintf(stderr, "wrote %lld x %lld float32 logits to %s\n", (long long)rows, (long long)V, out);
    ds_kvcache_free(&cache);
    ds_ctx_free(x);
    free(logits);
    free(hidden);
    free(tok);
    ds_model_close(m);
    return 0;
}
