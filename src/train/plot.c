/*
 * plot.c - a tiny raster chart renderer for training metrics (see plot.h):
 * canvas, lines, rectangles, a 3x5 pixel font drawn at 2x, "nice" axis
 * ticks, and the metrics.jsonl reader. Output through ds_png_write.
 */
#include "plot.h"
#include "../io/png.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------- canvas */

typedef struct { uint8_t *px; int w, h; } canvas;
typedef struct { uint8_t r, g, b; } rgb;

static void put(canvas *c, int x, int y, rgb col) {
    if (x < 0 || y < 0 || x >= c->w || y >= c->h) return;
    uint8_t *p = c->px + ((size_t)y * (size_t)c->w + (size_t)x) * 3;
    p[0] = col.r; p[1] = col.g; p[2] = col.b;
}

static void rect(canvas *c, int x0, int y0, int x1, int y1, rgb col) {
    for (int y = y0; y < y1; y++)
        for (int x = x0; x < x1; x++) put(c, x, y, col);
}

static void line(canvas *c, int x0, int y0, int x1, int y1, rgb col, int thick) {
    int dx = abs(x1 - x0), dy = -abs(y1 - y0), sx = x0 < x1 ? 1 : -1, sy = y0 < y1 ? 1 : -1, err = dx + dy;
    for (;;) {
        for (int a = 0; a < thick; a++)
            for (int b = 0; b < thick; b++) put(c, x0 + a - thick / 2, y0 + b - thick / 2, col);
        if (x0 == x1 && y0 == y1) break;
        int e2 = 2 * err;
        if (e2 >= dy) { err += dy; x0 += sx; }
        if (e2 <= dx) { err += dx; y0 += sy; }
    }
}

/* 3x5 glyphs, rows top to bottom, '#' = ink (drawn by hand for this file) */
static const struct { char ch; const char *rows[5]; } k_font[] = {
    { 'A', { ".#.", "#.#", "###", "#.#", "#.#" } }, { 'B', { "##.", "#.#", "##.", "#.#", "##." } },
    { 'C', { ".##", "#..", "#..", "#..", ".##" } }, { 'D', { "##.", "#.#", "#.#", "#.#", "##." } },
    { 'E', { "###", "#..", "##.", "#..", "###" } }, { 'F', { "###", "#..", "##.", "#..", "#.." } },
    { 'G', { ".##", "#..", "#.#", "#.#", ".##" } }, { 'H', { "#.#", "#.#", "###", "#.#", "#.#" } },
    { 'I', { "###", ".#.", ".#.", ".#.", "###" } }, { 'J', { "..#", "..#", "..#", "#.#", ".#." } },
    { 'K', { "#.#", "#.#", "##.", "#.#", "#.#" } }, { 'L', { "#..", "#..", "#..", "#..", "###" } },
    { 'M', { "#.#", "###", "###", "#.#", "#.#" } }, { 'N', { "##.", "#.#", "#.#", "#.#", "#.#" } },
    { 'O', { ".#.", "#.#", "#.#", "#.#", ".#." } }, { 'P', { "##.", "#.#", "##.", "#..", "#.." } },
    { 'Q', { ".#.", "#.#", "#.#", "##.", ".##" } }, { 'R', { "##.", "#.#", "##.", "#.#", "#.#" } },
    { 'S', { ".##", "#..", ".#.", "..#", "##." } }, { 'T', { "###", ".#.", ".#.", ".#.", ".#." } },
    { 'U', { "#.#", "#.#", "#.#", "#.#", "###" } }, { 'V', { "#.#", "#.#", "#.#", "#.#", ".#." } },
    { 'W', { "#.#", "#.#", "###", "###", "#.#" } }, { 'X', { "#.#", "#.#", ".#.", "#.#", "#.#" } },
    { 'Y', { "#.#", "#.#", ".#.", ".#.", ".#." } }, { 'Z', { "###", "..#", ".#.", "#..", "###" } },
    { '0', { "###", "#.#", "#.#", "#.#", "###" } }, { '1', { ".#.", "##.", ".#.", ".#.", "###" } },
    { '2', { "##.", "..#", ".#.", "#..", "###" } }, { '3', { "##.", "..#", ".#.", "..#", "##." } },
    { '4', { "#.#", "#.#", "###", "..#", "..#" } }, { '5', { "###", "#..", "##.", "..#", "##." } },
    { '6', { ".##", "#..", "###", "#.#", "###" } }, { '7', { "###", "..#", ".#.", ".#.", ".#." } },
    { '8', { "###", "#.#", "###", "#.#", "###" } }, { '9', { "###", "#.#", "###", "..#", "##." } },
    { '.', { "...", "...", "...", "...", ".#." } }, { ',', { "...", "...", "...", ".#.", "#.." } },
    { '-', { "...", "...", "###", "...", "..." } }, { '+', { "...", ".#.", "###", ".#.", "..." } },
    { ':', { "...", ".#.", "...", ".#.", "..." } }, { '/', { "..#", "..#", ".#.", "#..", "#.." } },
    { '(', { ".#.", "#..", "#..", "#..", ".#." } }, { ')', { ".#.", "..#", "..#", "..#", ".#." } },
    { '%', { "#.#", "..#", ".#.", "#..", "#.#" } }, { '=', { "...", "###", "...", "###", "..." } },
    { '_', { "...", "...", "...", "...", "###" } }, { '<', { "..#", ".#.", "#..", ".#.", "..#" } },
    { '>', { "#..", ".#.", "..#", ".#.", "#.." } }, { '|', { ".#.", ".#.", ".#.", ".#.", ".#." } },
};

