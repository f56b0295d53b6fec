/*
 * test_quant_ext.c - the quant types of tensor/quant_ext.h (Q4_1, Q5_1,
 * Q2_K, Q3_K, Q5_K, the IQ types):
 *   - dequantization block by block against the PyPI gguf package's NumPy
 *     dequantizers (fixture tests/fixtures/quant/dequant.bin, written by
 *     tools/gen_quant_fixtures.py), bit for bit;
 *   - the generated IQ tables against a few entries known from the format;
 *   - our quantizers: dequant(quant(x)) error per type (the bytes they write
 *     are checked against gguf's dequantizer by tools/gen_quant_fixtures.py
 *     --check, and by quant_ext_quantizer_vs_gguf below through the fixture);
 *   - the fast (AVX2) integer dot products against their reference twin
 *     (ds_vec_dot_ref: dequantize, sum in double), 1 and 4 tokens, and the
 *     4-token kernel giving each token exactly the 1-token result.
 */
#include "test.h"

#include <stdlib.h>
#include <string.h>

#include "core/rng.h"
#include "io/gguf.h"
#include "tensor/iq_tables.h"
#include "tensor/ops.h"
#include "tensor/quant.h"
#include "tensor/quant_isa.h"

static const ds_dtype k_ext[] = { DS_DTYPE_Q4_1, DS_DTYPE_Q5_1, DS_DTYPE_Q2_K, DS_DTYPE_Q3_K, DS_DTYPE_Q5_K,
                                  DS_DTYPE_IQ2_XXS, DS_DTYPE_IQ2_XS, DS_DTYPE_IQ2_S, DS_DTYPE_IQ3_XXS, DS_DTYPE_IQ3_S,
                                  DS_DTYPE_IQ1_S, DS_DTYPE_IQ1_M, DS_DTYPE_IQ4_NL, DS_DTYPE_IQ4_XS };
#define NEXT (int)(sizeof k_ext / sizeof k_ext[0])

static uint8_t *read_all(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *b = malloc((size_t)sz);
    if (b && fread(b, 1, (size_t)sz, f) != (size_t)sz) { free(b); b = NULL; }
    fclose(f);
    *n = (size_t)sz;
    return b;
}

TEST(quant_ext_dequant_vs_gguf) {
    size_t n = 0;
    uint8_t *buf = read_all(fixture("quant/dequant.bin"), &n);
    CHECK_MSG(buf, "cannot read %s", fixture("quant/dequant.bin"));
    if (!buf) return;
    bool seen[DS_DTYPE_COUNT] = { false };
    size_t off = 0;
    while (off + 16 <= n) {
        uint32_t h[4];
        memcpy(h, buf + off, 16);
        off += 16;
        const ds_ggml_type_info *ti = ds_ggml_type(h[0]);
        CHECK_MSG(ti && ti->dtype != DS_DTYPE_COUNT, "fixture type %u unknown", h[0]);
        if (!ti || ti->dtype == DS_DTYPE_COUNT) break;
        ds_dtype t = ti->dtype;
        seen[t] = true;
        CHECK_EQ_INT(ds_dtype_block_bytes(t), h[2]);
        CHECK_EQ_INT(ds_dtype_block(t), h[3]);
        size_t nb = h[1], raw = nb * h[2], nv = nb * h[3];
        const uint8_t *blocks = buf + off;
        const float *want = (const float *)(buf + off + raw);
        off += raw + nv * 4;
        float *got = malloc(nv * sizeof(float));
        float *fast = malloc(nv * sizeof(float));
        /* block by block, so a failure names the block */
        int bad = 0;
        for (size_t b = 0; b < nb; b++) {
            ds_dequant_row_ref(t, blocks + b * h[2], got + b * h[3], h[3]);
            for (uint32_t i = 0; i < h[3] && bad < 3; i++)
                if (memcmp(&got[b * h[3] + i], &want[b * h[3] + i], 4) != 0) {
                    bad++;
                    ds_test_fail(__FILE__, __LINE__, "%s block %zu value %u: ours %.9g, gguf %.9g", ds_dtype_name(t), b, i,
                                 got[b * h[3] + i], want[b * h[3] + i]);
                }
        }
        /* the whole row at once, and the AVX2 dequantizer (prefill panels) */
        ds_dequant_row_ref(t, blocks, got, (int64_t)nv);
        CHECK_MSG(memcmp(got, want, nv * 4) == 0, "%s: row dequant differs from gguf", ds_dtype_name(t));
        if (strcmp(ds_ops_isa(), "avx2") == 0) {
            ds_dequant_row_avx2(t, blocks, fast, (int64_t)nv);
            CHECK_MSG(memcmp(fast, want, nv * 4) == 0, "%s: avx2 dequant differs from gguf", ds_dtype_name(t));
        }
        free(got);
        free(fast);
    }
    CHECK_EQ_INT(off, n);
    for (int k = 0; k < NEXT; k++) CHECK_MSG(seen[k_ext[k]], "no fixture blocks for %s", ds_dtype_name(k_ext[k]));
    free(buf);
}

