/*
 * jsonmode.c - incremental JSON validator for constrained decoding (see
 * jsonmode.h). Owns only the byte automaton and its completion cost; which
 * tokens to mask, and when, is the scheduler's business (sched.c).
 */
#include "jsonmode.h"

#include <string.h>

enum {
    M_START,      /* before the top-level '{' */
    M_DONE,       /* top-level object closed */
    M_VALUE,      /* a value is required (after ':' or an array ',') */
    M_ARR_FIRST,  /* after '[': a value or ']' */
    M_OBJ_FIRST,  /* after '{': a key or '}' */
    M_OBJ_KEY,    /* after an object ',': a key */
    M_COLON,      /* after a key */
    M_AFTER,      /* after a value inside a container: ',' or the closer */
    M_STR,        /* inside a string */
    M_STR_ESC,    /* after a backslash */
    M_STR_U,      /* inside \uXXXX; sub = hex digits read, lit = 1 if the first was D */
    M_STR_UTF,    /* inside a multi-byte UTF-8 character; sub = continuation bytes left */
    M_NUM_MINUS,  /* after '-' */
    M_NUM_ZERO,   /* after a leading 0 */
    M_NUM_INT,    /* integer digits */
    M_NUM_DOT,    /* after '.' */
    M_NUM_FRAC,   /* fraction digits */
    M_NUM_E,      /* after e/E */
    M_NUM_ESIGN,  /* after the exponent sign */
    M_NUM_EXP,    /* exponent digits */
    M_LIT,        /* inside true/false/null; lit = which, sub = bytes matched */
};

static const char *const k_lits[3] = { "true", "false", "null" };

void jv_init(jv_state *s) {
    memset(s, 0, sizeof *s);
    s->mode = M_START;
}

bool jv_done(const jv_state *s) { return s->mode == M_DONE; }

