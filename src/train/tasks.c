/*
 * tasks.c - the built-in problem generators (arithmetic, Countdown), their
 * step-by-step solutions, user problems from JSONL, the train / eval split
 * by key hash, and completion scoring (see tasks.h).
 */
#include "tasks.h"
#include "rewards.h"
#include "../core/mmap_file.h"
#include "../io/json.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

ds_task_kind ds_task_kind_of(const char *name) {
    if (!strcmp(name, "arithmetic")) return DS_TASK_ARITHMETIC;
    if (!strcmp(name, "countdown")) return DS_TASK_COUNTDOWN;
    return DS_TASK_FILE;
}

ds_split ds_task_split_of(const char *key) {
    uint64_t h = 1469598103934665603ull;
    for (const unsigned char *p = (const unsigned char *)key; *p; p++) { h ^= *p; h *= 1099511628211ull; }
    return h % 10 == 0 ? DS_SPLIT_EVAL : DS_SPLIT_TRAIN;
}

static int64_t draw(ds_rng *r, int64_t lo, int64_t hi) {   /* uniform in [lo, hi] */
    return lo + (int64_t)(ds_rng_u64(r) % (uint64_t)(hi - lo + 1));
}

static int64_t pow10i(int d) {
    int64_t x = 1;
    while (d-- > 0) x *= 10;
    return x;
}

static void gen_arith(ds_problem *p, const ds_task_opts *o, ds_rng *r) {
    int d = o->digits;
    const char *ops = o->ops;
    p->op = ops[draw(r, 0, (int64_t)strlen(ops) - 1)];
    p->a = draw(r, 0, pow10i(d) - 1);
    p->b = draw(r, 0, pow10i(p->op == '*' ? DS_MIN(d, 2) : d) - 1);
    if (p->op == '-' && p->a < p->b) { int64_t t = p->a; p->a = p->b; p->b = t; }
    int64_t v = p->op == '+' ? p->a + p->b : p->op == '-' ? p->a - p->b : p->a * p->b;
    snprintf(p->key, sizeof p->key, "%lld%c%lld", (long long)p->a, p->op, (long long)p->b);
    snprintf(p->prompt, sizeof p->prompt, "What is %lld %c %lld?", (long long)p->a, p->op, (long long)p->b);
    snprintf(p->answer, sizeof p->answer, "%lld", (long long)v);
}

/* Countdown with a known solution: combine a random subset of the numbers
 * pairwise (positive integer intermediates) down to one value, the target. */
static bool gen_countdown_once(ds_problem *p, const ds_task_opts *o, ds_rng *r) {
    int n = o->cd_numbers;
    p->countdown = true;
    p->n_nums = n;
    for (int i = 0; i < n; i++) p->nums[i] = draw(r, 1, o->cd_max);
    int k = (int)draw(r, 2, n);
    int64_t val[DS_CD_MAX];
    char expr[DS_CD_MAX][128];
    int idx[DS_CD_MAX];
    for (int i = 0; i < n; i++) idx[i] = i;
    for (int i = 0; i < k; i++) {   /* a random k-subset, in random order */
        int j = (int)draw(r, i, n - 1), t = idx[i];
        idx[i] = idx[j]; idx[j] = t;
        val[i] = p->nums[idx[i]];
        snprintf(expr[i], sizeof expr[i], "%lld", (long long)val[i]);
    }
    p->n_steps = 0;
    for (int m = k; m > 1; m--) {
        int i = (int)draw(r, 0, m - 1), j = (int)draw(r, 0, m - 2);
        if (j >= i) j++;
        int64_t a = val[i], b = val[j], c;
        char op = "+-*/"[draw(r, 0, 3)];
        if (op == '-' && a < b) { int64_t t = a; a = b; b = t; int u = i; i = j; j = u; }
        if (op == '/' && (b <= 1 || a % b)) op = '+';
        c = op == '+' ? a + b : op == '-' ? a - b : op == '*' ? a * b : a / b;
        if (c <= 0 || c > 9999) return false;
        char e[128];
        if (snprintf(e, sizeof e, "(%s %c %s)", expr[i], op, expr[j]) >= (int)sizeof e) return false;
        snprintf(p->steps[p->n_steps++], sizeof p->steps[0], "%lld %c %lld = %lld", (long long)a, op, (long long)b,
                 (long long)c);
        /* replace i and j by the result, keeping the first m-1 slots */
        int lo = DS_MIN(i, j), hi = DS_MAX(i, j);
        val[lo] = c;
        strcpy(expr[lo], e);
        if (hi != m - 1) {   /* the last slot moves into hi (not onto itself: strcpy's ranges must not overlap) */
            val[hi] = val[m - 1];
            strcpy(expr[hi], expr[m - 1]);
        }
    }
    p->target = val[0];
    if (p->target > 999) return false;
    for (int i = 0; i < n; i++)
        if (p->nums[i] == p->target) return false;   /* no trivial problems */
    /* the solution without its outer parentheses */
    size_t L = strlen(expr[0]);
    if (expr[0][0] == '(' && L >= 2) { memcpy(p->answer, expr[0] + 1, L - 2); p->answer[L - 2] = 0; }
    else snprintf(p->answer, sizeof p->answer, "%s", expr[0]);
    char nums[128] = "", keyn[96] = "";
    int64_t sorted[DS_CD_MAX];
    memcpy(sorted, p->nums, sizeof sorted);
    for (int i = 1; i < n; i++)
        for (int j = i; j > 0 && sorted[j - 1] > sorted[j]; j--) { int64_t t = sorted[j]; sorted[j] = sorted[j - 1]; sorted[j - 1] = t; }
    for (int i = 0; i < n; i++) {
        size_t l = strlen(nums), lk = strlen(keyn);
        snprintf(nums + l, sizeof nums - l, "%s%lld", i ? ", " : "", (long long)p->nums[i]);
        snprintf(keyn + lk, sizeof keyn - lk, "%s%lld", i ? "," : "", (long long)sorted[i]);
    }
    snprintf(p->key, sizeof p->key, "cd:%s=%lld", keyn, (long long)p->target);
    snprintf(p->prompt, sizeof p->prompt, "Using the numbers %s (each at most once) and + - * /, make %lld.", nums,
             (long long)p->target);
    return true;
}

