/*
 * cmd_train_tokenizer.c - `deepseek train-tokenizer`: trains a byte-level
 * BPE tokenizer on text files (src/tokenizer/bpe_train.h) and writes
 * tokenizer.json (+ tokenizer_config.json) atomically, checked by loading it
 * back with our tokenizer before anything is written.
 */
#include "cli.h"
#include "../core/mmap_file.h"
#include "../core/thread.h"
#include "../tokenizer/bpe_train.h"
#include "../tokenizer/tokenizer.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *C = "train-tokenizer";

static void usage(FILE *f) {
    fprintf(f,
        "usage: deepseek train-tokenizer --vocab-size N [options] FILE...\n"
        "\n"
        "Trains a byte-level BPE tokenizer on the text files and writes a Hugging Face\n"
        "tokenizer.json that both `tokenizers` and deepseek.c load and encode identically.\n"
        "The vocabulary is: the special tokens (ids 0, 1, ...), the 256 byte tokens (any\n"
        "byte string can be encoded; non-UTF-8 input is fine), then the learned merges.\n"
        "Merges follow Hugging Face's BpeTrainer exactly (most frequent pair first, ties\n"
        "to the smallest pair of ids).\n"
        "\n"
        "  --vocab-size N        total vocabulary size, specials included (required)\n"
        "  --pre-tokenizer P     deepseek-v3 (default: DeepSeek-V3's digit / CJK / word\n"
        "                        regexes) or gpt2 (the GPT-2 regex)\n"
        "  --special TOKEN       add a special token (repeatable; special=true, after the\n"
        "                        default ones)\n"
        "  --no-default-specials do not add DeepSeek's markers: <｜begin▁of▁sentence｜> (BOS),\n"
        "                        <｜end▁of▁sentence｜> (EOS), <｜User｜>, <｜Assistant｜>, <think>,\n"
        "                        </think> and the tool-call markers (flags as DeepSeek's)\n"
        "  --min-frequency F     only merge pairs seen at least F times (default 0)\n"
        "  --per-line            pre-tokenize each line on its own, as Hugging Face's\n"
        "                        Tokenizer.train(files) does (default: whole files, as\n"
        "                        they will be encoded)\n"
        "  -o, --out PATH        a folder (created if needed; gets tokenizer.json and\n"
        "                        tokenizer_config.json with BOS/EOS and DeepSeek-V3's chat\n"
        "                        template) or a path ending in .json (just that file).\n"
        "                        Default: ./tokenizer\n"
        "  -t, --threads N       threads for pre-tokenizing (default: all cores; the result\n"
        "                        does not depend on it)\n"
        "  -q, --quiet           no progress line\n"
        "\n"
        "FILE '-' reads stdin. Each file is one document: no token spans two files.\n"
        "Example (tiny Shakespeare, then training shards with it):\n"
        "  deepseek train-tokenizer --vocab-size 4096 -o tok data/tinyshakespeare.txt\n"
        "  deepseek prepare-data --tokenizer tok --out data/shakespeare data/tinyshakespeare.txt\n");
}

/* ------------------------------------------------------------ progress */

static volatile sig_atomic_t g_stop;
static void on_sigint(int sig) { (void)sig; g_stop = 1; }

typedef struct prog {
    bool tty, quiet, shown;
    double last_line; /* non-tty: time of the last printed line */
    uint64_t done0;   /* merges at the start of the rate window */
    double t0;
} prog;

static void fmt_bytes(char *buf, size_t n, double b) {
    if (b >= 1e9) snprintf(buf, n, "%.2f GB", b / 1e9);
    else if (b >= 1e6) snprintf(buf, n, "%.1f MB", b / 1e6);
    else snprintf(buf, n, "%.0f KB", b / 1e3);
}

static int on_progress(void *ud, const bpe_train_progress *p) {
    prog *g = ud;
    if (g_stop) return 1;
    if (g->quiet) return 0;
    double now = ds_now();
    if (!g->tty && now - g->last_line < 10.0) return 0;
    g->last_line = now;
    char line[256], a[32], b[32];
    double rate = p->elapsed > 0 ? (double)p->done / p->elapsed : 0;
    if (p->stage == BPE_STAGE_COUNT) {
        fmt_bytes(a, sizeof a, (double)p->done);
        fmt_bytes(b, sizeof b, (double)p->total);
        double eta = rate > 0 && p->total > p->done ? (double)(p->total - p->done) / rate : 0;
        snprintf(line, sizeof line, "counting: %s / %s  %.1f MB/s  ETA %.0fs", a, b, rate / 1e6, eta);
    } else {
        double eta = rate > 0 && p->total > p->done ? (double)(p->total - p->done) / rate : 0;
        snprintf(line, sizeof line, "merges: %llu / %llu  %.0f merges/s  ETA %.0fs", (unsigned long long)p->done,
                 (unsigned long long)p->total, rate, eta);
    }
    fprintf(stderr, g->tty ? "\r\033[K%s" : "%s\n", line);
    g->shown = true;
    return 0;
}