static bool is_ws(unsigned char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }
static bool is_digit(unsigned char c) { return c >= '0' && c <= '9'; }
static bool is_hex(unsigned char c) { return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'); }
static bool top_is_array(const jv_state *s) { return (s->stack >> (s->depth - 1)) & 1u; }

static void value_end(jv_state *s) { s->mode = s->depth == 0 ? M_DONE : M_AFTER; }

static bool open_container(jv_state *s, bool array) {
    if (s->depth >= JV_MAX_DEPTH) return false;
    if (array) s->stack |= 1u << s->depth;
    else s->stack &= ~(1u << s->depth);
    s->depth++;
    s->mode = array ? M_ARR_FIRST : M_OBJ_FIRST;
    return true;
}

static void close_container(jv_state *s) {
    s->depth--;
    value_end(s);
}

/* A value starts with c (modes M_VALUE and M_ARR_FIRST). */
static bool start_value(jv_state *s, unsigned char c) {
    switch (c) {
    case '"': s->mode = M_STR; s->key = 0; return true;
    case '{': return open_container(s, false);
    case '[': return open_container(s, true);
    case '-': s->mode = M_NUM_MINUS; return true;
    case '0': s->mode = M_NUM_ZERO; s->sub = 1; return true;
    case 't': case 'f': case 'n':
        s->mode = M_LIT;
        s->lit = c == 't' ? 0 : c == 'f' ? 1 : 2;
        s->sub = 1;
        return true;
    default:
        if (c >= '1' && c <= '9') { s->mode = M_NUM_INT; s->sub = 1; return true; }
        return false;
    }
}

static bool step(jv_state *s, unsigned char c) {
    switch (s->mode) {
    case M_STR:
        if (c == '"') {
            if (s->key) s->mode = M_COLON;
            else value_end(s);
            return true;
        }
        if (c == '\\') { s->mode = M_STR_ESC; return true; }
        if (c < 0x20) return false;
        if (c < 0x80) return true;
        if (c >= 0xC2 && c <= 0xDF) { s->sub = 1; s->utf_lo = 0x80; s->utf_hi = 0xBF; }
        else if (c == 0xE0) { s->sub = 2; s->utf_lo = 0xA0; s->utf_hi = 0xBF; }
        else if (c >= 0xE1 && c <= 0xEC) { s->sub = 2; s->utf_lo = 0x80; s->utf_hi = 0xBF; }
        else if (c == 0xED) { s->sub = 2; s->utf_lo = 0x80; s->utf_hi = 0x9F; }
        else if (c >= 0xEE && c <= 0xEF) { s->sub = 2; s->utf_lo = 0x80; s->utf_hi = 0xBF; }
        else if (c == 0xF0) { s->sub = 3; s->utf_lo = 0x90; s->utf_hi = 0xBF; }
        else if (c >= 0xF1 && c <= 0xF3) { s->sub = 3; s->utf_lo = 0x80; s->utf_hi = 0xBF; }
        else if (c == 0xF4) { s->sub = 3; s->utf_lo = 0x80; s->utf_hi = 0x8F; }
        else return false;
        s->mode = M_STR_UTF;
        return true;
    case M_STR_UTF:
        if (c < s->utf_lo || c > s->utf_hi) return false;
        s->utf_lo = 0x80;
        s->utf_hi = 0xBF;
        if (--s->sub == 0) s->mode = M_STR;
        return true;
    case M_STR_ESC:
        if (c == 'u') { s->mode = M_STR_U; s->sub = 0; s->lit = 0; return true; }
        if (!strchr("\"\\/bfnrt", c) || c == 0) return false;
        s->mode = M_STR;
        return true;
    case M_STR_U:
        if (!is_hex(c)) return false;
        /* no surrogates (\uD800-\uDFFF): strict parsers reject lone ones */
        if (s->sub == 0 && (c == 'd' || c == 'D')) s->lit = 1;
        if (s->sub == 1 && s->lit && !(c >= '0' && c <= '7')) return false;
        if (++s->sub == 4) s->mode = M_STR;
        return true;
    case M_LIT: {
        const char *w = k_lits[s->lit];
        if (c != (unsigned char)w[s->sub]) return false;
        if (w[++s->sub] == 0) value_end(s);
        return true;
    }
    case M_NUM_MINUS:
        if (c == '0') { s->mode = M_NUM_ZERO; s->sub = 1; return true; }
        if (c >= '1' && c <= '9') { s->mode = M_NUM_INT; s->sub = 1; return true; }
        return false;
    case M_NUM_DOT:
        if (!is_digit(c)) return false;
        s->mode = M_NUM_FRAC;
        return true;
    case M_NUM_E:
        if (c == '+' || c == '-') { s->mode = M_NUM_ESIGN; return true; }
        /* fall through */
    case M_NUM_ESIGN:
        if (!is_digit(c)) return false;
        s->mode = M_NUM_EXP;
        s->sub = 1;
        return true;
    case M_NUM_ZERO:
    case M_NUM_INT:
    case M_NUM_FRAC:
    case M_NUM_EXP:
        if (is_digit(c) && s->mode != M_NUM_ZERO) {
            /* integer and exponent digits are capped so that every parser
             * reads the number (int64 integers, no double overflow) */
            if (s->mode == M_NUM_INT && s->sub >= JV_MAX_INT_DIGITS) return false;
            if (s->mode == M_NUM_EXP && s->sub >= JV_MAX_EXP_DIGITS) return false;
            if (s->mode != M_NUM_FRAC) s->sub++;
            return true;
        }
        if (c == '.' && (s->mode == M_NUM_ZERO || s->mode == M_NUM_INT)) { s->mode = M_NUM_DOT; return true; }
        if ((c == 'e' || c == 'E') && s->mode != M_NUM_EXP) { s->mode = M_NUM_E; return true; }
        /* the number ends here; c belongs to what follows */
        value_end(s);
        return step(s, c);
    default:
        break;
    }
    /* structural modes: whitespace, then one structural byte */
    if (is_ws(c)) {
        if (s->ws >= JV_MAX_WS) return false;
        s->ws++;
        return true;
    }
    s->ws = 0;
    switch (s->mode) {
    case M_START: return c == '{' && open_container(s, false);
    case M_DONE: return false;
    case M_VALUE: return start_value(s, c);
    case M_ARR_FIRST:
        if (c == ']') { close_container(s); return true; }
        return start_value(s, c);
    case M_OBJ_FIRST:
        if (c == '}') { close_container(s); return true; }
        /* fall through */
    case M_OBJ_KEY:
        if (c != '"') return false;
        s->mode = M_STR;
        s->key = 1;
        return true;
    case M_COLON:
        if (c != ':') return false;
        s->mode = M_VALUE;
        return true;
    case M_AFTER:
        if (c == ',') { s->mode = top_is_array(s) ? M_VALUE : M_OBJ_KEY; return true; }
        if (c == (top_is_array(s) ? ']' : '}')) { close_container(s); return true; }
        return false;
    default:
        return false;
    }
}

bool jv_feed(jv_state *s, const char *bytes, size_t n) {
    jv_state t = *s;
    for (size_t i = 0; i < n; i++)
        if (!step(&t, (unsigned char)bytes[i])) return false;
    *s = t;
    return true;
}

/* The bytes that finish the current token (before the container closers). */
static int tail(const jv_state *s, char *out) {
    int n = 0;
    switch (s->mode) {
    case M_START: out[n++] = '{'; out[n++] = '}'; break;
    case M_OBJ_KEY: memcpy(out, "\"\":0", 4); n = 4; break;
    case M_COLON: out[n++] = ':'; out[n++] = '0'; break;
    case M_VALUE: case M_NUM_MINUS: case M_NUM_DOT: case M_NUM_E: case M_NUM_ESIGN: out[n++] = '0'; break;
    case M_LIT: {
        const char *w = k_lits[s->lit] + s->sub;
        while (*w) out[n++] = *w++;
        break;
    }
    case M_STR: case M_STR_ESC: case M_STR_U: case M_STR_UTF:
        if (s->mode == M_STR_ESC) out[n++] = 'n';
        if (s->mode == M_STR_U) for (int i = s->sub; i < 4; i++) out[n++] = '0';
        if (s->mode == M_STR_UTF) {
            out[n++] = (char)s->utf_lo;
            for (int i = 1; i < s->sub; i++) out[n++] = (char)0x80;
        }
        out[n++] = '"';
        if (s->key) { out[n++] = ':'; out[n++] = '0'; }
        break;
    default: break;
    }
    return n;
}

int jv_need(const jv_state *s) {
    char buf[16];
    return tail(s, buf) + s->depth;
}

int jv_closing(const jv_state *s, char *out, int cap) {
    char buf[16 + JV_MAX_DEPTH];
    int n = tail(s, buf);
    for (int d = s->depth; d > 0; d--) buf[n++] = ((s->stack >> (d - 1)) & 1u) ? ']' : '}';
    if (n > cap - 1) n = cap - 1 < 0 ? 0 : cap - 1;
    if (cap > 0) {
        memcpy(out, buf, (size_t)n);
        out[n] = 0;
    }
    return n;
}
