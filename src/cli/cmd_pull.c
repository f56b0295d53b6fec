/*
 * cmd_pull.c - `deepseek pull ORG/NAME[@REV]`: downloads a model repository
 * from the Hugging Face hub (libcurl) into the hub's cache layout, so
 * `-m ORG/NAME` (and huggingface_hub / transformers) find it:
 *
 *   $HF_HUB_CACHE (else $HF_HOME/hub, else ~/.cache/huggingface/hub)
 *     models--ORG--NAME/blobs/<sha256 of LFS files | git blob id>
 *     models--ORG--NAME/snapshots/<commit>/<file>  -> ../../blobs/<id>
 *     models--ORG--NAME/refs/<rev>                  the commit of rev
 *
 * The file list comes from GET $HF_ENDPOINT/api/models/ORG/NAME/revision/REV
 * ?blobs=true; each file from $HF_ENDPOINT/ORG/NAME/resolve/COMMIT/FILE,
 * following redirects (the token, $HF_TOKEN, is not sent to another host),
 * into blobs/<id>.incomplete, resumed with a Range request after an
 * interruption, checked against the LFS SHA-256 (or the size), then renamed.
 * HF_HUB_OFFLINE=1: no network; the cached snapshot is reported if complete.
 * Also here: the ORG/NAME[@REV] -> snapshot folder resolution that main.c
 * applies to -m / --model values (cli_hub_resolve).
 */
#include "cli.h"
#include "../io/json.h"

#include <curl/curl.h>
#include <errno.h>
#include <stdarg.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

/* ------------------------------------------------------------------ SHA-256 */

typedef struct { uint32_t h[8]; uint64_t n; unsigned char buf[64]; size_t nb; } sha256;

