/*
 * arena.h - a bump allocator for memory that lives for one step (one
 * forward pass, one request). ds_arena_reset() frees everything at once;
 * after a reset that needed several blocks, the next round gets one block
 * big enough for all of it, so steady-state steps do not call malloc.
 */
#ifndef DS_ARENA_H
#define DS_ARENA_H

#include "base.h"

typedef struct ds_arena_block ds_arena_block;
typedef struct ds_arena {
    ds_arena_block *head;  /* current block; older ones chained behind it */
    size_t high_water;     /* bytes used in the largest round so far */
    size_t used_round;
    bool huge;             /* blocks from ds_alloc_huge (set after ds_arena_init) */
} ds_arena;

void ds_arena_init(ds_arena *a);
/* 64-byte aligned, zero-filled; NULL on failure. */
void *ds_arena_alloc(ds_arena *a, size_t bytes);
/* Overflow-checked n * size. */
void *ds_arena_calloc(ds_arena *a, size_t n, size_t size);
/* The same without the zero fill: only for buffers the caller overwrites
 * entirely before reading (large per-layer scratch). */
void *ds_arena_array(ds_arena *a, size_t n, size_t size);
void ds_arena_reset(ds_arena *a);

/* Scoped use: everything allocated after a mark is released by
 * ds_arena_release (blocks added since are freed). */
typedef struct ds_arena_mark { ds_arena_block *block; size_t used, used_round; } ds_arena_mark;
ds_arena_mark ds_arena_get_mark(const ds_arena *a);
void ds_arena_release(ds_arena *a, ds_arena_mark mk);
void ds_arena_free(ds_arena *a);

#endif
