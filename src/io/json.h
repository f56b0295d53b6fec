/*
 * json.h - thin helpers over jansson for reading typed fields with errors
 * that name the file and the field. The only file that knows jansson's
 * error struct; other modules use jansson's json_t accessors directly.
 */
#ifndef DS_JSON_H
#define DS_JSON_H

#include "../core/base.h"
#include <jansson.h>

#define DS_JSON_MAX_BYTES (100u << 20)  /* config/index/tokenizer files */

/* Parses a file (or a buffer) into a new reference; caller json_decref()s. */
int ds_json_load_file(const char *path, size_t max_bytes, json_t **out, ds_err *e);
int ds_json_load_buf(const char *what, const char *buf, size_t len, json_t **out, ds_err *e);

/* Field getters. `what` names the document in messages (e.g. "config.json").
 * A missing key returns DS_ENOTFOUND only when required; otherwise *out keeps
 * its default and DS_OK is returned. JSON null counts as missing. */
int ds_json_get_int(const json_t *obj, const char *what, const char *key, bool required,
                    int64_t lo, int64_t hi, int64_t *out, ds_err *e);
int ds_json_get_num(const json_t *obj, const char *what, const char *key, bool required,
                    double lo, double hi, double *out, ds_err *e);
int ds_json_get_bool(const json_t *obj, const char *what, const char *key, bool required,
                     bool *out, ds_err *e);
/* Borrowed string, valid while obj lives. */
int ds_json_get_str(const json_t *obj, const char *what, const char *key, bool required,
                    const char **out, ds_err *e);

#endif