TEST(quant_ext_tables) {
    /* entries of the format's grids (first, last, one inside) */
    CHECK(ds_iq2xxs_grid[0] == 0x0808080808080808ull && ds_iq2xxs_grid[1] == 0x080808080808082bull);
    CHECK(ds_iq2xs_grid[0] == 0x0808080808080808ull && ds_iq2s_grid[1023] == 0x2b2b2b2b2b2b2b2bull);
    CHECK(ds_iq3xxs_grid[0] == 0x04040404u && ds_iq3s_grid[0] == 0x01010101u);
    CHECK(ds_grid1s(0, 0) == -1 && ds_grid1s(2047, 7) == 1);
    /* ksigns: byte i has the 7 bits of i and an 8th making the parity even */
    for (int i = 0; i < 128; i++) CHECK_EQ_INT(__builtin_popcount(ds_iq_ksigns[i]) % 2, 0);
    CHECK_EQ_INT(ds_iq4nl_values[0], -127);
    CHECK_EQ_INT(ds_iq4nl_values[15], 113);
}

/* real-looking weights: normal, a few outliers */
static void weights(ds_rng *r, float *x, int64_t n) {
    for (int64_t i = 0; i < n; i++) x[i] = ds_rng_normal(r) * 0.02f * (i % 97 == 0 ? 6.0f : 1.0f);
}

TEST(quant_ext_quantizer_error) {
    /* relative RMS error of dequant(quant(x)) on real-looking weights;
     * bounds: measured values (comment) with ~1.3x margin. For comparison,
     * gguf-py / llama.cpp without an importance matrix on the same kind of
     * data: see tools/gen_quant_fixtures.py --rms. */
    static const struct { ds_dtype t; double max_rel; } k[] = {
        { DS_DTYPE_Q4_1, 0.11 }, { DS_DTYPE_Q5_1, 0.055 }, { DS_DTYPE_Q2_K, 0.40 }, { DS_DTYPE_Q3_K, 0.22 },
        { DS_DTYPE_Q5_K, 0.045 }, { DS_DTYPE_IQ4_NL, 0.11 }, { DS_DTYPE_IQ4_XS, 0.11 },
    };
    ds_rng r;
    ds_rng_seed(&r, 11);
    int64_t n = 4096;
    float *x = malloc(n * 4), *y = malloc(n * 4);
    weights(&r, x, n);
    for (size_t i = 0; i < sizeof k / sizeof k[0]; i++) {
        ds_dtype t = k[i].t;
        CHECK(ds_quant_has_quantizer(t));
        void *q = calloc(1, ds_dtype_row_bytes(t, n));
        ds_quantize_row_ref(t, x, q, n);
        ds_dequant_row_ref(t, q, y, n);
        double e = 0, s = 0;
        for (int64_t j = 0; j < n; j++) { e += (double)(x[j] - y[j]) * (x[j] - y[j]); s += (double)x[j] * x[j]; }
        double rel = sqrt(e / s);
        printf("  %-7s rel rms %.4f\n", ds_dtype_name(t), rel);
        CHECK_MSG(rel < k[i].max_rel, "%s: relative RMS error %.4f >= %.3f", ds_dtype_name(t), rel, k[i].max_rel);
        free(q);
    }
    CHECK(!ds_quant_has_quantizer(DS_DTYPE_IQ2_XXS) && !ds_quant_has_quantizer(DS_DTYPE_IQ1_S));
    free(x);
    free(y);
}

