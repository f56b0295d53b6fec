/*
 * cpu.c - CPU feature detection and the ISA level (see cpu.h).
 *
 * A feature counts only when both the CPU reports it (CPUID) and the OS
 * saves the registers it needs (XCR0 via XGETBV: YMM for AVX2, opmask + ZMM
 * for AVX-512, XTILECFG + XTILEDATA for AMX); Linux also hands out AMX tile
 * state only after arch_prctl(ARCH_REQ_XCOMP_PERM), requested here once.
 */
#include "cpu.h"

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#define DS_X86 1
#endif
#if defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#endif

static const char *const g_isa_names[DS_ISA_COUNT] = {"generic", "avx2", "avx512", "avx512vnni", "amx"};
static const char *const g_feat_names[DS_CPU_FEATURE_COUNT] = {
    "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512dq",
    "avx512vnni", "avx512bf16", "amx-tile", "amx-int8", "amx-bf16"};
/* the lowest level at which a kernel may use each feature */
static const ds_isa g_feat_level[DS_CPU_FEATURE_COUNT] = {
    DS_ISA_AVX2, DS_ISA_AVX2, DS_ISA_AVX2,
    DS_ISA_AVX512, DS_ISA_AVX512, DS_ISA_AVX512, DS_ISA_AVX512,
    DS_ISA_AVX512_VNNI, DS_ISA_AVX512_VNNI,
    DS_ISA_AMX, DS_ISA_AMX, DS_ISA_AMX};

/* Decided once (pthread_once), read-only after. */
static bool g_has[DS_CPU_FEATURE_COUNT];
static ds_isa g_detected, g_level;
static char g_env[80];        /* DS_ISA as given ("" when unset) */
static char g_env_err[200];
static pthread_once_t g_once = PTHREAD_ONCE_INIT;

#ifdef DS_X86
static uint64_t xcr0(void) {
    uint32_t lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((uint64_t)hi << 32) | lo;
}

static bool amx_permission(void) {
#if defined(__linux__) && defined(SYS_arch_prctl)
    const long ARCH_REQ_XCOMP_PERM = 0x1023, XFEATURE_XTILEDATA = 18;
    return syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0;
#else
    return false;
#endif
}

static void detect(void) {
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return;
    bool osxsave = (c >> 27) & 1, avx = (c >> 28) & 1;
    uint64_t x = osxsave ? xcr0() : 0;
    bool ymm = avx && (x & 0x6) == 0x6;                 /* SSE + AVX state */
    bool zmm = ymm && (x & 0xe0) == 0xe0;               /* opmask, ZMM0-15 high, ZMM16-31 */
    bool tiles = (x & 0x60000) == 0x60000;              /* XTILECFG + XTILEDATA */
    g_has[DS_CPU_FMA] = ymm && ((c >> 12) & 1);
    g_has[DS_CPU_F16C] = ymm && ((c >> 29) & 1);
    unsigned max = __get_cpuid_max(0, NULL);
    if (max < 7) return;
    __cpuid_count(7, 0, a, b, c, d);
    g_has[DS_CPU_AVX2] = ymm && ((b >> 5) & 1);
    g_has[DS_CPU_AVX512F] = zmm && ((b >> 16) & 1);
    g_has[DS_CPU_AVX512DQ] = zmm && ((b >> 17) & 1);
    g_has[DS_CPU_AVX512BW] = zmm && ((b >> 30) & 1);
    g_has[DS_CPU_AVX512VL] = zmm && ((b >> 31) & 1);
    g_has[DS_CPU_AVX512_VNNI] = zmm && ((c >> 11) & 1);
    bool amx_bf16 = (d >> 22) & 1, amx_tile = (d >> 24) & 1, amx_int8 = (d >> 25) & 1;
    unsigned a1 = 0, b1, c1, d1;
    if (a >= 1) __cpuid_count(7, 1, a1, b1, c1, d1);
    g_has[DS_CPU_AVX512_BF16] = zmm && ((a1 >> 5) & 1);
    if (tiles && amx_tile && amx_permission()) {
        g_has[DS_CPU_AMX_TILE] = true;
        g_has[DS_CPU_AMX_INT8] = amx_int8;
        g_has[DS_CPU_AMX_BF16] = amx_bf16;
    }
}
#else
static void detect(void) {}
#endif

