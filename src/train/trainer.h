/*
 * trainer.h - the DeepSeek-V3 training recipe: model from a config (or an
 * existing checkpoint), AdamW with warmup + cosine/constant schedule,
 * global-norm clipping, gradient accumulation, aux-loss-free bias updates,
 * sequence-wise balance loss, MTP; evaluation; checkpoints in Hugging Face
 * layout plus optimizer / data-position state, written atomically; exact
 * resume; a NaN/inf guard before every update.
 *
 * Checkpoint folder OUT/ckpt-NNNNNNNN (OUT/latest is a symlink to the newest):
 *   config.json, model.safetensors (F32), tokenizer.json,
 *   generation_config.json              a Hugging Face model folder
 *   optimizer.safetensors               AdamW moments, "exp_avg.<name>" / "exp_avg_sq.<name>"
 *   trainer_state.json                  step, Adam t, data (epoch, position), tokens,
 *                                       the recipe, threads, ranks (information:
 *                                       any rank count resumes), counters
 * Each folder is written as OUT/.tmp-ckpt-*, every file fsynced, then
 * renamed into place; `latest` is switched by renaming a new symlink over it.
 * A checkpoint is never written if any parameter is not finite.
 *
 * On N ranks (mpirun, src/dist) every rank runs the same recipe on the same
 * data: each step's batch_size x grad_accum sequences are split over the
 * ranks and summed in one fixed order (dp.h), AdamW moments are sharded
 * (ZeRO-1), so losses and parameters are bit-identical for every N and
 * thread count. Rank 0 alone writes metrics.jsonl and checkpoints (the
 * moments gathered to it: the same files whatever N); every rank reads a
 * checkpoint to resume, so any M ranks resume a run saved by N.
 * expert_parallel: each rank holds only its own routed experts (their
 * weights, gradients and moments; tmodel.h ep_n); the same bits again, and
 * rank 0 gathers the experts from their owners to write a checkpoint.
 */
#ifndef DS_TRAINER_H
#define DS_TRAINER_H

#include "../core/thread.h"
#include "data.h"
#include "dp.h"
#include "optim.h"
#include "tmodel.h"

#include <jansson.h>
#include <stdio.h>

/* "precision": the training GEMMs' inputs; weights, gradients and AdamW
 * state stay fp32 either way. */
typedef enum { DS_PREC_FP32 = 0, DS_PREC_BF16 = 1 } ds_precision;

typedef struct ds_recipe {
    char data[1024];        /* data folder (prepare-data output) */
    char out[1024];         /* run folder: checkpoints, metrics.jsonl */
    char init_from[1024];   /* "" = from scratch; else a Hugging Face model folder */
    int64_t seq_len, batch_size, grad_accum, steps, warmup_steps;
    int64_t unit_seqs;          /* sequences per unit of the fixed gradient-sum order (dp.h) */
    double lr, min_lr, beta1, beta2, eps, weight_decay, grad_clip, init_std;
    ds_schedule schedule;
    double bias_update_speed;   /* γ */
    int64_t bias_freeze_step;   /* γ = 0 from this step on; -1 never */
    double balance_alpha, mtp_weight;
    int64_t eval_every, eval_tokens, ckpt_every, keep_checkpoints, log_every;
    int64_t seed;
    int64_t threads;
    double time_limit_min;      /* stop (eval + checkpoint) after this much training time; 0 = none */
    int64_t max_nan_skips;      /* abort after this many consecutive non-finite steps */
    double peak_gflops;         /* MFU denominator; 0 = measure at start */
    bool expert_parallel;       /* on N > 1 ranks each holds only its routed experts (dp.h) */
    ds_precision precision;     /* the GEMMs' inputs: fp32, or bf16 with fp32 sums (tgemm.h) */
} ds_recipe;

void ds_recipe_default(ds_recipe *r);
/* Applies the keys of a JSON object (recipe keys; "model" is returned
 * separately as a borrowed reference in *model if non-NULL). Unknown keys
 * are an error. */
int ds_recipe_apply(ds_recipe *r, json_t *j, json_t **model, const char *what, ds_err *e);
/* Applies one "key=value" (value parsed as JSON, else as a string). */
int ds_recipe_set(ds_recipe *r, const char *kv, ds_err *e);
json_t *ds_recipe_to_json(const ds_recipe *r);

/* What one optimizer step did. */
typedef struct ds_step_info {
    int64_t step;            /* completed steps after this one */
    double loss, ce, mtp, balance;
    double grad_norm, lr, maxvio;
    double seconds, flops;
    double mm_rate;          /* FLOP/s inside the linear-layer matmuls (all threads) */
    double mm_frac;          /* share of the step spent in them */
    int64_t tokens;          /* tokens in this step */
    bool skipped;            /* non-finite loss/gradient: no update */
} ds_step_info;

typedef struct ds_trainer {
    ds_recipe r;
    json_t *model_cfg;       /* the config.json written into checkpoints (owned) */
    ds_tmodel *m;
    ds_adamw opt;            /* this rank's ZeRO-1 shard of the moments (all of them alone) */
    ds_adamw opt_ep;         /* expert parallel: the moments of this rank's experts (else unused) */
    ds_dp dp;                /* ranks, shards, the canonical gradient sum */
    ds_data data;
    char *tokenizer_json;
    size_t tokenizer_len;
    int64_t step, tokens, nan_skips, nan_consecutive;
    double elapsed;          /* training seconds, resumed runs included */
    char ckpt_path[4096];    /* the folder of the last ds_trainer_save */
    ds_par_env env;          /* kernel scratch and matmul profile of steps and evaluations */
    double peak_flops;       /* FLOP/s, measured or given */
    double step_flops;       /* one optimizer step */
    int32_t *batch;          /* (B·accum·T): the step's global batch, on every rank */
    int32_t *val;            /* (n_val·T) */
    int64_t n_val;
    double last_val;         /* NaN until the first evaluation */
    FILE *metrics;           /* OUT/metrics.jsonl, appended */
    int64_t debug_nan_step;  /* tests: poison the gradient at this step (-1 off) */
    int debug_step_delay_ms; /* tests: every rank sleeps this long after each step, so a test can act mid-run */
} ds_trainer;

/* New run from r (model from model_cfg JSON, or r->init_from), or a resume
 * from a checkpoint folder (resume: OUT, OUT/latest or OUT/ckpt-N; the
 * checkpoint's recipe is used, then `overrides` key=value strings). */
int ds_trainer_init(ds_trainer *t, const ds_recipe *r, json_t *model_cfg, ds_err *e);
int ds_trainer_resume(ds_trainer *t, const char *ckpt, char **overrides, int n_overrides, ds_err *e);
void ds_trainer_free(ds_trainer *t);

int ds_trainer_step(ds_trainer *t, ds_step_info *info, ds_err *e);
/* Mean validation cross-entropy (main model) over the held-out windows. */
int ds_trainer_eval(ds_trainer *t, double *val_loss, ds_err *e);
/* Writes OUT/ckpt-<step> and points OUT/latest at it; *path receives the
 * folder (t->ckpt_path: valid until the next save or ds_trainer_free). */
int ds_trainer_save(ds_trainer *t, const char **path, ds_err *e);
/* Appends one metrics line (JSON object, consumed). */
void ds_trainer_log(ds_trainer *t, json_t *line);

/* Best of a few 1024³ sgemms on all threads, in FLOP/s. */
double ds_measure_peak_flops(void);

#endif
