/*
 * cmd_serve.c - `deepseek serve`: the OpenAI/DeepSeek-compatible HTTP API
 * and web chat (src/server). Parses flags, starts the server, prints where
 * it listens, waits for the model to load and then for SIGINT/SIGTERM.
 *
 * On N ranks (mpirun -np N): rank 0 is the server (HTTP, scheduler, caches,
 * the whole forward) and ranks > 0 are its expert servers: each opens its
 * share of the routed experts and answers rank 0's per-layer requests
 * until rank 0 shuts down (design: src/model/moe_exchange.c).
 */
#include "cli.h"
#include "../core/thread.h"
#include "../dist/dist.h"
#include "../model/model.h"
#include "../server/server.h"

#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *f) {
    fprintf(f,
        "usage: deepseek serve [-m MODEL_DIR] [options]\n"
        "  OpenAI/DeepSeek-compatible API (POST /v1/chat/completions, /v1/completions, GET /v1/models,\n"
        "  /health, /metrics, POST /tokenize, /detokenize) and a web chat at http://HOST:PORT/.\n"
        "  The model folder needs tokenizer.json (+ tokenizer_config.json for the chat template).\n"
        "network:\n"
        "  --host H               address to bind (default 127.0.0.1; 0.0.0.0 exposes it)\n"
        "  --port P               port (default 8080; 0 picks a free one)\n"
        "  --api-key K[,K2...]    require 'Authorization: Bearer K' (or X-Api-Key); /health and the\n"
        "                         web page stay open (the page asks for the key)\n"
        "  --api-key-file F       keys, one per line ('#' comments)\n"
        "  --cors ORIGIN          send CORS headers for ORIGIN ('*' = any); off by default\n"
        "  --no-webui             do not serve the web chat\n"
        "  --js-dir DIR           browser libraries (default /usr/share/javascript: libjs-marked,\n"
        "                         libjs-highlight.js, libjs-katex; the page works without them)\n"
        "model and batching:\n"
        "  --alias NAME           model id reported to clients (default: the folder's name)\n"
        "  -np, --parallel N      sequences decoded together (continuous batching, default 4)\n"
        "  -c, --ctx N            context per sequence (default min(model max, 8192))\n"
        "  --batch N              tokens per forward pass at most (prefill chunk, default 512)\n"
        "  --kv-type T            KV cache storage: f32 (default), bf16 (half the memory), i8 (~3.8x\n"
        "                         less, int8 attention: fastest at long context), q8, fp8; the prefix store (--cache-ram/--cache-dir)\n"
        "                         keeps f32 caches only (other types reuse their slots' prefixes)\n"
        "  -t, --threads N        compute threads (default: all cores)\n"
        "  --chat-format F        auto (the folder's encoding_dsv32/dsv4.py, its chat template, or its\n"
        "                         model_type deepseek_v32 / deepseek_v4), v3, r1, v3.1, v2, v3.2, v4;\n"
        "                         v3.2 / v4 write tools and tool calls in DSML, and requests may say\n"
        "                         \"reasoning_effort\": \"max\" (V4, thinking mode)\n"
        "  --tokenizer PATH       tokenizer.json, its folder, or a .gguf (default: the model folder's;\n"
        "                         for a .gguf the tokenizer.json beside it, then its metadata)\n"
        "  --thinking             V3.1, V3.2, V4 and V2-format reasoners: think by default (requests can say\n"
        "                         \"thinking\": {\"type\": ...}); already the default for a model whose\n"
        "                         generation_config.json says \"thinking\": true (models/reasoner)\n"
        "  --no-thinking          do not think by default, whatever the model's default\n"
        "  --deterministic        bit-identical results whatever ran before: cached prefixes are reused\n"
        "                         only in whole --batch-aligned prefill chunks (memory/disk prefix store\n"
        "                         off). Concurrent load never changes results, with or without this flag.\n"
        "  --no-prefill-store     do not keep a long prompt's decompressed keys/values across its --batch\n"
        "                         chunks (one prompt at a time keeps them, up to 2 GiB: same results,\n"
        "                         less work; this flag saves the memory)\n"
        "limits:\n"
        "  --max-queue N          requests waiting for a slot before 503 (default 64)\n"
        "  --max-body BYTES       request body limit (default 8388608)\n"
        "  --max-messages N       (default 2048)   --max-n N   choices per request (default 8)\n"
        "  --max-tokens N         cap on max_tokens (default: the context)\n"
        "  --default-max-tokens N when a request sets none (default 4096, capped by the context)\n"
        "prefix cache (DeepSeek-style context caching; usage.prompt_cache_hit_tokens):\n"
        "  --cache-ram MB         memory for stored prefixes (default 512; 0 = slots only)\n"
        "  --cache-min N          shortest prefix worth storing, and the disk block size (default 64)\n"
        "  --cache-dir DIR        also keep prefixes on disk, in N-token blocks (atomic writes,\n"
        "                         checked on load; survives restarts)\n"
        "  --cache-disk MB        disk budget (default 4096)\n"
        "other:\n"
        "  --sse-ping S           keep-alive comment on a silent stream every S seconds (default 10)\n"
        "  --timeout S            close idle keep-alive connections after S seconds (default 120)\n"
        "  --verbose              log requests to stderr\n"
        "many processes: mpirun -np N deepseek serve ... (rank 0 serves HTTP and runs the forward with\n"
        "  every cache; ranks 1..N-1 hold and run their share of the routed experts; README \"Many processes\")\n");
}

