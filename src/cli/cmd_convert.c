/*
 * cmd_convert.c - `deepseek convert`: a Hugging Face folder (BF16/F16/F32 or
 * block-FP8, sharded or not) or a GGUF -> GGUF in llama.cpp's deepseek2
 * layout (deepseek32 for V3.2, deepseek4 for V4) with a chosen type mix, a live progress bar, and an optional KL
 * check of the result against the source; also random GGUF models of a
 * given shape for benchmarks.
 */
#include "cli.h"
#include "../core/mmap_file.h"
#include "../core/rng.h"
#include "../core/thread.h"
#include "../model/config.h"
#include "../model/convert.h"
#include "../runtime/compare.h"
#include "../tensor/quant.h"

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static void usage(FILE *f) {
    fprintf(f,
        "usage: deepseek convert -m MODEL -o OUT.gguf [--type T] [options]\n"
        "       deepseek convert --random v2-lite|CONFIG.json -o OUT.gguf [--layers N] [--type T] [options]\n"
        "       deepseek convert -m MODEL --kl-against OTHER [--kl-tokens N]\n"
        "  MODEL: a Hugging Face folder (config.json + safetensors, BF16/F16/F32 or FP8) or a .gguf;\n"
        "         DeepSeek-V2/V3 are written in llama.cpp's deepseek2 layout, V3.2 in deepseek32, V4 in deepseek4\n"
        "         (FP8 matrices -> --type, default q8_0; FP4 experts -> mxfp4)\n"
        "  types: f32 f16 bf16 q8_0 q6_k q5_k q5_1 q5_0 q4_k q4_1 q4_0 q3_k q2_k iq4_xs iq4_nl (rows\n"
        "         that do not fit a type's block fall back like llama.cpp: q4_k -> q5_0, q5_k -> q5_1,\n"
        "         q6_k -> q8_0, q2_k/q3_k/iq4_xs -> iq4_nl, then f16; the IQ1/IQ2/IQ3 types are read,\n"
        "         not written: they need an importance matrix, use llama.cpp's llama-quantize)\n"
        "  --type T        default for every weight class (default q8_0)\n"
        "  --attn T        attention projections (q, kv_a, k_b, v_b, o)\n"
        "  --ffn T         dense FFN, shared experts, MTP eh_proj\n"
        "  --experts T     routed experts (DeepSeek-V4: FP4 experts are written MXFP4, bit for bit, unless\n"
        "                  --experts names another type; --experts mxfp4 insists on it)\n"
        "  --embed T       token embedding (default: --type)\n"
        "  --head T        output head (default: q6_k for a --type below 6 bits, else --type)\n"
        "                  norms, router and router bias are always f32 (V4 also: hyper-connection\n"
        "                  mixers, compressor position biases, indexer weights; tid2eid i32)\n"
        "  --legacy-kv-b   write attn_kv_b (pre-MLA GGUF form) instead of attn_k_b + attn_v_b\n"
        "  --no-mtp        leave the MTP (nextn) layers out\n"
        "  --name NAME     general.name\n"
        "  --split-max-size SIZE  write parts of at most SIZE bytes (K, M, G suffixes: 50G), named\n"
        "                  OUT-00001-of-0000N.gguf like llama.cpp's gguf-split; the first holds the\n"
        "                  metadata; -m takes any part\n"
        "  --tokenizer DIR embed the tokenizer.json (+ tokenizer_config.json) of DIR (default: the\n"
        "                  source folder's; a .gguf source keeps its own tokenizer.* metadata)\n"
        "  --kl            after writing, run source and result on --kl-tokens tokens and print\n"
        "                  mean/max KL divergence, top-1 agreement and logit differences\n"
        "  --kl-tokens N   tokens for the KL check (default 64, pseudo-random ids)\n"
        "  --kl-incremental  feed the KL tokens one at a time (decode path)\n"
        "  --kv-type T     KV cache storage (f32, q8, fp8, bf16, i8) of the compared model in --kl/--kl-against;\n"
        "                  --kl-against SAME_MODEL --kv-type q8 measures the cache quantization alone\n"
        "  --seed S        random weights / KL tokens seed (default 1)\n"
        "  -t N            threads\n"
        "  -q              no progress bar\n");
}

typedef struct { double t0, last; bool quiet, tty; int last_decile; } progress_state;

