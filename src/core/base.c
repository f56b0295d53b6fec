/*
 * base.c - error struct, asserts, aligned allocation, clock.
 */
#include "base.h"
#include "cpu.h"

#include <immintrin.h>
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

__attribute__((target("avx2"))) static uint64_t read_stream_avx2(const uint8_t *p, size_t n) {
    __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
    for (size_t i = 0; i < n; i += 128) {
        a0 = _mm256_xor_si256(a0, _mm256_load_si256((const __m256i *)(p + i)));
        a1 = _mm256_xor_si256(a1, _mm256_load_si256((const __m256i *)(p + i + 32)));
        a2 = _mm256_xor_si256(a2, _mm256_load_si256((const __m256i *)(p + i + 64)));
        a3 = _mm256_xor_si256(a3, _mm256_load_si256((const __m256i *)(p + i + 96)));
    }
    a0 = _mm256_xor_si256(_mm256_xor_si256(a0, a1), _mm256_xor_si256(a2, a3));
    return (uint64_t)_mm256_extract_epi64(a0, 0) ^ (uint64_t)_mm256_extract_epi64(a0, 3);
}

uint64_t ds_read_stream(const void *p, size_t n) {
    if (ds_cpu_avx2_fma()) return read_stream_avx2(p, n);
    const uint64_t *w = p;
    uint64_t a = 0;
    for (size_t k = 0; k + 8 <= n / 8; k += 8) a += w[k] ^ w[k + 1] ^ w[k + 2] ^ w[k + 3] ^ w[k + 4] ^ w[k + 5] ^ w[k + 6] ^ w[k + 7];
    return a;
}
