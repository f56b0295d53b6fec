/*
 * fuzz_config.c - libFuzzer target for config.json parsing and validation
 * (ds_config_parse). Seeds: tests/fuzz/corpus/fuzz_config (the fixtures'
 * config.json files). Build with `make fuzz`, run with tests/fuzz/run_fuzz.sh.
 */
#include <stdint.h>
#include <stdlib.h>

#include "model/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    ds_config c;
    ds_err e = { 0 };
    int rc = ds_config_parse(&c, (const char *)data, size, "fuzz/config.json", &e);
    if (rc == DS_OK) {
        /* an accepted config must satisfy the invariants the model relies on */
        if (ds_config_validate(&c, "fuzz/config.json", &e) != DS_OK) abort();
        if (c.vocab_size < 1 || c.hidden_size < 1 || c.n_layer < 1 || c.n_head < 1 || c.qk_rope_head_dim % 2)
            abort();
        (void)ds_config_softmax_scale(&c);
    } else if (rc > 0 || e.msg[0] == 0) {
        abort();
    }
    return 0;
}
