/*
 * llama_logits.c - optional helper for tools/gen_gguf_fixtures.py and
 * manual cross-checks: loads a GGUF with llama.cpp's libllama and writes
 * the logits of one forward pass over the given token ids as little-endian
 * float32 [T x vocab] (the same format as `deepseek logits`).
 *
 * Not part of the build. Compile against a llama.cpp build, e.g.:
 *   cc -O2 -o build/llama_logits tools/llama_logits.c -I$LLAMA/include -I$LLAMA/ggml/include \
 *      -L$LLAMA/build/bin -lllama -lggml -lggml-base -Wl,-rpath,$LLAMA/build/bin
 * Usage: llama_logits MODEL.gguf 0,5,17 OUT.f32 [--f32-cache] [--no-fa] [--threads N]
 */
#include <llama.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void quiet(enum ggml_log_level level, const char *text, void *ud) {
    (void)ud;
    if (level >= GGML_LOG_LEVEL_ERROR) fputs(text, stderr);
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: llama_logits MODEL.gguf 0,5,17 OUT.f32 [--f32-cache] [--no-fa] [--threads N]\n");
        return 1;
    }
    int f32cache = 0, threads = 1, nofa = 0;
    for (int i = 4; i < argc; i++) {
        if (!strcmp(argv[i], "--f32-cache")) f32cache = 1;
        else if (!strcmp(argv[i], "--no-fa")) nofa = 1;
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc) threads = atoi(argv[++i]);
    }
    int32_t tok[4096];
    int n = 0;
    for (char *s = argv[2]; *s && n < 4096;) {
        tok[n++] = (int32_t)strtol(s, &s, 10);
        if (*s == ',') s++;
    }
    llama_log_set(quiet, NULL);
    llama_backend_init();
    struct llama_model_params mp = llama_model_default_params();
    struct llama_model *model = llama_model_load_from_file(argv[1], mp);
    if (!model) { fprintf(stderr, "llama_logits: cannot load %s\n", argv[1]); return 1; }
    struct llama_context_params cp = llama_context_default_params();
    cp.n_ctx = (uint32_t)(n < 64 ? 64 : n);
    cp.n_batch = cp.n_ubatch = (uint32_t)n;
    cp.n_threads = cp.n_threads_batch = threads;
    if (f32cache) { cp.type_k = GGML_TYPE_F32; cp.type_v = GGML_TYPE_F32; }
    if (nofa) cp.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_DISABLED;
    struct llama_context *ctx = llama_init_from_model(model, cp);
    if (!ctx) { fprintf(stderr, "llama_logits: cannot create a context\n"); return 1; }
    int V = llama_vocab_n_tokens(llama_model_get_vocab(model));
    struct llama_batch b = llama_batch_init(n, 0, 1);
    for (int i = 0; i < n; i++) {
        b.token[i] = tok[i];
        b.pos[i] = i;
        b.n_seq_id[i] = 1;
        b.seq_id[i][0] = 0;
        b.logits[i] = 1;
    }
    b.n_tokens = n;
    if (llama_decode(ctx, b) != 0) { fprintf(stderr, "llama_logits: decode failed\n"); return 1; }
    FILE *f = fopen(argv[3], "wb");
    if (!f) { perror(argv[3]); return 1; }
    for (int i = 0; i < n; i++) fwrite(llama_get_logits_ith(ctx, i), sizeof(float), (size_t)V, f);
    fclose(f);
    fprintf(stderr, "wrote %d x %d float32 logits to %s\n", n, V, argv[3]);
    llama_batch_free(b);
    llama_free(ctx);
    llama_model_free(model);
    return 0;
}
