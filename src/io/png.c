/*
 * png.c - PNG encoder: signature, IHDR, one IDAT (zlib: fixed-Huffman
 * deflate with pixel-back / row-back matches), IEND. See png.h.
 */
#include "png.h"
#include "../core/mmap_file.h"

#include <stdlib.h>
#include <string.h>

uint32_t ds_crc32(const uint8_t *p, size_t n) {
    static uint32_t table[256];
    static int ready;
    if (!ready) {
        for (uint32_t i = 0; i < 256; i++) {
            uint32_t c = i;
            for (int k = 0; k < 8; k++) c = c & 1 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
            table[i] = c;
        }
        ready = 1;
    }
    uint32_t c = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++) c = table[(c ^ p[i]) & 0xFF] ^ (c >> 8);
    return c ^ 0xFFFFFFFFu;
}

/* ---------------------------------------------------------------- bit writer */

typedef struct {
    uint8_t *buf;
    size_t len, cap;
    uint32_t acc;
    int nbits;
    bool oom;
} bits;

static void put_byte(bits *b, uint8_t v) {
    if (b->len == b->cap) {
        size_t cap = b->cap ? 2 * b->cap : 1 << 16;
        uint8_t *p = realloc(b->buf, cap);
        if (!p) { b->oom = true; return; }
        b->buf = p;
        b->cap = cap;
    }
    b->buf[b->len++] = v;
}

/* n bits of v, least significant first (deflate's bit order) */
static void put_bits(bits *b, uint32_t v, int n) {
    b->acc |= v << b->nbits;
    b->nbits += n;
    while (b->nbits >= 8) {
        put_byte(b, (uint8_t)b->acc);
        b->acc >>= 8;
        b->nbits -= 8;
    }
}

/* a Huffman code of n bits, most significant bit first */
static void put_code(bits *b, uint32_t code, int n) {
    uint32_t r = 0;
    for (int i = 0; i < n; i++) r |= ((code >> i) & 1u) << (n - 1 - i);
    put_bits(b, r, n);
}

static void put_litlen(bits *b, int sym) {
    if (sym < 144) put_code(b, 0x30 + (uint32_t)sym, 8);
    else if (sym < 256) put_code(b, 0x190 + (uint32_t)(sym - 144), 9);
    else if (sym < 280) put_code(b, (uint32_t)(sym - 256), 7);
    else put_code(b, 0xC0 + (uint32_t)(sym - 280), 8);
}

static const uint16_t k_len_base[29] = { 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31,
                                         35, 43, 51, 59, 67, 83, 99, 115, 131, 163, 195, 227, 258 };
static const uint8_t k_len_extra[29] = { 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0 };
static const uint16_t k_dist_base[30] = { 1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513,
                                          769, 1025, 1537, 2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577 };
static const uint8_t k_dist_extra[30] = { 0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8,
                                          9, 9, 10, 10, 11, 11, 12, 12, 13, 13 };

static void put_match(bits *b, int len, int dist) {
    int i = 28;
    while (k_len_base[i] > len) i--;
    put_litlen(b, 257 + i);
    if (k_len_extra[i]) put_bits(b, (uint32_t)(len - k_len_base[i]), k_len_extra[i]);
    int d = 29;
    while (k_dist_base[d] > dist) d--;
    put_code(b, (uint32_t)d, 5);
    if (k_dist_extra[d]) put_bits(b, (uint32_t)(dist - k_dist_base[d]), k_dist_extra[d]);
}

