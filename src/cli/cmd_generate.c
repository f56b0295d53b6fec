/*
 * cmd_generate.c - `deepseek generate`: continue a prompt (token ids for
 * now; text prompts come with the tokenizer).
 */
#include "cli.h"
#include "../core/cpu.h"
#include "../tensor/ops.h"
#include "../core/thread.h"
#include "../runtime/generate.h"
#include "../runtime/stop.h"
#include "../tokenizer/tokenizer.h"

#include <stdlib.h>
#include <string.h>

static void usage(FILE *f) {
    fprintf(f,
        "usage: deepseek generate [-m MODEL_DIR] (--prompt TEXT | --prompt-ids 0,5,17) [-n N] [options]\n"
        "  --prompt TEXT: prints the continuation as text, streamed (needs tokenizer.json in the\n"
        "  model folder; BOS is added if tokenizer_config.json says add_bos_token; special-token\n"
        "  strings in TEXT are recognized, as in Hugging Face's tokenizer(TEXT)).\n"
        "  --prompt-ids: prints the continuation's token ids, comma-separated.\n"
        "  --tokenizer PATH        tokenizer.json, its folder, or a .gguf with tokenizer metadata\n"
        "                          (default: the model folder's tokenizer.json; for a .gguf the\n"
        "                          tokenizer.json beside it, then the file's own metadata)\n"
        "  Greedy at temperature 0; stops at the end-of-sequence token unless --ignore-eos.\n"
        "  -n, --max-tokens N      new tokens (default 32)\n"
        "  --temperature T         0 = greedy (default 0)\n"
        "  --top-p P  --top-k K  --min-p P\n"
        "  --repeat-penalty R  --frequency-penalty F  --presence-penalty P\n"
        "  --seed S                random seed (same seed, same output)\n"
        "  --ignore-eos            do not stop at the end-of-sequence token\n"
        "  --stop STR              stop before this text (repeatable; --prompt mode)\n"
        "  --ctx N                 context size (default: prompt + N, at most the model's\n"
        "                          max_position_embeddings); a longer generation slides the window:\n"
        "                          the oldest half is dropped and the rest recomputed\n"
        "  --no-ctx-shift          stop with an error instead of sliding the window\n"
        "  -t, --threads N         threads (default: all cores)\n"
        "  --mtp                   speculative decoding: the MTP module (V3/V3.2 nextn layer, V4 mtp.0 block)\n"
        "                          drafts one token per step; the output is what plain decoding gives\n"
        "  --verbose               print prefill/decode tokens/s, KV bytes per token and the MTP acceptance rate\n"
        "  --kv-type T             KV cache storage: f32 (default), q8 or fp8 (~3.6x smaller),\n"
        "                          bf16 (2x smaller), i8 (~3.8x smaller, int8 attention: fastest\n"
        "                          at long context)\n");
}

typedef struct { int first; bool text; } print_state;

/* text mode: what the session's step lets through; ids mode: the ids */
static int on_token(void *ud, int32_t tok, const char *text, size_t len) {
    print_state *ps = ud;
    if (ps->text) fwrite(text, 1, len, stdout);
    else printf(ps->first ? "%d" : ",%d", tok);
    ps->first = 0;
    fflush(stdout);
    return 0;
}

