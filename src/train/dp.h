/*
 * dp.h - data-parallel training over the ranks of an mpirun job and the
 * threads of each rank, with ZeRO-1 optimizer shards, and a gradient sum
 * whose bits do not depend on how many ranks or threads there are.
 *
 * Units. A step's batch_size x grad_accum sequences (or the sequences of
 * `grad`) are cut into U units of G consecutive sequences (the recipe's
 * unit_seqs, default 1), numbered 0..U-1. Rank q takes the contiguous units
 * [U·q/N, U·(q+1)/N); inside a rank each thread takes a contiguous run of
 * those. Every unit's gradient (of loss_u / U) is computed alone by one
 * thread with serial kernels (tr_step_one, B = G), so it is the same bits
 * wherever it runs. G is part of the recipe (a larger G: larger, faster
 * GEMMs, fewer units to spread over ranks and threads); N and the thread
 * count are not.
 *
 * The canonical sum. The step's gradient is the fixed binary tree over the
 * units: node [a, a + 2^k) (a a multiple of 2^k) = left half + right half,
 * halves past U empty; the root spans the next power of two >= U. Any
 * contiguous run of units is a list of whole aligned nodes, which a thread
 * builds as it goes (a stack: push the unit, add equal-size siblings), a
 * rank merges its threads' lists, and the owner of each ZeRO-1 shard
 * merges every rank's lists for its slice of the arena (all-to-all of the
 * slices) and folds the right edge. Float addition is commutative, so the
 * grouping alone fixes the bits: N = 1, 2, 3 ranks x any threads give the
 * identical gradient, loss, update and parameters. Losses are summed per
 * unit in unit order; expert loads are integers (exact in any order).
 * Inside a thread's stack (dp.c unit_worker) a linear weight's gradient,
 * one single-rounding dW product per unit (tr_linear_dw_once), is written
 * by the unit that opens a node and added straight into it by its right
 * sibling: the same bits as summing two separately computed gradients.
 *
 * Shards. The arena is cut into chunks of DS_ADAM_CHUNK floats; rank q owns
 * the chunks [nc·q/N, nc·(q+1)/N): its gradient slice, its AdamW moments
 * and its part of the update; updated parameters are all-gathered.
 *
 * The gradient norm is summed per tensor, independent of how the arena is
 * split: a tensor is cut into pieces where the arena crosses a multiple of
 * DS_ADAM_CHUNK (so each piece lies in one shard), each piece summed by the
 * rank holding it (four double lanes, folded in order), the pieces of a
 * tensor added in order, then the tensors in table order.
 *
 * Expert parallel (the model made with ds_tmodel_init_ep / _load_ep, every
 * rank holding only its routed experts, tmodel.h): the units run in lockstep
 * rounds on one worker per rank (ep.h: rows to the experts' owners and
 * back in each MoE layer's forward and backward); the tree and the ZeRO-1
 * shards cover the replicated region only, the shards cut where the
 * one-process arena crosses a DS_ADAM_CHUNK multiple inside a replicated
 * tensor (so each norm piece has one owner); each owner sums its experts'
 * gradients per source rank (units contiguous, in order) and the sources
 * in rank order (the same tree), keeps them and updates them itself.
 *
 * Memory per rank: the replicated parameters and one gradient arena per
 * thread (as before), plus per thread up to ~log2(units) + 1 gradient
 * arenas for the open tree nodes, plus the exchange buffers (its nodes'
 * full arenas out, every rank's nodes' slices of its shard in).
 */
#ifndef DS_DP_H
#define DS_DP_H

#include "optim.h"
#include "tmodel.h"

typedef struct ds_dp_ep ds_dp_ep;

typedef struct ds_dp {
    int rank, n;             /* this process of n (src/dist) */
    int64_t n_floats;        /* the replicated region of the arena (all of it without expert parallelism) */
    int64_t *shard;          /* [n + 1] arena offsets of the ZeRO-1 shards */
    int64_t lo, hi;          /* this rank's shard */
    float **bufs;            /* node buffers (n_floats each), grown on demand */
    int n_bufs;
    ds_dp_ep *ep;            /* expert parallel: the owner's per-source expert gradient trees */
} ds_dp;

int ds_dp_init(ds_dp *dp, const ds_tmodel *m, ds_err *e);
void ds_dp_free(ds_dp *dp);

/* Units [U·q/N, U·(q+1)/N) of rank q. */
void ds_dp_units(const ds_dp *dp, int64_t U, int q, int64_t *u0, int64_t *u1);

/* One forward + backward of U units of G sequences each, tokens[U·G·T]
 * (every rank passes all of them; each computes its own units, a unit as
 * one batch of G). Afterwards m->g[lo, hi) holds the gradient of
 * o->grad_scale · mean_u loss_u (loss_u: the unit's mean losses) for this
 * rank's shard (the rest of m->g is scratch), m->load the global expert
 * loads, *out the global mean losses. o->no_grad: losses only. */
int ds_dp_step(ds_dp *dp, ds_tmodel *m, const int32_t *tokens, int64_t U, int64_t G, int64_t T, const ds_loss_opts *o,
               ds_losses *out, ds_err *e);

/* Global L2 norm of the trainable gradients, per tensor as above: the same
 * bits on every rank and for every N. */
int ds_dp_grad_norm(ds_dp *dp, const ds_tmodel *m, const ds_adamw *o, double *norm, ds_err *e);

/* Every rank's updated shard of m->w to every rank. */
int ds_dp_allgather_params(ds_dp *dp, ds_tmodel *m, ds_err *e);

/* The whole gradient (every shard of m->g) on rank 0. */
int ds_dp_gather_grads(ds_dp *dp, ds_tmodel *m, ds_err *e);

/* shard_vals[hi - lo] of every rank into all[n_floats] on rank 0 (AdamW
 * moments for a checkpoint). */
int ds_dp_gather_shards(ds_dp *dp, const float *shard_vals, float *all, ds_err *e);

#endif
