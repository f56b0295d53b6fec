/*
 * fuzz_safetensors.c - libFuzzer target for the safetensors header parser
 * and validator (ds_safetensors_parse): the input is a whole file image.
 * Seeds: tests/fuzz/corpus/fuzz_safetensors (headers of the tiny fixtures
 * and small hand-made files). Build with `make fuzz`, run with
 * tests/fuzz/run_fuzz.sh.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "io/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    ds_safetensors st;
    memset(&st, 0, sizeof st);
    ds_err e = { 0 };
    int rc = ds_safetensors_parse(&st, data, size, 0, "fuzz.safetensors", &e);
    if (rc == DS_OK) {
        /* every accepted tensor must lie inside the input */
        for (int64_t i = 0; i < st.n_tensors; i++) {
            const ds_st_tensor *t = &st.tensors[i];
            if (t->end < t->begin || t->end > size) abort();
            ds_tensor v;
            ds_st_view(t, &v);
            if (v.nbytes && !t->owned && (v.data < (const void *)data || (const uint8_t *)v.data + v.nbytes > data + size))
                abort();
        }
    } else if (rc > 0 || e.msg[0] == 0) {
        abort();  /* failures must be negative and explained */
    }
    ds_safetensors_close(&st);
    return 0;
}
