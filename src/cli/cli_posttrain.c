/*
 * cli_posttrain.c - recipes, model folders and checkpoints of the
 * post-training commands (see cli_posttrain.h).
 */
#include "cli_posttrain.h"
#include "cli.h"
#include "../core/mmap_file.h"
#include "../io/json.h"

#include <errno.h>
#include <dirent.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const pt_key *find_key(const pt_key *keys, const char *k) {
    char norm[128];
    snprintf(norm, sizeof norm, "%s", k);
    for (char *p = norm; *p; p++) if (*p == '-') *p = '_';
    for (const pt_key *x = keys; x->key; x++) if (!strcmp(x->key, norm)) return x;
    return NULL;
}

static void set_json(const char *cmd, const pt_key *x, void *rec, const json_t *v, const char *what) {
    char *base = rec;
    switch (x->type) {
    case PT_INT:
        if (!json_is_integer(v)) cli_die(cmd, "%s: '%s' must be an integer", what, x->key);
        *(int64_t *)(base + x->off) = json_integer_value(v);
        break;
    case PT_NUM:
        if (!json_is_number(v)) cli_die(cmd, "%s: '%s' must be a number", what, x->key);
        *(double *)(base + x->off) = json_number_value(v);
        break;
    case PT_STR:
        if (!json_is_string(v)) cli_die(cmd, "%s: '%s' must be a string", what, x->key);
        if (strlen(json_string_value(v)) >= PT_STR_MAX) cli_die(cmd, "%s: '%s' is too long", what, x->key);
        strcpy(base + x->off, json_string_value(v));
        break;
    }
}

void pt_recipe_apply(const char *cmd, const pt_key *keys, void *rec, json_t *j, const char *what) {
    if (!json_is_object(j)) cli_die(cmd, "%s: not a JSON object", what);
    const char *k;
    json_t *v;
    json_object_foreach(j, k, v) {
        if (k[0] == '_' || !strcmp(k, "comment")) continue;   /* comments */
        const pt_key *x = find_key(keys, k);
        if (!x) cli_die(cmd, "%s: unknown recipe key '%s'", what, k);
        set_json(cmd, x, rec, v, what);
    }
}

void pt_recipe_load(const char *cmd, const pt_key *keys, void *rec, const char *path) {
    json_t *j;
    ds_err e = { 0 };
    if (ds_json_load_file(path, DS_JSON_MAX_BYTES, &j, &e)) cli_die_err(cmd, &e);
    pt_recipe_apply(cmd, keys, rec, j, path);
    json_decref(j);
}

bool pt_recipe_set(const char *cmd, const pt_key *keys, void *rec, const char *flag, const char *value) {
    if (strncmp(flag, "--", 2)) return false;
    const pt_key *x = find_key(keys, flag + 2);
    if (!x) return false;
    if (!value) cli_die(cmd, "%s needs a value", flag);
    char *base = rec;
    if (x->type == PT_STR) {
        if (strlen(value) >= PT_STR_MAX) cli_die(cmd, "%s: too long", flag);
        strcpy(base + x->off, value);
    } else if (x->type == PT_INT) {
        *(int64_t *)(base + x->off) = cli_parse_int(cmd, flag, value, INT64_MIN / 2, INT64_MAX / 2);
    } else {
        *(double *)(base + x->off) = cli_parse_num(cmd, flag, value, -1e300, 1e300);
    }
    return true;
}

json_t *pt_recipe_json(const pt_key *keys, const void *rec) {
    json_t *j = json_object();
    const char *base = rec;
    for (const pt_key *x = keys; x->key; x++) {
        if (x->type == PT_INT) json_object_set_new(j, x->key, json_integer(*(const int64_t *)(base + x->off)));
        else if (x->type == PT_NUM) json_object_set_new(j, x->key, json_real(*(const double *)(base + x->off)));
        else json_object_set_new(j, x->key, json_string(base + x->off));
    }
    return j;
}

/* ---------------------------------------------------------------- folders */

static int copy_file(const char *src, const char *dst, bool required, ds_err *e) {
    char *buf;
    size_t n;
    if (access(src, R_OK) != 0 && !required) return DS_OK;
    int rc = ds_read_file(src, (size_t)1 << 31, &buf, &n, e);
    if (rc) return rc;
    rc = ds_write_file_atomic(dst, buf, n, e);
    free(buf);
    return rc;
}

void pt_poison_grad(ds_tmodel *m) {
    for (int64_t i = 0; i < m->n_params; i++)
        if (m->params[i].trainable) { m->g[m->params[i].off] = NAN; return; }
}

int pt_write_model(const char *dir, const ds_tmodel *m, const char *src, ds_err *e) {
    int rc = ds_mkdir_p(dir, e);
    if (rc) return rc;
    static const char *side[] = { "config.json", "tokenizer.json", "tokenizer_config.json", "generation_config.json" };
    char a[PT_STR_MAX + 64], b[PT_STR_MAX + 64];
    for (int i = 0; i < 4; i++) {
        snprintf(a, sizeof a, "%s/%s", src, side[i]);
        snprintf(b, sizeof b, "%s/%s", dir, side[i]);
        if ((rc = copy_file(a, b, i < 2, e))) return rc;
    }
    /* sft and grpo train on the thinking prompt (Assistant: <think>), so the model they write
     * thinks by default in chat and serve (cli_model_thinks) */
    snprintf(b, sizeof b, "%s/generation_config.json", dir);
    json_t *g = json_load_file(b, 0, NULL);
    if (!json_is_object(g)) { json_decref(g); g = json_object(); }
    json_object_set_new(g, "thinking", json_true());
    char *txt = json_dumps(g, JSON_INDENT(2));
    json_decref(g);
    size_t tl = txt ? strlen(txt) : 0;
    char *line = txt ? realloc(txt, tl + 2) : NULL;   /* the file ends with a newline, as the bundled one */
    if (!line) { free(txt); return ds_err_set(e, DS_ENOMEM, "%s: out of memory", b); }
    line[tl] = '\n';
    line[tl + 1] = 0;
    rc = ds_write_file_atomic(b, line, tl + 1, e);
    free(line);
    if (rc) return rc;
    snprintf(b, sizeof b, "%s/model.safetensors", dir);
    return ds_tmodel_save(m, b, false, "{\"format\":\"pt\"}", e);
}