static const uint32_t K256[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

#define ROR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))

static void sha256_block(sha256 *s, const unsigned char *p) {
    uint32_t w[64];
    for (int i = 0; i < 16; i++)
        w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 | (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
    for (int i = 16; i < 64; i++) {
        uint32_t s0 = ROR(w[i - 15], 7) ^ ROR(w[i - 15], 18) ^ (w[i - 15] >> 3);
        uint32_t s1 = ROR(w[i - 2], 17) ^ ROR(w[i - 2], 19) ^ (w[i - 2] >> 10);
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    uint32_t a = s->h[0], b = s->h[1], c = s->h[2], d = s->h[3], e = s->h[4], f = s->h[5], g = s->h[6], h = s->h[7];
    for (int i = 0; i < 64; i++) {
        uint32_t t1 = h + (ROR(e, 6) ^ ROR(e, 11) ^ ROR(e, 25)) + ((e & f) ^ (~e & g)) + K256[i] + w[i];
        uint32_t t2 = (ROR(a, 2) ^ ROR(a, 13) ^ ROR(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
        h = g; g = f; f = e; e = d + t1; d = c; c = b; b = a; a = t1 + t2;
    }
    s->h[0] += a; s->h[1] += b; s->h[2] += c; s->h[3] += d;
    s->h[4] += e; s->h[5] += f; s->h[6] += g; s->h[7] += h;
}

static void sha256_init(sha256 *s) {
    static const uint32_t h0[8] = { 0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                    0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19 };
    memcpy(s->h, h0, sizeof h0);
    s->n = 0;
    s->nb = 0;
}

static void sha256_update(sha256 *s, const void *data, size_t len) {
    const unsigned char *p = data;
    s->n += len;
    while (len) {
        size_t k = 64 - s->nb < len ? 64 - s->nb : len;
        memcpy(s->buf + s->nb, p, k);
        s->nb += k;
        p += k;
        len -= k;
        if (s->nb == 64) { sha256_block(s, s->buf); s->nb = 0; }
    }
}

static void sha256_hex(sha256 *s, char out[65]) {
    uint64_t bits = s->n * 8;
    unsigned char pad = 0x80, zero = 0, lenb[8];
    sha256_update(s, &pad, 1);
    while (s->nb != 56) sha256_update(s, &zero, 1);
    for (int i = 0; i < 8; i++) lenb[i] = (unsigned char)(bits >> (56 - 8 * i));
    sha256_update(s, lenb, 8);
    for (int i = 0; i < 8; i++) sprintf(out + 8 * i, "%08x", s->h[i]);
}

static int sha256_file(const char *path, char out[65]) {
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    sha256 s;
    sha256_init(&s);
    static unsigned char buf[1 << 16];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0) sha256_update(&s, buf, n);
    int bad = ferror(f);
    fclose(f);
    if (bad) return -1;
    sha256_hex(&s, out);
    return 0;
}

/* ------------------------------------------------------------ cache layout */

static const char *C = "pull";

/* snprintf for paths and messages: a result that does not fit is an error */
static void fmt(char *out, size_t cap, const char *f, ...) __attribute__((format(printf, 3, 4)));
static void fmt(char *out, size_t cap, const char *f, ...) {
    va_list ap;
    va_start(ap, f);
    int n = vsnprintf(out, cap, f, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= cap) cli_die(C, "path or message too long: %.80s...", out);
}

/* The hub cache folder (huggingface_hub's rules). */
static void cache_root(char *out, size_t cap) {
    const char *hc = getenv("HF_HUB_CACHE"), *hh = getenv("HF_HOME"), *home = getenv("HOME");
    if (hc && *hc) fmt(out, cap, "%s", hc);
    else if (hh && *hh) fmt(out, cap, "%s/hub", hh);
    else fmt(out, cap, "%s/.cache/huggingface/hub", home && *home ? home : ".");
}

/* "ORG/NAME[@REV]" -> repo "ORG/NAME", rev (default "main"); false if not that shape. */
static bool parse_spec(const char *spec, char *repo, size_t rcap, char *rev, size_t vcap) {
    const char *at = strchr(spec, '@');
    size_t n = at ? (size_t)(at - spec) : strlen(spec);
    if (n == 0 || n >= rcap) return false;
    memcpy(repo, spec, n);
    repo[n] = 0;
    const char *slash = strchr(repo, '/');
    if (!slash || slash == repo || !slash[1] || strchr(slash + 1, '/')) return false;
    for (const char *p = repo; *p; p++)
        if (!(*p == '/' || *p == '-' || *p == '_' || *p == '.' || (*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'z') ||
              (*p >= 'A' && *p <= 'Z')))
            return false;
    if (strstr(repo, "..")) return false;
    const char *r = at && at[1] ? at + 1 : "main";
    if (strlen(r) >= vcap) return false;
    fmt(rev, vcap, "%s", r);
    return strchr(rev, '/') == NULL && strcmp(rev, "..") != 0 && strcmp(rev, ".") != 0;
}

/* models--ORG--NAME */
static void repo_dir(char *out, size_t cap, const char *root, const char *repo) {
    char flat[512];
    size_t k = 0;
    for (const char *p = repo; *p && k + 3 < sizeof flat; p++) {
        if (*p == '/') { flat[k++] = '-'; flat[k++] = '-'; }
        else flat[k++] = *p;
    }
    flat[k] = 0;
    fmt(out, cap, "%s/models--%s", root, flat);
}

static bool is_hex40(const char *s) {
    size_t n = 0;
    for (; s[n]; n++) if (!((s[n] >= '0' && s[n] <= '9') || (s[n] >= 'a' && s[n] <= 'f'))) return false;
    return n == 40;
}

/* The commit a cached rev points to (refs/<rev>, or rev itself if it is a commit). */
static bool cached_commit(const char *rdir, const char *rev, char commit[64]) {
    if (is_hex40(rev)) { memcpy(commit, rev, 41); return true; }
    char p[PATH_MAX];
    fmt(p, sizeof p, "%s/refs/%s", rdir, rev);
    FILE *f = fopen(p, "r");
    if (!f) return false;
    bool ok = fgets(commit, 64, f) != NULL;
    fclose(f);
    if (ok) commit[strcspn(commit, "\r\n")] = 0;
    return ok && is_hex40(commit);
}

int cli_hub_resolve(const char *spec, char *out, size_t cap) {
    struct stat sb;
    if (!spec || stat(spec, &sb) == 0) return 0;   /* a real path wins */
    char repo[256], rev[128], root[PATH_MAX], rdir[PATH_MAX], commit[64];
    if (!parse_spec(spec, repo, sizeof repo, rev, sizeof rev)) return 0;
    cache_root(root, sizeof root);
    repo_dir(rdir, sizeof rdir, root, repo);
    if (!cached_commit(rdir, rev, commit)) return -1;
    fmt(out, cap, "%s/snapshots/%s", rdir, commit);
    if (stat(out, &sb) != 0) return -1;
    /* a snapshot without config.json holding one GGUF model (pull --gguf FILE): -m
     * ORG/NAME is that file (the .gguf, or the first part of a split one) */
    char cfg[PATH_MAX], pick[NAME_MAX + 1] = "";
    fmt(cfg, sizeof cfg, "%s/config.json", out);
    if (stat(cfg, &sb) == 0) return 1;
    DIR *d = opendir(out);
    int n_gguf = 0;
    for (struct dirent *de; d && (de = readdir(d));) {
        size_t n = strlen(de->d_name);
        if (n < 5 || strcmp(de->d_name + n - 5, ".gguf")) continue;
        const char *part = strstr(de->d_name, "-of-");
        /* split parts other than the first do not count */
        if (part && part - de->d_name >= 6 && part[-6] == '-' && strncmp(part - 5, "00001", 5)) continue;
        if (n_gguf++ == 0) fmt(pick, sizeof pick, "%s", de->d_name);
    }
    if (d) closedir(d);
    if (n_gguf == 1) {   /* more than one: ambiguous, the folder stays (and is refused as a model) */
        char f[PATH_MAX];
        fmt(f, sizeof f, "%s/%s", out, pick);
        fmt(out, cap, "%s", f);
    }
    return 1;
}

static int mkdirs(const char *path) {
    char tmp[PATH_MAX];
    fmt(tmp, sizeof tmp, "%s", path);
    for (char *p = tmp + 1; *p; p++) {
        if (*p != '/') continue;
        *p = 0;
        if (mkdir(tmp, 0755) && errno != EEXIST) return -1;
        *p = '/';
    }
    return mkdir(tmp, 0755) && errno != EEXIST ? -1 : 0;
}

/* ------------------------------------------------------------------ HTTP */

typedef struct { char *p; size_t n, cap; } membuf;

static size_t mem_write(char *d, size_t sz, size_t nm, void *ud) {
    membuf *b = ud;
    size_t n = sz * nm;
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 4096;
        while (cap < b->n + n + 1) cap *= 2;
        if (cap > (64u << 20)) return 0;   /* an API answer is small */
        char *q = realloc(b->p, cap);
        if (!q) return 0;
        b->p = q;
        b->cap = cap;
    }
    memcpy(b->p + b->n, d, n);
    b->n += n;
    b->p[b->n] = 0;
    return n;
}

static struct curl_slist *auth_headers(const char *tok) {
    if (!tok) tok = getenv("HF_TOKEN");
    if (!tok || !*tok) return NULL;
    char h[1024];
    fmt(h, sizeof h, "Authorization: Bearer %s", tok);
    return curl_slist_append(NULL, h);
}

static long env_long(const char *name, long def) {
    const char *v = getenv(name);
    if (!v || !*v) return def;
    char *end;
    long x = strtol(v, &end, 10);
    if (*end || x < 0) cli_die(C, "%s='%s' is not a non-negative integer", name, v);
    return x;
}

static void curl_common(CURL *c, struct curl_slist *hdr) {
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 1L);   /* the token stays on the first host */
    curl_easy_setopt(c, CURLOPT_MAXREDIRS, 10L);
    curl_easy_setopt(c, CURLOPT_USERAGENT, "deepseek.c");
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, 30L);
    /* a stalled transfer (under LIMIT bytes/s for TIME seconds) fails instead of hanging */
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, env_long("DEEPSEEK_PULL_LOW_SPEED_LIMIT", 1024));
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, env_long("DEEPSEEK_PULL_LOW_SPEED_TIME", 60));
    if (hdr) curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdr);
}

