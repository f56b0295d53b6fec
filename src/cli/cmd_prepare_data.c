/*
 * cmd_prepare_data.c - `deepseek prepare-data`: tokenize text files into
 * training shards with a held-out validation split (format in
 * src/train/data.h).
 */
#include "cli.h"
#include "../core/mmap_file.h"
#include "../tokenizer/tokenizer.h"
#include "../train/data.h"

#include <errno.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static void usage(FILE *f) {
    fprintf(f,
        "usage: deepseek prepare-data --out DIR (--tokenizer PATH | --byte-tokenizer) [options] FILE...\n"
        "  Tokenizes each text file, appends the tokenizer's end-of-sequence token after each file\n"
        "  (documents are packed without masking, as in DeepSeek-V3 pre-training), holds out the\n"
        "  last --val-fraction of every file's tokens as validation data and writes\n"
        "  DIR/train_NNNNNN.tok, DIR/val_NNNNNN.tok, DIR/data.json and DIR/tokenizer.json.\n"
        "  --tokenizer PATH      a tokenizer.json, or a model folder holding one\n"
        "  --byte-tokenizer      the built-in byte-level tokenizer (256 bytes + BOS + EOS)\n"
        "  --val-fraction F      default 0.1\n"
        "  --shard-tokens N      tokens per shard (default 100000000)\n"
        "  --no-eos              do not append end-of-sequence tokens\n");
}

/* Encodes text in pieces cut after a newline once a piece reaches 256 KiB
 * (BPE pre-tokenizers split at whitespace anyway; this only bounds memory). */
static void encode_text(const char *C, const ds_tokenizer *t, const char *text, size_t len, tok_ids *ids) {
    ds_err e = { 0 };
    size_t i = 0;
    while (i < len) {
        size_t j = i + ((size_t)256 << 10);
        if (j >= len) j = len;
        else {
            while (j < len && text[j - 1] != '\n') j++;
        }
        if (tok_encode_append(t, text + i, j - i, 0, ids, &e)) cli_die_err(C, &e);
        i = j;
    }
}

