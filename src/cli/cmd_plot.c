/*
 * cmd_plot.c - `deepseek plot`: loss curves and per-layer expert load of
 * training runs, drawn to a PNG (src/train/plot.c, src/io/png.c).
 */
#include "cli.h"
#include "../core/mmap_file.h"
#include "../train/plot.h"

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static void usage(FILE *f) {
    fprintf(f,
        "usage: deepseek plot [--out FILE.png] [--width W] [--total-loss] [--linear] RUN [RUN...]\n"
        "  RUN is a training output folder (its metrics.jsonl) or a metrics.jsonl file,\n"
        "  optionally LABEL=RUN. Draws every run's training cross-entropy (thin; the batch's\n"
        "  next-token CE, metrics \"ce\") and validation cross-entropy (thick) against the\n"
        "  step on a log y axis, and one heatmap per MoE layer of the first run's expert\n"
        "  load over training. Prints what it drew (series, axis range) on stderr.\n"
        "  A `deepseek grpo` run (one RUN) gets its own chart: reward, batch accuracy and held-out\n"
        "  greedy pass@1 over steps, and the mean completion length.\n"
        "  --total-loss   also draw the training total loss (CE + MTP + balance; dashed)\n"
        "  --linear       linear y axis (full range)\n"
        "  Default --out: plot.png (its folder is made if missing), --width 1200.\n");
}

int cmd_plot(int argc, char **argv) {
    const char *C = "plot", *out = "plot.png";
    ds_plot_opts o = { .width = 1200 };
    int n = 0;
    char **paths = calloc((size_t)argc, sizeof *paths), **labels = calloc((size_t)argc, sizeof *labels);
    if (!paths || !labels) cli_die(C, "out of memory");
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (cli_is_help(a)) { usage(stdout); return 0; }
        else if (!strcmp(a, "--out") || !strcmp(a, "-o")) { out = v; i++; }
        else if (!strcmp(a, "--width")) { o.width = (int)cli_parse_int(C, a, v, 400, 8000); i++; }
        else if (!strcmp(a, "--total-loss")) o.total_loss = true;
        else if (!strcmp(a, "--linear")) o.linear_y = true;
        else if (a[0] == '-' && a[1]) { usage(stderr); cli_die(C, "unknown option '%s'", a); }
        else {
            const char *eq = strchr(a, '=');
            const char *path = eq ? eq + 1 : a;
            labels[n] = eq ? strndup(a, (size_t)(eq - a)) : NULL;
            struct stat sb;
            size_t len = strlen(path) + 32;
            paths[n] = malloc(len);
            if (stat(path, &sb) == 0 && S_ISDIR(sb.st_mode)) snprintf(paths[n], len, "%s/metrics.jsonl", path);
            else snprintf(paths[n], len, "%s", path);
            if (!labels[n]) labels[n] = strdup(path);
            n++;
        }
    }
    if (!out) cli_die(C, "--out needs a file name");
    if (!n) { usage(stderr); cli_die(C, "no runs given"); }
    ds_err e = { 0 };
    if (ds_plot_is_grpo(paths[0])) {   /* a `deepseek grpo` run: its reward / accuracy / length chart */
        if (n > 1) cli_die(C, "a GRPO run is drawn alone (got %d runs)", n);
        if (ds_mkdir_parent(out, &e) || ds_plot_grpo(paths[0], out, o.width, &e)) cli_die_err(C, &e);
        fprintf(stderr, "wrote %s: GRPO reward, accuracy, held-out pass@1 and completion length of %s\n", out, paths[0]);
        free(paths[0]); free(labels[0]); free(paths); free(labels);
        return 0;
    }
    ds_plot_info info;
    if (ds_mkdir_parent(out, &e) ||
        ds_plot_metrics((const char *const *)paths, (const char *const *)labels, n, out, &o, &info, &e))
        cli_die_err(C, &e);
    fprintf(stderr, "wrote %s: training %s (%lld points%s), validation val_loss (%lld points); y axis %s %.4g..%.4g, "
            "steps 0..%g\n", out, !strcmp(info.train_series, "ce") ? "ce" : "loss (total: a run has no ce)",
            (long long)info.n_train, o.total_loss ? ", and total loss dashed" : "", (long long)info.n_val,
            info.log_y ? "log" : "linear", info.ymin, info.ymax, info.xmax);
    for (int i = 0; i < n; i++) { free(paths[i]); free(labels[i]); }
    free(paths);
    free(labels);
    return 0;
}
