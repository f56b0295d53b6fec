/*
 * cmd_info.c - `deepseek info -m DIR`: architecture, parameter counts,
 * KV-cache bytes per token (MLA vs naive), memory.
 */
#include "cli.h"
#include "../core/cpu.h"
#include "../tensor/ops.h"
#include "../model/model.h"

#include <stdlib.h>
#include <string.h>

static void usage(FILE *f) {
    fprintf(f, "usage: deepseek info [-m MODEL_DIR]\n"
               "  Prints the architecture, total and active parameters per token,\n"
               "  KV-cache bytes per token (MLA latent cache vs. naive per-head K/V; V4: its compact cache\n"
               "  per layer type and in total at 4K / 64K / 1M of context) and memory use.\n");
}

static const char *human(double b, char *buf, size_t n) {
    const char *u[] = { "B", "KiB", "MiB", "GiB", "TiB" };
    int i = 0;
    while (b >= 1024 && i < 4) { b /= 1024; i++; }
    snprintf(buf, n, i ? "%.2f %s" : "%.0f %s", b, u[i]);
    return buf;
}

static const char *count(int64_t v, char *buf, size_t n) {
    if (v >= 1000000000) snprintf(buf, n, "%.2fB", v / 1e9);
    else if (v >= 1000000) snprintf(buf, n, "%.2fM", v / 1e6);
    else if (v >= 1000) snprintf(buf, n, "%.1fK", v / 1e3);
    else snprintf(buf, n, "%lld", (long long)v);
    return buf;
}

/* DeepSeek-V4 (cache false): its attention, layer types and residual
 * streams; (cache true) the compact cache per layer type (kvcache_v4.c's
 * rings and entries, fp32) beside a row per position. */