static const char *http_hint(long code) {
    return code == 401 ? " (unauthorized: a private or gated repository needs a token: set HF_TOKEN or pass --token)"
         : code == 403 ? " (forbidden: gated repository? accept its terms, set HF_TOKEN)"
         : code == 404 ? " (no such repository, revision or file)" : "";
}

typedef struct {
    FILE *f;
    sha256 *sh;
    const char *name;
    int64_t base, total;
    double last;
    bool tty;
    double every;   /* seconds between progress-line updates */
} dl_state;

static size_t file_write(char *d, size_t sz, size_t nm, void *ud) {
    dl_state *s = ud;
    size_t n = sz * nm;
    if (fwrite(d, 1, n, s->f) != n) return 0;
    return n;
}

static int progress(void *ud, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal, curl_off_t ulnow) {
    (void)ultotal; (void)ulnow;
    dl_state *s = ud;
    double now = ds_now();
    if (!s->tty || now - s->last < s->every) return 0;
    s->last = now;
    int64_t total = s->total > 0 ? s->total : s->base + (int64_t)dltotal, have = s->base + (int64_t)dlnow;
    int w = 30, k = total > 0 ? (int)(w * (double)have / (double)total) : 0;
    if (k > w) k = w;
    fprintf(stderr, "\r%-32.32s [", s->name);
    for (int i = 0; i < w; i++) fputc(i < k ? '#' : ' ', stderr);
    fprintf(stderr, "] %5.1f%% %8.1f/%.1f MB", total > 0 ? 100.0 * (double)have / (double)total : 0.0, have / 1e6,
            total / 1e6);
    return 0;
}

