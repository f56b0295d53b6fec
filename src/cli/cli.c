/*
 * cli.c - argument helpers and fatal-error printing for subcommands.
 */
#include "cli.h"
#include "../tokenizer/tokenizer.h"
#include "../dist/dist.h"
#include "../runtime/sampler.h"

#include <errno.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

void cli_die(const char *cmd, const char *fmt, ...) {
    char msg[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    /* in an mpirun job every rank meets the same errors (same arguments,
     * same model): rank 0 says it, and mpirun ends the others while they
     * wait here; a rank still alive after the wait failed on its own and
     * says so on its real stderr (cli_dist.c) */
    if (ds_dist_rank() > 0) {
        sleep(3);
        cli_rank_error(cmd, "%s", msg);
        exit(1);
    }
    fprintf(stderr, "deepseek %s: %s\n", cmd, msg);
    exit(1);
}

void cli_die_err(const char *cmd, const ds_err *e) {
    cli_die(cmd, "%s", e->msg[0] ? e->msg : ds_status_str(e->code));
}

int64_t cli_parse_int(const char *cmd, const char *flag, const char *s, int64_t lo, int64_t hi) {
    if (!s) cli_die(cmd, "%s needs a value", flag);
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end) cli_die(cmd, "%s: '%s' is not an integer", flag, s);
    if (v < lo || v > hi) cli_die(cmd, "%s: %lld is out of range [%lld, %lld]", flag, v, (long long)lo, (long long)hi);
    return v;
}

double cli_parse_num(const char *cmd, const char *flag, const char *s, double lo, double hi) {
    if (!s) cli_die(cmd, "%s needs a value", flag);
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end) cli_die(cmd, "%s: '%s' is not a number", flag, s);
    if (!(v >= lo && v <= hi)) cli_die(cmd, "%s: %g is out of range [%g, %g]", flag, v, lo, hi);
    return v;
}

bool cli_sampler_flag(const char *C, const char *a, const char *v, ds_sampler_params *sp) {
    if (!strcmp(a, "--temperature") || !strcmp(a, "--temp")) sp->temperature = (float)cli_parse_num(C, a, v, 0, 100);
    else if (!strcmp(a, "--top-p")) sp->top_p = (float)cli_parse_num(C, a, v, 1e-9, 1);
    else if (!strcmp(a, "--top-k")) sp->top_k = (int32_t)cli_parse_int(C, a, v, 0, 1 << 30);
    else if (!strcmp(a, "--min-p")) sp->min_p = (float)cli_parse_num(C, a, v, 0, 1);
    else if (!strcmp(a, "--repeat-penalty")) sp->repetition_penalty = (float)cli_parse_num(C, a, v, 1e-3, 100);
    else if (!strcmp(a, "--frequency-penalty")) sp->frequency_penalty = (float)cli_parse_num(C, a, v, -2, 2);
    else if (!strcmp(a, "--presence-penalty")) sp->presence_penalty = (float)cli_parse_num(C, a, v, -2, 2);
    else if (!strcmp(a, "--seed")) sp->seed = (uint64_t)cli_parse_int(C, a, v, 0, INT64_MAX);
    else return false;
    return true;
}

int32_t *cli_parse_ids(const char *cmd, const char *flag, const char *s, int64_t *n) {
    if (!s) cli_die(cmd, "%s needs a value", flag);
    size_t cap = 1;
    for (const char *p = s; *p; p++) if (*p == ',') cap++;
    int32_t *ids = malloc(cap * sizeof *ids);
    if (!ids) cli_die(cmd, "out of memory");
    int64_t k = 0;
    const char *p = s;
    while (*p) {
        char *end;
        errno = 0;
        while (*p == ' ') p++;
        long long v = strtoll(p, &end, 10);
        if (errno || end == p) cli_die(cmd, "%s: bad token id list at '%.20s'", flag, p);
        if (v < 0 || v > INT32_MAX) cli_die(cmd, "%s: token id %lld is out of range", flag, v);
        ids[k++] = (int32_t)v;
        p = end;
        while (*p == ' ') p++;
        if (*p == ',') { p++; if (!*p) cli_die(cmd, "%s: trailing comma", flag); }
        else if (*p) cli_die(cmd, "%s: bad token id list at '%.20s'", flag, p);
    }
    if (k == 0) cli_die(cmd, "%s: empty token id list", flag);
    *n = k;
    return ids;
}

bool cli_model_thinks(const char *dir) {
    char path[8192];
    snprintf(path, sizeof path, "%s/generation_config.json", dir);
    json_t *j = json_load_file(path, 0, NULL);   /* absent or unreadable: no default (the model still loads) */
    bool on = j && json_is_true(json_object_get(j, "thinking"));
    json_decref(j);
    return on;
}

