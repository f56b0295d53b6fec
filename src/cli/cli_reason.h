/*
 * cli_reason.h - what `eval`, `grpo` and `train --sft` share about
 * reasoning tasks: rendering a problem as the model's prompt (its chat
 * template, thinking opened), making a problem set from a task name, and
 * decoding a completion to text.
 */
#ifndef DS_CLI_REASON_H
#define DS_CLI_REASON_H

#include "../tokenizer/tokenizer.h"
#include "../train/tasks.h"

/* ids = the chat template's rendering of one user turn with the generation
 * prompt, then "<think>\n" unless the template already opened it (R1, V3.1
 * thinking). A tokenizer without a known DeepSeek template gets the V2 form
 * "<BOS>User: {user}\n\nAssistant:" (our byte-level models). Completions
 * therefore start inside the reasoning (ds_reward_format's think_open). */
int cli_reason_render(const ds_tokenizer *t, const char *user, tok_ids *ids, ds_err *e);

/* n problems of a task ("arithmetic", "countdown" or a JSONL path: its first
 * n problems, n <= 0 all) of the split, from seed. Exits on error. */
ds_problem *cli_reason_problems(const char *cmd, const char *task, int64_t *n, uint64_t seed, ds_split split,
                                const ds_task_opts *o);

/* The task flags eval and train --sft share (--digits, --ops, --numbers,
 * --max-number): if a is one, parses its value v into *o (exits on a bad
 * one) and returns true (the caller skips v); false for any other flag. */
bool cli_reason_task_flag(const char *cmd, const char *a, const char *v, ds_task_opts *o);

/* Completion text (stop token and special tokens dropped), malloc'd. Exits on error. */
char *cli_reason_text(const char *cmd, const ds_tokenizer *t, const int32_t *ids, int64_t n);

#endif
