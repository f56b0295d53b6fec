/*
 * unicode_tables.h - Oniguruma's Unicode classes, as far as they differ from
 * PCRE2's (generated into unicode_tables.c by tools/gen_unicode_tables.py).
 * Used only by regex.c to make PCRE2 split text exactly as HF tokenizers'
 * Oniguruma does.
 */
#ifndef DS_TOK_UNICODE_TABLES_H
#define DS_TOK_UNICODE_TABLES_H

#include <stdbool.h>
#include <stdint.h>

typedef struct { uint32_t lo, hi; } uni_range;

/* Code points Oniguruma puts in class `name` ("L", "Lu", ..., "Zp"; "w" and
 * "d" for \w and \d) that PCRE2's \p{name} lacks, or (for "s") Oniguruma's
 * whole \s set. *n ranges; *exact is false where PCRE2 also has code points
 * Oniguruma lacks (only some sub-categories). NULL for unknown names. */
const uni_range *uni_onig_extra(const char *name, int *n, bool *exact);

#endif