#define FS 2  /* font scale: glyphs are 6x10 pixels, advance 8 */

static void text(canvas *c, int x, int y, const char *s, rgb col) {
    for (; *s; s++, x += 4 * FS) {
        char ch = *s >= 'a' && *s <= 'z' ? (char)(*s - 32) : *s;
        for (size_t g = 0; g < sizeof k_font / sizeof k_font[0]; g++) {
            if (k_font[g].ch != ch) continue;
            for (int r = 0; r < 5; r++)
                for (int q = 0; q < 3; q++)
                    if (k_font[g].rows[r][q] == '#') rect(c, x + q * FS, y + r * FS, x + (q + 1) * FS, y + (r + 1) * FS, col);
            break;
        }
    }
}

static int text_w(const char *s) { return (int)strlen(s) * 4 * FS; }

/* ---------------------------------------------------------------- metrics */

typedef struct {
    char label[128];
    int64_t n, cap, nv, capv;
    double *step, *loss, *vstep, *val;
    double *ce;         /* [n], parallel to step: training CE, NAN where absent */
    bool has_ce;        /* every training point has "ce" */
    /* expert load, for plotting: rows of the last `load` seen per step */
    int64_t nl, capl, n_layers, E;
    double *lstep;
    int64_t **load;     /* [nl] -> n_layers·E */
    int64_t *layer_ids; /* [n_layers] or NULL */
} series;

/* appends (x, y) to two parallel arrays of length *n */
static void push2(double **xs, double **ys, int64_t *n, int64_t *cap, double x, double y) {
    if (*n == *cap) {
        *cap = *cap ? 2 * *cap : 256;
        *xs = realloc(*xs, (size_t)*cap * sizeof **xs);
        *ys = realloc(*ys, (size_t)*cap * sizeof **ys);
    }
    (*xs)[*n] = x;
    (*ys)[*n] = y;
    (*n)++;
}

