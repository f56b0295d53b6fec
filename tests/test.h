/*
 * test.h - the tiny test harness. Each tests/test_*.c defines tests with
 * TEST(name) { ... CHECK(...); } and they register themselves; run_tests
 * runs all of them, or those whose names contain an argument.
 */
#ifndef DS_TEST_H
#define DS_TEST_H

#include <math.h>
#include <stdio.h>

typedef void (*ds_test_fn)(void);
void ds_test_register(const char *name, ds_test_fn fn);
void ds_test_fail(const char *file, int line, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
extern int ds_test_failures;  /* failures in the running test */
/* Marks the running test skipped (what it needs is missing: a CPU feature,
 * python3); the runner prints "skip" and the reason and counts it, unless a
 * check of that test also failed. */
void ds_test_skip(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#define TEST(name)                                                                  \
    static void name(void);                                                         \
    __attribute__((constructor)) static void reg_##name(void) { ds_test_register(#name, name); } \
    static void name(void)

/* Running maximum of errors that keeps a NaN (fmax would drop it, and a
 * NaN result would then pass any "max error <= tol" check). */
static inline double ds_max_err(double m, double d) { return (m != m || d != d) ? (double)NAN : (d > m ? d : m); }

#define SKIP(...) do { ds_test_skip(__VA_ARGS__); return; } while (0)

#define CHECK(c) do { if (!(c)) ds_test_fail(__FILE__, __LINE__, "CHECK(%s)", #c); } while (0)
#define CHECK_MSG(c, ...) do { if (!(c)) ds_test_fail(__FILE__, __LINE__, __VA_ARGS__); } while (0)
#define CHECK_EQ_INT(a, b) do { long long _a = (long long)(a), _b = (long long)(b); \
    if (_a != _b) ds_test_fail(__FILE__, __LINE__, "%s = %lld, expected %s = %lld", #a, _a, #b, _b); } while (0)
#define CHECK_NEAR(a, b, tol) do { double _a = (a), _b = (b); \
    if (!(fabs(_a - _b) <= (tol))) ds_test_fail(__FILE__, __LINE__, "%s = %.9g vs %s = %.9g (tol %g)", #a, _a, #b, _b, (double)(tol)); } while (0)

/* Fixture path helper: returns "tests/fixtures/<name>" (static buffer). */
const char *fixture(const char *name);
/* Path to ../shared (tests may read it; the product never does). */
const char *shared_path(const char *rel);

#endif
