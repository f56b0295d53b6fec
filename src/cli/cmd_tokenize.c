/*
 * cmd_tokenize.c - `deepseek tokenize` (text -> ids as a JSON array) and
 * `deepseek detokenize` (ids -> text) over src/tokenizer.
 */
#include "cli.h"
#include "../core/mmap_file.h"
#include "../tokenizer/tokenizer.h"

#include <stdlib.h>
#include <string.h>

static void tokenize_usage(FILE *f) {
    fprintf(f,
            "usage: deepseek tokenize [-m MODEL_DIR|tokenizer.json] (--text S | --file F) [--no-special]\n"
            "\n"
            "Prints the token ids of the text as one JSON array on one line, exactly as the\n"
            "Hugging Face tokenizers library's Tokenizer.from_file(...).encode(text).ids:\n"
            "added/special token strings in the text (e.g. <｜User｜>) become their ids and the\n"
            "tokenizer's post-processor is applied (for DeepSeek-V3 it adds nothing; BOS is not\n"
            "added).\n"
            "\n"
            "  -m, --model PATH   model folder with tokenizer.json, a tokenizer.json, or a .gguf\n"
            "                     (its tokenizer.json beside it, else its tokenizer metadata)\n"
            "  --tokenizer PATH   the tokenizer to use instead (tokenizer.json, folder or .gguf)\n"
            "                     (default: $DEEPSEEK_MODEL or the bundled model)\n"
            "  --text S           the text to tokenize\n"
            "  --file F           read the text from file F ('-' for stdin); bytes as they are\n"
            "  --no-special       treat the text literally: special-token strings are tokenized\n"
            "                     as plain text and the post-processor adds nothing\n"
            "  --stats            print load/encode times and speed to stderr\n");
}

static void detokenize_usage(FILE *f) {
    fprintf(f,
            "usage: deepseek detokenize [-m MODEL_DIR|tokenizer.json] --ids 1,2,3 [--skip-special] [--raw]\n"
            "\n"
            "Prints the text of the token ids (no newline is added). --ids also accepts the\n"
            "JSON array printed by `deepseek tokenize`. Bytes that do not form valid UTF-8\n"
            "(a character split off by the ids) are printed as U+FFFD, as the Hugging Face\n"
            "decoder does, unless --raw is given.\n"
            "\n"
            "  -m, --model PATH   model folder with tokenizer.json, a tokenizer.json, or a .gguf\n"
            "                     (its tokenizer.json beside it, else its tokenizer metadata)\n"
            "  --tokenizer PATH   the tokenizer to use instead (tokenizer.json, folder or .gguf)\n"
            "  --ids LIST         comma-separated token ids\n"
            "  --skip-special     drop special tokens (BOS/EOS, ...)\n"
            "  --raw              write the exact decoded bytes\n");
}

static const char *need_arg(const char *cmd, int argc, char **argv, int *i) {
    if (*i + 1 >= argc) cli_die(cmd, "%s needs a value (see --help)", argv[*i]);
    return argv[++*i];
}

static ds_tokenizer *load(const char *cmd, const char *model, const char *tokenizer) {
    if (!model && !tokenizer) model = cli_default_model();
    if (!model && !tokenizer) cli_die(cmd, "no model given: use -m MODEL_DIR, -m MODEL.gguf or -m path/to/tokenizer.json");
    return cli_load_tokenizer(cmd, model, tokenizer, NULL);
}

static char *read_stdin(size_t *len) {
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    for (size_t got; buf && (got = fread(buf + n, 1, cap - n, stdin)) > 0;) {
        n += got;
        if (n == cap) {
            char *p = cap < ((size_t)1 << 31) ? realloc(buf, cap *= 2) : NULL;
            if (!p) { free(buf); return NULL; }
            buf = p;
        }
    }
    *len = n;
    return buf;
}