static int read_metrics(series *s, const char *path, ds_err *e) {
    FILE *f = fopen(path, "r");
    if (!f) return ds_err_set(e, DS_ENOTFOUND, "%s: cannot open", path);
    char *buf = NULL;
    size_t cap = 0;
    ssize_t got;
    int64_t lineno = 0;
    while ((got = getline(&buf, &cap, f)) > 0) {
        lineno++;
        json_t *j = json_loads(buf, 0, NULL);
        if (!j) continue;   /* a torn last line of a killed run */
        json_t *st = json_object_get(j, "step");
        if (!json_is_integer(st)) { json_decref(j); continue; }
        double step = (double)json_integer_value(st);
        json_t *v;
        /* a resumed run re-logs steps: the newest line for a step wins */
        if ((v = json_object_get(j, "loss")) && json_is_number(v)) {
            while (s->n && s->step[s->n - 1] >= step) s->n--;
            push2(&s->step, &s->loss, &s->n, &s->cap, step, json_number_value(v));
            s->ce = realloc(s->ce, (size_t)s->cap * sizeof *s->ce);
            json_t *c = json_object_get(j, "ce");
            s->ce[s->n - 1] = json_is_number(c) ? json_number_value(c) : NAN;
        }
        if ((v = json_object_get(j, "val_loss")) && json_is_number(v)) {
            while (s->nv && s->vstep[s->nv - 1] >= step) s->nv--;
            push2(&s->vstep, &s->val, &s->nv, &s->capv, step, json_number_value(v));
        }
        json_t *ld = json_object_get(j, "load");
        if (json_is_array(ld) && json_array_size(ld) > 0 && json_is_array(json_array_get(ld, 0))) {
            int64_t L = (int64_t)json_array_size(ld), E = (int64_t)json_array_size(json_array_get(ld, 0));
            if (s->nl == 0) { s->n_layers = L; s->E = E; }
            if (L == s->n_layers && E == s->E && E > 0) {
                while (s->nl && s->lstep[s->nl - 1] >= step) { free(s->load[--s->nl]); }
                if (s->nl == s->capl) {
                    s->capl = s->capl ? 2 * s->capl : 256;
                    s->lstep = realloc(s->lstep, (size_t)s->capl * sizeof *s->lstep);
                    s->load = realloc(s->load, (size_t)s->capl * sizeof *s->load);
                }
                int64_t *row = malloc((size_t)(L * E) * sizeof *row);
                for (int64_t l = 0; l < L; l++)
                    for (int64_t i = 0; i < E; i++)
                        row[l * E + i] = json_integer_value(json_array_get(json_array_get(ld, (size_t)l), (size_t)i));
                s->lstep[s->nl] = step;
                s->load[s->nl++] = row;
                json_t *ids = json_object_get(j, "load_layers");
                if (json_is_array(ids) && (int64_t)json_array_size(ids) == L) {
                    if (!s->layer_ids) s->layer_ids = malloc((size_t)L * sizeof(int64_t));
                    for (int64_t l = 0; l < L; l++) s->layer_ids[l] = json_integer_value(json_array_get(ids, (size_t)l));
                }
            }
        }
        json_decref(j);
    }
    free(buf);
    fclose(f);
    if (s->n == 0 && s->nv == 0) return ds_err_set(e, DS_EFORMAT, "%s: no loss values (%lld lines)", path, (long long)lineno);
    s->has_ce = true;
    for (int64_t k = 0; k < s->n; k++) if (isnan(s->ce[k])) s->has_ce = false;
    return DS_OK;
}

static void free_series(series *s) {
    free(s->step); free(s->loss); free(s->ce); free(s->vstep); free(s->val); free(s->lstep);
    for (int64_t i = 0; i < s->nl; i++) free(s->load[i]);
    free(s->load);
    free(s->layer_ids);
}

/* ---------------------------------------------------------------- chart */

static double nice_step(double range, int target) {
    double raw = range / target, p = pow(10, floor(log10(raw))), m = raw / p;
    return (m < 1.5 ? 1 : m < 3.5 ? 2 : m < 7.5 ? 5 : 10) * p;
}