static void fmt_time(char *b, size_t n, double s) {
    if (s < 0 || s > 1e7) { snprintf(b, n, "--:--"); return; }
    int x = (int)(s + 0.5);
    if (x >= 3600) snprintf(b, n, "%d:%02d:%02d", x / 3600, x / 60 % 60, x % 60);
    else snprintf(b, n, "%d:%02d", x / 60, x % 60);
}

static void on_progress(void *ud, int64_t done, int64_t total, const char *tensor) {
    progress_state *p = ud;
    double now = ds_now();
    if (p->quiet) return;
    double frac = total > 0 ? (double)done / (double)total : 1, el = now - p->t0;
    double rate = el > 0 ? (double)done / el : 0;
    char eta[32], elapsed[32];
    fmt_time(eta, sizeof eta, rate > 0 ? (double)(total - done) / rate : -1);
    fmt_time(elapsed, sizeof elapsed, el);
    if (!p->tty) {  /* logs: one line per 10 % */
        int dec = (int)(frac * 10);
        if (dec == p->last_decile && done < total) return;
        p->last_decile = dec;
        fprintf(stderr, "convert: %3.0f%% %.2f/%.2f GB %.0f MB/s %s %s\n", 100 * frac, done / 1e9, total / 1e9, rate / 1e6,
                done < total ? "ETA" : "in", done < total ? eta : elapsed);
        return;
    }
    if (now - p->last < 0.25 && done < total) return;
    p->last = now;
    char bar[31];
    int w = (int)(frac * 30);
    for (int i = 0; i < 30; i++) bar[i] = i < w ? '=' : i == w ? '>' : ' ';
    bar[30] = 0;
    fprintf(stderr, "\r[%s] %5.1f%% %7.2f/%.2f GB %6.0f MB/s ETA %s  %-40.40s", bar, 100 * frac, done / 1e9, total / 1e9,
            rate / 1e6, done < total ? eta : elapsed, tensor);
    if (done >= total) fprintf(stderr, "\n");
    fflush(stderr);
}

static void preset_v2_lite(ds_config *c) {
    memset(c, 0, sizeof *c);
    c->arch = DS_ARCH_V2;
    snprintf(c->model_type, sizeof c->model_type, "deepseek_v2");
    c->vocab_size = 102400; c->hidden_size = 2048; c->intermediate_size = 10944; c->moe_intermediate_size = 1408;
    c->n_layer = 27; c->n_head = 16; c->q_lora_rank = 0; c->kv_lora_rank = 512;
    c->qk_nope_head_dim = 128; c->qk_rope_head_dim = 64; c->v_head_dim = 128;
    c->first_k_dense_replace = 1; c->moe_layer_freq = 1; c->n_routed_experts = 64; c->n_shared_experts = 2;
    c->num_experts_per_tok = 6; c->n_group = 1; c->topk_group = 1; c->topk_method = DS_TOPK_GREEDY;
    c->scoring_func = DS_SCORE_SOFTMAX; c->norm_topk_prob = false; c->routed_scaling_factor = 1.0;
    c->rms_norm_eps = 1e-6; c->rope_theta = 10000; c->max_position_embeddings = 163840;
    c->yarn = true; c->rope_factor = 40; c->rope_orig_max_pos = 4096; c->beta_fast = 32; c->beta_slow = 1;
    c->mscale = 0.707; c->mscale_all_dim = 0.707;
    c->bos_token_id = 100000; c->eos_token_id = 100001;
}

static ds_dtype type_arg(const char *flag, const char *v) {
    if (!v) cli_die("convert", "%s needs a type", flag);
    ds_dtype t = ds_convert_type_from_name(v);
    if (t == DS_DTYPE_COUNT)
        cli_die("convert", "%s: unknown type '%s' (f32 f16 bf16 q8_0 q6_k q5_k q5_1 q5_0 q4_k q4_1 q4_0 q3_k q2_k iq4_xs iq4_nl)",
                flag, v);
    return t;
}

static void print_stats(const char *what, const ds_logit_stats *s) {
    printf("%s: %lld positions, KL mean %.3e max %.3e nats, top-1 agreement %.1f%%, max |dlogit| %.3e, rms %.3e\n", what,
           (long long)s->n, s->kl_mean, s->kl_max, 100 * s->top1, s->max_abs, s->rms);
}