/* random valid blocks of any type: random bytes with sane fp16 scales */
static void random_row(ds_rng *r, ds_dtype t, uint8_t *q, int64_t n) {
    size_t bb = ds_dtype_block_bytes(t);
    int64_t nb = n / ds_dtype_block(t);
    for (size_t i = 0; i < bb * (size_t)nb; i++) q[i] = (uint8_t)(ds_rng_u64(r) >> 24);
    for (int64_t b = 0; b < nb; b++) {
        uint8_t *p = q + bb * (size_t)b;
        uint16_t d = ds_f32_to_f16((float)(0.001 + 0.01 * ds_rng_uniform(r))), m = ds_f32_to_f16((float)(-0.01 * ds_rng_uniform(r)));
        switch (t) {
        case DS_DTYPE_Q2_K: memcpy(p + 80, &d, 2); memcpy(p + 82, &d, 2); break;
        case DS_DTYPE_Q3_K: memcpy(p + 108, &d, 2); break;
        case DS_DTYPE_Q4_1: case DS_DTYPE_Q5_1: case DS_DTYPE_Q5_K: memcpy(p, &d, 2); memcpy(p + 2, &m, 2); break;
        case DS_DTYPE_IQ1_M:
            for (int k = 0; k < 4; k++) {
                uint16_t w;
                memcpy(&w, p + 48 + 2 * k, 2);
                w = (uint16_t)((w & 0x0FFF) | ((d >> (4 * k)) & 0xF) << 12);
                memcpy(p + 48 + 2 * k, &w, 2);
            }
            break;
        default: memcpy(p, &d, 2); break;
        }
    }
}

TEST(quant_ext_fast_vs_ref) {
    if (strcmp(ds_ops_isa(), "avx2") != 0) SKIP("no avx2");
    ds_rng r;
    ds_rng_seed(&r, 5);
    static const int64_t sizes[] = { 256, 512, 2048, 7168 };
    double worst = 0;
    for (int k = 0; k < NEXT; k++) {
        ds_dtype t = k_ext[k];
        for (int si = 0; si < 4; si++) {
            int64_t n = sizes[si];
            float *a = malloc(n * 4), *y = malloc(n * 4);
            uint8_t *q = calloc(1, ds_dtype_row_bytes(t, n));
            random_row(&r, t, q, n);
            size_t ab = ds_act_row_bytes(t, n);
            uint8_t *qa[4];
            for (int j = 0; j < 4; j++) {
                qa[j] = calloc(1, ab);
                for (int64_t i = 0; i < n; i++) a[i] = ds_rng_normal(&r) * (j == 2 ? 0.01f : 1.0f) * (i % 13 == 0 ? 5 : 1);
                ds_quantize_act_ref(t, a, qa[j], n);
                uint8_t *qf = calloc(1, ab);
                ds_quantize_act_avx2(t, a, qf, n);
                CHECK_MSG(memcmp(qa[j], qf, ab) == 0, "%s n=%lld: quantize_act avx2 != ref", ds_dtype_name(t), (long long)n);
                free(qf);
            }
            ds_dequant_row_ref(t, q, y, n);
            float one[4], four[4];
            for (int j = 0; j < 4; j++) {
                /* Σ |w·a| with a the dequantized activation (per-block scale d) */
                const int8_t *aq = (const int8_t *)qa[j];
                const float *ad = (const float *)(qa[j] + n);
                int64_t AB = ds_act_kind(t) == 1 ? 32 : 256;
                double mag = 0;
                for (int64_t i = 0; i < n; i++) mag += fabs((double)y[i] * aq[i] * ad[i / AB]);
                float rf = ds_vec_dot_ref(t, q, qa[j], n);
                one[j] = ds_vec_dot_avx2(t, q, qa[j], n);
                worst = ds_max_err(worst, fabs(one[j] - rf) / mag);
                /* float sums of exact int32 block dots vs double */
                CHECK_MSG(fabs(one[j] - rf) <= 1e-6 * mag, "%s n=%lld: dot avx2 %.9g vs ref %.9g", ds_dtype_name(t),
                          (long long)n, one[j], rf);
            }
            const void *acts[4] = { qa[0], qa[1], qa[2], qa[3] };
            ds_vec_dot4_avx2(t, q, acts, n, four);
            CHECK_MSG(memcmp(one, four, sizeof one) == 0, "%s n=%lld: 4-token dot differs from 1-token dots", ds_dtype_name(t),
                      (long long)n);
            for (int j = 0; j < 4; j++) free(qa[j]);
            free(a); free(y); free(q);
        }
    }
    printf("  max |fast - ref| / sum|w.a| = %.3g\n", worst);
}