static const rgb k_white = { 255, 255, 255 }, k_black = { 30, 30, 30 }, k_grid = { 225, 225, 225 };
static const rgb k_run[6][2] = {   /* (train, validation) per run */
    { { 150, 185, 230 }, { 20, 80, 190 } }, { { 240, 170, 150 }, { 200, 50, 30 } },
    { { 160, 215, 160 }, { 30, 140, 50 } }, { { 210, 170, 230 }, { 120, 50, 170 } },
    { { 230, 200, 140 }, { 170, 110, 0 } }, { { 170, 170, 170 }, { 60, 60, 60 } },
};

static rgb load_colour(double share) {
    /* log2(share) in [-2, 2] -> blue .. white .. red */
    double t = share > 0 ? log2(share) / 2 : -1.2;
    if (t < -1) t = -1;
    if (t > 1) t = 1;
    if (t < 0) return (rgb){ (uint8_t)(255 + t * 225), (uint8_t)(255 + t * 175), 255 };
    return (rgb){ 255, (uint8_t)(255 - t * 215), (uint8_t)(255 - t * 225) };
}

int ds_plot_metrics(const char *const *paths, const char *const *labels, int n, const char *out_png,
                    const ds_plot_opts *o, ds_plot_info *info, ds_err *e) {
    int width = o->width;
    if (n < 1) return ds_err_set(e, DS_EINVAL, "plot: no metrics files");
    series *S = calloc((size_t)n, sizeof *S);
    if (!S) return ds_err_set(e, DS_ENOMEM, "out of memory");
    int rc = DS_OK;
    for (int i = 0; i < n && !rc; i++) {
        snprintf(S[i].label, sizeof S[i].label, "%s", labels && labels[i] ? labels[i] : paths[i]);
        rc = read_metrics(&S[i], paths[i], e);
    }
    if (rc) goto done;
    int W = width < 400 ? 400 : width;
    int loss_h = 560, heat_row = 0, n_heat = (int)S[0].n_layers;
    if (n_heat > 0) heat_row = (int)DS_MAX(70, DS_MIN(200, S[0].E * 5)) + 34;
    int H = loss_h + n_heat * heat_row + (n_heat ? 20 : 0);
    canvas c = { calloc((size_t)W * (size_t)H * 3, 1), W, H };
    if (!c.px) { rc = ds_err_set(e, DS_ENOMEM, "out of memory"); goto done; }
    rect(&c, 0, 0, W, H, k_white);

    /* ---- loss panel: training CE (thin) vs validation CE (thick) */
    bool all_ce = true;
    for (int i = 0; i < n; i++) all_ce = all_ce && (S[i].has_ce || S[i].n == 0);
    double xmax = 1, ymin = INFINITY, ymax = -INFINITY;
    int64_t n_train = 0, n_val = 0;
#define TRAIN_Y(s, k) ((s)->has_ce ? (s)->ce[k] : (s)->loss[k])
#define SEE(y) do { double y_ = (y); if (isfinite(y_)) { ymin = fmin(ymin, y_); ymax = fmax(ymax, y_); } } while (0)
    for (int i = 0; i < n; i++) {
        for (int64_t k = 0; k < S[i].n; k++) {
            xmax = fmax(xmax, S[i].step[k]);
            SEE(TRAIN_Y(&S[i], k));
            if (o->total_loss) SEE(S[i].loss[k]);
        }
        for (int64_t k = 0; k < S[i].nv; k++) {
            xmax = fmax(xmax, S[i].vstep[k]);
            SEE(S[i].val[k]);
        }
        n_train += S[i].n;
        n_val += S[i].nv;
    }
#undef SEE
    if (!(ymax > ymin)) { ymin = isfinite(ymin) ? ymin - 1 : 0; ymax = ymin + 2; }
    /* log y: the start (CE ~5.6 for bytes) and the end (~1.4) both readable,
     * nothing clipped; linear when asked or when a value is <= 0 */
    bool logy = !o->linear_y && ymin > 0;
    double fmin_ = logy ? log(ymin) : ymin, fmax_ = logy ? log(ymax) : ymax;
    double pad = (fmax_ - fmin_) * 0.04;
    fmin_ -= pad; fmax_ += pad;
    if (!logy && ymin >= 0 && fmin_ < 0) fmin_ = 0;
    int L0 = 70, R0 = W - 20, T0 = 40, B0 = loss_h - 50;
    char buf[160];
    snprintf(buf, sizeof buf, "%s (NATS/TOKEN) VS STEP, %s Y AXIS. THIN: TRAINING BATCH%s, THICK: VALIDATION",
             all_ce ? "CROSS-ENTROPY" : "LOSS", logy ? "LOG" : "LINEAR",
             o->total_loss ? " (DASHED: TOTAL LOSS = CE + MTP + BALANCE)" : "");
    text(&c, L0, 12, buf, k_black);
#define FY(y) (logy ? log(y) : (y))
#define PX(x) (L0 + (int)((x) / xmax * (R0 - L0)))
#define PY(y) (B0 - (int)((FY(y) - fmin_) / (fmax_ - fmin_) * (B0 - T0)))
    if (logy) {
        /* ticks from 1-1.1-1.2-...-9 x 10^k, at least 22 pixels apart */
        static const double k_mant[] = { 1, 1.1, 1.2, 1.3, 1.4, 1.5, 1.6, 1.8, 2, 2.5, 3, 3.5, 4, 5, 6, 7, 8, 9 };
        int last_py = INT32_MAX;
        for (int ex = (int)floor(fmin_ / log(10)) - 1; ex <= (int)ceil(fmax_ / log(10)); ex++)
            for (size_t m = 0; m < sizeof k_mant / sizeof k_mant[0]; m++) {
                double y = k_mant[m] * pow(10, ex);
                if (log(y) < fmin_ || log(y) > fmax_) continue;
                int py = PY(y);
                if (last_py - py < 22) continue;
                last_py = py;
                line(&c, L0, py, R0, py, k_grid, 1);
                snprintf(buf, sizeof buf, "%g", y);
                text(&c, L0 - 8 - text_w(buf), py - 5, buf, k_black);
            }
    } else {
        double ys = nice_step(fmax_ - fmin_, 6);
        for (double y = ceil(fmin_ / ys) * ys; y <= fmax_; y += ys) {
            int py = PY(y);
            line(&c, L0, py, R0, py, k_grid, 1);
            snprintf(buf, sizeof buf, "%g", fabs(y) < 1e-12 ? 0.0 : y);
            text(&c, L0 - 8 - text_w(buf), py - 5, buf, k_black);
        }
    }
    double xs = nice_step(xmax, 8);
    for (double x = 0; x <= xmax * 1.0001; x += xs) {
        int px = PX(x);
        line(&c, px, T0, px, B0, k_grid, 1);
        snprintf(buf, sizeof buf, "%g", x);
        text(&c, px - text_w(buf) / 2, B0 + 8, buf, k_black);
    }
    text(&c, (L0 + R0) / 2 - text_w("STEP") / 2, B0 + 26, "STEP", k_black);
    line(&c, L0, T0, L0, B0, k_black, 1);
    line(&c, L0, B0, R0, B0, k_black, 1);
    for (int i = 0; i < n && o->total_loss; i++) {   /* dashed: every other segment */
        const rgb *col = k_run[i % 6];
        for (int64_t k = 1; k < S[i].n; k++)
            if (k % 2 && isfinite(S[i].loss[k]) && isfinite(S[i].loss[k - 1]))
                line(&c, PX(S[i].step[k - 1]), PY(S[i].loss[k - 1]), PX(S[i].step[k]), PY(S[i].loss[k]), col[0], 1);
    }
    for (int i = 0; i < n; i++) {
        const rgb *col = k_run[i % 6];
        for (int64_t k = 1; k < S[i].n; k++)
            if (isfinite(TRAIN_Y(&S[i], k)) && isfinite(TRAIN_Y(&S[i], k - 1)))
                line(&c, PX(S[i].step[k - 1]), PY(TRAIN_Y(&S[i], k - 1)), PX(S[i].step[k]), PY(TRAIN_Y(&S[i], k)),
                     col[0], 1);
    }
    for (int i = 0; i < n; i++) {
        const rgb *col = k_run[i % 6];
        for (int64_t k = 1; k < S[i].nv; k++)
            if (isfinite(S[i].val[k]) && isfinite(S[i].val[k - 1]))
                line(&c, PX(S[i].vstep[k - 1]), PY(S[i].val[k - 1]), PX(S[i].vstep[k]), PY(S[i].val[k]), col[1], 3);
        /* legend: the final validation CE and the last training value */
        int ly = T0 + 8 + i * 16;
        rect(&c, R0 - 470, ly, R0 - 450, ly + 8, col[1]);
        rect(&c, R0 - 446, ly + 3, R0 - 426, ly + 5, col[0]);
        int m = snprintf(buf, sizeof buf, "%.30s", S[i].label);
        if (S[i].nv) m += snprintf(buf + m, sizeof buf - (size_t)m, " VAL %.4f", S[i].val[S[i].nv - 1]);
        if (S[i].n)
            snprintf(buf + m, sizeof buf - (size_t)m, " TRAIN %s %.4f", S[i].has_ce ? "CE" : "TOTAL",
                     TRAIN_Y(&S[i], S[i].n - 1));
        text(&c, R0 - 418, ly - 1, buf, k_black);
    }
#undef PX
#undef PY
#undef FY
#undef TRAIN_Y
    if (info) {
        info->train_series = all_ce ? "ce" : "loss";
        info->log_y = logy;
        info->ymin = logy ? exp(fmin_) : fmin_;
        info->ymax = logy ? exp(fmax_) : fmax_;
        info->xmax = xmax;
        info->n_train = n_train;
        info->n_val = n_val;
    }

    /* ---- expert-load heatmaps of the first run */
    for (int l = 0; l < n_heat; l++) {
        const series *s = &S[0];
        int y0 = loss_h + l * heat_row, hh = heat_row - 34;
        char title[128];
        if (s->layer_ids) snprintf(title, sizeof title, "LAYER %lld EXPERT LOAD / MEAN (BLUE 1/4X .. WHITE 1X .. RED 4X)", (long long)s->layer_ids[l]);
        else snprintf(title, sizeof title, "MOE LAYER %d EXPERT LOAD / MEAN (BLUE 1/4X .. WHITE 1X .. RED 4X)", l);
        text(&c, L0, y0 + 6, title, k_black);
        int top_y = y0 + 24;
        snprintf(buf, sizeof buf, "E0");
        text(&c, L0 - 8 - text_w(buf), top_y, buf, k_black);
        snprintf(buf, sizeof buf, "E%lld", (long long)s->E - 1);
        text(&c, L0 - 8 - text_w(buf), top_y + hh - 10, buf, k_black);
        for (int px = L0; px < R0; px++) {
            double stp = (double)(px - L0) / (R0 - L0) * xmax;
            int64_t k = 0;   /* the last logged row at or before stp */
            while (k + 1 < s->nl && s->lstep[k + 1] <= stp) k++;
            if (!s->nl || s->lstep[k] > stp + xmax / (R0 - L0)) continue;
            const int64_t *row = s->load[k] + (int64_t)l * s->E;
            int64_t sum = 0;
            for (int64_t i = 0; i < s->E; i++) sum += row[i];
            for (int64_t i = 0; i < s->E; i++) {
                double share = sum ? (double)row[i] * (double)s->E / (double)sum : 1.0;
                int ya = top_y + (int)(i * hh / s->E), yb = top_y + (int)((i + 1) * hh / s->E);
                rect(&c, px, ya, px + 1, yb, load_colour(share));
            }
        }
        line(&c, L0, top_y + hh, R0, top_y + hh, k_black, 1);
    }
    rc = ds_png_write(out_png, c.px, W, H, e);
    free(c.px);
done:
    for (int i = 0; i < n; i++) free_series(&S[i]);
    free(S);
    return rc;
}

