/*
 * ep.h - the expert exchange of expert-parallel training (issue 11 item 5):
 * which rank owns which routed experts, and how one MoE layer's packed
 * expert rows travel to their owners and back (src/train/ep.c).
 *
 * Used by training with expert_parallel (dp.c runs the rounds, moe_train.c
 * the exchanges, tmodel.h lays out the arena with only the own experts).
 *
 * Ownership: rank q of N owns experts [E·q/N, E·(q+1)/N), the split
 * inference uses (ds_model_open_opts.n_ranks), for any N (E need not be a
 * multiple of N; a rank may own none when N > E). moe_pack groups the slots
 * of a layer by expert ascending, so a rank's slots for owner q are one
 * contiguous run of its packed rows: the send side needs no copy.
 *
 * The plan of one exchange: every rank contributes its per-expert slot
 * counts cnt[E]; they are all-gathered (N·E integers) and every rank
 * derives
 *   send: its rows for owner q are packed slots [soff[q], soff[q+1]);
 *   recv: source p's rows are [roff[p], roff[p+1]) of the receive buffer
 *         (sources in rank order), and inside them own expert lo + j's rows
 *         are [rex[p·(ne+1) + j], rex[p·(ne+1) + j + 1]), ne = hi - lo,
 *         in the source's packed order (token rows ascending).
 * Dispatch sends the rows (all-to-all); the owner runs each source's rows
 * of each expert as one batch of its own, so what it computes for a source
 * (expert outputs, and in backward the input gradients and that unit's
 * expert weight gradient) is the bits the one-process run computes for
 * the same unit; return is the reverse all-to-all, landing at the sender's
 * packed positions. Backward reuses the forward's plan: output gradients
 * out, input gradients back.
 *
 * How ds_dp_step uses it: ranks run their units in lockstep rounds, one
 * unit per rank per round on one worker with serial kernels (units per rank
 * differ by at most one; a rank without a unit in the last round runs a
 * throw-away one with zero rows sent, so it still serves its experts). The
 * owner keeps each source's received rows and expert activations of a layer
 * until that layer's backward, accumulates each source's expert weight
 * gradient in a per-source buffer of its expert region, sums the units of
 * each source (contiguous, in order) with dp.c's tree stack, then the
 * sources in rank order: the fixed tree over all units, with no exchange
 * of expert gradients.
 *
 * Bytes per exchange: rank q sends 4·D·(its slots for other ranks' experts)
 * and receives 4·D·(other ranks' slots for its experts), plus 8·N·E bytes
 * of counts; one MoE layer costs four exchanges per unit (rows out, outputs
 * back; output gradients out, input gradients back).
 */
#ifndef DS_EP_H
#define DS_EP_H

#include "../core/base.h"

typedef struct ds_ep_plan {
    int n, rank;
    int64_t E, lo, hi;        /* own experts [lo, hi) */
    int64_t *bound;           /* [n + 1] rank q owns [bound[q], bound[q + 1]) */
    int64_t *soff;            /* [n + 1] packed slots sent to owner q */
    int64_t *roff;            /* [n + 1] received rows from source p */
    int64_t *rex;             /* [n·(ne + 1)] received rows of source p, own expert lo + j */
    int64_t *cnt_all;         /* [n·E] every rank's per-expert counts (scratch of exchange) */
} ds_ep_plan;

/* bound[n + 1]: rank q owns experts [bound[q], bound[q + 1]) of E. */
void ds_ep_bounds(int64_t E, int n, int64_t *bound);

/* A plan for rank `rank` of n over E experts (allocations only). */
int ds_ep_plan_init(ds_ep_plan *p, int64_t E, int n, int rank, ds_err *e);
void ds_ep_plan_free(ds_ep_plan *p);

/* Fills soff, roff, rex from every rank's counts: cnt_all[p·E + x] = rank
 * p's slots for expert x (p->cnt_all may be passed). Errors on a negative
 * count. */
int ds_ep_plan_build(ds_ep_plan *p, const int64_t *cnt_all, ds_err *e);

/* All-gathers this rank's counts cnt[E] (src/dist) into p->cnt_all and
 * builds the plan. Collective: every rank calls it for the same layer. */
int ds_ep_plan_exchange(ds_ep_plan *p, const int64_t *cnt, ds_err *e);

/* Rows out: send (soff[n], D) packed rows -> recv (roff[n], D).
 * Collective. */
int ds_ep_dispatch(const ds_ep_plan *p, const float *send, float *recv, int64_t D, ds_err *e);

/* Rows back: rows (roff[n], D) in the receive layout -> out (soff[n], D) at
 * the sender's packed positions. Collective. */
int ds_ep_return(const ds_ep_plan *p, const float *rows, float *out, int64_t D, ds_err *e);

#endif
