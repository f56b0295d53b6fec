/*
 * version.c - `deepseek --version`: what a bug report needs. The version,
 * the git commit the binary was built from (the Makefile passes
 * DS_GIT_COMMIT; "unknown" for a build outside a git checkout), the compiler,
 * this CPU and the kernels chosen for it at run time, and the libraries.
 */
#include "cli.h"
#include "../core/cpu.h"
#include "../core/thread.h"
#include "../tensor/ops.h"

#include <jansson.h>
#include <microhttpd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef DS_GIT_COMMIT
#define DS_GIT_COMMIT "unknown"
#endif

#define DS_VERSION "0.1.0"

#if defined(__clang__)
#define DS_COMPILER "clang " __clang_version__
#elif defined(__GNUC__)
#define DS_COMPILER "gcc " __VERSION__
#else
#define DS_COMPILER "unknown compiler"
#endif

extern char *openblas_get_config(void);

static void cpu_name(char *out, size_t n) {
    snprintf(out, n, "unknown CPU");
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f) return;
    char line[512];
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, "model name", 10) != 0) continue;
        const char *p = strchr(line, ':');
        if (!p) break;
        p++;
        while (*p == ' ' || *p == '\t') p++;
        size_t k = strcspn(p, "\n");
        snprintf(out, n, "%.*s", (int)k, p);
        break;
    }
    fclose(f);
}

void cli_print_version(FILE *f) {
    char cpu[256];
    cpu_name(cpu, sizeof cpu);
    char isa[256];
    ds_cpu_describe(isa, sizeof isa);
    fprintf(f, "deepseek.c %s\n", DS_VERSION);
    fprintf(f, "commit:    %s\n", DS_GIT_COMMIT);
    fprintf(f, "compiler:  %s\n", DS_COMPILER);
    fprintf(f, "cpu:       %s, %d threads; %s\n", cpu, ds_threads_get(), isa);
    const char *repack = getenv("DS_REPACK");
    bool no_repack = repack && !strcmp(repack, "0");
    /* what runs where, as the dispatchers in ops.c and tgemm.c choose it
     * (AVX512-BF16 is used from level avx512vnni up) */
    bool bf16 = ds_cpu_usable(DS_CPU_AVX512_BF16);
    if (!strcmp(ds_ops_isa(), "avx512vnni"))
        fprintf(f,
                "kernels:   avx512vnni (quantized matmuls, one token and x8 tiles%s; MLA attention over fp32, int8%s "
                "caches; training GEMMs fp32%s); avx2 for the rest\n",
                no_repack ? ": not used, quantized weights not repacked: DS_REPACK=0" : "", bf16 ? " and bf16" : "",
                bf16 ? " and bf16" : "");
    else if (ds_ops_has_avx512())
        fprintf(f,
                "kernels:   avx512 (MLA attention over fp32 caches, MXFP4 dots, fp32 training GEMMs); avx2 for the "
                "quantized matmuls (%s) and the rest\n",
                no_repack ? "quantized weights not repacked: DS_REPACK=0" : "x8-repacked");
    else if (ds_ops_simd())
        fprintf(f, "kernels:   avx2 (inference matmuls and quantized dots, %s, training GEMMs)\n",
                no_repack ? "quantized weights not repacked: DS_REPACK=0" : "x8-repacked quantized weights");
    else
        fprintf(f, "kernels:   generic (portable C reference kernels; OpenBLAS for large matmuls)\n");
    fprintf(f, "libraries: %s, jansson %s, libmicrohttpd %s\n", openblas_get_config(), JANSSON_VERSION,
            MHD_get_version());
}
