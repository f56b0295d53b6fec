/*
 * read_probe.h - what the manual streaming tools (bench_gemv_stream.c,
 * bench_pass_sched.c) compare their kernels with: `deepseek bench`'s read
 * probe loop (ds_read_stream, core/base.h) and the buffers they stream, on
 * huge pages as the model's repacked weights are (ds_alloc_huge).
 */
#ifndef DS_TOOLS_READ_PROBE_H
#define DS_TOOLS_READ_PROBE_H

#include "core/base.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static inline uint64_t probe(const uint8_t *p, size_t n) { return ds_read_stream(p, n); }

/* n bytes on 2 MiB pages (THP), filled with 1s; exits when out of memory (a tool) */
static inline uint8_t *huge_buf(size_t n) {
    uint8_t *p = ds_alloc_huge(n);
    if (!p) { fprintf(stderr, "out of memory\n"); exit(1); }
    memset(p, 1, n);
    return p;
}

#endif
