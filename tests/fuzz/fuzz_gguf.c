/*
 * fuzz_gguf.c - libFuzzer target for the GGUF reader (ds_gguf_parse): the
 * input is a whole file image. On success every key is read through the
 * typed getters, every string-array element and tensor view is touched
 * (each must lie inside the input), and the deepseek2 / deepseek32 / deepseek4
 * metadata is turned into a config; the tokenizer.ggml.* metadata is turned into a tokenizer
 * (tok_load_gguf) and, if it loads, the input's last bytes are encoded and
 * the ids decoded; the first row of every block-quantized tensor is
 * dequantized. Seeds: tests/fuzz/corpus/fuzz_gguf (small random deepseek2
 * models written by `deepseek convert --random`, v3-q8_0.gguf re-converted
 * to q4_1 with iq4_nl experts, header-only files — among them the deepseek4 /
 * deepseek32 metadata of llama.cpp's V4 / V3.2 files, from
 * tools/gen_fuzz_gguf_header_seeds.py — and a tokenizer-only file from
 * tools/gen_fuzz_gguf_tokenizer_seed.py). Build
 * with `make fuzz`, run with tests/fuzz/run_fuzz.sh 600 fuzz_gguf.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "io/gguf.h"
#include "tensor/quant.h"
#include "model/model_internal.h"
#include "tokenizer/tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void inside(const void *p, uint64_t n, const uint8_t *data, size_t size) {
    const uint8_t *q = p;
    if (n && (q < data || q > data + size || n > (uint64_t)(data + size - q))) abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    ds_gguf g;
    ds_err e = { 0 };
    int rc = ds_gguf_parse(&g, data, size, "fuzz.gguf", &e);
    if (rc != DS_OK) {
        if (rc > 0 || e.msg[0] == 0) abort();  /* failures must be negative and explained */
        return 0;
    }
    for (int64_t i = 0; i < g.n_kv; i++) {
        const ds_gguf_kv *kv = &g.kv[i];
        int64_t v;
        double d;
        bool b;
        char s[64];
        ds_err e2 = { 0 };
        ds_gguf_get_int(&g, kv->key, true, INT64_MIN, INT64_MAX, &v, &e2);
        e2.code = 0;
        ds_gguf_get_num(&g, kv->key, true, -1e300, 1e300, &d, &e2);
        e2.code = 0;
        ds_gguf_get_bool(&g, kv->key, true, &b, &e2);
        e2.code = 0;
        ds_gguf_get_str(&g, kv->key, true, s, sizeof s, &e2);
        if (kv->type == DS_GGUF_STRING) inside(kv->str, kv->str_len, data, size);
        if (kv->type == DS_GGUF_ARRAY && kv->arr_type == DS_GGUF_STRING) {
            for (uint64_t j = 0; j < kv->n; j++) {
                const char *p;
                uint64_t len;
                ds_gguf_arr_str(&g, kv, j, &p, &len);
                inside(p, len, data, size);
            }
        } else if (kv->type == DS_GGUF_ARRAY) {
            for (uint64_t j = 0; j < kv->n && j < 64; j++) (void)ds_gguf_arr_num(kv, j);
        }
    }
    for (int64_t i = 0; i < g.n_tensors; i++) {
        const ds_gguf_tensor *t = &g.tensors[i];
        inside(t->data, t->nbytes, data, size);
        if (ds_gguf_find_tensor(&g, t->name) != t) abort();
        ds_tensor v;
        ds_err e2 = { 0 };
        if (ds_gguf_view(&g, t, &v, &e2) == DS_OK) {
            if (v.data != t->data) abort();
            /* a block-quantized tensor: its first row dequantizes (any bytes:
             * grid and table indices are masked) */
            int64_t K = v.shape[v.ndim - 1];
            if (ds_dtype_is_quant(v.dtype) && K <= 4096) {
                float row[4096];
                ds_dequant_row_ref(v.dtype, v.data, row, K);
            }
        }
    }
    ds_config c;
    ds_err e3 = { 0 };
    ds_model_gguf_config(&g, &c, &e3);
    ds_tokenizer *t = NULL;
    ds_err e4 = { 0 };
    if (tok_load_gguf(&t, &g, &e4) == DS_OK) {
        size_t n = size < 256 ? size : 256;
        tok_ids ids = { 0 };
        if (tok_encode_append(t, (const char *)data + size - n, n, TOK_PARSE_SPECIAL | TOK_ADD_SPECIAL, &ids, &e4) ==
            DS_OK) {
            char *out = NULL;
            size_t len;
            if (tok_decode(t, ids.v, ids.n, false, &out, &len, &e4) == DS_OK) free(out);
        }
        tok_ids_free(&ids);
        tok_free(t);
    } else if (e4.code == DS_OK || e4.msg[0] == 0) {
        abort();  /* a failed load must say why */
    }
    ds_gguf_close(&g);
    return 0;
}