static void print_v4(const ds_config *c, const ds_model *m, bool cache) {
    static const char *names[3] = { "sliding", "CSA", "HCA" };
    static const int kinds[3] = { DS_ATTN_SWA, DS_ATTN_CSA, DS_ATTN_HCA };
    static const int64_t ctx[3] = { 4096, 65536, 1048576 };
    char b[3][32];
    int64_t n[3] = { 0, 0, 0 }, n_hash = 0, Dh = c->head_dim, Di = c->index_head_dim;
    for (int64_t l = 0; l < c->n_layer; l++) {
        for (int k = 0; k < 3; k++) n[k] += c->attn_kind[l] == kinds[k];
        n_hash += c->ffn_kind[l] == DS_FFN_HASH_MOE;
    }
    if (!cache) {
        printf("attention    V4: %lld heads x %lld (rope %lld on the tail), one shared K=V head, q_lora_rank %lld, "
               "sinks, output %lld groups x %lld\n", (long long)c->n_head, (long long)Dh,
               (long long)c->qk_rope_head_dim, (long long)c->q_lora_rank, (long long)c->o_groups, (long long)c->o_lora_rank);
        printf("layer types  %lld sliding (window %lld), %lld CSA (rate %lld, top %lld by an indexer of %lld heads x %lld), "
               "%lld HCA (rate %lld); %lld hash-routed MoE\n", (long long)n[0], (long long)c->sliding_window,
               (long long)n[1], (long long)c->compress_rate_csa, (long long)c->index_topk, (long long)c->index_n_heads,
               (long long)Di, (long long)n[2], (long long)c->compress_rate_hca, (long long)n_hash);
        printf("residual     %lld hyper-connection streams (Sinkhorn %lld iterations); rope theta %g (sliding), %g%s "
               "(compressed), softmax scale %.7f\n", (long long)c->n_streams, (long long)c->hc_sinkhorn_iters,
               c->rope_theta, c->compress_rope_theta, c->yarn ? " + YaRN" : "", ds_model_attn_scale(m));
        for (int64_t l = c->n_layer; l < c->n_layer + ds_model_mtp_stored(m); l++)
            printf("mtp          layer %lld: %s attention, score-routed MoE, its own norms, e_proj / h_proj and "
                   "hc_head; embedding and head shared\n", (long long)l,
                   names[c->attn_kind[l] == DS_ATTN_CSA ? 1 : c->attn_kind[l] == DS_ATTN_HCA ? 2 : 0]);
        return;
    }
    printf("kv cache     compact (fp32): the window as a ring (+%d rows of slack to truncate back), the open\n"
           "             windows' raw rows, the compressed entries (CSA: + the indexer's keys); all layers of the\n"
           "             type, at 4K / 64K / 1M of context, then bytes per token at those depths:\n", DS_V4_SLACK);
    int64_t tot[3] = { 0, 0, 0 }, rows[3] = { 0, 0, 0 };
    char t[3][32];
    for (int k = 0; k < 3; k++) {
        if (!n[k]) continue;
        int64_t l = 0;
        while (c->attn_kind[l] != kinds[k]) l++;
        int64_t by[3];
        for (int i = 0; i < 3; i++) {
            by[i] = n[k] * ds_v4cache_layer_bytes(c, l, ctx[i], DS_V4_SLACK);
            tot[i] += by[i];
            rows[i] += n[k] * ds_config_kv_width(c, l) * 4 * ctx[i];
            human((double)by[i], b[i], sizeof b[i]);
        }
        printf("             %-8s %lld layer(s): %s / %s / %s = %.2f / %.3f / %.4f B/token\n", names[k], (long long)n[k],
               b[0], b[1], b[2], (double)by[0] / ctx[0], (double)by[1] / ctx[1], (double)by[2] / ctx[2]);
    }
    if (ds_model_mtp_stored(m) > 0) {   /* the MTP layers' state (its own positions), in the total */
        int64_t by[3] = { 0, 0, 0 };
        for (int64_t l = c->n_layer; l < c->n_layer + ds_model_mtp_stored(m); l++)
            for (int i = 0; i < 3; i++) {
                by[i] += ds_v4cache_layer_bytes(c, l, ctx[i], DS_V4_SLACK);
                rows[i] += ds_config_kv_width(c, l) * 4 * ctx[i];
            }
        for (int i = 0; i < 3; i++) tot[i] += by[i], human((double)by[i], b[i], sizeof b[i]);
        printf("             %-8s %lld layer(s): %s / %s / %s = %.2f / %.3f / %.4f B/token\n", "MTP",
               (long long)ds_model_mtp_stored(m), b[0], b[1], b[2], (double)by[0] / ctx[0], (double)by[1] / ctx[1],
               (double)by[2] / ctx[2]);
    }
    for (int i = 0; i < 3; i++) human((double)tot[i], b[i], sizeof b[i]), human((double)rows[i], t[i], sizeof t[i]);
    printf("             total    %s / %s / %s = %.2f / %.3f / %.4f B/token\n", b[0], b[1], b[2],
           (double)tot[0] / ctx[0], (double)tot[1] / ctx[1], (double)tot[2] / ctx[2]);
    printf("             (a row per position and layer would hold %s / %s / %s)\n", t[0], t[1], t[2]);
}

