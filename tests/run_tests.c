/*
 * run_tests.c - runs the registered tests: ./build/tests/run_tests [filter...] [-exclude...]
 */
#include "test.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/thread.h"
#include "tensor/ops.h"

#define MAX_TESTS 1024

typedef struct { const char *name; ds_test_fn fn; } entry;
static entry g_tests[MAX_TESTS];
static int g_n, g_dropped;
int ds_test_failures;
static int g_skipped;          /* the running test called ds_test_skip */
static char g_skip_why[256];

void ds_test_register(const char *name, ds_test_fn fn) {
    if (g_n < MAX_TESTS) g_tests[g_n++] = (entry){ name, fn };
    else g_dropped++;
}

void ds_test_skip(const char *fmt, ...) {
    g_skipped = 1;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g_skip_why, sizeof g_skip_why, fmt, ap);
    va_end(ap);
}

void ds_test_fail(const char *file, int line, const char *fmt, ...) {
    ds_test_failures++;
    if (ds_test_failures > 20) return;
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "    %s:%d: ", file, line);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
}

const char *fixture(const char *name) {
    static char buf[4096];
    snprintf(buf, sizeof buf, "tests/fixtures/%s", name);
    return buf;
}

const char *shared_path(const char *rel) {
    static char buf[4096];
    const char *root = getenv("DS_SHARED");
    snprintf(buf, sizeof buf, "%s/%s", root ? root : "../shared", rel);
    return buf;
}

static int cmp_entry(const void *a, const void *b) {
    return strcmp(((const entry *)a)->name, ((const entry *)b)->name);
}

int main(int argc, char **argv) {
    if (g_dropped) {
        fprintf(stderr, "run_tests: %d tests registered beyond the table's %d entries; raise MAX_TESTS in tests/run_tests.c\n",
                g_dropped, MAX_TESTS);
        return 2;
    }
    ds_threads_set(2);
    qsort(g_tests, (size_t)g_n, sizeof g_tests[0], cmp_entry);
    int run = 0, failed = 0, skipped = 0;
    for (int i = 0; i < g_n; i++) {
        /* arguments: run the tests whose names contain one of them (all when none is
         * given); -PART leaves out the tests whose names contain PART */
        int want = 1, drop = 0;
        for (int a = 1; a < argc; a++) {
            if (argv[a][0] == '-' && argv[a][1]) drop |= strstr(g_tests[i].name, argv[a] + 1) != NULL;
            else want = 0;
        }
        for (int a = 1; a < argc && !want; a++)
            if (argv[a][0] != '-' && strstr(g_tests[i].name, argv[a])) want = 1;
        if (!want || drop) continue;
        ds_test_failures = 0;
        g_skipped = 0;
        g_skip_why[0] = 0;
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        g_tests[i].fn();
        clock_gettime(CLOCK_MONOTONIC, &t1);
        double ms = (t1.tv_sec - t0.tv_sec) * 1e3 + (t1.tv_nsec - t0.tv_nsec) / 1e6;
        run++;
        if (ds_test_failures) failed++;
        else if (g_skipped) skipped++;
        printf("%s %-48s %8.1f ms%s%s\n", ds_test_failures ? "FAIL" : g_skipped ? "skip" : "ok  ", g_tests[i].name, ms,
               g_skipped ? "  skipped: " : "", g_skipped ? g_skip_why : "");
        fflush(stdout);
    }
    ds_ops_cleanup();
    printf("%d tests, %d failed, %d skipped\n", run, failed, skipped);
    return failed ? 1 : 0;
}
