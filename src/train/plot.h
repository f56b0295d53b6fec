/*
 * plot.h - training charts as PNG (no plotting library): loss curves of one
 * or more runs (training loss thin, validation loss thick) and, for the
 * first run, one heatmap per MoE layer of the expert load over training
 * (colour = load / mean load on a log scale: blue under-, white evenly,
 * red over-loaded).
 */
#ifndef DS_PLOT_H
#define DS_PLOT_H

#include "../core/base.h"

/* paths: metrics.jsonl files written by `deepseek train`; labels may be NULL. */
int ds_plot_metrics(const char *const *paths, const char *const *labels, int n, const char *out_png, int width,
                    ds_err *e);

#endif
