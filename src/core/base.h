/*
 * base.h - the bottom of the dependency stack: status codes, the error
 * struct every library function fills, bug asserts, overflow-checked sizes,
 * aligned allocation and a monotonic clock.
 *
 * Error tiers (see STYLE.md):
 *   1. bugs in our own invariants      -> DS_ASSERT (always on, aborts)
 *   2. expected failures (bad files,   -> return a negative DS_E* code and
 *      bad requests, limits)              fill a caller-owned ds_err
 *   3. only src/cli prints to the user and calls exit().
 */
#ifndef DS_BASE_H
#define DS_BASE_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

enum {
    DS_OK = 0,
    DS_EIO = -1,          /* open/read/write/mmap failed */
    DS_EFORMAT = -2,      /* malformed file or message */
    DS_ENOMEM = -3,       /* allocation failed or size overflow */
    DS_EINVAL = -4,       /* bad argument or config value */
    DS_ERANGE = -5,       /* value out of range (token id, offset, size) */
    DS_ENOTFOUND = -6,    /* missing file, tensor or key */
    DS_EUNSUPPORTED = -7, /* valid but not supported (dtype, arch) */
    DS_EINTERRUPTED = -8, /* stopped by the caller (Ctrl-C, disconnect) */
};

/* Caller-owned error. The first error set wins; later ones are ignored so
 * the innermost, most specific message survives. */
typedef struct ds_err {
    int code;
    char msg[512];
} ds_err;

/* Sets e (if e is non-NULL and still clear) and returns code. */
int ds_err_set(ds_err *e, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void ds_err_clear(ds_err *e);
const char *ds_status_str(int code);

void ds_assert_fail(const char *file, int line, const char *expr) __attribute__((noreturn));
#define DS_ASSERT(c) do { if (!(c)) ds_assert_fail(__FILE__, __LINE__, #c); } while (0)

#define DS_MIN(a, b) ((a) < (b) ? (a) : (b))
#define DS_MAX(a, b) ((a) > (b) ? (a) : (b))

/* Overflow-checked size arithmetic: return false on overflow. */
static inline bool ds_size_mul(size_t a, size_t b, size_t *out) {
    return !__builtin_mul_overflow(a, b, out);
}
static inline bool ds_size_add(size_t a, size_t b, size_t *out) {
    return !__builtin_add_overflow(a, b, out);
}

/* 64-byte aligned, zero-filled allocation; NULL on failure or n == 0
 * overflow. Free with ds_free (accepts NULL). */
void *ds_alloc(size_t n);
/* The same for large buffers that are streamed through over and over
 * (training's activations, weights, gradients, optimizer state): 2 MB
 * aligned and, where transparent huge pages are "madvise" only (Debian's
 * default), marked for them, so a pass over hundreds of MB does not take a
 * TLB miss (a nested page walk in a VM) every 4 KB. Free with ds_free. */
void *ds_alloc_huge(size_t n);
/* ds_alloc_huge without the zero fill, for a large buffer written before it
 * is read: its pages are faulted in by whoever first writes them (by each
 * thread for its own part, in parallel), 2 MB at a time where huge pages
 * are granted instead of 512 faults of 4 KB. Contents indeterminate. */
void *ds_alloc_huge_nozero(size_t n);
void ds_free(void *p);
/* Reads n bytes at p (32-byte aligned, n a multiple of 128) once, as fast
 * as one core streams them: 256-bit loads into 4 independent XOR
 * accumulators where the level has AVX2 (a plain 64-bit loop is
 * compute-bound below the memory's rate), else 64-bit words. The loop of
 * `bench`'s read-bandwidth probe and of the manual tools that compare a
 * kernel with it. Returns the accumulators folded (keeps the reads). */
uint64_t ds_read_stream(const void *p, size_t n);

/* Seconds from a monotonic clock. */
double ds_now(void);

/* True if the ISA level in use (core/cpu.h, DS_ISA) includes AVX2 + FMA:
 * the kernels compiled for it are called only when this holds. */
bool ds_cpu_avx2_fma(void);

#endif
