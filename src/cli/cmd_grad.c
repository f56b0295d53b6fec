/*
 * cmd_grad.c - `deepseek grad`: loss and gradient of every stored tensor
 * for one sequence or a batch of equal-length sequences (the parity hook
 * against PyTorch autograd). On N ranks the sequences are split over the
 * ranks and the gradient summed in the trainer's fixed order (train/dp.h):
 * the same bits for every N; rank 0 writes the file. --grpo: GRPO's
 * objective over a batch file instead (src/train/grpo.h; one process).
 */
#include "cli.h"
#include "../core/mmap_file.h"
#include "../core/thread.h"
#include "../train/dp.h"
#include "../train/grpo.h"
#include "../train/tmodel.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *f) {
    fprintf(f,
        "usage: deepseek grad -m MODEL_DIR --tokens 0,5,17,...[;3,9,4,...] --out FILE.safetensors [options]\n"
        "       deepseek grad -m MODEL_DIR --grpo BATCH.json --out FILE.safetensors\n"
        "  For one sequence of T tokens (or several, ';' between them, all of length T: then every\n"
        "  quantity below is the mean over the sequences) computes\n"
        "    ce      = mean over t < T-1 of -log p(tok[t+1] | tok[<=t])\n"
        "    mtp     = mean over t < T-2 of -log p_mtp(tok[t+2])   (the `logits --mtp` module; 0 without MTP)\n"
        "    balance = Σ over the main MoE layers of Σ_i f_i·P_i   (sequence-wise balance loss)\n"
        "    loss    = ce + L·mtp + A·balance\n"
        "  prints {\"loss\":…,\"ce\":…,\"mtp\":…,\"balance\":…} and writes d loss / d tensor for every\n"
        "  stored tensor as F32 under its own name and shape (e_score_correction_bias: zeros).\n"
        "  --mtp-weight L       (default 0.3)\n"
        "  --balance-alpha A    (default 0.0001)\n"
        "  -t, --threads N      (per rank under mpirun: the sequences are split over the ranks,\n"
        "                       the gradient is the same bits for any number of ranks and threads)\n"
        "  --grpo BATCH.json    instead of --tokens: GRPO's objective (no MTP, no balance term) over\n"
        "    {\"epsilon\": ε, \"beta\": β, \"samples\": [{\"prompt\": [ids], \"completion\": [ids],\n"
        "      \"advantage\": A, \"old_logprobs\": [one per completion token], \"ref_logprobs\": [same]}]}\n"
        "    ρ = exp(lp − old), r = ref − lp, lp = log p(completion token) from the model:\n"
        "    loss = −(1/S) Σ_s (1/|o_s|) Σ_t [min(ρA, clip(ρ, 1−ε, 1+ε)A) − β(e^r − r − 1)]\n"
        "    kl   =  (1/S) Σ_s (1/|o_s|) Σ_t (e^r − r − 1)\n"
        "    prints {\"loss\":…,\"kl\":…} and writes d loss / d tensor (zeros where a tensor takes no part).\n");
}

static int grad_grpo(const char *dir, const char *path, const char *out) {
    const char *C = "grad";
    ds_err e = { 0 };
    ds_tmodel *m;
    if (ds_tmodel_load(&m, dir, &e)) cli_die_err(C, &e);
    ds_grpo_batch b;
    if (ds_grpo_batch_load(&b, path, m->cfg.vocab_size, &e)) cli_die_err(C, &e);
    ds_tmodel_zero_grad(m);
    ds_grpo_opts o = { b.epsilon, b.beta, DS_GRPO_NORM_SEQ, 0, 0 };
    ds_grpo_stats st;
    if (ds_grpo_step(m, b.samples, b.n, &o, false, &st, NULL, &e)) {
        char msg[600];
        snprintf(msg, sizeof msg, "%s: %s", path, e.msg);
        cli_die(C, "%s", msg);
    }
    /* e_score_correction_bias and other non-trainable tensors: zeros */
    for (int64_t i = 0; i < m->n_params; i++)
        if (!m->params[i].trainable) memset(m->g + m->params[i].off, 0, (size_t)m->params[i].numel * sizeof(float));
    char meta[256];
    snprintf(meta, sizeof meta, "{\"format\":\"pt\",\"what\":\"deepseek grad --grpo\",\"loss\":\"%.9g\"}", st.loss);
    if (ds_mkdir_parent(out, &e) || ds_tmodel_save(m, out, true, meta, &e)) cli_die_err(C, &e);
    printf("{\"loss\":%.9g,\"kl\":%.9g}\n", st.loss, st.kl);
    ds_grpo_batch_free(&b);
    ds_tmodel_free(m);
    return 0;
}

