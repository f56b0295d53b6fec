/*
 * read_probe.h - bench's read-bandwidth probe (cmd_bench.c) for the manual
 * streaming tools (bench_gemv_stream.c, bench_pass_sched.c): 256-bit
 * streaming loads into 4 accumulators, the loop `deepseek bench` times
 * (cmd_bench.c's bw_sum_avx2, repeated here on purpose: the tools link the
 * library, not the CLI); and the buffers they stream, on huge pages as the
 * model's repacked weights are.
 */
#ifndef DS_TOOLS_READ_PROBE_H
#define DS_TOOLS_READ_PROBE_H

#include <immintrin.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

__attribute__((target("avx2"))) static inline uint64_t probe(const uint8_t *p, size_t n) {
    __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
    for (size_t i = 0; i < n; i += 128) {
        a0 = _mm256_xor_si256(a0, _mm256_load_si256((const __m256i *)(p + i)));
        a1 = _mm256_xor_si256(a1, _mm256_load_si256((const __m256i *)(p + i + 32)));
        a2 = _mm256_xor_si256(a2, _mm256_load_si256((const __m256i *)(p + i + 64)));
        a3 = _mm256_xor_si256(a3, _mm256_load_si256((const __m256i *)(p + i + 96)));
    }
    a0 = _mm256_xor_si256(_mm256_xor_si256(a0, a1), _mm256_xor_si256(a2, a3));
    return (uint64_t)_mm256_extract_epi64(a0, 0);
}

/* n bytes on 2 MiB pages (THP), filled with 1s; exits when out of memory (a tool) */
static inline uint8_t *huge_buf(size_t n) {
    uint8_t *p = aligned_alloc((size_t)1 << 21, n);
    if (!p) { fprintf(stderr, "out of memory\n"); exit(1); }
    madvise(p, n, MADV_HUGEPAGE);
    memset(p, 1, n);
    return p;
}

#endif