int cmd_prepare_data(int argc, char **argv) {
    const char *C = "prepare-data", *out = NULL, *tokp = NULL;
    bool byte_tok = false, eos = true;
    double val_frac = 0.1;
    int64_t shard_tokens = 100000000;
    const char **files = calloc((size_t)argc, sizeof *files);
    int n_files = 0;
    if (!files) cli_die(C, "out of memory");
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (cli_is_help(a)) { usage(stdout); return 0; }
        else if (!strcmp(a, "--out") || !strcmp(a, "-o")) { out = v; i++; }
        else if (!strcmp(a, "--tokenizer")) { tokp = v; i++; }
        else if (!strcmp(a, "--byte-tokenizer")) byte_tok = true;
        else if (!strcmp(a, "--val-fraction")) { val_frac = cli_parse_num(C, a, v, 0, 0.9); i++; }
        else if (!strcmp(a, "--shard-tokens")) { shard_tokens = cli_parse_int(C, a, v, 1024, 1ll << 40); i++; }
        else if (!strcmp(a, "--no-eos")) eos = false;
        else if (a[0] == '-' && a[1]) { usage(stderr); cli_die(C, "unknown option '%s'", a); }
        else files[n_files++] = a;
    }
    if (!out) cli_die(C, "--out is required");
    if (!n_files) cli_die(C, "no input files");
    if (!!tokp == byte_tok) cli_die(C, "give exactly one of --tokenizer PATH and --byte-tokenizer");
    ds_err e = { 0 };
    ds_tokenizer *tok;
    char *tok_json = NULL;
    size_t tok_len = 0;
    if (byte_tok) {
        tok_json = ds_byte_tokenizer_json();
        if (!tok_json) cli_die(C, "out of memory");
        tok_len = strlen(tok_json);
        if (tok_load_buf(&tok, "byte tokenizer", tok_json, tok_len, NULL, 0, &e)) cli_die_err(C, &e);
    } else {
        char path[4096];
        struct stat sb;
        if (stat(tokp, &sb) == 0 && S_ISDIR(sb.st_mode)) snprintf(path, sizeof path, "%s/tokenizer.json", tokp);
        else snprintf(path, sizeof path, "%s", tokp);
        if (ds_read_file(path, 256u << 20, &tok_json, &tok_len, &e)) cli_die_err(C, &e);
        if (tok_load(&tok, path, &e)) cli_die_err(C, &e);
    }
    int64_t V = tok_vocab_size(tok);
    int32_t eos_id = eos ? tok_eos_id(tok) : -1;
    if (ds_mkdir_p(out, &e)) cli_die_err(C, &e);

    tok_ids train = { 0 }, val = { 0 };
    json_t *sources = json_array();
    for (int f = 0; f < n_files; f++) {
        char *text;
        size_t len;
        if (ds_read_file(files[f], (size_t)1 << 36, &text, &len, &e)) cli_die_err(C, &e);
        tok_ids ids = { 0 };
        encode_text(C, tok, text, len, &ids);
        if (eos_id >= 0 && tok_ids_push(&ids, eos_id, &e)) cli_die_err(C, &e);
        int64_t n_val = (int64_t)((double)ids.n * val_frac);
        for (int64_t i = 0; i < ids.n; i++)
            if (tok_ids_push(i < ids.n - n_val ? &train : &val, ids.v[i], &e)) cli_die_err(C, &e);
        json_array_append_new(sources, json_pack("{s:s, s:I, s:I, s:I}", "file", files[f], "bytes", (json_int_t)len,
                                                 "tokens", (json_int_t)ids.n, "val_tokens", (json_int_t)n_val));
        fprintf(stderr, "%s: %zu bytes -> %lld tokens (%.2f bytes/token), %lld held out\n", files[f], len,
                (long long)ids.n, ids.n ? (double)len / (double)ids.n : 0.0, (long long)n_val);
        tok_ids_free(&ids);
        free(text);
    }
    json_t *jtrain = json_array(), *jval = json_array();
    const tok_ids *sets[2] = { &train, &val };
    json_t *lists[2] = { jtrain, jval };
    const char *prefix[2] = { "train", "val" };
    for (int s = 0; s < 2; s++) {
        for (int64_t i = 0, k = 0; i < sets[s]->n; i += shard_tokens, k++) {
            int64_t n = DS_MIN(shard_tokens, sets[s]->n - i);
            char name[64], path[4096];
            snprintf(name, sizeof name, "%s_%06lld.tok", prefix[s], (long long)k);
            snprintf(path, sizeof path, "%s/%s", out, name);
            if (ds_shard_write(path, sets[s]->v + i, n, V, &e)) cli_die_err(C, &e);
            json_array_append_new(lists[s], json_string(name));
        }
    }
    char path[4096];
    snprintf(path, sizeof path, "%s/tokenizer.json", out);
    if (ds_write_file_atomic(path, tok_json, tok_len, &e)) cli_die_err(C, &e);
    json_t *meta = json_pack("{s:s, s:s, s:I, s:I, s:I, s:f, s:b, s:o, s:o, s:o}", "format", "deepseek.c token shards v1",
                             "tokenizer", byte_tok ? "byte-level (built in)" : tokp, "vocab_size", (json_int_t)V,
                             "train_tokens", (json_int_t)train.n, "val_tokens", (json_int_t)val.n, "val_fraction", val_frac,
                             "eos_after_each_file", eos_id >= 0, "train", jtrain, "val", jval, "sources", sources);
    char *js = json_dumps(meta, JSON_INDENT(1));
    snprintf(path, sizeof path, "%s/data.json", out);
    if (!js || ds_write_file_atomic(path, js, strlen(js), &e)) cli_die_err(C, &e);
    printf("{\"train_tokens\":%lld,\"val_tokens\":%lld,\"vocab_size\":%lld,\"out\":\"%s\"}\n", (long long)train.n,
           (long long)val.n, (long long)V, out);
    free(js);
    json_decref(meta);
    tok_ids_free(&train);
    tok_ids_free(&val);
    tok_free(tok);
    free(tok_json);
    free(files);
    return 0;
}
