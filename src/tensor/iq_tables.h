/*
 * iq_tables.h - the lookup tables of ggml's i-quant types (IQ1_S/IQ1_M,
 * IQ2_XXS/XS/S, IQ3_XXS/S, IQ4_NL/XS), generated into iq_tables.c by
 * tools/gen_iq_tables.py from the PyPI gguf package's data.
 *
 * Grid rows are little-endian byte vectors packed in an integer: value j of
 * entry i is byte j of grid[i] ((grid[i] >> 8j) & 0xFF), unsigned magnitudes
 * for IQ2/IQ3 (signs are stored apart), int8 -1/0/+1 for IQ1.
 */
#ifndef DS_IQ_TABLES_H
#define DS_IQ_TABLES_H

#include <stdint.h>

extern const uint64_t ds_iq2xxs_grid[256];   /* 8 values per entry: 8, 25, 43 */
extern const uint64_t ds_iq2xs_grid[512];
extern const uint64_t ds_iq2s_grid[1024];
extern const uint32_t ds_iq3xxs_grid[256];   /* 4 values per entry: 4 .. 62 */
extern const uint32_t ds_iq3s_grid[512];     /* 4 values per entry: 1 .. 15 */
extern const uint64_t ds_iq1s_grid[2048];    /* 8 int8 values per entry: -1, 0, 1 */
extern const uint8_t ds_iq_ksigns[128];      /* 7 sign bits -> 8 (even parity) */
extern const int8_t ds_iq4nl_values[16];

static inline int ds_grid8(const uint64_t *g, int i, int j) { return (int)((g[i] >> (8 * j)) & 0xFF); }
static inline int ds_grid4(const uint32_t *g, int i, int j) { return (int)((g[i] >> (8 * j)) & 0xFF); }
static inline int ds_grid1s(int i, int j) { return (int)(int8_t)((ds_iq1s_grid[i] >> (8 * j)) & 0xFF); }

#endif