/* ---------------------------------------------------------------- GRPO chart */

typedef struct { double *x, *y; int64_t n, cap; } pts;

static int pts_push(pts *p, double x, double y) {
    if (p->n == p->cap) {
        int64_t c = p->cap ? p->cap * 2 : 256;
        double *a = realloc(p->x, (size_t)c * sizeof *a), *b = a ? realloc(p->y, (size_t)c * sizeof *b) : NULL;
        if (a) p->x = a;
        if (!a || !b) return DS_ENOMEM;
        p->y = b;
        p->cap = c;
    }
    p->x[p->n] = x;
    p->y[p->n++] = y;
    return DS_OK;
}

bool ds_plot_is_grpo(const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) return false;
    char line[4096];
    bool yes = fgets(line, sizeof line, f) && strstr(line, "\"reward\":");
    fclose(f);
    return yes;
}

/* one panel: series drawn thin (raw) + thick (moving average over win steps) */
static void grpo_panel(canvas *c, int L0, int R0, int T0, int B0, double xmax, const pts *const *ser, const rgb *cols,
                       const bool *avg, int ns, const char *title, double ylo, double yhi) {
    char buf[160];
    text(c, L0, T0 - 28, title, k_black);
    double ys = nice_step(yhi - ylo, 5);
#define PX(x) (L0 + (int)((x) / xmax * (R0 - L0)))
#define PY(y) (B0 - (int)(((y) - ylo) / (yhi - ylo) * (B0 - T0)))
    for (double y = ceil(ylo / ys) * ys; y <= yhi + 1e-9; y += ys) {
        line(c, L0, PY(y), R0, PY(y), k_grid, 1);
        snprintf(buf, sizeof buf, "%g", fabs(y) < 1e-12 ? 0.0 : y);
        text(c, L0 - 8 - text_w(buf), PY(y) - 5, buf, k_black);
    }
    double xs = nice_step(xmax, 8);
    for (double x = 0; x <= xmax * 1.0001; x += xs) {
        line(c, PX(x), T0, PX(x), B0, k_grid, 1);
        snprintf(buf, sizeof buf, "%g", x);
        text(c, PX(x) - text_w(buf) / 2, B0 + 8, buf, k_black);
    }
    line(c, L0, T0, L0, B0, k_black, 1);
    line(c, L0, B0, R0, B0, k_black, 1);
    for (int s = 0; s < ns; s++) {
        const pts *p = ser[s];
        rgb light = { (uint8_t)(255 - (255 - cols[s].r) / 3), (uint8_t)(255 - (255 - cols[s].g) / 3),
                      (uint8_t)(255 - (255 - cols[s].b) / 3) };
        if (avg[s]) {
            for (int64_t k = 1; k < p->n; k++) line(c, PX(p->x[k - 1]), PY(p->y[k - 1]), PX(p->x[k]), PY(p->y[k]), light, 1);
            int64_t win = DS_MAX(1, p->n / 40);
            double prev_x = 0, prev_y = 0;
            for (int64_t k = 0; k < p->n; k++) {
                double sum = 0;
                int64_t a = DS_MAX(0, k - win + 1);
                for (int64_t j = a; j <= k; j++) sum += p->y[j];
                double my = sum / (double)(k - a + 1);
                if (k) line(c, PX(prev_x), PY(prev_y), PX(p->x[k]), PY(my), cols[s], 3);
                prev_x = p->x[k];
                prev_y = my;
            }
        } else {
            for (int64_t k = 0; k < p->n; k++) {
                if (k) line(c, PX(p->x[k - 1]), PY(p->y[k - 1]), PX(p->x[k]), PY(p->y[k]), cols[s], 3);
                rect(c, PX(p->x[k]) - 3, PY(p->y[k]) - 3, PX(p->x[k]) + 4, PY(p->y[k]) + 4, cols[s]);
            }
        }
    }
    text(c, (L0 + R0) / 2 - text_w("STEP") / 2, B0 + 26, "STEP", k_black);
#undef PX
#undef PY
}

