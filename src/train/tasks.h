/*
 * tasks.h - verifiable tasks for reasoning post-training: built-in problem
 * generators (multi-digit arithmetic, Countdown) with their step-by-step
 * solutions (the cold-start SFT data, made by program), user problems from
 * JSONL, and scoring of a completion (accuracy and format, rewards.h).
 *
 * Train / eval split: every generated problem has a canonical key ("347+589",
 * "cd:3,7,25,50=71"); a problem belongs to the evaluation split exactly when
 * FNV-1a-64(key) % 10 == 0. Generators draw until the problem falls in the
 * asked split, so evaluation problems never coincide with training ones,
 * whatever the seeds.
 */
#ifndef DS_TASKS_H
#define DS_TASKS_H

#include "../core/base.h"
#include "../core/rng.h"

typedef enum { DS_TASK_ARITHMETIC = 0, DS_TASK_COUNTDOWN, DS_TASK_FILE } ds_task_kind;
typedef enum { DS_SPLIT_TRAIN = 0, DS_SPLIT_EVAL = 1 } ds_split;

#define DS_CD_MAX 6   /* Countdown numbers at most */

typedef struct ds_problem {
    char prompt[512];      /* the user message */
    char answer[128];      /* reference answer (Countdown: one solution expression) */
    char key[96];          /* canonical identity (generated problems) */
    bool countdown;        /* checked by ds_countdown_check instead of answer equality */
    int n_nums;
    int64_t nums[DS_CD_MAX], target;
    /* generated problems: what the solution generator needs */
    int64_t a, b;
    char op;               /* arithmetic: '+', '-', '*' */
    char steps[DS_CD_MAX][48];   /* Countdown: "a op b = c" per step */
    int n_steps;
} ds_problem;

typedef struct ds_task_opts {
    int digits;            /* arithmetic: operands up to this many digits (default 3) */
    const char *ops;       /* arithmetic: operators to draw from (default "+-") */
    int cd_numbers;        /* Countdown: how many numbers (default 4, <= DS_CD_MAX) */
    int cd_max;            /* Countdown: numbers drawn from 1..cd_max (default 25) */
} ds_task_opts;

/* Task name ("arithmetic", "countdown") -> kind; DS_TASK_FILE for anything
 * else (a JSONL path). */
ds_task_kind ds_task_kind_of(const char *name);

/* Draws one problem of the split. o may be NULL (defaults). */
void ds_task_generate(ds_problem *p, ds_task_kind kind, const ds_task_opts *o, ds_split split, ds_rng *r);

/* Which split a key belongs to. */
ds_split ds_task_split_of(const char *key);

/* User problems: one JSON object per line, {"prompt": "…", "answer": "…"},
 * or Countdown ones {"prompt": …, "numbers": [..], "target": N}; blank lines
 * skipped. Errors name the file, line and field. *out malloc'd. */
int ds_task_load_jsonl(const char *path, ds_problem **out, int64_t *n, ds_err *e);

/* A step-by-step solution of a generated problem: "<think>\n…working…\n</think>\n<answer>…</answer>".
 * false when the problem has no generator-made working (user problems). */
bool ds_task_solution(const ds_problem *p, char *out, size_t cap);

/* Scores a completion: acc = 1 when the extracted answer is right (Countdown:
 * a valid expression reaching the target), fmt = ds_reward_format. think_open
 * as ds_reward_format. ans (optional, cap bytes): the extracted answer ("" if none). */
void ds_task_score(const ds_problem *p, const char *completion, bool think_open, double *acc, double *fmt, char *ans,
                   size_t cap);

#endif