/* Downloads url into path (appending to what is there: a Range request). */
static int download(const char *url, const char *path, const char *name, int64_t total, struct curl_slist *hdr,
                    char *errbuf, size_t errcap) {
    struct stat sb;
    int64_t have = stat(path, &sb) == 0 ? (int64_t)sb.st_size : 0;
    if (total > 0 && have > total) { remove(path); have = 0; }
    if (total > 0 && have == total) return 0;
    FILE *f = fopen(path, have ? "ab" : "wb");
    if (!f) { fmt(errbuf, errcap, "%s: %s", path, strerror(errno)); return -1; }
    CURL *c = curl_easy_init();
    if (!c) { fclose(f); fmt(errbuf, errcap, "curl_easy_init failed"); return -1; }
    dl_state st = { .f = f, .name = name, .base = have, .total = total, .tty = isatty(2), .every = 0.1 };
    /* DEEPSEEK_PULL_PROGRESS=1: the live progress line also when stderr is not a terminal (tests) */
    const char *pe = getenv("DEEPSEEK_PULL_PROGRESS");
    if (pe && !strcmp(pe, "1")) st.tty = true;
    char range[64];
    curl_common(c, hdr);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, file_write);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &st);
    curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, progress);
    curl_easy_setopt(c, CURLOPT_XFERINFODATA, &st);
    curl_easy_setopt(c, CURLOPT_FAILONERROR, 1L);
    if (have) {
        fmt(range, sizeof range, "%lld-", (long long)have);
        curl_easy_setopt(c, CURLOPT_RANGE, range);
    }
    CURLcode rc = curl_easy_perform(c);
    long code = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
    curl_easy_cleanup(c);
    if (fclose(f) && rc == CURLE_OK) { fmt(errbuf, errcap, "%s: %s", path, strerror(errno)); return -1; }
    if (st.tty) fprintf(stderr, "\n");
    if (rc != CURLE_OK) {
        if (code == 416) { remove(path); fmt(errbuf, errcap, "%s: range not satisfiable; run pull again", name); }
        else if (rc == CURLE_OPERATION_TIMEDOUT)
            fmt(errbuf, errcap, "%s: transfer stalled (under %ld bytes/s for %ld s; DEEPSEEK_PULL_LOW_SPEED_LIMIT/_TIME) from %s; run pull again to resume",
                name, env_long("DEEPSEEK_PULL_LOW_SPEED_LIMIT", 1024), env_long("DEEPSEEK_PULL_LOW_SPEED_TIME", 60), url);
        else fmt(errbuf, errcap, "%s: %s (HTTP %ld)%s; run pull again to resume", name, curl_easy_strerror(rc), code,
                      http_hint(code));
        return -1;
    }
    if (have && code == 200) {
        /* the server ignored the range and sent the whole file after what we had:
         * keep the tail only */
        FILE *in = fopen(path, "rb");
        char tmp[PATH_MAX];
        fmt(tmp, sizeof tmp, "%s.tmp", path);
        FILE *out = in ? fopen(tmp, "wb") : NULL;
        int ok = in && out && fseeko(in, (off_t)have, SEEK_SET) == 0;
        static char buf[1 << 16];
        size_t n;
        while (ok && (n = fread(buf, 1, sizeof buf, in)) > 0) ok = fwrite(buf, 1, n, out) == n;
        if (in) fclose(in);
        if (out && fclose(out)) ok = 0;
        if (!ok || rename(tmp, path)) { fmt(errbuf, errcap, "%s: could not restart the download", name); return -1; }
    }
    return 0;
}

/* ------------------------------------------------------------------ pull */

static void usage(FILE *f) {
    fprintf(f,
        "usage: deepseek pull ORG/NAME[@REV] [--include GLOB]... [--exclude GLOB]... [--gguf FILE]\n"
        "                     [--token TOKEN] [--quiet]\n"
        "  Downloads a model repository from the Hugging Face hub into its cache\n"
        "  ($HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub) and prints the\n"
        "  snapshot folder; then `-m ORG/NAME[@REV]` works with every command.\n"
        "  REV: a branch, tag or commit (default main). Interrupted downloads resume; LFS files\n"
        "  are checked against their SHA-256.\n"
        "  --include GLOB   only files matching this glob (repeatable; default: all)\n"
        "  --exclude GLOB   not the files matching this glob (repeatable)\n"
        "  --gguf FILE      only this file of a GGUF repository (a split one: its first part\n"
        "                   -00001-of-N brings the other parts); -m ORG/NAME then is that file\n"
        "                   (a snapshot of several GGUF models: -m SNAPSHOT/FILE.gguf)\n"
        "  --token TOKEN    for private and gated repositories (instead of $HF_TOKEN)\n"
        "  Environment: HF_ENDPOINT (default https://huggingface.co), HF_TOKEN, HF_HUB_OFFLINE=1\n"
        "  (no network: report the cached snapshot), DEEPSEEK_PULL_LOW_SPEED_LIMIT / _TIME (a\n"
        "  transfer under LIMIT bytes/s for TIME seconds fails; default 1024 and 60).\n"
        "  See also: deepseek list, deepseek rm ORG/NAME.\n");
}

#include <fnmatch.h>

static bool wanted(const char *file, const char **inc, int n_inc, const char **exc, int n_exc) {
    for (int i = 0; i < n_exc; i++) if (fnmatch(exc[i], file, 0) == 0) return false;
    if (n_inc == 0) return true;
    for (int i = 0; i < n_inc; i++) if (fnmatch(inc[i], file, 0) == 0) return true;
    return false;
}