int ds_plot_grpo(const char *path, const char *out_png, int width, ds_err *e) {
    FILE *f = fopen(path, "r");
    if (!f) return ds_err_set(e, DS_EIO, "cannot open %s", path);
    pts rew = { 0 }, acc = { 0 }, len = { 0 }, ev = { 0 };
    char *line_buf = NULL;
    size_t cap = 0;
    int rc = DS_OK;
    double xmax = 1, lmax = 1, rmax = 1;
    int64_t ln = 0;
    while (getline(&line_buf, &cap, f) > 0 && !rc) {
        ln++;
        json_error_t je;
        json_t *j = json_loads(line_buf, 0, &je);
        if (!j) { rc = ds_err_set(e, DS_EFORMAT, "%s:%lld: %s", path, (long long)ln, je.text); break; }
        json_t *st = json_object_get(j, "step"), *v;
        if (json_is_integer(st)) {
            double x = (double)json_integer_value(st);
            xmax = fmax(xmax, x);
            if ((v = json_object_get(j, "reward")) && json_is_number(v)) { rc |= pts_push(&rew, x, json_number_value(v)); rmax = fmax(rmax, json_number_value(v)); }
            if ((v = json_object_get(j, "accuracy")) && json_is_number(v)) rc |= pts_push(&acc, x, json_number_value(v));
            if ((v = json_object_get(j, "eval_pass1")) && json_is_number(v)) rc |= pts_push(&ev, x, json_number_value(v));
            if ((v = json_object_get(j, "length")) && json_is_number(v)) { rc |= pts_push(&len, x, json_number_value(v)); lmax = fmax(lmax, json_number_value(v)); }
        }
        json_decref(j);
        if (rc && rc != DS_EFORMAT) rc = ds_err_set(e, DS_ENOMEM, "out of memory");
    }
    free(line_buf);
    fclose(f);
    if (!rc && rew.n == 0) rc = ds_err_set(e, DS_EFORMAT, "%s: no \"reward\" values (not a `deepseek grpo` run?)", path);
    if (!rc) {
        int W = width < 400 ? 400 : width, H = 820;
        canvas c = { calloc((size_t)W * (size_t)H * 3, 1), W, H };
        if (!c.px) rc = ds_err_set(e, DS_ENOMEM, "out of memory");
        else {
            rect(&c, 0, 0, W, H, k_white);
            static const rgb cols[3] = { { 20, 80, 190 }, { 30, 140, 50 }, { 200, 50, 30 } };
            const pts *top[3] = { &rew, &acc, &ev };
            bool avg[3] = { true, true, false };
            grpo_panel(&c, 70, W - 20, 50, 440, xmax, top, cols, avg, ev.n ? 3 : 2,
                       "GRPO: REWARD (BLUE), BATCH ACCURACY (GREEN), HELD-OUT GREEDY PASS-AT-1 (RED). THIN: RAW, THICK: MEAN",
                       0, rmax > 1 ? ceil(rmax * 10) / 10 : 1.0);
            const pts *bot[1] = { &len };
            rgb lc[1] = { { 120, 50, 170 } };
            bool la[1] = { true };
            grpo_panel(&c, 70, W - 20, 530, 770, xmax, bot, lc, la, 1, "MEAN COMPLETION LENGTH (TOKENS)", 0, lmax * 1.05);
            rc = ds_png_write(out_png, c.px, W, H, e);
            free(c.px);
        }
    }
    free(rew.x); free(rew.y); free(acc.x); free(acc.y); free(len.x); free(len.y); free(ev.x); free(ev.y);
    return rc;
}
