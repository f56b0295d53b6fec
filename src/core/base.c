/*
 * base.c - error struct, asserts, aligned allocation, clock.
 */
#include "base.h"
#include "cpu.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <string.h>
#include <time.h>

int ds_err_set(ds_err *e, int code, const char *fmt, ...) {
    if (e && e->code == DS_OK) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(e->msg, sizeof e->msg, fmt, ap);
        va_end(ap);
        e->code = code;
    }
    return code;
}

void ds_err_clear(ds_err *e) {
    if (e) { e->code = DS_OK; e->msg[0] = 0; }
}

const char *ds_status_str(int code) {
    switch (code) {
    case DS_OK: return "ok";
    case DS_EIO: return "i/o error";
    case DS_EFORMAT: return "malformed input";
    case DS_ENOMEM: return "out of memory";
    case DS_EINVAL: return "invalid argument";
    case DS_ERANGE: return "out of range";
    case DS_ENOTFOUND: return "not found";
    case DS_EUNSUPPORTED: return "unsupported";
    case DS_EINTERRUPTED: return "interrupted";
    default: return "unknown error";
    }
}

void ds_assert_fail(const char *file, int line, const char *expr) {
    fprintf(stderr, "%s:%d: internal error: assertion failed: %s\n", file, line, expr);
    abort();
}

/* n bytes rounded up to a multiple of align (a power of two), aligned to it, zero-filled if zero */
static void *alloc_aligned(size_t n, size_t align, bool huge, bool zero) {
    size_t rounded;
    if (n == 0) n = 1;
    if (!ds_size_add(n, align - 1, &rounded)) return NULL;
    rounded &= ~(align - 1);
    void *p = aligned_alloc(align, rounded);
    if (!p) return NULL;
#ifdef MADV_HUGEPAGE
    if (huge) (void)madvise(p, rounded, MADV_HUGEPAGE);   /* fails harmlessly where THP is off */
#else
    (void)huge;
#endif
    if (zero) memset(p, 0, rounded);
    return p;
}

void *ds_alloc(size_t n) { return alloc_aligned(n, 64, false, true); }

void *ds_alloc_huge(size_t n) {
    const size_t huge = (size_t)2 << 20;
    return n < huge ? ds_alloc(n) : alloc_aligned(n, huge, true, true);
}

void *ds_alloc_huge_nozero(size_t n) {
    const size_t huge = (size_t)2 << 20;
    return n < huge ? alloc_aligned(n, 64, false, false) : alloc_aligned(n, huge, true, false);
}

void ds_free(void *p) { free(p); }

double ds_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

bool ds_cpu_avx2_fma(void) { return ds_isa_level() >= DS_ISA_AVX2; }