int cmd_grad(int argc, char **argv) {
    const char *C = "grad", *dir = NULL, *out = NULL, *toks = NULL, *grpo = NULL;
    double lam = 0.3, alpha = 1e-4;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (cli_is_help(a)) { usage(stdout); return 0; }
        else if (!strcmp(a, "-m") || !strcmp(a, "--model")) { dir = v; i++; }
        else if (!strcmp(a, "--tokens")) { toks = v; i++; }
        else if (!strcmp(a, "--grpo")) { grpo = v; i++; }
        else if (!strcmp(a, "--out") || !strcmp(a, "-o")) { out = v; i++; }
        else if (!strcmp(a, "--mtp-weight")) { lam = cli_parse_num(C, a, v, 0, 1e6); i++; }
        else if (!strcmp(a, "--balance-alpha")) { alpha = cli_parse_num(C, a, v, 0, 1e6); i++; }
        else if (!strcmp(a, "-t") || !strcmp(a, "--threads")) { ds_threads_set((int)cli_parse_int(C, a, v, 1, 1024)); i++; }
        else { usage(stderr); cli_die(C, "unknown option '%s'", a); }
    }
    if (!dir) dir = cli_default_model();
    if (!dir) cli_die(C, "no model given (-m MODEL_DIR)");
    cli_check_model(C, dir);
    if (!toks && !grpo) cli_die(C, "--tokens or --grpo is required");
    if (toks && grpo) cli_die(C, "--tokens and --grpo exclude each other");
    if (!out) cli_die(C, "--out is required");
    if (grpo) return grad_grpo(dir, grpo, out);
    /* sequences separated by ';', each a comma list of ids, all of one length */
    int64_t T = 0, U = 0;
    int32_t *tok = NULL;
    char *list = strdup(toks), *save = NULL;
    if (!list) cli_die(C, "out of memory");
    for (char *seq = strtok_r(list, ";", &save); seq; seq = strtok_r(NULL, ";", &save)) {
        int64_t n;
        int32_t *ids = cli_parse_ids(C, "--tokens", seq, &n);
        if (U == 0) T = n;
        else if (n != T)
            cli_die(C, "--tokens: sequence %lld has %lld tokens, the first has %lld; all must be the same length",
                    (long long)U + 1, (long long)n, (long long)T);
        if (!(tok = realloc(tok, (size_t)((U + 1) * T) * sizeof *tok))) cli_die(C, "out of memory");
        memcpy(tok + U * T, ids, (size_t)T * sizeof *tok);
        free(ids);
        U++;
    }
    free(list);
    if (U == 0) cli_die(C, "--tokens: no sequence given");
    if (T < 2) cli_die(C, "--tokens: need at least 2 tokens");
    ds_err e = { 0 };
    ds_tmodel *m;
    if (ds_tmodel_load(&m, dir, &e)) cli_die_err(C, &e);
    ds_dp dp;
    if (ds_dp_init(&dp, m, &e)) cli_die_err(C, &e);
    ds_loss_opts o = { (float)lam, (float)alpha, 1.0f, false };
    ds_losses ls;
    if (ds_dp_step(&dp, m, tok, U, 1, T, &o, &ls, &e) || ds_dp_gather_grads(&dp, m, &e)) cli_die_err(C, &e);
    if (dp.rank > 0) {   /* rank 0 writes */
        ds_dp_free(&dp);
        ds_tmodel_free(m);
        free(tok);
        return 0;
    }
    /* e_score_correction_bias and other non-trainable tensors: zeros */
    for (int64_t i = 0; i < m->n_params; i++)
        if (!m->params[i].trainable) memset(m->g + m->params[i].off, 0, (size_t)m->params[i].numel * sizeof(float));
    char meta[256];
    snprintf(meta, sizeof meta, "{\"format\":\"pt\",\"what\":\"deepseek grad\",\"loss\":\"%.9g\"}", ls.loss);
    if (ds_mkdir_parent(out, &e) || ds_tmodel_save(m, out, true, meta, &e)) cli_die_err(C, &e);
    printf("{\"loss\":%.9g,\"ce\":%.9g,\"mtp\":%.9g,\"balance\":%.9g}\n", ls.loss, ls.ce, ls.mtp, ls.balance);
    ds_dp_free(&dp);
    ds_tmodel_free(m);
    free(tok);
    return 0;
}