void ds_task_generate(ds_problem *p, ds_task_kind kind, const ds_task_opts *o, ds_split split, ds_rng *r) {
    ds_task_opts d = { 3, "+-", 4, 25 };
    if (o) {
        if (o->digits > 0) d.digits = DS_MIN(o->digits, 9);
        if (o->ops && o->ops[0]) d.ops = o->ops;
        if (o->cd_numbers >= 2) d.cd_numbers = DS_MIN(o->cd_numbers, DS_CD_MAX);
        if (o->cd_max >= 2) d.cd_max = DS_MIN(o->cd_max, 1000);
    }
    for (int tries = 0;; tries++) {
        memset(p, 0, sizeof *p);
        bool okp = true;
        if (kind == DS_TASK_COUNTDOWN) okp = gen_countdown_once(p, &d, r);
        else gen_arith(p, &d, r);
        /* a space too small to hold the split (1-digit, one operator): give up on the split after many tries */
        if (okp && (ds_task_split_of(p->key) == split || tries > 100000)) return;
    }
}

/* ---------------------------------------------------------------- solutions */

static void put(char *out, size_t cap, size_t *n, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static void put(char *out, size_t cap, size_t *n, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    if (*n < cap) {
        int k = vsnprintf(out + *n, cap - *n, fmt, ap);
        if (k > 0) *n += (size_t)k;
    }
    va_end(ap);
}

bool ds_task_solution(const ds_problem *p, char *out, size_t cap) {
    size_t n = 0;
    if (cap) out[0] = 0;
    if (p->countdown) {
        if (p->n_steps == 0) return false;
        put(out, cap, &n, "<think>\n");
        for (int i = 0; i < p->n_steps; i++) put(out, cap, &n, "%s\n", p->steps[i]);
        put(out, cap, &n, "</think>\n<answer>%s</answer>", p->answer);
        return n < cap;
    }
    if (!p->op) return false;
    long long a = p->a, b = p->b;
    put(out, cap, &n, "<think>\n");
    if (p->op == '+' || p->op == '-') {
        int carry = 0;
        for (long long x = a, y = b; x > 0 || y > 0 || (p->op == '+' && carry); x /= 10, y /= 10) {
            int da = (int)(x % 10), db = (int)(y % 10);
            if (p->op == '+') {
                int s = da + db + carry;
                if (carry) put(out, cap, &n, "%d + %d + 1 = %d", da, db, s);
                else put(out, cap, &n, "%d + %d = %d", da, db, s);
                carry = s >= 10;
                put(out, cap, &n, carry ? ", write %d carry 1\n" : ", write %d\n", s % 10);
            } else {
                int v = da - db - carry;
                if (carry) put(out, cap, &n, "%d - %d - 1", da, db);
                else put(out, cap, &n, "%d - %d", da, db);
                if (v < 0) put(out, cap, &n, " + 10 = %d, write %d borrow 1\n", v + 10, v + 10);
                else put(out, cap, &n, " = %d, write %d\n", v, v);
                carry = v < 0;
            }
        }
    } else {
        long long sum = 0, place = 1;
        int parts = 0;
        for (long long y = b; y > 0 || place == 1; y /= 10, place *= 10) {
            long long d = y % 10 * place;
            put(out, cap, &n, "%lld * %lld = %lld\n", a, d, a * d);
            if (parts++) put(out, cap, &n, "%lld + %lld = %lld\n", sum, a * d, sum + a * d);
            sum += a * d;
            if (y < 10) break;
        }
    }
    put(out, cap, &n, "</think>\n<answer>%s</answer>", p->answer);
    return n < cap;
}

/* ---------------------------------------------------------------- scoring */

void ds_task_score(const ds_problem *p, const char *completion, bool think_open, double *acc, double *fmt, char *ans,
                   size_t cap) {
    char a[256];
    bool got = ds_answer_extract(completion, a, sizeof a);
    if (!got) a[0] = 0;
    if (ans && cap) snprintf(ans, cap, "%s", a);
    if (acc) *acc = got && (p->countdown ? ds_countdown_check(a, p->nums, p->n_nums, p->target) : ds_answer_equal(a, p->answer))
                        ? 1.0 : 0.0;
    if (fmt) *fmt = ds_reward_format(completion, think_open);
}

/* ---------------------------------------------------------------- user problems */

static int load_line(ds_problem *p, const char *path, int64_t ln, const char *s, size_t len, ds_err *e) {
    char what[1100];
    snprintf(what, sizeof what, "%s:%lld", path, (long long)ln);
    json_t *o;
    int rc = ds_json_load_buf(what, s, len, &o, e);
    if (rc) return rc;
    memset(p, 0, sizeof *p);
    const char *prompt = NULL, *answer = NULL;
    if (!json_is_object(o)) { rc = ds_err_set(e, DS_EFORMAT, "%s: not a JSON object", what); goto out; }
    if ((rc = ds_json_get_str(o, what, "prompt", true, &prompt, e))) goto out;
    if (strlen(prompt) >= sizeof p->prompt || !prompt[0]) {
        rc = ds_err_set(e, DS_EINVAL, "%s: field 'prompt' is empty or longer than %zu bytes", what, sizeof p->prompt - 1);
        goto out;
    }
    strcpy(p->prompt, prompt);
    const json_t *nums = json_object_get(o, "numbers");
    if (nums) {
        int64_t t;
        if ((rc = ds_json_get_int(o, what, "target", true, 0, INT64_MAX / 4, &t, e))) goto out;
        if (!json_is_array(nums) || json_array_size(nums) < 1 || json_array_size(nums) > DS_CD_MAX) {
            rc = ds_err_set(e, DS_EINVAL, "%s: field 'numbers' must be an array of 1..%d integers", what, DS_CD_MAX);
            goto out;
        }
        p->countdown = true;
        p->target = t;
        p->n_nums = (int)json_array_size(nums);
        for (int i = 0; i < p->n_nums; i++) {
            const json_t *v = json_array_get(nums, (size_t)i);
            if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > 999999999) {
                rc = ds_err_set(e, DS_EINVAL, "%s: numbers[%d] must be an integer in [0, 999999999]", what, i);
                goto out;
            }
            p->nums[i] = json_integer_value(v);
        }
        snprintf(p->answer, sizeof p->answer, "%lld", (long long)t);
    } else {
        const json_t *a = json_object_get(o, "answer");
        if (json_is_integer(a)) snprintf(p->answer, sizeof p->answer, "%lld", (long long)json_integer_value(a));
        else {
            if ((rc = ds_json_get_str(o, what, "answer", true, &answer, e))) goto out;
            if (strlen(answer) >= sizeof p->answer || !answer[0]) {
                rc = ds_err_set(e, DS_EINVAL, "%s: field 'answer' is empty or longer than %zu bytes", what, sizeof p->answer - 1);
                goto out;
            }
            strcpy(p->answer, answer);
        }
    }
out:
    json_decref(o);
    return rc;
}