int cmd_convert(int argc, char **argv) {
    const char *C = "convert";
    const char *src = NULL, *out = NULL, *random = NULL, *against = NULL;
    ds_dtype type = DS_DTYPE_Q8_0, attn = DS_DTYPE_COUNT, ffn = DS_DTYPE_COUNT, experts = DS_DTYPE_COUNT;
    ds_dtype embed = DS_DTYPE_COUNT, head = DS_DTYPE_COUNT;
    bool legacy = false, no_mtp = false, kl = false, quiet = false, incremental = false;
    ds_kv_type kvt = DS_KV_F32;
    const char *name = NULL, *tokdir = NULL;
    uint64_t split = 0;
    int64_t layers = 0, kl_tokens = 64;
    uint64_t seed = 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (cli_is_help(a)) { usage(stdout); return 0; }
        else if (!strcmp(a, "-m") || !strcmp(a, "--model")) { src = v; i++; }
        else if (!strcmp(a, "-o") || !strcmp(a, "--out")) { out = v; i++; }
        else if (!strcmp(a, "--random")) { random = v; i++; }
        else if (!strcmp(a, "--layers")) { layers = cli_parse_int(C, a, v, 1, 1024); i++; }
        else if (!strcmp(a, "--type")) { type = type_arg(a, v); i++; }
        else if (!strcmp(a, "--attn")) { attn = type_arg(a, v); i++; }
        else if (!strcmp(a, "--ffn")) { ffn = type_arg(a, v); i++; }
        else if (!strcmp(a, "--experts")) { experts = type_arg(a, v); i++; }
        else if (!strcmp(a, "--embed")) { embed = type_arg(a, v); i++; }
        else if (!strcmp(a, "--head")) { head = type_arg(a, v); i++; }
        else if (!strcmp(a, "--legacy-kv-b")) legacy = true;
        else if (!strcmp(a, "--no-mtp")) no_mtp = true;
        else if (!strcmp(a, "--name")) { name = v; i++; }
        else if (!strcmp(a, "--kl")) kl = true;
        else if (!strcmp(a, "--kl-against")) { against = v; i++; }
        else if (!strcmp(a, "--kl-tokens")) { kl_tokens = cli_parse_int(C, a, v, 1, 1 << 16); i++; }
        else if (!strcmp(a, "--kl-incremental")) incremental = true;
        else if (!strcmp(a, "--kv-type")) {
            int k = v ? ds_kv_type_from_name(v) : -1;
            if (k < 0) cli_die(C, "--kv-type: expected f32, q8, fp8, bf16 or i8");
            kvt = (ds_kv_type)k;
            i++;
        }
        else if (!strcmp(a, "--split-max-size")) { split = cli_parse_size(C, a, v); i++; }
        else if (!strcmp(a, "--tokenizer")) { tokdir = v; i++; if (!v) cli_die(C, "--tokenizer needs a folder"); }
        else if (!strcmp(a, "--seed")) { seed = (uint64_t)cli_parse_int(C, a, v, 0, INT64_MAX); i++; }
        else if (!strcmp(a, "-t") || !strcmp(a, "--threads")) { ds_threads_set((int)cli_parse_int(C, a, v, 1, 1024)); i++; }
        else if (!strcmp(a, "-q") || !strcmp(a, "--quiet")) quiet = true;
        else { usage(stderr); cli_die(C, "unknown option '%s'", a); }
    }
    ds_convert_opts o;
    ds_convert_opts_default(&o, type);
    if (attn != DS_DTYPE_COUNT) o.attn = attn;
    if (ffn != DS_DTYPE_COUNT) o.ffn = ffn;
    if (experts != DS_DTYPE_COUNT) o.experts = experts;
    o.fp4_as_mxfp4 = experts == DS_DTYPE_COUNT;
    const ds_dtype others[4] = { type, attn, ffn, embed };
    for (int k = 0; k < 4; k++)
        if (others[k] == DS_DTYPE_MXFP4 || head == DS_DTYPE_MXFP4)
            cli_die(C, "mxfp4 is a type for DeepSeek-V4's routed experts only (--experts mxfp4)");
    if (embed != DS_DTYPE_COUNT) o.embed = embed;
    if (head != DS_DTYPE_COUNT) o.head = head;
    /* the IQ1/IQ2/IQ3 types: random blocks of them (--random, for benchmarks) but no quantizer */
    const ds_dtype used[5] = { o.attn, o.ffn, o.experts, o.embed, o.head };
    for (int k = 0; k < 5 && !random; k++)
        if (!ds_quant_has_quantizer(used[k]) && used[k] != DS_DTYPE_MXFP4)
            cli_die(C, "%s is read but not written by deepseek.c (the IQ1/IQ2/IQ3 types need an importance matrix: use "
                    "llama.cpp's llama-quantize --imatrix; --random models may use them); writable: f32 f16 bf16 q8_0 "
                    "q6_k q5_k q5_1 q5_0 q4_k q4_1 q4_0 q3_k q2_k iq4_xs iq4_nl", ds_dtype_name(used[k]));
    o.legacy_kv_b = legacy;
    o.drop_mtp = no_mtp;
    o.name = name;
    o.split_max_bytes = split;
    if (tokdir) {
        struct stat tst;
        if (stat(tokdir, &tst) != 0 || !S_ISDIR(tst.st_mode)) cli_die(C, "--tokenizer %s: not a folder (expected one with tokenizer.json)", tokdir);
        o.tokenizer_dir = tokdir;
    }
    progress_state ps = { ds_now(), 0, quiet, isatty(2) != 0, -1 };
    o.progress = on_progress;
    o.progress_ud = &ps;
    ds_err e = { 0 };

    if (random) {
        if (!out) cli_die(C, "--random needs -o OUT.gguf");
        ds_config c;
        if (!strcmp(random, "v2-lite")) preset_v2_lite(&c);
        else if (ds_config_load(&c, random, &e)) cli_die_err(C, &e);
        if (layers) {
            c.n_layer = layers;
            if (c.first_k_dense_replace > layers) c.first_k_dense_replace = layers;
        }
        ds_config_derive_layers(&c);
        static char first[4200];
        o.first_part = first;
        o.first_part_cap = sizeof first;
        if (ds_mkdir_parent(out, &e) || ds_write_random_gguf(&c, out, &o, seed, &e)) cli_die_err(C, &e);
        if (strcmp(first, out)) {
            fprintf(stderr, "split: the first part is %s\n", first);
            out = first;
        }
        struct stat st;
        if (stat(out, &st) == 0) fprintf(stderr, "wrote %s (%.2f GiB, random weights)\n", out, st.st_size / 1073741824.0);
        return 0;
    }

    if (!src) cli_die(C, "no source model (-m MODEL)");
    cli_check_model(C, src);
    if (!out && !against) cli_die(C, "no output (-o OUT.gguf) and nothing to compare (--kl-against)");
    ds_model *m;
    if (ds_model_open(&m, src, &e)) cli_die_err(C, &e);
    if (out) {
        struct stat st;
        if (!o.tokenizer_dir && stat(src, &st) == 0 && S_ISDIR(st.st_mode)) o.tokenizer_dir = src;
        double t = ds_now();
        static char first[4200];
        o.first_part = first;
        o.first_part_cap = sizeof first;
        if (ds_mkdir_parent(out, &e) || ds_model_write_gguf(m, out, &o, &e)) cli_die_err(C, &e);
        if (strcmp(first, out)) {
            fprintf(stderr, "split: the first part is %s\n", first);
            out = first;
        }
        if (stat(out, &st) == 0)
            fprintf(stderr, "wrote %s: %.2f GiB in %.1f s (attn %s, ffn %s, experts %s, embed %s, head %s)\n", out,
                    st.st_size / 1073741824.0, ds_now() - t, ds_dtype_name(o.attn), ds_dtype_name(o.ffn),
                    ds_dtype_name(o.experts), ds_dtype_name(o.embed), ds_dtype_name(o.head));
    }
    const char *cmp = against ? against : (kl ? out : NULL);
    if (cmp) {
        ds_model *b;
        if (ds_model_open(&b, cmp, &e)) cli_die_err(C, &e);
        int32_t *tok = malloc((size_t)kl_tokens * sizeof *tok);
        if (!tok) cli_die(C, "out of memory");
        ds_rng r;
        ds_rng_seed(&r, seed);
        for (int64_t i = 0; i < kl_tokens; i++) tok[i] = (int32_t)(ds_rng_u64(&r) % (uint64_t)ds_model_config(m)->vocab_size);
        ds_logit_stats s;
        ds_compare_opts co = { DS_KV_F32, kvt, incremental };
        if (ds_compare_models(m, b, tok, kl_tokens, &co, &s, &e)) cli_die_err(C, &e);
        char what[8192];
        snprintf(what, sizeof what, "%s%s%s vs %s%s", cmp, kvt != DS_KV_F32 ? " (kv " : "",
                 kvt != DS_KV_F32 ? ds_kv_type_name(kvt) : "", src, kvt != DS_KV_F32 ? ", kv f32)" : "");
        if (incremental) snprintf(what + strlen(what), sizeof what - strlen(what), ", token by token");
        print_stats(what, &s);
        free(tok);
        ds_model_close(b);
    }
    ds_model_close(m);
    return 0;
}
