/*
 * test_quant_ext.c - the quant types of tensor/quant_ext.h (Q4_1, Q5_1,
 * Q2_K, Q3_K, Q5_K, the IQ types):
 *   - dequantization block by block against the PyPI gguf package's NumPy
 *     dequantizers (fixture tests/fixtures/quant/dequant.bin, written by
 *     tools/gen_quant_fixtures.py), bit for bit;
 *   - the generated IQ tables against a few entries known from the format;
 *   - the same for llama.cpp's quantizer output of each type (real blocks);
 *   - our quantizers: RMS error vs llama.cpp's on the same real-looking
 *     weights, and the bytes they write decoded by gguf's dequantizer (python
 *     at test time, skipped without it) to exactly our dequantized values;
 *   - the AVX2 block expansion against the reference's, bit for bit, and
 *     the fast (AVX2) integer dot products against their reference twin
 *     (ds_vec_dot_ref: dequantize, sum in double), 1 and 4 tokens, and the
 *     4-token kernel giving each token exactly the 1-token result.
 */
#include "test.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/rng.h"
#include "io/gguf.h"
#include "io/json.h"
#include "tensor/iq_tables.h"
#include "tensor/ops.h"
#include "tensor/quant.h"
#include "tensor/quant_ext.h"
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

/* Checks every record of a block file (tools/gen_quant_fixtures.py format)
 * bit for bit; marks the types seen. */
static void check_block_file(const char *name, bool *seen) {
    size_t n = 0;
    uint8_t *buf = read_all(fixture(name), &n);
    CHECK_MSG(buf, "cannot read %s", fixture(name));
    if (!buf) return;
    size_t off = 0;
    while (off + 16 <= n) {
        uint32_t h[4];
        memcpy(h, buf + off, 16);
        off += 16;
        const ds_ggml_type_info *ti = ds_ggml_type(h[0]);
        CHECK_MSG(ti && ti->dtype != DS_DTYPE_COUNT, "%s: type %u unknown", name, h[0]);
        if (!ti || ti->dtype == DS_DTYPE_COUNT) break;
        ds_dtype t = ti->dtype;
        seen[t] = true;
        CHECK_EQ_INT(ds_dtype_block_bytes(t), h[2]);
        CHECK_EQ_INT(ds_dtype_block(t), h[3]);
        size_t nb = h[1], raw = nb * h[2], nv = nb * h[3];
        CHECK(off + raw + nv * 4 <= n);
        if (off + raw + nv * 4 > n) break;
        const uint8_t *blocks = buf + off;
        float *want = malloc(nv * sizeof(float));
        memcpy(want, buf + off + raw, nv * 4);
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
                    ds_test_fail(__FILE__, __LINE__, "%s: %s block %zu value %u: ours %.9g, gguf %.9g", name, ds_dtype_name(t),
                                 b, i, got[b * h[3] + i], want[b * h[3] + i]);
                }
        }
        /* the whole row at once, and the AVX2 dequantizer (prefill panels) */
        ds_dequant_row_ref(t, blocks, got, (int64_t)nv);
        CHECK_MSG(memcmp(got, want, nv * 4) == 0, "%s: %s row dequant differs from gguf", name, ds_dtype_name(t));
        if (ds_ops_simd()) {
            ds_dequant_row_avx2(t, blocks, fast, (int64_t)nv);
            CHECK_MSG(memcmp(fast, want, nv * 4) == 0, "%s: %s avx2 dequant differs from gguf", name, ds_dtype_name(t));
        }
        free(got);
        free(fast);
        free(want);
    }
    CHECK_EQ_INT(off, n);
    free(buf);
}

