/*
 * arena.c - bump allocator (see arena.h).
 */
#include "arena.h"

#include <stdlib.h>
#include <string.h>

struct ds_arena_block {
    ds_arena_block *prev;
    size_t cap, used;
    uint8_t *data;
};

void ds_arena_init(ds_arena *a) { memset(a, 0, sizeof *a); }

static ds_arena_block *new_block(size_t cap, bool huge) {
    ds_arena_block *b = malloc(sizeof *b);
    if (!b) return NULL;
    b->data = huge ? ds_alloc_huge(cap) : ds_alloc(cap);
    if (!b->data) { free(b); return NULL; }
    b->cap = cap;
    b->used = 0;
    b->prev = NULL;
    return b;
}

static void *arena_take(ds_arena *a, size_t bytes, bool zero) {
    size_t need;
    if (!ds_size_add(bytes, 63, &need)) return NULL;
    need &= ~(size_t)63;
    if (need == 0) need = 64;
    ds_arena_block *b = a->head;
    if (!b || b->cap - b->used < need) {
        size_t cap = need > ((size_t)1 << 20) ? need : ((size_t)1 << 20);
        if (b && cap < b->cap * 2 && b->cap * 2 >= need) cap = b->cap * 2;
        ds_arena_block *nb = new_block(cap, a->huge);
        if (!nb) return NULL;
        nb->prev = b;
        a->head = nb;
        b = nb;
    }
    void *p = b->data + b->used;
    b->used += need;
    a->used_round += need;
    if (zero) memset(p, 0, need);
    return p;
}

void *ds_arena_alloc(ds_arena *a, size_t bytes) { return arena_take(a, bytes, true); }

void *ds_arena_calloc(ds_arena *a, size_t n, size_t size) {
    size_t bytes;
    if (!ds_size_mul(n, size, &bytes)) return NULL;
    return arena_take(a, bytes, true);
}

void *ds_arena_array(ds_arena *a, size_t n, size_t size) {
    size_t bytes;
    if (!ds_size_mul(n, size, &bytes)) return NULL;
    return arena_take(a, bytes, false);
}

void ds_arena_reset(ds_arena *a) {
    if (a->used_round > a->high_water) a->high_water = a->used_round;
    a->used_round = 0;
    if (!a->head) return;
    if (a->head->prev || a->head->cap < a->high_water) {
        /* consolidate into one block sized for the largest round */
        ds_arena_free(a);
        size_t hw = a->high_water;
        ds_arena_block *nb = new_block(hw, a->huge);
        a->head = nb;  /* NULL on failure: the next alloc retries */
        a->high_water = hw;
        return;
    }
    a->head->used = 0;
}

void ds_arena_free(ds_arena *a) {
    ds_arena_block *b = a->head;
    while (b) {
        ds_arena_block *p = b->prev;
        ds_free(b->data);
        free(b);
        b = p;
    }
    size_t hw = a->high_water;
    bool huge = a->huge;
    memset(a, 0, sizeof *a);
    a->high_water = hw;
    a->huge = huge;
}

ds_arena_mark ds_arena_get_mark(const ds_arena *a) {
    ds_arena_mark mk = { a->head, a->head ? a->head->used : 0, a->used_round };
    return mk;
}

void ds_arena_release(ds_arena *a, ds_arena_mark mk) {
    if (a->used_round > a->high_water) a->high_water = a->used_round;
    while (a->head && a->head != mk.block) {
        ds_arena_block *p = a->head->prev;
        ds_free(a->head->data);
        free(a->head);
        a->head = p;
    }
    if (a->head) a->head->used = mk.used;
    a->used_round = mk.used_round;
}