/* a repository file name that stays inside the snapshot */
static bool safe_name(const char *f) {
    if (!*f || f[0] == '/' || strstr(f, "\\")) return false;
    const char *p = f;
    while (*p) {
        const char *q = strchr(p, '/');
        size_t n = q ? (size_t)(q - p) : strlen(p);
        if (n == 0 || (n == 1 && p[0] == '.') || (n == 2 && p[0] == '.' && p[1] == '.')) return false;
        p += n + (q ? 1 : 0);
    }
    return true;
}

static bool safe_id(const char *s) {
    if (!*s || strlen(s) > 128) return false;
    for (; *s; s++) if (!((*s >= '0' && *s <= '9') || (*s >= 'a' && *s <= 'f'))) return false;
    return true;
}

/* Links snapshots/<commit>/<file> to the blob (relative, as huggingface_hub does). */
static int link_snapshot(const char *rdir, const char *commit, const char *file, const char *blob_id) {
    char p[PATH_MAX], dir[PATH_MAX], target[PATH_MAX];
    fmt(p, sizeof p, "%s/snapshots/%s/%s", rdir, commit, file);
    fmt(dir, sizeof dir, "%s", p);
    *strrchr(dir, '/') = 0;
    if (mkdirs(dir)) return -1;
    int depth = 0;
    for (const char *q = file; *q; q++) depth += *q == '/';
    size_t k = 0;
    for (int i = 0; i < depth + 2 && k + 4 < sizeof target; i++, k += 3) memcpy(target + k, "../", 4);
    fmt(target + k, sizeof target - k, "blobs/%s", blob_id);
    /* atomic: a link under a temporary name renamed over the old one (concurrent pulls) */
    char tmp[PATH_MAX];
    fmt(tmp, sizeof tmp, "%s.tmp%ld", p, (long)getpid());
    remove(tmp);
    if (symlink(target, tmp)) return -1;
    if (rename(tmp, p)) { int e = errno; remove(tmp); errno = e; return -1; }
    return 0;
}

