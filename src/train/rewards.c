/*
 * rewards.c - answer extraction, answer equality, the format reward and
 * the Countdown expression checker (see rewards.h).
 */
#include "rewards.h"

#include <ctype.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------- helpers */

static const char *skip_ws(const char *p) {
    while (*p && isspace((unsigned char)*p)) p++;
    return p;
}

/* last occurrence of needle in [s, end) */
static const char *rfind(const char *s, const char *end, const char *needle) {
    size_t n = strlen(needle);
    const char *last = NULL;
    for (const char *p = s; p + n <= end; p++)
        if (!memcmp(p, needle, n)) last = p;
    return last;
}

static int count(const char *s, const char *needle) {
    int c = 0;
    size_t n = strlen(needle);
    for (const char *p = strstr(s, needle); p; p = strstr(p + n, needle)) c++;
    return c;
}

static void copy_trim(char *out, size_t cap, const char *b, const char *e) {
    while (b < e && isspace((unsigned char)*b)) b++;
    while (e > b && isspace((unsigned char)e[-1])) e--;
    size_t n = (size_t)(e - b);
    if (cap == 0) return;
    if (n >= cap) n = cap - 1;
    memcpy(out, b, n);
    out[n] = 0;
}

/* The closing brace matching the '{' at open, or NULL. */
static const char *match_brace(const char *open) {
    int depth = 0;
    for (const char *p = open; *p; p++) {
        if (*p == '{') depth++;
        else if (*p == '}' && --depth == 0) return p;
    }
    return NULL;
}

/* The last \boxed{…} with a matching brace: its '{' in *open, '}' returned. */
static const char *last_boxed(const char *text, const char **open) {
    const char *best = NULL;
    for (const char *p = strstr(text, "\\boxed{"); p; p = strstr(p + 1, "\\boxed{")) {
        const char *o = p + 6, *c = match_brace(o);
        if (c) { best = c; *open = o; }
    }
    return best;
}

/* ---------------------------------------------------------------- extraction */

bool ds_answer_extract(const char *text, char *out, size_t cap) {
    const char *end = text + strlen(text);
    const char *close = rfind(text, end, "</answer>");
    if (close) {
        const char *open = rfind(text, close, "<answer>");
        if (open) { copy_trim(out, cap, open + 8, close); return true; }
    }
    const char *o = NULL, *c = last_boxed(text, &o);
    if (c) { copy_trim(out, cap, o + 1, c); return true; }
    return false;
}

/* ---------------------------------------------------------------- numbers */

/* An integer with optional sign and optional 1,234,567 grouping: canonical
 * digits (no leading zeros, "-" only for non-zero) into dig. */
static bool parse_int_str(const char *s, char *dig, size_t cap) {
    bool neg = false;
    if (*s == '+' || *s == '-') neg = *s++ == '-';
    if (!isdigit((unsigned char)*s)) return false;
    char buf[256];
    size_t n = 0;
    const char *p = s;
    bool grouped = strchr(s, ',') != NULL, first = true;
    int run = 0;   /* digits since the last comma: the first group 1-3, the others exactly 3 */
    for (; *p; p++) {
        if (isdigit((unsigned char)*p)) {
            if (n + 1 >= sizeof buf) return false;
            buf[n++] = *p;
            run++;
        } else if (*p == ',') {
            if (first ? run < 1 || run > 3 : run != 3) return false;
            first = false;
            run = 0;
        } else {
            return false;
        }
    }
    if (grouped && run != 3) return false;
    size_t i = 0;
    while (i + 1 < n && buf[i] == '0') i++;
    bool zero = n - i == 1 && buf[i] == '0';
    size_t k = 0;
    if (neg && !zero) { if (k + 1 >= cap) return false; dig[k++] = '-'; }
    if (k + (n - i) + 1 > cap) return false;
    memcpy(dig + k, buf + i, n - i);
    dig[k + n - i] = 0;
    return true;
}

