/*
 * test_cpu.c - ISA detection (src/core/cpu.c) against an outside view: the
 * flags Linux prints in /proc/cpuinfo (the kernel clears a flag when it does
 * not enable the registers, as our XGETBV check does). Also DS_ISA parsing
 * and the level/feature rules kernels dispatch on.
 */
#include "test.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "core/base.h"
#include "core/cpu.h"

/* /proc/cpuinfo's "flags" line of the first CPU, space-padded at both ends. */
static bool cpuinfo_flags(char *out, size_t n) {
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f) return false;
    static char line[8192];
    bool ok = false;
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, "flags", 5) != 0) continue;
        char *p = strchr(line, ':');
        if (!p) break;
        line[strcspn(line, "\n")] = 0;
        snprintf(out, n, " %s ", p + 1);
        ok = true;
        break;
    }
    fclose(f);
    return ok;
}

static bool has_flag(const char *flags, const char *name) {
    char pat[64];
    snprintf(pat, sizeof pat, " %s ", name);
    return strstr(flags, pat) != NULL;
}

TEST(cpu_features_match_proc_cpuinfo) {
    static char flags[8192];
    if (!cpuinfo_flags(flags, sizeof flags)) SKIP("no /proc/cpuinfo flags line (not Linux on x86-64)");
    static const struct { ds_cpu_feature f; const char *linux_name; } map[] = {
        {DS_CPU_AVX2, "avx2"}, {DS_CPU_FMA, "fma"}, {DS_CPU_F16C, "f16c"},
        {DS_CPU_AVX512F, "avx512f"}, {DS_CPU_AVX512BW, "avx512bw"}, {DS_CPU_AVX512VL, "avx512vl"},
        {DS_CPU_AVX512DQ, "avx512dq"}, {DS_CPU_AVX512_VNNI, "avx512_vnni"}, {DS_CPU_AVX512_BF16, "avx512_bf16"},
        {DS_CPU_AMX_INT8, "amx_int8"}, {DS_CPU_AMX_BF16, "amx_bf16"}, {DS_CPU_AMX_TILE, "amx_tile"},
    };
    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++) {
        bool linux_has = has_flag(flags, map[i].linux_name), ours = ds_cpu_has(map[i].f);
        if (!strncmp(map[i].linux_name, "amx", 3) && linux_has && !ours)
            continue;   /* AMX listed but arch_prctl refused the tile state (old kernel, seccomp): ours is right to say no */
        CHECK_MSG(linux_has == ours, "%s: /proc/cpuinfo says %d, cpu.c says %d", map[i].linux_name, linux_has, ours);
    }
    char d[256];
    ds_cpu_describe(d, sizeof d);
    printf("    %s\n", d);
}

TEST(cpu_isa_parse_and_levels) {
    CHECK_EQ_INT(ds_isa_parse("generic"), DS_ISA_GENERIC);
    CHECK_EQ_INT(ds_isa_parse("avx2"), DS_ISA_AVX2);
    CHECK_EQ_INT(ds_isa_parse("avx512"), DS_ISA_AVX512);
    CHECK_EQ_INT(ds_isa_parse("avx512vnni"), DS_ISA_AVX512_VNNI);
    CHECK_EQ_INT(ds_isa_parse("amx"), DS_ISA_AMX);
    CHECK_EQ_INT(ds_isa_parse("AVX2"), -1);
    CHECK_EQ_INT(ds_isa_parse("sse9"), -1);
    CHECK_EQ_INT(ds_isa_parse(""), -1);
    for (int l = 0; l < DS_ISA_COUNT; l++) CHECK_EQ_INT(ds_isa_parse(ds_isa_name((ds_isa)l)), l);
    /* the level never exceeds what was detected, and each level's features are present */
    ds_isa lv = ds_isa_level(), det = ds_isa_detected();
    CHECK(lv <= det);
    if (det >= DS_ISA_AVX2) CHECK(ds_cpu_has(DS_CPU_AVX2) && ds_cpu_has(DS_CPU_FMA) && ds_cpu_has(DS_CPU_F16C));
    if (det >= DS_ISA_AVX512)
        CHECK(ds_cpu_has(DS_CPU_AVX512F) && ds_cpu_has(DS_CPU_AVX512BW) && ds_cpu_has(DS_CPU_AVX512VL) &&
              ds_cpu_has(DS_CPU_AVX512DQ));
    if (det >= DS_ISA_AVX512_VNNI) CHECK(ds_cpu_has(DS_CPU_AVX512_VNNI));
    if (det >= DS_ISA_AMX) CHECK(ds_cpu_has(DS_CPU_AMX_INT8) && ds_cpu_has(DS_CPU_AMX_BF16));
    /* usable = has and the level in use includes it */
    CHECK(ds_cpu_usable(DS_CPU_AVX512F) == (ds_cpu_has(DS_CPU_AVX512F) && lv >= DS_ISA_AVX512));
    CHECK(ds_cpu_usable(DS_CPU_AVX512_BF16) == (ds_cpu_has(DS_CPU_AVX512_BF16) && lv >= DS_ISA_AVX512_VNNI));
    CHECK(ds_cpu_usable(DS_CPU_AMX_INT8) == (ds_cpu_has(DS_CPU_AMX_INT8) && lv >= DS_ISA_AMX));
    CHECK(ds_cpu_avx2_fma() == (lv >= DS_ISA_AVX2));
}