int cmd_pull(int argc, char **argv) {
    const char *spec = NULL, *inc[64], *exc[64], *token = NULL, *gguf = NULL;
    char gguf_glob[PATH_MAX];
    int n_inc = 0, n_exc = 0;
    bool quiet = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (cli_is_help(a)) { usage(stdout); return 0; }
        else if (!strcmp(a, "--include")) {
            if (i + 1 >= argc) cli_die(C, "--include needs a pattern");
            if (n_inc >= 64) cli_die(C, "--include: at most 64 patterns");
            inc[n_inc++] = argv[++i];
        }
        else if (!strcmp(a, "--exclude")) {
            if (i + 1 >= argc) cli_die(C, "--exclude needs a pattern");
            if (n_exc >= 64) cli_die(C, "--exclude: at most 64 patterns");
            exc[n_exc++] = argv[++i];
        }
        else if (!strcmp(a, "--token")) {
            if (i + 1 >= argc || !argv[i + 1][0]) cli_die(C, "--token needs a value");
            token = argv[++i];
        }
        else if (!strcmp(a, "--gguf")) {
            if (i + 1 >= argc) cli_die(C, "--gguf needs a file name (as in the repository)");
            gguf = argv[++i];
            size_t n = strlen(gguf);
            if (n < 5 || strcmp(gguf + n - 5, ".gguf")) cli_die(C, "--gguf '%s': not a .gguf file name", gguf);
        }
        else if (!strcmp(a, "--quiet") || !strcmp(a, "-q")) quiet = true;
        else if (a[0] == '-') { usage(stderr); cli_die(C, "unknown option '%s'", a); }
        else if (!spec) spec = a;
        else cli_die(C, "one repository at a time ('%s' and '%s')", spec, a);
    }
    if (!spec) { usage(stderr); cli_die(C, "which repository? (ORG/NAME[@REV])"); }
    if (gguf) {
        if (n_inc) cli_die(C, "--gguf and --include: one or the other");
        /* a first split part NAME-00001-of-NNNNN.gguf brings all parts */
        const char *p1 = strstr(gguf, "-00001-of-");
        if (p1) fmt(gguf_glob, sizeof gguf_glob, "%.*s-[0-9][0-9][0-9][0-9][0-9]-of-%s", (int)(p1 - gguf), gguf, p1 + 10);
        else fmt(gguf_glob, sizeof gguf_glob, "%s", gguf);
        inc[n_inc++] = gguf_glob;
    }
    char repo[256], rev[128], root[PATH_MAX], rdir[PATH_MAX], commit[64];
    if (!parse_spec(spec, repo, sizeof repo, rev, sizeof rev))
        cli_die(C, "'%s' is not ORG/NAME[@REV] (letters, digits, '-', '_', '.')", spec);
    cache_root(root, sizeof root);
    repo_dir(rdir, sizeof rdir, root, repo);
    const char *off = getenv("HF_HUB_OFFLINE");
    if (off && *off && strcmp(off, "0") != 0) {
        char snap[PATH_MAX];
        if (cli_hub_resolve(spec, snap, sizeof snap) != 1)
            cli_die(C, "HF_HUB_OFFLINE is set and %s@%s is not in the cache (%s)", repo, rev, rdir);
        printf("%s\n", snap);
        return 0;
    }
    const char *ep = getenv("HF_ENDPOINT");
    char endpoint[1024];
    fmt(endpoint, sizeof endpoint, "%s", ep && *ep ? ep : "https://huggingface.co");
    size_t el = strlen(endpoint);
    while (el && endpoint[el - 1] == '/') endpoint[--el] = 0;
    if (curl_global_init(CURL_GLOBAL_DEFAULT)) cli_die(C, "libcurl initialization failed");
    struct curl_slist *hdr = auth_headers(token);

    /* the file list */
    char url[4096];
    fmt(url, sizeof url, "%s/api/models/%s/revision/%s?blobs=true", endpoint, repo, rev);
    CURL *c = curl_easy_init();
    if (!c) cli_die(C, "curl_easy_init failed");
    membuf mb = { 0 };
    curl_common(c, hdr);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, mem_write);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &mb);
    CURLcode crc = curl_easy_perform(c);
    long code = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
    curl_easy_cleanup(c);
    if (crc != CURLE_OK) cli_die(C, "%s: %s", url, curl_easy_strerror(crc));
    if (code == 401)
        cli_die(C, "%s: unauthorized (HTTP 401 from %s): a private or gated repository needs a token: set HF_TOKEN "
                   "or pass --token%s (the hub also answers 401 for a repository that does not exist: check the name)",
                repo, url, hdr ? "; the token given was refused" : "");
    if (code == 403)
        cli_die(C, "%s: forbidden (HTTP 403 from %s): a gated repository? accept its terms on the hub, then use a token "
                   "of that account (HF_TOKEN or --token)", repo, url);
    if (code == 404)
        cli_die(C, "%s: no such repository or revision '%s' on %s (HTTP 404 from %s)", repo, rev, endpoint, url);
    if (code != 200) cli_die(C, "%s: HTTP %ld from %s", repo, code, url);
    ds_err e = { 0 };
    json_t *js = NULL;
    if (ds_json_load_buf(url, mb.p ? mb.p : "", mb.n, &js, &e)) cli_die_err(C, &e);
    free(mb.p);
    const char *sha = json_string_value(json_object_get(js, "sha"));
    json_t *sib = json_object_get(js, "siblings");
    if (!sha || !is_hex40(sha) || !json_is_array(sib)) cli_die(C, "%s: unexpected answer (no sha or siblings)", url);
    memcpy(commit, sha, 41);

    char path[PATH_MAX];
    fmt(path, sizeof path, "%s/blobs", rdir);
    if (mkdirs(path)) cli_die(C, "%s: %s", path, strerror(errno));
    fmt(path, sizeof path, "%s/refs", rdir);
    if (mkdirs(path)) cli_die(C, "%s: %s", path, strerror(errno));
    size_t i;
    json_t *it;
    int n_files = 0, n_dl = 0;
    int64_t bytes = 0;
    json_array_foreach(sib, i, it) {
        const char *file = json_string_value(json_object_get(it, "rfilename"));
        if (!file) continue;
        if (!wanted(file, inc, n_inc, exc, n_exc)) continue;
        if (!safe_name(file)) cli_die(C, "refusing the file name '%s' (leaves the snapshot)", file);
        json_t *lfs = json_object_get(it, "lfs");
        const char *oid = lfs ? json_string_value(json_object_get(lfs, "sha256")) : NULL;
        const char *blob = json_string_value(json_object_get(it, "blobId"));
        json_t *jsz = lfs ? json_object_get(lfs, "size") : json_object_get(it, "size");
        int64_t size = json_is_integer(jsz) ? (int64_t)json_integer_value(jsz) : -1;
        const char *id = oid ? oid : blob;
        if (!id || !safe_id(id)) cli_die(C, "%s: no usable blob id (lfs.sha256 or blobId)", file);
        char bpath[PATH_MAX], ipath[PATH_MAX];
        fmt(bpath, sizeof bpath, "%s/blobs/%s", rdir, id);
        fmt(ipath, sizeof ipath, "%s.incomplete", bpath);
        struct stat sb;
        /* one writer per blob (another pull of this repo, or huggingface_hub, which locks
         * the same file): $cache/.locks/models--ORG--NAME/<id>.lock */
        char lpath[PATH_MAX];
        fmt(lpath, sizeof lpath, "%s/.locks/%s/%s.lock", root, strrchr(rdir, '/') + 1, id);
        *strrchr(lpath, '/') = 0;
        if (mkdirs(lpath)) cli_die(C, "%s: %s", lpath, strerror(errno));
        lpath[strlen(lpath)] = '/';
        int lfd = open(lpath, O_RDWR | O_CREAT, 0644);
        if (lfd < 0) cli_die(C, "%s: %s", lpath, strerror(errno));
        if (flock(lfd, LOCK_EX | LOCK_NB)) {
            if (errno != EWOULDBLOCK) cli_die(C, "%s: %s", lpath, strerror(errno));
            if (!quiet) fprintf(stderr, "%s: another download of this file is under way; waiting for it\n", file);
            if (flock(lfd, LOCK_EX)) cli_die(C, "%s: %s", lpath, strerror(errno));
        }
        if (!(stat(bpath, &sb) == 0 && (size < 0 || (int64_t)sb.st_size == size))) {
            fmt(url, sizeof url, "%s/%s/resolve/%s/%s", endpoint, repo, commit, file);
            char err[2 * PATH_MAX];
            if (download(url, ipath, file, size, hdr, err, sizeof err)) cli_die(C, "%s", err);
            if (stat(ipath, &sb) || (size >= 0 && (int64_t)sb.st_size != size))
                cli_die(C, "%s: got %lld bytes, expected %lld; run pull again", file,
                        (long long)(stat(ipath, &sb) ? -1 : sb.st_size), (long long)size);
            if (oid) {
                char hex[65];
                if (sha256_file(ipath, hex)) cli_die(C, "%s: %s", ipath, strerror(errno));
                if (strcmp(hex, oid)) {
                    remove(ipath);
                    cli_die(C, "%s: SHA-256 %s does not match the hub's %s (the download was removed; run pull again)",
                            file, hex, oid);
                }
            }
            if (rename(ipath, bpath)) cli_die(C, "%s: %s", bpath, strerror(errno));
            n_dl++;
            if (!quiet && !isatty(2)) fprintf(stderr, "%s: %lld bytes\n", file, (long long)sb.st_size);
        }
        close(lfd);   /* releases the lock */
        bytes += (int64_t)sb.st_size;
        if (link_snapshot(rdir, commit, file, id)) cli_die(C, "%s: cannot link into the snapshot: %s", file, strerror(errno));
        n_files++;
    }
    json_decref(js);
    if (gguf && n_files == 0) cli_die(C, "%s@%s has no file '%s' (--gguf)", repo, rev, gguf);
    if (strcmp(rev, commit)) {
        char tmp[PATH_MAX];
        fmt(path, sizeof path, "%s/refs/%s", rdir, rev);
        fmt(tmp, sizeof tmp, "%s.tmp%ld", path, (long)getpid());
        FILE *f = fopen(tmp, "w");
        if (!f || fprintf(f, "%s", commit) < 0 || fclose(f) || rename(tmp, path))
            cli_die(C, "%s: %s", path, strerror(errno));
    }
    curl_slist_free_all(hdr);
    curl_global_cleanup();
    if (!quiet)
        fprintf(stderr, "%s@%s (%.12s): %d files, %d downloaded, %.1f MB\n", repo, rev, commit, n_files, n_dl, bytes / 1e6);
    printf("%s/snapshots/%s\n", rdir, commit);
    return 0;
}