int cmd_info(int argc, char **argv) {
    const char *dir = NULL;
    for (int i = 1; i < argc; i++) {
        if (cli_is_help(argv[i])) { usage(stdout); return 0; }
        if (!strcmp(argv[i], "-m") || !strcmp(argv[i], "--model")) {
            if (++i >= argc) cli_die("info", "-m needs a model folder");
            dir = argv[i];
        } else {
            usage(stderr);
            cli_die("info", "unknown option '%s'", argv[i]);
        }
    }
    if (!dir) dir = cli_default_model();
    if (!dir) cli_die("info", "no model given (-m MODEL_DIR) and no bundled model found");
    cli_check_model("info", dir);
    ds_model *m;
    m = cli_open_model("info", dir);
    const ds_config *c = ds_model_config(m);
    ds_model_storage si;
    ds_model_storage_info(m, &si);
    ds_param_counts pc;
    ds_model_param_counts(m, &pc);
    char b1[32], b2[32], b3[32], b4[32];
    int64_t n_moe = 0;
    for (int64_t l = 0; l < c->n_layer; l++) n_moe += ds_config_layer_is_moe(c, l);
    static const char *tm[] = { "greedy", "group_limited_greedy", "noaux_tc" };
    printf("model        %s\n", dir);
    printf("arch         %s (%s)\n", ds_config_arch_name(c), c->model_type);
    printf("layers       %lld (%lld dense + %lld MoE)", (long long)c->n_layer, (long long)(c->n_layer - n_moe), (long long)n_moe);
    if (c->n_mtp) printf(" + %lld MTP%s", (long long)c->n_mtp, ds_model_mtp_stored(m) ? "" : " (not stored in the checkpoint)");
    printf("\nhidden       %lld, vocab %lld, %s %lld\n", (long long)c->hidden_size, (long long)c->vocab_size,
           c->arch == DS_ARCH_V4 ? "shared expert FFN" : "dense FFN", (long long)c->intermediate_size);
    if (c->arch == DS_ARCH_V4) print_v4(c, m, false);
    else printf("attention    MLA: %lld heads, q_lora_rank %s, kv_lora_rank %lld, head dims nope %lld + rope %lld, v %lld\n",
           (long long)c->n_head, c->q_lora_rank ? count(c->q_lora_rank, b1, sizeof b1) : "none (q_proj)",
           (long long)c->kv_lora_rank, (long long)c->qk_nope_head_dim, (long long)c->qk_rope_head_dim,
           (long long)c->v_head_dim);
    if (c->index_topk > 0 && c->arch != DS_ARCH_V4)
        printf("sparse attn  DSA: lightning indexer %lld heads x %lld, each query attends to the top %lld earlier "
               "positions\n", (long long)c->index_n_heads, (long long)c->index_head_dim, (long long)c->index_topk);
    if (c->n_routed_experts)
        printf("experts      %lld routed (%lld per token, %s %s, groups %lld keep %lld%s, scale %g) + %lld shared, width %lld\n",
               (long long)c->n_routed_experts, (long long)c->num_experts_per_tok, tm[c->topk_method],
               c->scoring_func == DS_SCORE_SIGMOID ? "sigmoid" : c->scoring_func == DS_SCORE_SQRTSOFTPLUS ? "sqrtsoftplus" : "softmax", (long long)c->n_group, (long long)c->topk_group,
               c->norm_topk_prob ? ", normalized" : "", c->routed_scaling_factor, (long long)c->n_shared_experts,
               (long long)c->moe_intermediate_size);
    if (c->arch == DS_ARCH_V4) {}
    else if (c->yarn)
        printf("rope         YaRN factor %g over %g positions, theta %g, softmax scale %.7f\n", c->rope_factor,
               c->rope_orig_max_pos, c->rope_theta, ds_model_attn_scale(m));
    else
        printf("rope         theta %g, softmax scale %.7f\n", c->rope_theta, ds_model_attn_scale(m));
    /* dtypes */
    if (si.gguf)  /* a .gguf file: its tensors by ggml type */
        printf("weights      %lld tensors in 1 GGUF file (%s, GGUF v%u):", (long long)si.n_tensors,
               c->arch == DS_ARCH_V4 ? "deepseek4" : "deepseek2", si.gguf_version);
    else
        printf("weights      %lld tensors in %d file(s):", (long long)si.n_tensors, si.n_files);
    for (int d = 0; d < DS_DTYPE_COUNT; d++)
        if (si.bytes_by_dtype[d])
            printf(" %s %s", ds_dtype_name((ds_dtype)d), human((double)si.bytes_by_dtype[d], b1, sizeof b1));
    if (c->fp8) printf(" (FP8 e4m3, %lldx%lld block scales)", (long long)c->fp8_block_r, (long long)c->fp8_block_c);
    if (si.bytes_by_dtype[DS_DTYPE_F4_E2M1]) printf(" (FP4 e2m1 experts, a scale per 32)");
    if (si.bytes_by_dtype[DS_DTYPE_MXFP4]) printf(" (FP4 experts as MXFP4 blocks, read in place from the mapping)");
    printf("\nparameters   total %s (main %s, MTP %s)\n", count(pc.total, b1, sizeof b1), count(pc.main, b2, sizeof b2),
           count(pc.mtp, b3, sizeof b3));
    printf("active/token %s (%s without embedding and head)\n", count(pc.active, b1, sizeof b1),
           count(pc.active_no_embed, b4, sizeof b4));
    if (c->arch == DS_ARCH_V4) {
        print_v4(c, m, true);
        goto tail;
    }
    int64_t W = c->kv_lora_rank + c->qk_rope_head_dim;
    if (c->index_topk > 0) {   /* DSA: the latent row plus the indexer's key */
        int64_t Wd = ds_config_kv_width(c, 0);
        printf("kv cache     MLA latent %lld + index key %lld: %lld values/token/layer = %s/token (fp32), %s/token in bf16\n",
               (long long)W, (long long)c->index_head_dim, (long long)Wd, human((double)(Wd * c->n_layer * 4), b1, sizeof b1),
               human((double)(Wd * c->n_layer * 2), b2, sizeof b2));
    }
    int64_t naive = c->n_head * (c->qk_nope_head_dim + c->qk_rope_head_dim + c->v_head_dim);
    int64_t mha = 2 * c->n_head * c->v_head_dim;
    bool dsa = c->index_topk > 0;   /* then the line above gave the row; this is the latent part */
    printf("%s MLA latent%s: %lld values/token/layer = %s/token (fp32), %s/token in bf16\n",
           dsa ? "            " : "kv cache    ", dsa ? " alone" : "", (long long)W,
           human((double)(W * c->n_layer * 4), b1, sizeof b1), human((double)(W * c->n_layer * 2), b2, sizeof b2));
    printf("             naive per-head K(%lld)+V(%lld): %lld values/token/layer = %s/token in bf16 (%.1fx more)\n",
           (long long)(c->qk_nope_head_dim + c->qk_rope_head_dim), (long long)c->v_head_dim, (long long)naive,
           human((double)(naive * c->n_layer * 2), b3, sizeof b3), (double)naive / (double)W);
    printf("             standard MHA 2*heads*%lld: %lld values/token/layer (%.1fx more)\n", (long long)c->v_head_dim,
           (long long)mha, (double)mha / (double)W);
    {   /* the whole cache (main layers, as stored: fp32 rows, per layer kind) at a few context sizes */
        int64_t per_tok = 0;
        for (int64_t l = 0; l < c->n_layer; l++) per_tok += ds_config_kv_width(c, l) * 4;
        char b5[32], b6[32];
        printf("             whole cache (fp32; --kv-type bf16 2x, q8/fp8 ~3.6x, i8 ~3.8x less): 4K %s, 64K %s, 1M %s of context\n",
               human((double)per_tok * 4096, b4, sizeof b4), human((double)per_tok * 65536, b5, sizeof b5),
               human((double)per_tok * 1048576, b6, sizeof b6));
    }
tail:
    printf("memory       %s of tensors memory-mapped; resident now %s\n", human((double)si.mapped_bytes, b1, sizeof b1),
           human((double)cli_rss_kib() * 1024, b2, sizeof b2));
    if (si.repacked_bytes)
        printf("             %s of quantized weights repacked at load into 8-row interleaved blocks (DS_REPACK=0: off)\n",
               human((double)si.repacked_bytes, b1, sizeof b1));
    if (si.repack_skipped_bytes)
        printf("             quantized weights used from the mapping, not repacked: the %s copy would not fit in the %s "
               "this process may use (DS_REPACK=1 forces it)\n",
               human((double)si.repack_skipped_bytes, b1, sizeof b1), human((double)si.repack_budget, b2, sizeof b2));
    char isa[256];
    ds_cpu_describe(isa, sizeof isa);
    printf("kernels      %s: %s\n", ds_ops_isa(), isa);
    cli_print_split(stdout, "info", m);
    ds_model_close(m);
    return 0;
}