/* A decimal [+-]digits[.digits] (no exponent) or fraction p/q of integers. */
static bool parse_num(const char *s, double *v) {
    char dig[300];
    const char *slash = strchr(s, '/');
    if (slash) {
        char a[128], b[128];
        size_t la = (size_t)(slash - s);
        if (la == 0 || la >= sizeof a || strlen(slash + 1) >= sizeof b) return false;
        memcpy(a, s, la); a[la] = 0;
        strcpy(b, slash + 1);
        double x, y;
        if (!parse_num(a, &x) || !parse_num(b, &y) || strchr(a, '/') || strchr(b, '/') || y == 0) return false;
        *v = x / y;
        return isfinite(*v);
    }
    if (parse_int_str(s, dig, sizeof dig)) { *v = strtod(dig, NULL); return isfinite(*v); }
    const char *p = s;
    if (*p == '+' || *p == '-') p++;
    int digits = 0, dots = 0;
    for (const char *q = p; *q; q++) {
        if (isdigit((unsigned char)*q)) digits++;
        else if (*q == '.') dots++;
        else return false;
    }
    if (digits == 0 || dots != 1) return false;
    *v = strtod(s, NULL);
    return isfinite(*v);
}

bool ds_answer_equal(const char *got, const char *want) {
    char a[256], b[256];
    copy_trim(a, sizeof a, got, got + strlen(got));
    copy_trim(b, sizeof b, want, want + strlen(want));
    if (!strcmp(a, b)) return a[0] != 0;
    char da[300], db[300];
    if (parse_int_str(a, da, sizeof da) && parse_int_str(b, db, sizeof db)) return !strcmp(da, db);
    double x, y;
    if (!parse_num(a, &x) || !parse_num(b, &y)) return false;
    return fabs(x - y) <= 1e-9 * fmax(1.0, fmax(fabs(x), fabs(y)));
}

/* ---------------------------------------------------------------- format */

double ds_reward_format(const char *text, bool think_open) {
    const char *p = skip_ws(text);
    if (!think_open) {
        if (strncmp(p, "<think>", 7)) return 0.0;
        p += 7;
    }
    if (count(p, "<think>") != 0 || count(p, "</think>") != 1) return 0.0;
    const char *r = skip_ws(strstr(p, "</think>") + 8);
    const char *end = r + strlen(r);
    while (end > r && isspace((unsigned char)end[-1])) end--;
    if (end == r) return 0.0;
    int na = count(r, "<answer>"), nc = count(r, "</answer>");
    if (na || nc) {
        if (na != 1 || nc != 1 || strncmp(r, "<answer>", 8)) return 0.0;
        if (end - r < 17 || memcmp(end - 9, "</answer>", 9)) return 0.0;
        const char *b = skip_ws(r + 8);
        return b < end - 9 ? 1.0 : 0.0;
    }
    const char *o = NULL, *c = last_boxed(r, &o);
    if (!c || c + 1 != end) return 0.0;
    return skip_ws(o + 1) < c ? 1.0 : 0.0;
}

/* ---------------------------------------------------------------- countdown */

typedef struct { int64_t n, d; } rat;   /* d > 0, reduced */

typedef struct {
    const char *p;
    int64_t used[16];
    int n_used;
    bool bad;
    int depth;
} cd_parser;

static rat mk(cd_parser *ps, __int128 n, __int128 d) {
    if (d == 0) { ps->bad = true; return (rat){ 0, 1 }; }
    if (d < 0) { n = -n; d = -d; }
    __int128 a = n < 0 ? -n : n, b = d;
    while (b) { __int128 t = a % b; a = b; b = t; }
    if (a == 0) a = 1;
    n /= a; d /= a;
    if (n > INT64_MAX || n < -INT64_MAX || d > INT64_MAX) { ps->bad = true; return (rat){ 0, 1 }; }
    return (rat){ (int64_t)n, (int64_t)d };
}