/* ------------------------------------------------------------ list and rm */

static int64_t du_total;
static int du_cb(const char *p, const struct stat *sb, int type, struct FTW *ftw) {
    (void)p; (void)ftw;
    if (type == FTW_F) du_total += (int64_t)sb->st_size;
    return 0;
}

/* bytes of the blobs of one cached repository (what it takes on disk; complete blobs only) */
static int64_t blobs_size(const char *rdir, int *n_incomplete) {
    char p[PATH_MAX];
    fmt(p, sizeof p, "%s/blobs", rdir);
    int64_t total = 0;
    *n_incomplete = 0;
    DIR *d = opendir(p);
    for (struct dirent *de; d && (de = readdir(d));) {
        if (de->d_name[0] == '.') continue;
        size_t n = strlen(de->d_name);
        if (n > 11 && !strcmp(de->d_name + n - 11, ".incomplete")) { (*n_incomplete)++; continue; }
        char f[PATH_MAX];
        struct stat sb;
        fmt(f, sizeof f, "%s/%s", p, de->d_name);
        if (stat(f, &sb) == 0 && S_ISREG(sb.st_mode)) total += (int64_t)sb.st_size;
    }
    if (d) closedir(d);
    return total;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

int cmd_list(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        if (cli_is_help(argv[i])) {
            printf("usage: deepseek list\n"
                   "  The models in the Hugging Face cache ($HF_HUB_CACHE, else $HF_HOME/hub, else\n"
                   "  ~/.cache/huggingface/hub; written by `deepseek pull` or huggingface_hub): one line\n"
                   "  each, ORG/NAME, size of its blobs, its refs (REV=COMMIT), and the folder.\n");
            return 0;
        }
        cli_die("list", "unknown argument '%s' (deepseek list --help)", argv[i]);
    }
    char root[PATH_MAX];
    cache_root(root, sizeof root);
    DIR *d = opendir(root);
    if (!d) {
        if (errno == ENOENT) { fprintf(stderr, "list: no models cached (%s does not exist)\n", root); return 0; }
        cli_die("list", "%s: %s", root, strerror(errno));
    }
    char *names[4096];
    int n = 0;
    for (struct dirent *de; (de = readdir(d)) && n < 4096;)
        if (!strncmp(de->d_name, "models--", 8) && strstr(de->d_name + 8, "--")) names[n++] = strdup(de->d_name);
    closedir(d);
    qsort(names, (size_t)n, sizeof names[0], cmp_str);
    int64_t all = 0;
    for (int k = 0; k < n; k++) {
        char repo[512], rdir[PATH_MAX], refs[1024] = "", p[PATH_MAX];
        const char *s = names[k] + 8, *dash = strstr(s, "--");
        fmt(repo, sizeof repo, "%.*s/%s", (int)(dash - s), s, dash + 2);
        fmt(rdir, sizeof rdir, "%s/%s", root, names[k]);
        int n_inc;
        int64_t sz = blobs_size(rdir, &n_inc);
        all += sz;
        fmt(p, sizeof p, "%s/refs", rdir);
        DIR *rd = opendir(p);
        size_t rl = 0;
        for (struct dirent *de; rd && (de = readdir(rd));) {
            char c[64];
            if (de->d_name[0] == '.' || strchr(de->d_name, '.') || !cached_commit(rdir, de->d_name, c)) continue;
            int w = snprintf(refs + rl, sizeof refs - rl, "%s%s=%.12s", rl ? "," : "", de->d_name, c);
            if (w > 0 && (size_t)w < sizeof refs - rl) rl += (size_t)w;
        }
        if (rd) closedir(rd);
        printf("%-40s %10.1f MB  %-24s %s%s\n", repo, sz / 1e6, rl ? refs : "-", rdir,
               n_inc ? "  (unfinished downloads: run pull again)" : "");
        free(names[k]);
    }
    if (n == 0) fprintf(stderr, "list: no models cached in %s\n", root);
    else fprintf(stderr, "%d model%s, %.1f MB in %s\n", n, n == 1 ? "" : "s", all / 1e6, root);
    return 0;
}

