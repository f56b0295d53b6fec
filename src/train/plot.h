/*
 * plot.h - training charts as PNG (no plotting library): loss curves of one
 * or more runs and, for the
 * first run, one heatmap per MoE layer of the expert load over training
 * (colour = load / mean load on a log scale: blue under-, white evenly,
 * red over-loaded); and the reward / accuracy / length chart of a GRPO run.
 */
#ifndef DS_PLOT_H
#define DS_PLOT_H

#include "../core/base.h"

/* The loss panel compares like with like: each run's training cross-entropy
 * (metrics "ce": the batch's next-token CE, thin) against its validation
 * cross-entropy ("val_loss", thick). The training *total* loss ("loss" = CE
 * + MTP weight x MTP CE + balance alpha x balance loss) is drawn only with
 * total_loss (dashed), or for old metrics files without "ce" (then the
 * legend says TOTAL). The y axis is logarithmic by default, so the first
 * steps (CE ~5.6) and the end (~1.4) both show; linear_y gives a linear
 * axis over the full range. Nothing is clipped. */
typedef struct ds_plot_opts {
    int width;        /* pixels (>= 400) */
    bool total_loss;  /* also draw the training total loss */
    bool linear_y;    /* linear instead of logarithmic y axis */
} ds_plot_opts;

/* What was drawn, for a summary line and tests. */
typedef struct ds_plot_info {
    const char *train_series;  /* "ce" or "loss" (when a run has no "ce") */
    bool log_y;                /* false also when a value <= 0 forced linear */
    double ymin, ymax;         /* y axis range (loss units) */
    double xmax;               /* last step */
    int64_t n_train, n_val;    /* points drawn, all runs */
} ds_plot_info;

/* paths: metrics.jsonl files written by `deepseek train`; labels may be NULL;
 * info may be NULL. */
int ds_plot_metrics(const char *const *paths, const char *const *labels, int n, const char *out_png,
                    const ds_plot_opts *o, ds_plot_info *info, ds_err *e);

/* GRPO runs (`deepseek grpo`'s metrics.jsonl, recognised by a "reward" key
 * on the first line): reward, batch accuracy (thin per step, thick moving
 * mean) and held-out greedy pass@1 ("eval_pass1", thick with points) over
 * steps, and the mean completion length below. */
bool ds_plot_is_grpo(const char *path);
int ds_plot_grpo(const char *path, const char *out_png, int width, ds_err *e);

#endif