static void rm_tree(const char *p) {
    DIR *d = opendir(p);
    if (d) {
        struct dirent *de;
        char q[4200];
        while ((de = readdir(d))) {
            if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")) continue;
            snprintf(q, sizeof q, "%s/%s", p, de->d_name);
            rm_tree(q);
        }
        closedir(d);
        rmdir(p);
    } else {
        unlink(p);
    }
}

int pt_save(const char *out, int64_t step, const ds_tmodel *m, const ds_adamw *o, const char *src, json_t *state,
            ds_err *e) {
    int rc = DS_OK;
    char tmp[4200], fin[4200], path[4400];
    if (!ds_params_finite(m)) {
        json_decref(state);
        return ds_err_set(e, DS_ERANGE, "step %lld: parameters are not finite; refusing to write a checkpoint", (long long)step);
    }
    snprintf(fin, sizeof fin, "%s/ckpt-%08lld", out, (long long)step);
    snprintf(tmp, sizeof tmp, "%s/.tmp-ckpt-%08lld-%ld", out, (long long)step, (long)getpid());
    rm_tree(tmp);
    if ((rc = pt_write_model(tmp, m, src, e))) goto fail;
    /* optimizer: "DSAW" t n m[n] v[n] */
    size_t n = (size_t)m->n_floats, bytes = 16 + 2 * n * sizeof(float);
    char *buf = malloc(bytes);
    if (!buf) { rc = ds_err_set(e, DS_ENOMEM, "out of memory"); goto fail; }
    int64_t hdr[2] = { o->t, (int64_t)n };
    memcpy(buf, hdr, 16);
    memcpy(buf + 16, o->m, n * sizeof(float));
    memcpy(buf + 16 + n * sizeof(float), o->v, n * sizeof(float));
    snprintf(path, sizeof path, "%s/optimizer.bin", tmp);
    rc = ds_write_file_atomic(path, buf, bytes, e);
    free(buf);
    if (rc) goto fail;
    char *s = json_dumps(state, JSON_INDENT(1) | JSON_SORT_KEYS);
    snprintf(path, sizeof path, "%s/state.json", tmp);
    rc = s ? ds_write_file_atomic(path, s, strlen(s), e) : ds_err_set(e, DS_ENOMEM, "out of memory");
    free(s);
    if (rc) goto fail;
    rm_tree(fin);
    if (rename(tmp, fin) != 0) { rc = ds_err_set(e, DS_EIO, "rename %s -> %s: %s", tmp, fin, strerror(errno)); goto fail; }
    char lt[4300], link[4300], target[64];
    snprintf(target, sizeof target, "ckpt-%08lld", (long long)step);
    snprintf(lt, sizeof lt, "%s/.latest-%ld", out, (long)getpid());
    snprintf(link, sizeof link, "%s/latest", out);
    unlink(lt);
    if (symlink(target, lt) != 0 || rename(lt, link) != 0) rc = ds_err_set(e, DS_EIO, "%s: %s", link, strerror(errno));
    json_decref(state);
    return rc;
fail:
    rm_tree(tmp);
    json_decref(state);
    return rc;
}

void pt_resolve(const char *ckpt, char *buf, size_t cap) {
    char p[4300];
    snprintf(p, sizeof p, "%s/state.json", ckpt);
    if (access(p, R_OK) == 0) snprintf(buf, cap, "%s", ckpt);
    else snprintf(buf, cap, "%s/latest", ckpt);
}

int pt_load(const char *ckpt, ds_tmodel *m, ds_adamw *o, json_t **state, ds_err *e) {
    char dir[4200], path[4400];
    pt_resolve(ckpt, dir, sizeof dir);
    snprintf(path, sizeof path, "%s/state.json", dir);
    int rc = ds_json_load_file(path, DS_JSON_MAX_BYTES, state, e);
    if (rc) return rc;
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    if ((rc = ds_tmodel_read_params(m, path, e))) return rc;
    snprintf(path, sizeof path, "%s/optimizer.bin", dir);
    char *buf;
    size_t n;
    if ((rc = ds_read_file(path, (size_t)1 << 34, &buf, &n, e))) return rc;
    int64_t hdr[2] = { 0, 0 };
    if (n >= 16) memcpy(hdr, buf, 16);
    if (n != 16 + 2 * (size_t)m->n_floats * sizeof(float) || hdr[1] != m->n_floats) {
        free(buf);
        return ds_err_set(e, DS_EFORMAT, "%s: %zu bytes, not the optimizer state of this model (%lld parameters)", path, n,
                          (long long)m->n_floats);
    }
    o->t = hdr[0];
    memcpy(o->m, buf + 16, (size_t)m->n_floats * sizeof(float));
    memcpy(o->v, buf + 16 + (size_t)m->n_floats * sizeof(float), (size_t)m->n_floats * sizeof(float));
    free(buf);
    return DS_OK;
}