TEST(quant_ext_dequant_vs_gguf) {
    /* random valid blocks, and llama.cpp's quantizer output (real blocks) */
    bool seen[DS_DTYPE_COUNT] = { false }, seen_llama[DS_DTYPE_COUNT] = { false };
    check_block_file("quant/dequant.bin", seen);
    check_block_file("quant/llama_blocks.bin", seen_llama);
    for (int k = 0; k < NEXT; k++) {
        CHECK_MSG(seen[k_ext[k]], "no random fixture blocks for %s", ds_dtype_name(k_ext[k]));
        CHECK_MSG(seen_llama[k_ext[k]], "no llama.cpp fixture blocks for %s", ds_dtype_name(k_ext[k]));
    }
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

static const ds_dtype k_writable[] = { DS_DTYPE_Q4_1, DS_DTYPE_Q5_1, DS_DTYPE_Q2_K, DS_DTYPE_Q3_K,
                                       DS_DTYPE_Q5_K, DS_DTYPE_IQ4_NL, DS_DTYPE_IQ4_XS, DS_DTYPE_Q4_K, DS_DTYPE_Q6_K };
#define NW (int)(sizeof k_writable / sizeof k_writable[0])
#define WROWS 8
#define WCOLS 2048

/* tests/fixtures/quant/weights.f32: 8 x 2048 Student-t(5) x 0.02 */
static float *fixture_weights(void) {
    size_t n = 0;
    float *w = (float *)read_all(fixture("quant/weights.f32"), &n);
    CHECK_MSG(w && n == WROWS * WCOLS * 4, "tests/fixtures/quant/weights.f32 missing or not 8 x 2048 floats");
    if (w && n != WROWS * WCOLS * 4) { free(w); w = NULL; }
    return w;
}

TEST(quant_ext_quantizer_vs_llamacpp) {
    /* relative RMS error of dequant(quant(x)) on real-looking weights, ours vs
     * llama.cpp's quantizers (no importance matrix) on the same data
     * (ref_rms.json, tools/gen_quant_fixtures.py): ours at most 5% worse */
    float *w = fixture_weights();
    json_t *ref = NULL;
    ds_err e = { 0 };
    CHECK_MSG(ds_json_load_file(fixture("quant/ref_rms.json"), 1 << 20, &ref, &e) == 0, "%s", e.msg);
    if (!w || !ref) { free(w); if (ref) json_decref(ref); return; }
    json_t *ll = json_object_get(ref, "llama.cpp");
    float *y = malloc(WROWS * WCOLS * sizeof(float));
    for (int k = 0; k < NW; k++) {
        ds_dtype t = k_writable[k];
        CHECK(ds_quant_has_quantizer(t));
        size_t rb = ds_dtype_row_bytes(t, WCOLS);
        uint8_t *q = calloc(WROWS, rb);
        double e2 = 0, s2 = 0;
        for (int r = 0; r < WROWS; r++) {
            ds_quantize_row_ref(t, w + r * WCOLS, q + rb * r, WCOLS);
            ds_dequant_row_ref(t, q + rb * r, y + r * WCOLS, WCOLS);
        }
        for (int i = 0; i < WROWS * WCOLS; i++) { e2 += (double)(w[i] - y[i]) * (w[i] - y[i]); s2 += (double)w[i] * w[i]; }
        double ours = sqrt(e2 / s2), theirs = json_real_value(json_object_get(ll, ds_dtype_name(t)));
        printf("    %-7s rel rms: ours %.4f, llama.cpp %.4f\n", ds_dtype_name(t), ours, theirs);
        CHECK_MSG(theirs > 0, "ref_rms.json has no llama.cpp value for %s", ds_dtype_name(t));
        CHECK_MSG(ours <= 1.05 * theirs, "%s: relative RMS error %.4f, llama.cpp's %.4f", ds_dtype_name(t), ours, theirs);
        free(q);
    }
    CHECK(!ds_quant_has_quantizer(DS_DTYPE_IQ2_XXS) && !ds_quant_has_quantizer(DS_DTYPE_IQ1_S));
    free(y);
    free(w);
    json_decref(ref);
}

TEST(quant_ext_writer_vs_gguf) {
    /* the bytes our quantizers write, dequantized by the gguf package
     * (python3 at test time; skipped without it): the floats we expect */
    if (system("python3 -c 'import gguf.quants' 2>/dev/null") != 0) SKIP("python3 with the gguf package not found");
    float *w = fixture_weights();
    if (!w) return;
    char dir[] = "/tmp/ds_qw_XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    float *y = malloc(WROWS * WCOLS * sizeof(float));
    uint8_t *q[NW];
    char types[256] = "";
    for (int k = 0; k < NW; k++) {
        ds_dtype t = k_writable[k];
        size_t rb = ds_dtype_row_bytes(t, WCOLS);
        q[k] = calloc(WROWS, rb);
        for (int r = 0; r < WROWS; r++) ds_quantize_row_ref(t, w + r * WCOLS, q[k] + rb * r, WCOLS);
        char in[96];
        snprintf(in, sizeof in, "%s/%s.bin", dir, ds_dtype_name(t));
        FILE *f = fopen(in, "wb");
        CHECK(f && fwrite(q[k], rb, WROWS, f) == WROWS);
        if (f) fclose(f);
        snprintf(types + strlen(types), sizeof types - strlen(types), "%s'%s'", k ? "," : "", ds_dtype_name(t));
    }
    /* one python run for all types: DIR/T.bin -> DIR/T.f32 */
    char cmd[1024];
    snprintf(cmd, sizeof cmd,
             "python3 -c \"import numpy as np, gguf\nfrom gguf import quants\nfor n in [%s]:\n"
             "    b = np.fromfile('%s/' + n + '.bin', np.uint8).reshape(%d, -1)\n"
             "    quants.dequantize(b, gguf.GGMLQuantizationType[n]).astype(np.float32).tofile('%s/' + n + '.f32')\"",
             types, dir, WROWS, dir);
    CHECK_MSG(system(cmd) == 0, "python dequantize failed");
    for (int k = 0; k < NW; k++) {
        ds_dtype t = k_writable[k];
        size_t rb = ds_dtype_row_bytes(t, WCOLS), n = 0;
        char in[96], out[96];
        snprintf(in, sizeof in, "%s/%s.bin", dir, ds_dtype_name(t));
        snprintf(out, sizeof out, "%s/%s.f32", dir, ds_dtype_name(t));
        float *g = (float *)read_all(out, &n);
        CHECK_MSG(g && n == WROWS * WCOLS * 4, "%s: python wrote %zu bytes", ds_dtype_name(t), n);
        for (int r = 0; r < WROWS; r++) ds_dequant_row_ref(t, q[k] + rb * r, y + r * WCOLS, WCOLS);
        if (g && n == WROWS * WCOLS * 4)
            CHECK_MSG(memcmp(g, y, n) == 0, "%s: gguf dequantizes our bytes to other values", ds_dtype_name(t));
        free(g);
        free(q[k]);
        unlink(in);
        unlink(out);
    }
    rmdir(dir);
    free(y);
    free(w);
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
    if (!ds_ops_simd()) SKIP("no avx2");
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
            /* the AVX2 block expansion: the reference's integers exactly */
            for (int64_t b = 0; b < n / ds_dtype_block(t); b++) {
                _Alignas(32) int8_t i0[256], i1[256];
                float sc[16], mn[16];
                const uint8_t *blk = q + ds_dtype_block_bytes(t) * (size_t)b;
                ds_expand_block(t, blk, i0, sc, mn);
                ds_expand_ints_avx2(t, blk, i1);
                CHECK_MSG(memcmp(i0, i1, (size_t)ds_dtype_block(t)) == 0, "%s block %lld: avx2 expansion differs",
                          ds_dtype_name(t), (long long)b);
            }
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
