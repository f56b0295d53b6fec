/*
 * compare.h - how close two models' next-token distributions are on the
 * same token sequence (conversion / quantization / KV-cache checks).
 */
#ifndef DS_COMPARE_H
#define DS_COMPARE_H

#include "../model/model.h"

typedef struct ds_logit_stats {
    int64_t n;              /* positions compared */
    double kl_mean, kl_max; /* KL(P_ref || P_test) in nats, per position */
    double top1;            /* fraction of positions with the same argmax */
    double max_abs;         /* max |logit_ref - logit_test| */
    double rms;             /* RMS logit difference */
} ds_logit_stats;

/* Statistics of logits `test` against `ref`, both (n x V) row-major. */
void ds_logit_stats_compute(const float *ref, const float *test, int64_t n, int64_t V, ds_logit_stats *s);

typedef struct ds_compare_opts {
    ds_kv_type kv_ref, kv_test;   /* KV cache storage of each run */
    bool incremental;             /* feed tokens one at a time (decode path) instead of one forward */
} ds_compare_opts;

/* Runs both models (may be the same model) over tokens[0..T), all logits,
 * and compares them. o may be NULL (fp32 caches, one full forward each).
 * The models must have the same vocabulary size. */
int ds_compare_models(ds_model *ref, ds_model *test, const int32_t *tokens, int64_t T, const ds_compare_opts *o,
                      ds_logit_stats *s, ds_err *e);

#endif
