/*
 * cli_reason.c - prompt rendering, problem sets and completion text for
 * the reasoning commands (see cli_reason.h).
 */
#include "cli_reason.h"
#include "cli.h"
#include "../tokenizer/chat.h"

#include <stdlib.h>
#include <string.h>

int cli_reason_render(const ds_tokenizer *t, const char *user, tok_ids *ids, ds_err *e) {
    const char *tmpl = tok_chat_template(t);
    ds_chat_format f = tmpl && chat_template_known(tmpl) ? chat_format_from_template(tmpl) : DS_CHAT_V2;
    ds_chat_msg msg;
    memset(&msg, 0, sizeof msg);
    msg.role = DS_ROLE_USER;
    msg.content = user;
    int64_t n0 = ids->n;
    int rc = chat_render(t, f, &msg, 1, true, true, ids, e);
    if (rc) return rc;
    char *txt;
    size_t len;
    if ((rc = tok_decode(t, ids->v + n0, ids->n - n0, false, &txt, &len, e))) return rc;
    bool open = len >= 8 && !memcmp(txt + len - 8, "<think>\n", 8);
    free(txt);
    if (open) return DS_OK;
    const char *th = f == DS_CHAT_V2 ? " <think>\n" : "<think>\n";
    return tok_encode_append(t, th, strlen(th), TOK_PARSE_SPECIAL, ids, e);
}

ds_problem *cli_reason_problems(const char *cmd, const char *task, int64_t *n, uint64_t seed, ds_split split,
                                const ds_task_opts *o) {
    ds_task_kind k = ds_task_kind_of(task);
    ds_problem *ps;
    if (k == DS_TASK_FILE) {
        int64_t m;
        ds_err e = { 0 };
        if (ds_task_load_jsonl(task, &ps, &m, &e)) cli_die_err(cmd, &e);
        if (*n <= 0 || *n > m) *n = m;
        return ps;
    }
    if (*n <= 0) cli_die(cmd, "-n must be >= 1 for a generated task");
    ps = calloc((size_t)*n, sizeof *ps);
    if (!ps) cli_die(cmd, "out of memory");
    ds_rng r;
    ds_rng_seed(&r, seed);
    for (int64_t i = 0; i < *n; i++) ds_task_generate(&ps[i], k, o, split, &r);
    return ps;
}

char *cli_reason_text(const char *cmd, const ds_tokenizer *t, const int32_t *ids, int64_t n) {
    char *txt;
    size_t len;
    ds_err e = { 0 };
    if (tok_decode(t, ids, n, true, &txt, &len, &e)) cli_die_err(cmd, &e);
    return txt;
}

bool cli_reason_task_flag(const char *C, const char *a, const char *v, ds_task_opts *o) {
    if (!strcmp(a, "--digits")) o->digits = (int)cli_parse_int(C, a, v, 1, 9);
    else if (!strcmp(a, "--ops")) {
        if (!v || !v[0] || strspn(v, "+-*") != strlen(v)) cli_die(C, "--ops: operators from \"+-*\" (got '%s')", v ? v : "");
        o->ops = v;
    }
    else if (!strcmp(a, "--numbers")) o->cd_numbers = (int)cli_parse_int(C, a, v, 2, DS_CD_MAX);
    else if (!strcmp(a, "--max-number")) o->cd_max = (int)cli_parse_int(C, a, v, 2, 1000);
    else return false;
    return true;
}
