/*
 * cli_dist.c - the CLI side of running as one rank of an mpirun job
 * (src/dist): joining the job, which commands may run on several ranks,
 * rank 0 owning the terminal, and opening this rank's share of the model.
 */
#include "cli.h"
#include "../dist/dist.h"
#include "../model/model.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static FILE *g_rank_err;   /* ranks > 0: their own stderr, for errors only they can report */

void cli_dist_start(const char *cmd) {
    ds_err e = { 0 };
    if (ds_dist_init(&e)) cli_die(cmd, "%s", e.msg);
    int n = ds_dist_size();
    if (n == 1) return;
    /* rank 0 owns the terminal: the other ranks print nothing (their
     * stdout and stderr go to /dev/null) but what only they can tell
     * (cli_rank_error; cli_die) */
    if (ds_dist_rank() > 0) {
        int fd = dup(2);
        g_rank_err = fd >= 0 ? fdopen(fd, "w") : NULL;
        if (!freopen("/dev/null", "w", stdout) || !freopen("/dev/null", "w", stderr)) {
            if (g_rank_err) fprintf(g_rank_err, "deepseek %s (rank %d): cannot silence its output\n", cmd, ds_dist_rank());
            ds_dist_abort(1);
        }
    }
    static const char *k_dist[] = { "logits", "generate", "bench", "chat", "info", "serve", "train", "grad" };
    for (size_t i = 0; i < sizeof k_dist / sizeof k_dist[0]; i++)
        if (!strcmp(cmd, k_dist[i])) return;
    cli_die(cmd, "runs as one process for now, not on %d ranks (mpirun -np %d): of the commands only logits, generate, "
            "bench, chat, info, serve, train and grad are distributed; run `deepseek %s` without mpirun", n, n, cmd);
}

void cli_dist_end(void) { ds_dist_finalize(); }

void cli_rank_error(const char *cmd, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    FILE *f = ds_dist_rank() > 0 && g_rank_err ? g_rank_err : stderr;
    if (ds_dist_size() > 1) fprintf(f, "deepseek %s (rank %d of %d): ", cmd, ds_dist_rank(), ds_dist_size());
    else fprintf(f, "deepseek %s: ", cmd);
    vfprintf(f, fmt, ap);
    fprintf(f, "\n");
    fflush(f);
    va_end(ap);
}

void cli_all_ok(const char *cmd, const char *msg, const char *what) {
    int n = ds_dist_size(), rank = ds_dist_rank();
    if (n == 1) {
        if (msg) cli_die(cmd, "%s", msg);
        return;
    }
    /* every rank learns which ranks failed; the lowest one says why */
    int64_t *st = malloc((size_t)n * sizeof *st);
    if (!st) cli_die(cmd, "out of memory");
    ds_err e = { 0 };
    if (ds_dist_allgather_i64(msg != NULL, st, &e)) cli_die_err(cmd, &e);
    int q = 0;
    while (q < n && !st[q]) q++;
    free(st);
    if (q == n) return;
    if (q == rank) {
        cli_rank_error(cmd, "%s", msg);
        if (rank > 0) sleep(3);   /* rank 0 says which rank failed before mpirun ends the job */
        exit(1);
    }
    cli_die(cmd, "rank %d of %d: %s (that rank prints its error)", q, n, what);
}

static ds_model *open_model(const char *cmd, const char *path, bool expert_servers) {
    ds_err e = { 0 };
    ds_model *m = NULL;
    int n = ds_dist_size();
    if (n == 1) {
        if (ds_model_open(&m, path, &e)) cli_die_err(cmd, &e);
        return m;
    }
    ds_model_opts o = DS_MODEL_OPTS_DEFAULT;
    o.n_ranks = n, o.rank = ds_dist_rank(), o.expert_servers = expert_servers;
    int rc = ds_model_open_opts(&m, path, &o, &e);
    cli_all_ok(cmd, rc ? (e.msg[0] ? e.msg : ds_status_str(e.code)) : NULL, "could not open the model");
    int diff;
    if (ds_dist_agree(ds_model_fingerprint(m), &diff, &e)) cli_die_err(cmd, &e);
    if (diff >= 0)
        cli_die(cmd, "rank %d opened a different model than rank 0 ('%s' there: its config or tensor index "
                "differ); every rank must open the same model", diff, path);
    return m;
}

ds_model *cli_open_model(const char *cmd, const char *path) { return open_model(cmd, path, false); }

ds_model *cli_open_model_servers(const char *cmd, const char *path) { return open_model(cmd, path, true); }

void cli_print_split(FILE *f, const char *cmd, const ds_model *m) {
    int n = ds_dist_size();
    if (n == 1) return;
    ds_model_storage si;
    ds_model_storage_info(m, &si);
    int64_t *v = calloc((size_t)4 * n, sizeof *v);
    if (!v) cli_die(cmd, "out of memory");
    ds_err e = { 0 };
    if (ds_dist_allgather_i64(si.expert_lo, v, &e) || ds_dist_allgather_i64(si.expert_hi, v + n, &e) ||
        ds_dist_allgather_i64((int64_t)si.bound_bytes, v + 2 * n, &e) || ds_dist_allgather_i64(cli_rss_kib(), v + 3 * n, &e))
        cli_die_err(cmd, &e);
    int64_t E = ds_model_config(m)->n_routed_experts;
    fprintf(f, "ranks        %d processes (mpirun), expert parallel: the %lld routed experts split, the rest replicated\n",
            n, (long long)E);
    for (int q = 0; q < n; q++)
        fprintf(f, "  rank %-6d experts [%lld, %lld) (%lld of %lld), weights held %.2f MiB, resident %.2f MiB\n", q,
                (long long)v[q], (long long)v[n + q], (long long)(v[n + q] - v[q]), (long long)E,
                (double)v[2 * n + q] / 1048576.0, (double)v[3 * n + q] / 1024.0);
    free(v);
}

char *cli_bcast_line(const char *cmd, char *line) {
    if (ds_dist_size() == 1) return line;
    ds_err e = { 0 };
    int64_t n = line ? (int64_t)strlen(line) : -1;   /* -1: end of input */
    if (ds_dist_bcast(&n, sizeof n, &e)) cli_die_err(cmd, &e);
    if (n < 0) return NULL;
    if (ds_dist_rank() > 0 && !(line = malloc((size_t)n + 1))) cli_die(cmd, "out of memory");
    if (ds_dist_bcast(line, (size_t)n + 1, &e)) cli_die_err(cmd, &e);
    return line;
}

void cli_bcast_u64(const char *cmd, uint64_t *v) {
    ds_err e = { 0 };
    if (ds_dist_bcast(v, sizeof *v, &e)) cli_die_err(cmd, &e);
}
