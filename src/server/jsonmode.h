/*
 * jsonmode.h - the incremental JSON validator behind response_format
 * {"type":"json_object"}: constrained decoding that can only produce text
 * which parses as one JSON object (RFC 8259), and that always finishes
 * within the token budget.
 *
 * jv_state is a pushdown automaton over bytes, small enough to copy per
 * candidate token (the nesting stack is a bit set). jv_feed() accepts bytes
 * that keep the text a valid prefix of some JSON object and rejects the
 * rest, leaving the state unchanged on rejection. jv_need() is the fewest
 * bytes that complete the value from here (close the string, finish a
 * number or literal, give a pending key a value, close every container);
 * jv_closing() writes those bytes. The decoder allows a token only if,
 * after it, jv_need() <= the tokens still left (every byte exists as a
 * single-byte token in a byte-level BPE vocabulary), so the output is
 * complete JSON when the budget runs out, whatever the model prefers.
 *
 * Limits: nesting depth JV_MAX_DEPTH, whitespace runs of at most
 * JV_MAX_WS bytes (both keep a random model from wandering); numbers have
 * at most 15 integer digits and 2 exponent digits, so strict parsers
 * (int64 integers, finite doubles) accept them. Strings must
 * be valid UTF-8 (no overlongs, surrogates or code points > U+10FFFF) and
 * hold no raw control characters; escapes are checked. Nothing here
 * allocates.
 */
#ifndef DS_JSONMODE_H
#define DS_JSONMODE_H

#include "../core/base.h"

#define JV_MAX_DEPTH 32
#define JV_MAX_WS 16
#define JV_MAX_INT_DIGITS 15  /* integer part: fits int64 and doubles exactly */
#define JV_MAX_EXP_DIGITS 2   /* exponent: |e| <= 99, no overflow */

typedef struct jv_state {
    uint8_t mode;       /* internal automaton state */
    uint8_t sub;        /* literal index, \u digits read, UTF-8 bytes left */
    uint8_t lit;        /* which literal (true/false/null) */
    uint8_t utf_lo, utf_hi; /* allowed range of the next UTF-8 continuation byte */
    uint8_t depth;      /* open containers */
    uint8_t ws;         /* current whitespace run */
    uint8_t key;        /* the open string is an object key */
    uint32_t stack;     /* bit i: container i is an array (else object) */
} jv_state;

/* Start: expecting optional whitespace then '{' (top level is an object). */
void jv_init(jv_state *s);
/* Feeds bytes; returns true and advances if they keep a valid prefix,
 * false (state unchanged) otherwise. */
bool jv_feed(jv_state *s, const char *bytes, size_t n);
/* The top-level object is complete (only whitespace may follow). */
bool jv_done(const jv_state *s);
/* Fewest bytes needed to complete the top-level value from s. */
int jv_need(const jv_state *s);
/* Writes those bytes (at most cap-1, NUL-terminated); returns their count. */
int jv_closing(const jv_state *s, char *out, int cap);

#endif