const char *cli_default_model(void) {
    static char buf[8192];
    const char *env = getenv("DEEPSEEK_MODEL");
    if (env && *env) return env;
    /* the bundled model, next to the binary or in the current directory */
    char exe[4096];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    struct stat sb;
    if (n > 0) {
        exe[n] = 0;
        char *slash = strrchr(exe, '/');
        if (slash) {
            *slash = 0;
            snprintf(buf, sizeof buf, "%s/models/default/config.json", exe);
            if (stat(buf, &sb) == 0) {
                snprintf(buf, sizeof buf, "%s/models/default", exe);
                return buf;
            }
        }
    }
    if (stat("models/default/config.json", &sb) == 0) return "models/default";
    return NULL;
}

static bool is_file(const char *dir, const char *name) {
    char p[8192];
    struct stat sb;
    snprintf(p, sizeof p, "%s/%s", dir, name);
    return stat(p, &sb) == 0 && S_ISREG(sb.st_mode);
}

/* What is wrong with the model path, in buf (NULL: nothing). */
static const char *check_model(const char *path, char *buf, size_t n) {
    struct stat sb;
    /* the path may come from the environment rather than -m: say so */
    const char *env = getenv("DEEPSEEK_MODEL");
    const char *want = env && path && !strcmp(env, path)
        ? "from DEEPSEEK_MODEL; expected a Hugging Face model folder (config.json + model.safetensors) or a .gguf file"
        : "expected a Hugging Face model folder (config.json + model.safetensors) or a .gguf file";
    if (!path || !*path) return snprintf(buf, n, "no model given (-m MODEL_DIR or -m MODEL.gguf)"), buf;
    if (stat(path, &sb) != 0)
        return snprintf(buf, n, "model '%s' %s (%s)", path, errno == ENOENT ? "does not exist" : strerror(errno), want), buf;
    size_t len = strlen(path);
    bool gguf_name = len > 5 && strcmp(path + len - 5, ".gguf") == 0;
    if (!S_ISDIR(sb.st_mode)) {
        if (!gguf_name) return snprintf(buf, n, "model '%s' is a file but not a .gguf file (%s)", path, want), buf;
        return NULL;   /* its header and tensors are checked by the loader */
    }
    if (!is_file(path, "config.json"))
        return snprintf(buf, n, "model '%s' is not a model folder: it has no config.json (%s)", path, want), buf;
    if (!is_file(path, "model.safetensors") && !is_file(path, "model.safetensors.index.json"))
        return snprintf(buf, n, "model '%s' has a config.json but no weights: no model.safetensors "
                        "(nor model.safetensors.index.json for shards)", path), buf;
    return NULL;
}

void cli_check_model(const char *cmd, const char *path) {
    char buf[8192 + 512];
    /* in an mpirun job, on every rank (each may see its own file system) */
    cli_all_ok(cmd, check_model(path, buf, sizeof buf), "cannot use the model");
}

long cli_rss_kib(void) {
    FILE *f = fopen("/proc/self/status", "r");
    if (!f) return -1;
    char line[256];
    long kb = -1;
    while (fgets(line, sizeof line, f))
        if (strncmp(line, "VmRSS:", 6) == 0) kb = strtol(line + 6, NULL, 10);
    fclose(f);
    return kb;
}

int cli_is_help(const char *a) { return strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0; }

uint64_t cli_parse_size(const char *cmd, const char *flag, const char *s) {
    if (!s) cli_die(cmd, "%s needs a size", flag);
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    uint64_t mul = 1;
    if (*end == 'K' || *end == 'k') mul = 1ull << 10, end++;
    else if (*end == 'M' || *end == 'm') mul = 1ull << 20, end++;
    else if (*end == 'G' || *end == 'g') mul = 1ull << 30, end++;
    else if (*end == 'T' || *end == 't') mul = 1ull << 40, end++;
    if (errno || end == s || *end || !(v > 0) || v * (double)mul > 9e18)
        cli_die(cmd, "%s: '%s' is not a size (a number with an optional K, M, G or T suffix)", flag, s);
    uint64_t b = (uint64_t)(v * (double)mul);
    if (b == 0) cli_die(cmd, "%s: '%s' is less than one byte", flag, s);
    return b;
}

ds_tokenizer *cli_load_tokenizer(const char *cmd, const char *model, const char *tokenizer, const char *hint) {
    ds_tokenizer *t = NULL;
    ds_err e = { 0 };
    if (tok_load_for_model(&t, model, tokenizer, &e)) cli_die(cmd, "%s%s%s", e.msg, hint ? " " : "", hint ? hint : "");
    return t;
}