int cmd_tokenize(int argc, char **argv) {
    const char *cmd = "tokenize", *model = NULL, *text = NULL, *file = NULL, *tokp = NULL;
    bool special = true, stats = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (cli_is_help(a)) { tokenize_usage(stdout); return 0; }
        else if (!strcmp(a, "--stats")) stats = true;
        else if (!strcmp(a, "-m") || !strcmp(a, "--model")) model = need_arg(cmd, argc, argv, &i);
        else if (!strcmp(a, "--tokenizer")) tokp = need_arg(cmd, argc, argv, &i);
        else if (!strcmp(a, "--text")) text = need_arg(cmd, argc, argv, &i);
        else if (!strcmp(a, "--file")) file = need_arg(cmd, argc, argv, &i);
        else if (!strcmp(a, "--no-special")) special = false;
        else cli_die(cmd, "unknown option '%s' (see --help)", a);
    }
    if (!!text + !!file != 1) cli_die(cmd, "give exactly one of --text or --file (see --help)");
    char *buf = NULL;
    size_t len;
    if (file && !strcmp(file, "-")) {
        if (!(buf = read_stdin(&len))) cli_die(cmd, "cannot read stdin");
    } else if (file) {
        ds_err e = {0};
        if (ds_read_file(file, (size_t)1 << 31, &buf, &len, &e)) cli_die_err(cmd, &e);
    } else {
        len = strlen(text);
    }
    double t0 = ds_now();
    ds_tokenizer *t = load(cmd, model, tokp);
    double t1 = ds_now();
    tok_ids ids = {0};
    ds_err e = {0};
    if (tok_encode_append(t, buf ? buf : text, len, special ? TOK_PARSE_SPECIAL | TOK_ADD_SPECIAL : 0, &ids, &e))
        cli_die_err(cmd, &e);
    double t2 = ds_now();
    if (stats)
        fprintf(stderr, "load %.3f s; encode %zu bytes -> %lld tokens in %.4f s (%.2f MB/s, %.0f tokens/s)\n",
                t1 - t0, len, (long long)ids.n, t2 - t1, len / 1e6 / (t2 - t1 > 0 ? t2 - t1 : 1e-9),
                ids.n / (t2 - t1 > 0 ? t2 - t1 : 1e-9));
    putchar('[');
    for (int64_t i = 0; i < ids.n; i++) printf(i ? ",%d" : "%d", ids.v[i]);
    printf("]\n");
    tok_ids_free(&ids);
    tok_free(t);
    free(buf);
    return fflush(stdout) == 0 ? 0 : 1;
}

int cmd_detokenize(int argc, char **argv) {
    const char *cmd = "detokenize", *model = NULL, *ids_arg = NULL, *tokp = NULL;
    bool skip = false, raw = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (cli_is_help(a)) { detokenize_usage(stdout); return 0; }
        else if (!strcmp(a, "-m") || !strcmp(a, "--model")) model = need_arg(cmd, argc, argv, &i);
        else if (!strcmp(a, "--tokenizer")) tokp = need_arg(cmd, argc, argv, &i);
        else if (!strcmp(a, "--ids")) ids_arg = need_arg(cmd, argc, argv, &i);
        else if (!strcmp(a, "--skip-special")) skip = true;
        else if (!strcmp(a, "--raw")) raw = true;
        else cli_die(cmd, "unknown option '%s' (see --help)", a);
    }
    if (!ids_arg) cli_die(cmd, "--ids is required (see --help)");
    /* accept "[1, 2, 3]" as printed by tokenize */
    char *list = strdup(ids_arg);
    if (!list) cli_die(cmd, "out of memory");
    char *p = list;
    while (*p == ' ' || *p == '\n') p++;
    if (*p == '[') {
        p++;
        char *end = p + strlen(p);
        while (end > p && (end[-1] == ' ' || end[-1] == '\n')) end--;
        if (end == p || end[-1] != ']') cli_die(cmd, "--ids: '[' without a closing ']'");
        end[-1] = 0;
    }
    int64_t n;
    int32_t *ids = cli_parse_ids(cmd, "--ids", p, &n);
    ds_tokenizer *t = load(cmd, model, tokp);
    char *text, *clean;
    size_t len, clen;
    ds_err e = {0};
    if (tok_decode(t, ids, n, skip, &text, &len, &e)) cli_die_err(cmd, &e);
    if (!raw) {
        if (tok_utf8_sanitize(text, len, &clean, &clen, &e)) cli_die_err(cmd, &e);
        free(text);
        text = clean;
        len = clen;
    }
    fwrite(text, 1, len, stdout);
    free(text);
    free(ids);
    free(list);
    tok_free(t);
    return fflush(stdout) == 0 ? 0 : 1;
}