static int rm_cb(const char *p, const struct stat *sb, int type, struct FTW *ftw) {
    (void)sb; (void)ftw;
    return (type == FTW_DP ? rmdir(p) : unlink(p)) ? -1 : 0;
}

int cmd_rm(int argc, char **argv) {
    const char *spec = NULL;
    for (int i = 1; i < argc; i++) {
        if (cli_is_help(argv[i])) {
            printf("usage: deepseek rm ORG/NAME\n"
                   "  Removes a model (all its revisions and blobs) from the Hugging Face cache\n"
                   "  (see deepseek list).\n");
            return 0;
        }
        if (argv[i][0] == '-') cli_die("rm", "unknown option '%s'", argv[i]);
        if (spec) cli_die("rm", "one model at a time ('%s' and '%s')", spec, argv[i]);
        spec = argv[i];
    }
    if (!spec) cli_die("rm", "which model? (ORG/NAME; deepseek list shows them)");
    char repo[256], rev[128], root[PATH_MAX], rdir[PATH_MAX], trash[PATH_MAX];
    if (!parse_spec(spec, repo, sizeof repo, rev, sizeof rev) || strchr(spec, '@'))
        cli_die("rm", "'%s' is not ORG/NAME (letters, digits, '-', '_', '.'; a whole model is removed, no @REV)", spec);
    cache_root(root, sizeof root);
    repo_dir(rdir, sizeof rdir, root, repo);
    struct stat sb;
    if (lstat(rdir, &sb) || !S_ISDIR(sb.st_mode))
        cli_die("rm", "%s is not in the cache (no %s; deepseek list shows what is)", repo, rdir);
    /* first out of sight in one rename (a half-removed model never looks cached), then deleted */
    fmt(trash, sizeof trash, "%s/.trash-%s-%ld", root, strrchr(rdir, '/') + 1, (long)getpid());
    if (rename(rdir, trash)) cli_die("rm", "%s: %s", rdir, strerror(errno));
    du_total = 0;
    nftw(trash, du_cb, 16, FTW_PHYS);
    int64_t freed = du_total;
    if (nftw(trash, rm_cb, 16, FTW_DEPTH | FTW_PHYS)) cli_die("rm", "%s: could not delete all of it: %s", trash, strerror(errno));
    char locks[PATH_MAX];
    fmt(locks, sizeof locks, "%s/.locks/%s", root, strrchr(rdir, '/') + 1);
    if (lstat(locks, &sb) == 0) nftw(locks, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
    fprintf(stderr, "rm: removed %s (%.1f MB) from %s\n", repo, freed / 1e6, root);
    return 0;
}
