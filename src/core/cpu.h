/*
 * cpu.h - which instruction sets this process may use: the CPU's features
 * (CPUID) that the OS has also enabled (XGETBV; AMX tiles additionally need
 * Linux's arch_prctl permission), reduced to one ISA level chosen once at
 * start-up, and lowered by the DS_ISA environment variable for comparisons.
 *
 * Kernels dispatch on the level (or on one feature at a level), never on
 * the raw CPUID bits, so DS_ISA=avx2 makes an AVX-512 machine run exactly
 * what an AVX2-only machine runs. Files compiled for a level are named
 * *_avx2.c, *_avx512.c, *_amx.c (the Makefile adds the flags).
 */
#ifndef DS_CPU_H
#define DS_CPU_H

#include <stdbool.h>
#include <stddef.h>

/* Ordered: each level includes the ones below it. */
typedef enum {
    DS_ISA_GENERIC = 0,  /* plain C */
    DS_ISA_AVX2,         /* AVX2 + FMA + F16C */
    DS_ISA_AVX512,       /* + AVX-512 F, BW, VL, DQ */
    DS_ISA_AVX512_VNNI,  /* + AVX512-VNNI (AVX512-BF16 where the CPU has it: a feature, see below) */
    DS_ISA_AMX,          /* + AMX tiles with INT8 and BF16 */
    DS_ISA_COUNT
} ds_isa;

/* Single features, as detected (CPUID and OS state). */
typedef enum {
    DS_CPU_AVX2 = 0, DS_CPU_FMA, DS_CPU_F16C,
    DS_CPU_AVX512F, DS_CPU_AVX512BW, DS_CPU_AVX512VL, DS_CPU_AVX512DQ,
    DS_CPU_AVX512_VNNI, DS_CPU_AVX512_BF16,
    DS_CPU_AMX_TILE, DS_CPU_AMX_INT8, DS_CPU_AMX_BF16,
    DS_CPU_FEATURE_COUNT
} ds_cpu_feature;

/* The level kernels use: the highest the CPU and OS support, lowered to
 * DS_ISA when that is set. Thread-safe; decided on the first call. */
ds_isa ds_isa_level(void);
/* The highest level the CPU and OS support, ignoring DS_ISA. */
ds_isa ds_isa_detected(void);
/* True when the CPU/OS has the feature (ignoring DS_ISA). */
bool ds_cpu_has(ds_cpu_feature f);
/* True when a kernel may use the feature now: the CPU has it and the level
 * in use includes it (AVX512-BF16 counts from DS_ISA_AVX512_VNNI up). */
bool ds_cpu_usable(ds_cpu_feature f);

const char *ds_isa_name(ds_isa l);           /* "generic", "avx2", "avx512", "avx512vnni", "amx" */
const char *ds_cpu_feature_name(ds_cpu_feature f);
/* Parses a DS_ISA value; -1 when it names no level. */
int ds_isa_parse(const char *s);
/* Why DS_ISA was not applied ("" when it was, or is unset): an unknown
 * value, or a level above what this CPU supports. The CLI refuses to run
 * with it; the library then uses the detected level. */
const char *ds_isa_env_error(void);
/* One line for info / bench / --verbose:
 * "isa avx512vnni (cpu: avx2 fma f16c avx512f ... ; DS_ISA unset)". */
void ds_cpu_describe(char *buf, size_t n);

#endif