int ds_task_load_jsonl(const char *path, ds_problem **out, int64_t *n, ds_err *e) {
    *out = NULL;
    *n = 0;
    char *buf;
    size_t len;
    int rc = ds_read_file(path, (size_t)1 << 30, &buf, &len, e);
    if (rc) return rc;
    int64_t cap = 0, ln = 0;
    ds_problem *ps = NULL;
    for (size_t i = 0; i < len;) {
        size_t j = i;
        while (j < len && buf[j] != '\n') j++;
        ln++;
        size_t k = i;
        while (k < j && (buf[k] == ' ' || buf[k] == '\t' || buf[k] == '\r')) k++;
        if (k < j) {
            if (*n == cap) {
                cap = cap ? cap * 2 : 64;
                ds_problem *q = realloc(ps, (size_t)cap * sizeof *q);
                if (!q) { rc = ds_err_set(e, DS_ENOMEM, "out of memory"); break; }
                ps = q;
            }
            if ((rc = load_line(&ps[*n], path, ln, buf + i, j - i, e))) break;
            (*n)++;
        }
        i = j + 1;
    }
    free(buf);
    if (!rc && *n == 0) rc = ds_err_set(e, DS_EINVAL, "%s: no problems (one JSON object per line)", path);
    if (rc) { free(ps); *n = 0; return rc; }
    *out = ps;
    return DS_OK;
}
