/*
 * json.c - jansson wrappers (see json.h).
 */
#include "json.h"
#include "../core/mmap_file.h"

#include <math.h>
#include <stdlib.h>

int ds_json_load_buf(const char *what, const char *buf, size_t len, json_t **out, ds_err *e) {
    json_error_t je;
    *out = json_loadb(buf, len, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &je);
    if (!*out)
        return ds_err_set(e, DS_EFORMAT, "%s: invalid JSON at line %d column %d (byte %d): %s",
                          what, je.line, je.column, je.position, je.text);
    return DS_OK;
}

int ds_json_load_file(const char *path, size_t max_bytes, json_t **out, ds_err *e) {
    char *buf;
    size_t len;
    *out = NULL;
    int rc = ds_read_file(path, max_bytes, &buf, &len, e);
    if (rc) return rc;
    rc = ds_json_load_buf(path, buf, len, out, e);
    free(buf);
    return rc;
}

static const json_t *field(const json_t *obj, const char *key) {
    const json_t *v = json_object_get(obj, key);
    return (v && !json_is_null(v)) ? v : NULL;
}

int ds_json_get_int(const json_t *obj, const char *what, const char *key, bool required,
                    int64_t lo, int64_t hi, int64_t *out, ds_err *e) {
    const json_t *v = field(obj, key);
    if (!v) return required ? ds_err_set(e, DS_ENOTFOUND, "%s: missing required field '%s'", what, key) : DS_OK;
    int64_t x;
    if (json_is_integer(v)) {
        x = json_integer_value(v);
    } else if (json_is_real(v) && json_real_value(v) == floor(json_real_value(v)) &&
               fabs(json_real_value(v)) < 9e15) {
        x = (int64_t)json_real_value(v);
    } else {
        return ds_err_set(e, DS_EFORMAT, "%s: field '%s' must be an integer", what, key);
    }
    if (x < lo || x > hi)
        return ds_err_set(e, DS_ERANGE, "%s: field '%s' = %lld is out of range [%lld, %lld]", what, key,
                          (long long)x, (long long)lo, (long long)hi);
    *out = x;
    return DS_OK;
}

int ds_json_get_num(const json_t *obj, const char *what, const char *key, bool required,
                    double lo, double hi, double *out, ds_err *e) {
    const json_t *v = field(obj, key);
    if (!v) return required ? ds_err_set(e, DS_ENOTFOUND, "%s: missing required field '%s'", what, key) : DS_OK;
    if (!json_is_number(v)) return ds_err_set(e, DS_EFORMAT, "%s: field '%s' must be a number", what, key);
    double x = json_number_value(v);
    if (!(x >= lo && x <= hi))
        return ds_err_set(e, DS_ERANGE, "%s: field '%s' = %g is out of range [%g, %g]", what, key, x, lo, hi);
    *out = x;
    return DS_OK;
}

int ds_json_get_bool(const json_t *obj, const char *what, const char *key, bool required,
                     bool *out, ds_err *e) {
    const json_t *v = field(obj, key);
    if (!v) return required ? ds_err_set(e, DS_ENOTFOUND, "%s: missing required field '%s'", what, key) : DS_OK;
    if (!json_is_boolean(v)) return ds_err_set(e, DS_EFORMAT, "%s: field '%s' must be true or false", what, key);
    *out = json_is_true(v);
    return DS_OK;
}

int ds_json_get_str(const json_t *obj, const char *what, const char *key, bool required,
                    const char **out, ds_err *e) {
    const json_t *v = field(obj, key);
    if (!v) return required ? ds_err_set(e, DS_ENOTFOUND, "%s: missing required field '%s'", what, key) : DS_OK;
    if (!json_is_string(v)) return ds_err_set(e, DS_EFORMAT, "%s: field '%s' must be a string", what, key);
    *out = json_string_value(v);
    return DS_OK;
}