static void cd_ws(cd_parser *ps) {
    while (*ps->p == ' ' || *ps->p == '\t' || *ps->p == '\n') ps->p++;
}

/* operator at p: '+', '-', '*', '/' (ASCII, ×, ÷, −, x); length in *len */
static int cd_op(const char *p, int *len) {
    *len = 1;
    if (*p == '+' || *p == '-' || *p == '*' || *p == '/') return *p;
    if (!strncmp(p, "\xc3\x97", 2)) { *len = 2; return '*'; }            /* × */
    if (!strncmp(p, "\xc3\xb7", 2)) { *len = 2; return '/'; }            /* ÷ */
    if (!strncmp(p, "\xe2\x88\x92", 3)) { *len = 3; return '-'; }        /* − */
    return 0;
}

static rat cd_expr(cd_parser *ps);

static rat cd_atom(cd_parser *ps) {
    cd_ws(ps);
    if (ps->bad) return (rat){ 0, 1 };
    if (*ps->p == '(') {
        if (++ps->depth > 64) { ps->bad = true; return (rat){ 0, 1 }; }
        ps->p++;
        rat v = cd_expr(ps);
        cd_ws(ps);
        if (*ps->p != ')') { ps->bad = true; return v; }
        ps->p++;
        ps->depth--;
        return v;
    }
    if (!isdigit((unsigned char)*ps->p)) { ps->bad = true; return (rat){ 0, 1 }; }
    int64_t v = 0;
    int nd = 0;
    while (isdigit((unsigned char)*ps->p)) {
        if (++nd > 12) { ps->bad = true; return (rat){ 0, 1 }; }
        v = v * 10 + (*ps->p++ - '0');
    }
    if (ps->n_used >= 16) { ps->bad = true; return (rat){ 0, 1 }; }
    ps->used[ps->n_used++] = v;
    return (rat){ v, 1 };
}

static rat cd_term(cd_parser *ps) {
    rat a = cd_atom(ps);
    for (;;) {
        cd_ws(ps);
        int len, op = cd_op(ps->p, &len);
        if (ps->bad || (op != '*' && op != '/')) return a;
        ps->p += len;
        rat b = cd_atom(ps);
        if (op == '*') a = mk(ps, (__int128)a.n * b.n, (__int128)a.d * b.d);
        else a = mk(ps, (__int128)a.n * b.d, (__int128)a.d * b.n);
    }
}

static rat cd_expr(cd_parser *ps) {
    rat a = cd_term(ps);
    for (;;) {
        cd_ws(ps);
        int len, op = cd_op(ps->p, &len);
        if (ps->bad || (op != '+' && op != '-')) return a;
        ps->p += len;
        rat b = cd_term(ps);
        __int128 x = (__int128)a.n * b.d, y = (__int128)b.n * a.d;
        a = mk(ps, op == '+' ? x + y : x - y, (__int128)a.d * b.d);
    }
}

bool ds_countdown_check(const char *expr, const int64_t *nums, int n, int64_t target) {
    if (strlen(expr) > 512) return false;
    cd_parser ps = { .p = expr };
    rat v = cd_expr(&ps);
    cd_ws(&ps);
    if (*ps.p == '=') {   /* "… = target" */
        ps.p++;
        cd_ws(&ps);
        char *e;
        long long t = strtoll(ps.p, &e, 10);
        if (e == ps.p || t != target) return false;
        ps.p = e;
        cd_ws(&ps);
    }
    if (ps.bad || *ps.p || ps.n_used == 0) return false;
    if (v.d != 1 || v.n != target) return false;
    bool taken[16] = { false };
    for (int i = 0; i < ps.n_used; i++) {
        int j = 0;
        while (j < n && j < 16 && (taken[j] || nums[j] != ps.used[i])) j++;
        if (j >= n || j >= 16) return false;
        taken[j] = true;
    }
    return true;
}
