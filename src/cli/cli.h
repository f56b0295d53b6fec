/*
 * cli.h - shared helpers for the subcommands in src/cli. This is the only
 * layer that prints to the user and calls exit().
 */
#ifndef DS_CLI_H
#define DS_CLI_H

#include "../core/base.h"

#include <stdio.h>

/* Prints "deepseek <cmd>: <message>" to stderr and exits with status 1. */
void cli_die(const char *cmd, const char *fmt, ...) __attribute__((noreturn, format(printf, 2, 3)));
/* Exits with the error's message (status 1). */
void cli_die_err(const char *cmd, const ds_err *e) __attribute__((noreturn));

/* Strict number parsing: the whole string must be a number in range. */
int64_t cli_parse_int(const char *cmd, const char *flag, const char *s, int64_t lo, int64_t hi);
double cli_parse_num(const char *cmd, const char *flag, const char *s, double lo, double hi);
/* The sampling flags generate and chat share (--temperature/--temp, --top-p,
 * --top-k, --min-p, --repeat-penalty, --frequency-penalty, --presence-penalty,
 * --seed): if a is one, parses its value v into *sp (exits on a bad one) and
 * returns true (the caller skips v); false for any other flag. */
struct ds_sampler_params;
bool cli_sampler_flag(const char *cmd, const char *a, const char *v, struct ds_sampler_params *sp);
/* "50G", "512M", "100K", "4096": bytes (powers of 1024), > 0. */
uint64_t cli_parse_size(const char *cmd, const char *flag, const char *s);
/* The model's tokenizer for commands that take -m: --tokenizer PATH if
 * given, else tokenizer.json of the folder, or for a .gguf the tokenizer.json
 * beside it, then its metadata (tok_load_for_model). Exits with a message
 * listing what was tried, followed by `hint` (may be NULL). */
struct ds_tokenizer;
struct ds_tokenizer *cli_load_tokenizer(const char *cmd, const char *model, const char *tokenizer, const char *hint);
/* "1,2,3" -> malloc'ed int32 array (caller frees); each in [0, 2^31). */
int32_t *cli_parse_ids(const char *cmd, const char *flag, const char *s, int64_t *n);

/* Default model folder when -m is not given (the bundled model), or NULL. */
const char *cli_default_model(void);
/* True when DIR/generation_config.json says "thinking": true (deepseek.c's own key: the
 * model was trained to reason first, e.g. models/reasoner): chat and serve then think by
 * default (--no-think / --no-thinking turn it off). */
bool cli_model_thinks(const char *dir);

/* Checks the model path of -m before anything is read from it, so a wrong
 * path is reported as such (not as a missing tokenizer or config): it must
 * exist and be a model folder (config.json and model.safetensors or
 * model.safetensors.index.json) or a .gguf file. Exits with a message naming
 * the path and what is wrong otherwise. */
void cli_check_model(const char *cmd, const char *path);

/* `deepseek --version`: version, git commit, compiler, CPU and the kernels
 * chosen for it, libraries (src/cli/version.c). */
void cli_print_version(FILE *f);

/* Running as one rank of an mpirun job (cli_dist.c, through src/dist).
 * cli_dist_start joins the job (no-op without mpirun), refuses commands not
 * distributed yet on several ranks, and leaves the terminal to rank 0 (the
 * other ranks' stdout and stderr go to /dev/null). cli_dist_end leaves it. */
void cli_dist_start(const char *cmd);
void cli_dist_end(void);
/* An error only this rank knows, to its real stderr, naming the rank. */
void cli_rank_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Exits unless every rank is fine: msg is this rank's error (NULL: none).
 * Alone: cli_die(msg). On N ranks (collective): the lowest failing rank
 * prints its msg, rank 0 then says that rank failed to `what`. */
void cli_all_ok(const char *cmd, const char *msg, const char *what);
/* Opens the model (exits with the error otherwise): alone, all of it; on N
 * ranks, this rank's share of the routed experts (ds_model_opts.n_ranks),
 * then checks every rank opened the same model (ds_model_fingerprint). */
struct ds_model;
struct ds_model *cli_open_model(const char *cmd, const char *path);
/* The same for `serve` on several ranks: rank 0 runs the forward, the
 * other ranks serve their experts (ds_model_opts.expert_servers). */
struct ds_model *cli_open_model_servers(const char *cmd, const char *path);
/* On N > 1 ranks: the per-rank split (experts owned, weight bytes held,
 * resident memory), printed by rank 0; collective, every rank calls it.
 * Prints nothing in one process. */
void cli_print_split(FILE *f, const char *cmd, const struct ds_model *m);
/* Rank 0's line (malloc'ed, or NULL at end of input) on every rank: the
 * other ranks pass NULL and get a copy. Returns line in one process. */
char *cli_bcast_line(const char *cmd, char *line);
/* Rank 0's *v on every rank (no-op in one process). */
void cli_bcast_u64(const char *cmd, uint64_t *v);
/* This process's resident memory (VmRSS) in KiB, -1 if unknown. */
long cli_rss_kib(void);
/* ORG/NAME[@REV] -> the snapshot folder `deepseek pull` made in the Hugging
 * Face cache (cmd_pull.c): 1 and out filled; 0 if spec is a path on disk or
 * not of that shape (use it as it is); -1 if it has that shape but is not
 * cached. Weak: absent when pull is not built in. */
int cli_hub_resolve(const char *spec, char *out, size_t cap) __attribute__((weak));

/* True if argv[i] is -h/--help. */
int cli_is_help(const char *a);

/* `bench --sampler` (cmd_bench_sampler.c), reached through cmd_bench. */
int cmd_bench_sampler(int argc, char **argv);

#endif
