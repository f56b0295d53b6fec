/*
 * grpo_batch.c - the GRPO batch file of `deepseek grad --grpo` (format in
 * grpo.h): parsed with jansson into ds_grpo_sample arrays, every field
 * checked, errors naming the file and samples[i].field.
 */
#include "grpo.h"
#include "../io/json.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int get_ids(const json_t *smp, const char *path, int64_t i, const char *key, int64_t vocab, int32_t **out,
                   int64_t *n, ds_err *e) {
    const json_t *a = json_object_get(smp, key);
    if (!a) return ds_err_set(e, DS_ENOTFOUND, "%s: samples[%lld].%s: missing", path, (long long)i, key);
    if (!json_is_array(a)) return ds_err_set(e, DS_EFORMAT, "%s: samples[%lld].%s: not an array of token ids", path, (long long)i, key);
    *n = (int64_t)json_array_size(a);
    if (*n == 0) return ds_err_set(e, DS_EINVAL, "%s: samples[%lld].%s: empty", path, (long long)i, key);
    *out = malloc((size_t)*n * sizeof **out);
    if (!*out) return ds_err_set(e, DS_ENOMEM, "out of memory");
    for (int64_t j = 0; j < *n; j++) {
        const json_t *v = json_array_get(a, (size_t)j);
        if (!json_is_integer(v))
            return ds_err_set(e, DS_EFORMAT, "%s: samples[%lld].%s[%lld]: not an integer token id", path, (long long)i, key,
                              (long long)j);
        json_int_t x = json_integer_value(v);
        if (x < 0 || x >= vocab)
            return ds_err_set(e, DS_ERANGE, "%s: samples[%lld].%s[%lld] = %lld is out of range (vocab_size %lld)", path,
                              (long long)i, key, (long long)j, (long long)x, (long long)vocab);
        (*out)[j] = (int32_t)x;
    }
    return DS_OK;
}

static int get_lps(const json_t *smp, const char *path, int64_t i, const char *key, int64_t n, float **out, ds_err *e) {
    const json_t *a = json_object_get(smp, key);
    if (!a) return ds_err_set(e, DS_ENOTFOUND, "%s: samples[%lld].%s: missing", path, (long long)i, key);
    if (!json_is_array(a)) return ds_err_set(e, DS_EFORMAT, "%s: samples[%lld].%s: not an array of numbers", path, (long long)i, key);
    if ((int64_t)json_array_size(a) != n)
        return ds_err_set(e, DS_EINVAL, "%s: samples[%lld].%s: %lld values for %lld completion tokens", path, (long long)i, key,
                          (long long)json_array_size(a), (long long)n);
    *out = malloc((size_t)n * sizeof **out);
    if (!*out) return ds_err_set(e, DS_ENOMEM, "out of memory");
    for (int64_t j = 0; j < n; j++) {
        const json_t *v = json_array_get(a, (size_t)j);
        if (!json_is_number(v))
            return ds_err_set(e, DS_EFORMAT, "%s: samples[%lld].%s[%lld]: not a number", path, (long long)i, key, (long long)j);
        double x = json_number_value(v);
        if (!isfinite(x) || !isfinite((float)x))
            return ds_err_set(e, DS_EINVAL, "%s: samples[%lld].%s[%lld]: not a finite number", path, (long long)i, key,
                              (long long)j);
        (*out)[j] = (float)x;
    }
    return DS_OK;
}

static int get_finite(const json_t *obj, const char *path, const char *field, const char *key, double lo, double hi,
                      double *out, ds_err *e) {
    const json_t *v = json_object_get(obj, key);
    if (!v) return ds_err_set(e, DS_ENOTFOUND, "%s: %s: missing", path, field);
    if (!json_is_number(v)) return ds_err_set(e, DS_EFORMAT, "%s: %s: not a number", path, field);
    double x = json_number_value(v);
    if (!isfinite(x)) return ds_err_set(e, DS_EINVAL, "%s: %s: not a finite number", path, field);
    if (x < lo || x > hi) return ds_err_set(e, DS_ERANGE, "%s: %s = %g is out of range [%g, %g]", path, field, x, lo, hi);
    *out = x;
    return DS_OK;
}

void ds_grpo_batch_free(ds_grpo_batch *b) {
    if (!b) return;
    for (int64_t i = 0; i < b->n; i++) {
        free(b->samples[i].prompt);
        free(b->samples[i].completion);
        free(b->samples[i].old_lp);
        free(b->samples[i].ref_lp);
    }
    free(b->samples);
    memset(b, 0, sizeof *b);
}

int ds_grpo_batch_load(ds_grpo_batch *b, const char *path, int64_t vocab, ds_err *e) {
    memset(b, 0, sizeof *b);
    json_t *root;
    int rc = ds_json_load_file(path, DS_JSON_MAX_BYTES, &root, e);
    if (rc) return rc;
    if (!json_is_object(root)) { rc = ds_err_set(e, DS_EFORMAT, "%s: not a JSON object", path); goto out; }
    if ((rc = get_finite(root, path, "epsilon", "epsilon", 1e-9, 1e9, &b->epsilon, e))) goto out;
    if ((rc = get_finite(root, path, "beta", "beta", 0, 1e9, &b->beta, e))) goto out;
    const json_t *arr = json_object_get(root, "samples");
    if (!arr || !json_is_array(arr)) { rc = ds_err_set(e, DS_EFORMAT, "%s: samples: missing or not an array", path); goto out; }
    int64_t n = (int64_t)json_array_size(arr);
    if (n == 0) { rc = ds_err_set(e, DS_EINVAL, "%s: samples: empty", path); goto out; }
    b->samples = calloc((size_t)n, sizeof *b->samples);
    if (!b->samples) { rc = ds_err_set(e, DS_ENOMEM, "out of memory"); goto out; }
    for (int64_t i = 0; i < n; i++) {
        const json_t *smp = json_array_get(arr, (size_t)i);
        ds_grpo_sample *x = &b->samples[i];
        b->n = i + 1;
        if (!json_is_object(smp)) { rc = ds_err_set(e, DS_EFORMAT, "%s: samples[%lld]: not an object", path, (long long)i); goto out; }
        char field[64];
        snprintf(field, sizeof field, "samples[%lld].advantage", (long long)i);
        if ((rc = get_ids(smp, path, i, "prompt", vocab, &x->prompt, &x->n_prompt, e)) ||
            (rc = get_ids(smp, path, i, "completion", vocab, &x->completion, &x->n_completion, e)) ||
            (rc = get_finite(smp, path, field, "advantage", -1e30, 1e30, &x->advantage, e)) ||
            (rc = get_lps(smp, path, i, "old_logprobs", x->n_completion, &x->old_lp, e)) ||
            (rc = get_lps(smp, path, i, "ref_logprobs", x->n_completion, &x->ref_lp, e)))
            goto out;
    }
out:
    json_decref(root);
    if (rc) ds_grpo_batch_free(b);
    return rc;
}