int cmd_generate(int argc, char **argv) {
    const char *dir = NULL, *ids = NULL, *text = NULL, *tokp = NULL;
    int64_t n_new = 32, ctx = 0;
    bool verbose = false, ignore_eos = false, mtp = false, ctx_shift = true;
    ds_kv_type kvt = DS_KV_F32;
    ds_sampler_params sp;
    ds_sampler_params_default(&sp);
    const char *C = "generate";
    const char *stops[DS_MAX_STOPS];
    int n_stops = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (cli_is_help(a)) { usage(stdout); return 0; }
        else if (!strcmp(a, "-m") || !strcmp(a, "--model")) { dir = v; i++; }
        else if (!strcmp(a, "--prompt-ids")) { ids = v; i++; }
        else if (!strcmp(a, "--tokenizer")) { tokp = v; i++; if (!v) cli_die(C, "--tokenizer needs a path"); }
        else if (!strcmp(a, "--prompt") || !strcmp(a, "-p")) { text = v; i++; if (!v) cli_die(C, "--prompt needs a value"); }
        else if (!strcmp(a, "-n") || !strcmp(a, "--max-tokens")) { n_new = cli_parse_int(C, a, v, 0, 1 << 30); i++; }
        else if (cli_sampler_flag(C, a, v, &sp)) i++;
        else if (!strcmp(a, "--ctx")) { ctx = cli_parse_int(C, a, v, 1, 1ll << 32); i++; }
        else if (!strcmp(a, "-t") || !strcmp(a, "--threads")) { ds_threads_set((int)cli_parse_int(C, a, v, 1, 1024)); i++; }
        else if (!strcmp(a, "--verbose") || !strcmp(a, "-v")) verbose = true;
        else if (!strcmp(a, "--ignore-eos")) ignore_eos = true;
        else if (!strcmp(a, "--mtp")) mtp = true;
        else if (!strcmp(a, "--no-ctx-shift")) ctx_shift = false;
        else if (!strcmp(a, "--kv-type")) {
            int k = v ? ds_kv_type_from_name(v) : -1;
            if (k < 0) cli_die(C, "--kv-type: expected f32, q8, fp8, bf16 or i8");
            kvt = (ds_kv_type)k;
            i++;
        }
        else if (!strcmp(a, "--stop")) {
            if (!v) cli_die(C, "--stop: needs a value");
            if (n_stops >= DS_MAX_STOPS) cli_die(C, "--stop: at most %d stop strings", DS_MAX_STOPS);
            if (*v) stops[n_stops++] = v;
            i++;
        }
        else { usage(stderr); cli_die(C, "unknown option '%s'", a); }
    }
    if (!dir) dir = cli_default_model();
    if (!dir) cli_die(C, "no model given (-m MODEL_DIR) and no bundled model found");
    cli_check_model(C, dir);
    if (!ids && !text) cli_die(C, "a prompt is required (--prompt TEXT or --prompt-ids LIST)");
    if (ids && text) cli_die(C, "give either --prompt or --prompt-ids, not both");
    int64_t n = 0;
    int32_t *prompt = NULL;
    ds_err e = { 0 };
    ds_tokenizer *tok = NULL;
    if (ids) {
        prompt = cli_parse_ids(C, "--prompt-ids", ids, &n);
    } else {
        tok = cli_load_tokenizer(C, dir, tokp, "(text prompts need a tokenizer; or use --prompt-ids)");
        tok_ids v = { 0 };
        if (tok_add_bos(tok) && tok_bos_id(tok) >= 0 && tok_ids_push(&v, tok_bos_id(tok), &e)) cli_die_err(C, &e);
        if (tok_encode_append(tok, text, strlen(text), TOK_PARSE_SPECIAL, &v, &e)) cli_die_err(C, &e);
        if (tok_add_eos(tok) && tok_eos_id(tok) >= 0 && tok_ids_push(&v, tok_eos_id(tok), &e)) cli_die_err(C, &e);
        if (v.n == 0) cli_die(C, "--prompt: the prompt is empty");
        prompt = v.v;
        n = v.n;
    }
    ds_model *m;
    double t_load = ds_now();
    m = cli_open_model(C, dir);
    t_load = ds_now() - t_load;
    for (int64_t i = 0; i < n; i++)
        if (prompt[i] >= ds_model_config(m)->vocab_size)
            cli_die(C, "prompt token id %d at position %lld is >= the model's vocab_size %lld", prompt[i], (long long)i,
                    (long long)ds_model_config(m)->vocab_size);
    /* the context: --ctx, else what the model was trained for (max_position_embeddings);
     * a longer generation slides the window (drops the oldest half, recomputes the rest) */
    int64_t maxpos = ds_model_config(m)->max_position_embeddings;
    if (ctx == 0) ctx = DS_MIN(n + n_new, maxpos);
    if (n > ctx) cli_die(C, "the prompt (%lld tokens) is longer than the context (%lld tokens; --ctx)", (long long)n, (long long)ctx);
    if (n + n_new > ctx) {
        if (!ctx_shift) cli_die(C, "the prompt (%lld) plus -n (%lld) exceeds the context (%lld tokens); raise --ctx or drop --no-ctx-shift",
                                (long long)n, (long long)n_new, (long long)ctx);
        if (mtp) cli_die(C, "--mtp needs the whole generation in the context (prompt + -n <= %lld, --ctx)", (long long)ctx);
    } else {
        ctx_shift = false;
    }
    if (!tok && n_stops) cli_die(C, "--stop needs a text prompt (--prompt)");
    ds_session ss;
    if (ds_session_init(&ss, m, tok, ctx, &sp, &e) || ds_kvcache_set_type(ss.cache, kvt, &e)) cli_die_err(C, &e);
    for (int i = 0; i < n_stops; i++)
        if (ds_session_add_stop(&ss, stops[i], &e)) cli_die_err(C, &e);
    if (ds_session_begin(&ss, NULL, prompt, n, &e)) cli_die_err(C, &e);
    int32_t eos = (int32_t)ds_model_config(m)->eos_token_id;
    ds_gen_opts o = { .max_tokens = n_new, .stop_ids = &eos, .n_stop_ids = (!ignore_eos && eos >= 0) ? 1 : 0,
                      .mtp = mtp, .window = ctx_shift ? ctx : 0 };
    ds_gen_stats st;
    print_state ps = { 1, tok != NULL };
    if (n_new > 0 && ds_generate(&ss, prompt, n, &o, on_token, &ps, &st, &e)) {
        printf("\n");
        cli_die_err(C, &e);
    }
    if (tok) {
        const char *em;
        size_t el;
        ds_session_finish(&ss, &em, &el);
        fwrite(em, 1, el, stdout);
    }
    printf("\n");
    fflush(stdout);   /* the text before the statistics on stderr, also when both go to one pipe */
    if (verbose && n_new > 0) {
        fprintf(stderr, "load:    %.3f s\n", t_load);
        fprintf(stderr, "prefill: %lld tokens in %.3f s = %.2f tokens/s\n", (long long)st.n_prompt, st.t_prefill,
                st.n_prompt / (st.t_prefill > 0 ? st.t_prefill : 1e-9));
        int64_t dec = st.n_gen > 1 ? st.n_gen - 1 : 0;
        fprintf(stderr, "decode:  %lld tokens in %.3f s = %.2f tokens/s\n", (long long)dec, st.t_decode,
                dec / (st.t_decode > 0 ? st.t_decode : 1e-9));
        if (ds_model_config(m)->arch == DS_ARCH_V4)
            fprintf(stderr, "kv cache: %.2f MiB held (V4's compact cache: rings + compressed entries), %lld tokens cached\n",
                    (double)ds_kvcache_bytes(ss.cache) / (1 << 20), (long long)ss.cache->n_past);
        else fprintf(stderr, "kv cache: %lld bytes/token (%s; MLA latent %lld + rope %lld values x %lld layers), %lld tokens cached\n",
                (long long)ds_kvcache_bytes_per_pos(ss.cache, ds_model_config(m)->n_layer), ds_kv_type_name(kvt), (long long)ds_model_config(m)->kv_lora_rank, (long long)ds_model_config(m)->qk_rope_head_dim,
                (long long)ds_model_config(m)->n_layer, (long long)ss.cache->n_past);
        if (mtp)
            fprintf(stderr, "mtp:     %lld drafts, %lld accepted (%.1f%%), %.2f tokens per main-model pass\n",
                    (long long)st.n_draft, (long long)st.n_accepted, 100.0 * st.n_accepted / (st.n_draft ? st.n_draft : 1),
                    (double)st.n_gen / (st.n_main_forwards + 1));
        if (st.n_shifts) fprintf(stderr, "context: window of %lld tokens slid %lld times\n", (long long)ctx, (long long)st.n_shifts);
        char isa[256];
        ds_cpu_describe(isa, sizeof isa);
        fprintf(stderr, "threads: %d\n", ds_threads_get());
        fprintf(stderr, "kernels: %s, %s\n", ds_ops_isa(), isa);
        cli_print_split(stderr, C, m);
    }
    ds_session_free(&ss);
    ds_model_close(m);
    if (tok) tok_free(tok);
    free(prompt);
    return 0;
}