/* zlib stream of data[n]; candidate match distances d1, d2 */
static int zlib_compress(const uint8_t *data, size_t n, int d1, int d2, bits *b) {
    put_byte(b, 0x78);
    put_byte(b, 0x01);
    put_bits(b, 1, 1);  /* BFINAL */
    put_bits(b, 1, 2);  /* fixed Huffman */
    int ds[2] = { d1, d2 };
    size_t i = 0;
    while (i < n) {
        int best_len = 0, best_d = 0;
        for (int k = 0; k < 2; k++) {
            int d = ds[k];
            if (d <= 0 || d > 32768 || (size_t)d > i) continue;
            int L = 0;
            while (L < 258 && i + (size_t)L < n && data[i + (size_t)L] == data[i + (size_t)L - (size_t)d]) L++;
            if (L > best_len) { best_len = L; best_d = d; }
        }
        if (best_len >= 3) {
            put_match(b, best_len, best_d);
            i += (size_t)best_len;
        } else {
            put_litlen(b, data[i]);
            i++;
        }
    }
    put_litlen(b, 256);
    if (b->nbits) put_bits(b, 0, 8 - b->nbits);
    uint32_t a = 1, c = 0;
    for (size_t j = 0; j < n; j++) { a = (a + data[j]) % 65521; c = (c + a) % 65521; }
    uint32_t adler = c << 16 | a;
    for (int k = 3; k >= 0; k--) put_byte(b, (uint8_t)(adler >> (8 * k)));
    return b->oom ? DS_ENOMEM : DS_OK;
}

static void be32(uint8_t *p, uint32_t v) { p[0] = (uint8_t)(v >> 24); p[1] = (uint8_t)(v >> 16); p[2] = (uint8_t)(v >> 8); p[3] = (uint8_t)v; }

static void chunk(bits *o, const char *type, const uint8_t *data, size_t n) {
    uint8_t hdr[8];
    be32(hdr, (uint32_t)n);
    memcpy(hdr + 4, type, 4);
    for (int i = 0; i < 8; i++) put_byte(o, hdr[i]);
    uint8_t *tmp = malloc(n + 4);
    if (!tmp) { o->oom = true; return; }
    memcpy(tmp, type, 4);
    if (n) memcpy(tmp + 4, data, n);
    for (size_t i = 0; i < n; i++) put_byte(o, data[i]);
    uint8_t crc[4];
    be32(crc, ds_crc32(tmp, n + 4));
    free(tmp);
    for (int i = 0; i < 4; i++) put_byte(o, crc[i]);
}

int ds_png_encode(const uint8_t *rgb, int w, int h, uint8_t **out, size_t *len, ds_err *e) {
    if (w <= 0 || h <= 0 || w > 16384 || h > 16384) return ds_err_set(e, DS_EINVAL, "png: bad size %dx%d", w, h);
    size_t stride = (size_t)w * 3 + 1, n = stride * (size_t)h;
    uint8_t *raw = malloc(n);
    if (!raw) return ds_err_set(e, DS_ENOMEM, "png: out of memory");
    for (int y = 0; y < h; y++) {
        raw[(size_t)y * stride] = 0;   /* filter: none */
        memcpy(raw + (size_t)y * stride + 1, rgb + (size_t)y * (size_t)w * 3, (size_t)w * 3);
    }
    bits z = { 0 };
    int rc = zlib_compress(raw, n, 3, (int)stride, &z);
    free(raw);
    if (rc) { free(z.buf); return ds_err_set(e, rc, "png: out of memory"); }
    bits o = { 0 };
    static const uint8_t sig[8] = { 0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n' };
    for (int i = 0; i < 8; i++) put_byte(&o, sig[i]);
    uint8_t ihdr[13];
    be32(ihdr, (uint32_t)w);
    be32(ihdr + 4, (uint32_t)h);
    ihdr[8] = 8; ihdr[9] = 2; ihdr[10] = 0; ihdr[11] = 0; ihdr[12] = 0;
    chunk(&o, "IHDR", ihdr, 13);
    chunk(&o, "IDAT", z.buf, z.len);
    chunk(&o, "IEND", NULL, 0);
    free(z.buf);
    if (o.oom) { free(o.buf); return ds_err_set(e, DS_ENOMEM, "png: out of memory"); }
    *out = o.buf;
    *len = o.len;
    return DS_OK;
}

int ds_png_write(const char *path, const uint8_t *rgb, int w, int h, ds_err *e) {
    uint8_t *buf;
    size_t len;
    int rc = ds_png_encode(rgb, w, h, &buf, &len, e);
    if (rc) return rc;
    rc = ds_write_file_atomic(path, buf, len, e);
    free(buf);
    return rc;
}
