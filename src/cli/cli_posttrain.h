/*
 * cli_posttrain.h - what `train --sft` and `grpo` share: recipes as a
 * table of typed keys (a JSON file, then --KEY VALUE overrides), model
 * folders written from a trainable model (config and tokenizer files copied
 * from the folder it started from), and checkpoints with exact resume:
 *
 *   OUT/ckpt-NNNNNNNN/   config.json, tokenizer*.json, generation_config.json,
 *                        model.safetensors (F32)      a Hugging Face model folder
 *                        optimizer.bin                AdamW t, m, v (raw, checked sizes)
 *                        state.json                   step, counters, the recipe
 *   OUT/latest -> ckpt-NNNNNNNN
 * Each checkpoint is written as a temporary folder and renamed into place;
 * none is written when a parameter is not finite.
 */
#ifndef DS_CLI_POSTTRAIN_H
#define DS_CLI_POSTTRAIN_H

#include "../train/optim.h"
#include "../train/tmodel.h"

#include <jansson.h>
#include <stddef.h>

typedef enum { PT_INT, PT_NUM, PT_STR } pt_type;
typedef struct pt_key {
    const char *key;
    pt_type type;
    size_t off;            /* offsetof in the recipe struct: int64_t, double or char[PT_STR_MAX] */
} pt_key;
#define PT_STR_MAX 1024

/* Applies a JSON object's keys (unknown keys are an error naming them). */
void pt_recipe_apply(const char *cmd, const pt_key *keys, void *rec, json_t *j, const char *what);
void pt_recipe_load(const char *cmd, const pt_key *keys, void *rec, const char *path);
/* "--some-key VALUE" (dashes or underscores); false if the key is unknown. */
bool pt_recipe_set(const char *cmd, const pt_key *keys, void *rec, const char *flag, const char *value);
json_t *pt_recipe_json(const pt_key *keys, const void *rec);

/* A model folder at dir from m, the side files copied from src (a folder). */
int pt_write_model(const char *dir, const ds_tmodel *m, const char *src, ds_err *e);

/* Tests of the NaN guard (recipe key debug_nan_step): writes NaN into the
 * gradient of the first trainable parameter, as a bad step would. */
void pt_poison_grad(ds_tmodel *m);
/* OUT/ckpt-<step> (+ latest); state is consumed. */
int pt_save(const char *out, int64_t step, const ds_tmodel *m, const ds_adamw *o, const char *src, json_t *state,
            ds_err *e);
/* Resume: ckpt = OUT, OUT/latest or OUT/ckpt-N. Loads the weights into m
 * (same architecture) and the moments into o; *state gets state.json (caller
 * decrefs). */
int pt_load(const char *ckpt, ds_tmodel *m, ds_adamw *o, json_t **state, ds_err *e);
/* The checkpoint folder a resume path means (OUT -> OUT/latest), into buf. */
void pt_resolve(const char *ckpt, char *buf, size_t cap);

#endif