/* srv_opts.open_model on rank 0 of N: its share of the experts, checked
 * against the other ranks (exits with the error otherwise) */
static int open_rank0(ds_model **out, const char *path, void *ud, ds_err *e) {
    (void)ud, (void)e;
    *out = cli_open_model_servers("serve", path);
    return DS_OK;
}

/* ranks > 0: open this rank's experts and serve them until rank 0 stops */
static int serve_experts(const char *cmd, const char *path) {
    ds_model *m = cli_open_model_servers(cmd, path);
    ds_err e = { 0 };
    if (ds_model_serve_experts(m, &e)) cli_die_err(cmd, &e);
    ds_model_close(m);
    return 0;
}

static void log_line(void *ud, const char *line) {
    (void)ud;
    fprintf(stderr, "deepseek serve: %s\n", line);
}

static char *read_keys(const char *cmd, const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) cli_die(cmd, "--api-key-file %s: cannot open", path);
    char line[1024], *out = NULL;
    size_t n = 0;
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\r\n")] = 0;
        char *k = line;
        while (*k == ' ' || *k == '\t') k++;
        if (!*k || *k == '#') continue;
        size_t kl = strlen(k);
        char *p = realloc(out, n + kl + 2);
        if (!p) cli_die(cmd, "out of memory");
        out = p;
        if (n) out[n++] = ',';
        memcpy(out + n, k, kl + 1);
        n += kl;
    }
    fclose(f);
    if (!out) cli_die(cmd, "--api-key-file %s: no keys", path);
    return out;
}