static bool all(const ds_cpu_feature *f, int n) {
    for (int i = 0; i < n; i++)
        if (!g_has[f[i]]) return false;
    return true;
}

static ds_isa level_of_features(void) {
    static const ds_cpu_feature v2[] = {DS_CPU_AVX2, DS_CPU_FMA, DS_CPU_F16C};
    static const ds_cpu_feature v512[] = {DS_CPU_AVX512F, DS_CPU_AVX512BW, DS_CPU_AVX512VL, DS_CPU_AVX512DQ};
    static const ds_cpu_feature amx[] = {DS_CPU_AMX_TILE, DS_CPU_AMX_INT8, DS_CPU_AMX_BF16};
    if (!all(v2, 3)) return DS_ISA_GENERIC;
    if (!all(v512, 4)) return DS_ISA_AVX2;
    if (!g_has[DS_CPU_AVX512_VNNI]) return DS_ISA_AVX512;
    if (!all(amx, 3)) return DS_ISA_AVX512_VNNI;
    return DS_ISA_AMX;
}

int ds_isa_parse(const char *s) {
    if (!s) return -1;
    for (int i = 0; i < DS_ISA_COUNT; i++)
        if (strcmp(s, g_isa_names[i]) == 0) return i;
    if (strcmp(s, "avx512-vnni") == 0 || strcmp(s, "vnni") == 0) return DS_ISA_AVX512_VNNI;
    if (strcmp(s, "scalar") == 0) return DS_ISA_GENERIC;
    return -1;
}

static void init_once(void) {
    detect();
    g_detected = g_level = level_of_features();
    const char *s = getenv("DS_ISA");
    if (!s || !*s || strcmp(s, "auto") == 0 || strcmp(s, "native") == 0) return;
    snprintf(g_env, sizeof g_env, "%s", s);
    int want = ds_isa_parse(s);
    if (want < 0)
        snprintf(g_env_err, sizeof g_env_err,
                 "DS_ISA=%s is not an ISA level (use generic, avx2, avx512, avx512vnni, amx or auto)", g_env);
    else if ((ds_isa)want > g_detected)
        snprintf(g_env_err, sizeof g_env_err, "DS_ISA=%s asks for more than this CPU/OS supports (up to %s)", g_env,
                 g_isa_names[g_detected]);
    else
        g_level = (ds_isa)want;
}

static void init(void) { pthread_once(&g_once, init_once); }

ds_isa ds_isa_level(void) { init(); return g_level; }
ds_isa ds_isa_detected(void) { init(); return g_detected; }

bool ds_cpu_has(ds_cpu_feature f) {
    init();
    return f >= 0 && f < DS_CPU_FEATURE_COUNT && g_has[f];
}

bool ds_cpu_usable(ds_cpu_feature f) { return ds_cpu_has(f) && g_level >= g_feat_level[f]; }

const char *ds_isa_name(ds_isa l) { return l >= 0 && l < DS_ISA_COUNT ? g_isa_names[l] : "?"; }

const char *ds_cpu_feature_name(ds_cpu_feature f) {
    return f >= 0 && f < DS_CPU_FEATURE_COUNT ? g_feat_names[f] : "?";
}

const char *ds_isa_env_error(void) { init(); return g_env_err; }

void ds_cpu_describe(char *buf, size_t n) {
    init();
    if (!n) return;
    size_t o = (size_t)snprintf(buf, n, "isa %s (cpu:", g_isa_names[g_level]);
    int nf = 0;
    for (int f = 0; f < DS_CPU_FEATURE_COUNT && o < n; f++)
        if (g_has[f]) { o += (size_t)snprintf(buf + o, n - o, " %s", g_feat_names[f]); nf++; }
    if (o < n && !nf) o += (size_t)snprintf(buf + o, n - o, " none of avx2..amx");
    if (o < n) {
        if (g_env[0] && g_env_err[0]) snprintf(buf + o, n - o, "; DS_ISA=%s refused)", g_env);
        else if (g_env[0]) snprintf(buf + o, n - o, "; DS_ISA=%s)", g_env);
        else if (g_level == g_detected) snprintf(buf + o, n - o, "; best available)");
        else snprintf(buf + o, n - o, ")");
    }
}