static void progress_end(prog *g) {
    if (g->tty && g->shown) fprintf(stderr, "\r\033[K");
    g->shown = false;
}

/* ---------------------------------------------------------------- files */

static char *read_stdin(size_t *len) {
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    for (size_t got; buf && (got = fread(buf + n, 1, cap - n, stdin)) > 0;) {
        n += got;
        if (n == cap) {
            char *p = realloc(buf, cap *= 2);
            if (!p) { free(buf); return NULL; }
            buf = p;
        }
    }
    *len = n;
    return buf;
}

static bool ends_with(const char *s, const char *suf) {
    size_t n = strlen(s), m = strlen(suf);
    return n >= m && !strcmp(s + n - m, suf);
}

static void write_or_die(const char *path, const char *data, size_t n) {
    ds_err e = {0};
    if (ds_write_file_atomic(path, data, n, &e)) cli_die_err(C, &e);
}

int cmd_train_tokenizer(int argc, char **argv) {
    int64_t vocab = -1;
    const char *out = "tokenizer", *pre = "deepseek-v3";
    bool defaults = true, per_line = false, quiet = false;
    uint64_t min_freq = 0;
    const char **files = calloc((size_t)argc, sizeof *files), **extra = calloc((size_t)argc, sizeof *extra);
    int n_files = 0, n_extra = 0;
    if (!files || !extra) cli_die(C, "out of memory");
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (cli_is_help(a)) {
            usage(stdout);
            free(files);
            free(extra);
            return 0;
        }
        else if (!strcmp(a, "--vocab-size")) { vocab = cli_parse_int(C, a, v, 1, 1 << 22); i++; }
        else if (!strcmp(a, "--pre-tokenizer")) { if (!v) cli_die(C, "%s needs a value", a); pre = v; i++; }
        else if (!strcmp(a, "--special")) { if (!v) cli_die(C, "%s needs a value", a); extra[n_extra++] = v; i++; }
        else if (!strcmp(a, "--no-default-specials")) defaults = false;
        else if (!strcmp(a, "--min-frequency")) { min_freq = (uint64_t)cli_parse_int(C, a, v, 0, INT64_MAX); i++; }
        else if (!strcmp(a, "--per-line")) per_line = true;
        else if (!strcmp(a, "-o") || !strcmp(a, "--out")) { if (!v) cli_die(C, "%s needs a value", a); out = v; i++; }
        else if (!strcmp(a, "-q") || !strcmp(a, "--quiet")) quiet = true;
        else if (!strcmp(a, "-t") || !strcmp(a, "--threads")) { ds_threads_set((int)cli_parse_int(C, a, v, 1, 1024)); i++; }
        else if (!strcmp(a, "--")) { while (++i < argc) files[n_files++] = argv[i]; }
        else if (a[0] == '-' && a[1]) cli_die(C, "unknown option '%s' (see --help)", a);
        else files[n_files++] = a;
    }
    if (vocab < 0) cli_die(C, "--vocab-size is required (see --help)");
    if (!n_files) cli_die(C, "no input files (see --help)");
    bpe_pretok kind;
    if (!strcmp(pre, "deepseek-v3")) kind = BPE_PRETOK_DEEPSEEK_V3;
    else if (!strcmp(pre, "gpt2")) kind = BPE_PRETOK_GPT2;
    else cli_die(C, "--pre-tokenizer: '%s' is not one of deepseek-v3, gpt2", pre);
    if (!*out) cli_die(C, "-o: empty path");

    /* inputs: all checked before any work */
    uint64_t total = 0;
    int n_stdin = 0;
    for (int f = 0; f < n_files; f++) {
        struct stat sb;
        if (!strcmp(files[f], "-")) { n_stdin++; continue; }
        if (stat(files[f], &sb) != 0) cli_die(C, "%s: %s", files[f], strerror(errno));
        if (S_ISDIR(sb.st_mode)) cli_die(C, "%s: is a directory, not a text file", files[f]);
        total += (uint64_t)sb.st_size;
    }
    if (n_stdin > 1) cli_die(C, "'-' (stdin) given more than once");

    /* output: a folder or one .json file */
    bool to_file = ends_with(out, ".json");
    char tok_path[4096], cfg_path[4096];
    if (to_file) {
        snprintf(tok_path, sizeof tok_path, "%s", out);
    } else {
        struct stat sb;
        if (stat(out, &sb) == 0 && !S_ISDIR(sb.st_mode))
            cli_die(C, "-o %s: exists and is not a folder (use a path ending in .json for a file)", out);
        snprintf(tok_path, sizeof tok_path, "%s/tokenizer.json", out);
        snprintf(cfg_path, sizeof cfg_path, "%s/tokenizer_config.json", out);
    }

    /* special tokens */
    int n_def = 0;
    const bpe_special *def = bpe_default_specials(&n_def);
    if (!defaults) n_def = 0;
    bpe_special *specials = calloc((size_t)(n_def + n_extra) + 1, sizeof *specials);
    if (!specials) cli_die(C, "out of memory");
    for (int i = 0; i < n_def; i++) specials[i] = def[i];
    for (int i = 0; i < n_extra; i++) specials[n_def + i] = (bpe_special){ extra[i], true, false };

    prog g = { .tty = isatty(2), .quiet = quiet, .last_line = ds_now() };
    bpe_train_opts o = {
        .vocab_size = vocab,
        .pretok = kind,
        .specials = specials,
        .n_specials = n_def + n_extra,
        .min_frequency = min_freq,
        .per_line = per_line,
        .bos_token = defaults ? def[0].content : NULL,
        .eos_token = defaults ? def[1].content : NULL,
        .add_bos = defaults,
        .chat_template = defaults,
        .progress = on_progress,
        .progress_ud = &g,
        .total_bytes = total,
    };
    ds_err e = {0};
    bpe_trainer *tr;
    if (bpe_trainer_new(&tr, &o, &e)) cli_die_err(C, &e);
    signal(SIGINT, on_sigint);

    /* count: each file is one document; keep the first 4 MiB for the compression check */
    double t0 = ds_now();
    char *sample = NULL;
    size_t n_sample = 0, max_sample = (size_t)4 << 20;
    for (int f = 0; f < n_files; f++) {
        const char *text;
        size_t len;
        char *owned = NULL;
        ds_mmap mm = {0};
        if (!strcmp(files[f], "-")) {
            if (!(owned = read_stdin(&len))) cli_die(C, "cannot read stdin");
            text = owned;
        } else {
            if (ds_mmap_open(&mm, files[f], &e)) cli_die_err(C, &e);
            text = (const char *)mm.data;
            len = mm.size;
        }
        if (bpe_trainer_feed(tr, text, len, &e)) {
            progress_end(&g);
            cli_die(C, "%s: %s", files[f], e.msg);
        }
        if (n_sample < max_sample && len) {
            size_t take = DS_MIN(len, max_sample - n_sample);
            char *p = realloc(sample, n_sample + take);
            if (!p) cli_die(C, "out of memory");
            sample = p;
            memcpy(sample + n_sample, text, take);
            n_sample += take;
        }
        free(owned);
        ds_mmap_close(&mm);
    }
    int rc = bpe_trainer_train(tr, &e);
    progress_end(&g);
    if (rc) cli_die_err(C, &e);
    bpe_train_stats st;
    bpe_trainer_stats(tr, &st);

    char *json, *cfg = NULL;
    size_t json_len, cfg_len = 0;
    if (bpe_trainer_tokenizer_json(tr, &json, &json_len, &e)) cli_die_err(C, &e);
    if (!to_file && bpe_trainer_config_json(tr, &cfg, &cfg_len, &e)) cli_die_err(C, &e);

    /* never write a file we cannot load back */
    ds_tokenizer *tok;
    if (tok_load_buf(&tok, tok_path, json, json_len, cfg, cfg_len, &e))
        cli_die(C, "internal error: the trained tokenizer does not load: %s", e.msg);
    tok_ids ids = {0};
    if (n_sample && tok_encode_append(tok, sample, n_sample, 0, &ids, &e)) cli_die_err(C, &e);

    if (to_file ? ds_mkdir_parent(out, &e) : ds_mkdir_p(out, &e)) cli_die_err(C, &e);
    write_or_die(tok_path, json, json_len);
    if (!to_file) write_or_die(cfg_path, cfg, cfg_len);
    double secs = ds_now() - t0;

    fprintf(stderr,
            "train-tokenizer: %lld tokens (%lld merges) from %llu bytes (%llu pieces, %llu distinct) in %.2f s "
            "(pre-tokenize %.2f s, merges %.2f s)%s\n",
            (long long)st.vocab_size, (long long)st.merges, (unsigned long long)st.bytes,
            (unsigned long long)st.pieces, (unsigned long long)st.words, secs, st.count_seconds, st.merge_seconds,
            st.vocab_size < vocab ? "; fewer than asked: no pair left to merge" : "");
    if (n_sample)
        fprintf(stderr, "train-tokenizer: %.3f bytes/token on the first %zu bytes of the input\n",
                ids.n ? (double)n_sample / (double)ids.n : 0.0, n_sample);
    printf("{\"tokenizer\":\"");
    for (const char *p = tok_path; *p; p++) /* JSON-escape the path */
        if (*p == '"' || *p == '\\') printf("\\%c", *p);
        else if ((unsigned char)*p < 0x20) printf("\\u%04x", (unsigned char)*p);
        else putchar(*p);
    printf("\",\"vocab_size\":%lld,\"merges\":%lld,\"bytes\":%llu,\"seconds\":%.3f}\n", (long long)st.vocab_size,
           (long long)st.merges, (unsigned long long)st.bytes, secs);
    tok_ids_free(&ids);
    tok_free(tok);
    free(json);
    free(cfg);
    free(sample);
    free(specials);
    bpe_trainer_free(tr);
    free(files);
    free(extra);
    return fflush(stdout) == 0 ? 0 : 1;
}