int cmd_serve(int argc, char **argv) {
    const char *C = "serve";
    srv_opts o;
    bool no_thinking = false;
    srv_opts_default(&o);
    bool verbose = false;
    char *keyfile_keys = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
#define NEED() do { if (!v) cli_die(C, "%s needs a value", a); i++; } while (0)
        if (cli_is_help(a)) { usage(stdout); return 0; }
        else if (!strcmp(a, "-m") || !strcmp(a, "--model")) { NEED(); o.model_dir = v; }
        else if (!strcmp(a, "--host")) { NEED(); o.host = v; }
        else if (!strcmp(a, "--port")) { o.port = (int)cli_parse_int(C, a, v, 0, 65535); i++; }
        else if (!strcmp(a, "--api-key")) { NEED(); o.api_keys = v; }
        else if (!strcmp(a, "--api-key-file")) { NEED(); keyfile_keys = read_keys(C, v); o.api_keys = keyfile_keys; }
        else if (!strcmp(a, "--cors")) { NEED(); o.cors_origin = v; }
        else if (!strcmp(a, "--no-webui")) o.web_ui = false;
        else if (!strcmp(a, "--js-dir")) { NEED(); o.js_dir = v; }
        else if (!strcmp(a, "--alias")) { NEED(); o.alias = v; }
        else if (!strcmp(a, "-np") || !strcmp(a, "--parallel")) { o.n_slots = (int)cli_parse_int(C, a, v, 1, 256); i++; }
        else if (!strcmp(a, "-c") || !strcmp(a, "--ctx")) { o.ctx = cli_parse_int(C, a, v, 2, 1ll << 24); i++; }
        else if (!strcmp(a, "--kv-type")) {
            NEED();
            int k = ds_kv_type_from_name(v);
            if (k < 0) cli_die(C, "--kv-type: expected f32, q8, fp8, bf16 or i8");
            o.kv_type = k;
        }
        else if (!strcmp(a, "--batch")) { o.batch_tokens = cli_parse_int(C, a, v, 1, 1 << 20); i++; }
        else if (!strcmp(a, "-t") || !strcmp(a, "--threads")) { ds_threads_set((int)cli_parse_int(C, a, v, 1, 1024)); i++; }
        else if (!strcmp(a, "--chat-format")) { NEED(); o.chat_format = v; }
        else if (!strcmp(a, "--tokenizer")) { NEED(); o.tokenizer = v; }
        else if (!strcmp(a, "--thinking")) o.thinking = true;
        else if (!strcmp(a, "--no-thinking")) no_thinking = true;
        else if (!strcmp(a, "--deterministic")) o.deterministic = true;
        else if (!strcmp(a, "--no-prefill-store")) o.no_prefill_store = true;
        else if (!strcmp(a, "--max-queue")) { o.max_queue = (int)cli_parse_int(C, a, v, 0, 1 << 20); i++; }
        else if (!strcmp(a, "--max-body")) { o.max_body = (size_t)cli_parse_int(C, a, v, 1024, 1ll << 32); i++; }
        else if (!strcmp(a, "--max-messages")) { o.max_messages = (int)cli_parse_int(C, a, v, 1, 1 << 20); i++; }
        else if (!strcmp(a, "--max-n")) { o.max_n = (int)cli_parse_int(C, a, v, 1, 16); i++; }
        else if (!strcmp(a, "--max-tokens")) { o.max_tokens = cli_parse_int(C, a, v, 1, 1ll << 24); i++; }
        else if (!strcmp(a, "--default-max-tokens")) { o.default_max_tokens = cli_parse_int(C, a, v, 1, 1ll << 24); i++; }
        else if (!strcmp(a, "--cache-ram")) { o.cache_ram_mb = cli_parse_int(C, a, v, 0, 1 << 24); i++; }
        else if (!strcmp(a, "--cache-min")) { o.cache_min_tokens = cli_parse_int(C, a, v, 1, 1 << 24); i++; }
        else if (!strcmp(a, "--cache-dir")) { NEED(); o.cache_dir = v; }
        else if (!strcmp(a, "--cache-disk")) { o.cache_disk_mb = cli_parse_int(C, a, v, 0, 1 << 28); i++; }
        else if (!strcmp(a, "--sse-ping")) { o.sse_ping_s = cli_parse_num(C, a, v, 0, 3600); i++; }
        else if (!strcmp(a, "--timeout")) { o.idle_timeout_s = (int)cli_parse_int(C, a, v, 1, 86400); i++; }
        else if (!strcmp(a, "--verbose") || !strcmp(a, "-v")) verbose = true;
        else if (!strcmp(a, "--test-hooks")) o.test_hooks = true; /* tests only; not in --help */
        else if (!strcmp(a, "--test-load-delay")) { o.test_load_delay_s = cli_parse_num(C, a, v, 0, 60); i++; }
        else { usage(stderr); cli_die(C, "unknown option '%s'", a); }
#undef NEED
    }
    if (!o.model_dir) o.model_dir = cli_default_model();
    if (!o.model_dir) cli_die(C, "no model given (-m MODEL_DIR) and no bundled model found");
    cli_check_model(C, o.model_dir);
    o.thinking = !no_thinking && (o.thinking || cli_model_thinks(o.model_dir));
    if (verbose) o.log = log_line;
    int n_ranks = ds_dist_size();
    if (n_ranks > 1) {
        if (!ds_dist_threads_ok())
            cli_die(C, "this MPI library cannot be called from several threads (MPI_THREAD_SERIALIZED), which serve on "
                    "%d ranks needs", n_ranks);
        if (ds_dist_rank() > 0) return serve_experts(C, o.model_dir);
        o.open_model = open_rank0;
    }
    /* SIGINT/SIGTERM go to this thread only (sigwait below); every thread started from here inherits the mask */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);
    ds_err e = { 0 };
    srv_server *s;
    if (srv_start(&s, &o, &e)) cli_die_err(C, &e);
    fprintf(stderr, "deepseek serve: listening on http://%s:%d/ (loading %s)\n",
            strchr(o.host, ':') ? "[::1]" : o.host, srv_port(s), o.model_dir);
    fflush(stderr);
    if (srv_wait_loaded(s, &e)) {
        srv_stop(s);
        cli_die_err(C, &e);
    }
    if (n_ranks == 2)
        fprintf(stderr, "deepseek serve: model ready, %d slot(s), threads %d, 2 ranks (rank 1 serves its experts)\n",
                o.n_slots, ds_threads_get());
    else if (n_ranks > 2)
        fprintf(stderr, "deepseek serve: model ready, %d slot(s), threads %d, %d ranks (ranks 1-%d serve their experts)\n",
                o.n_slots, ds_threads_get(), n_ranks, n_ranks - 1);
    else
        fprintf(stderr, "deepseek serve: model ready, %d slot(s), threads %d\n", o.n_slots, ds_threads_get());
    fflush(stderr);
    int sig = 0;
    sigwait(&set, &sig);
    fprintf(stderr, "deepseek serve: %s, shutting down\n", sig == SIGINT ? "interrupted" : "terminated");
    srv_stop(s);
    free(keyfile_keys);
    if (n_ranks > 1 && ds_model_stop_expert_servers(&e)) cli_die_err(C, &e);
    return 0;
}
