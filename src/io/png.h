/*
 * png.h - a small PNG writer (8-bit RGB), no dependencies.
 *
 * The zlib stream is one deflate block with the fixed Huffman code
 * (RFC 1951 §3.2.6) and LZ77 matches at two distances only — one pixel back
 * and one row back — which is what flat-coloured plots compress with
 * (a 1200×800 chart is ~30-60 KB instead of 2.9 MB stored).
 */
#ifndef DS_PNG_H
#define DS_PNG_H

#include "../core/base.h"

/* rgb: h rows of w·3 bytes. Written atomically. */
int ds_png_write(const char *path, const uint8_t *rgb, int w, int h, ds_err *e);
/* The same into memory: *out malloc'ed (caller frees). */
int ds_png_encode(const uint8_t *rgb, int w, int h, uint8_t **out, size_t *len, ds_err *e);

uint32_t ds_crc32(const uint8_t *p, size_t n);

#endif
