/*
 * tokenizer.h - Hugging Face tokenizer.json (byte-level BPE) for DeepSeek
 * V2/V3/R1/V3.1 and GPT-2-style tokenizers: load, encode, decode, streaming
 * decode. Bit-exact with the HF `tokenizers` library (the header comment of
 * tokenizer.c lists what is supported).
 *
 * Encoding pipeline (as HF): added tokens are matched in the raw text first
 * (longest match, leftmost first; single_word/lstrip/rstrip honoured), then
 * each remaining span goes through the pre-tokenizer (Split regexes +
 * ByteLevel) and the BPE model. The normalizer must be empty.
 *
 * Thread safety: a loaded tokenizer is read-only except for an internal
 * pre-token cache guarded by a mutex (never waited on: a busy cache is
 * skipped), so any number of threads may encode/decode at once.
 */
#ifndef DS_TOKENIZER_H
#define DS_TOKENIZER_H

#include "../core/base.h"

typedef struct ds_tokenizer ds_tokenizer;

/* Growable id vector; zero-initialize, free with tok_ids_free. */
typedef struct tok_ids {
    int32_t *v;
    int64_t n, cap;
} tok_ids;
int tok_ids_push(tok_ids *ids, int32_t id, ds_err *e);
void tok_ids_free(tok_ids *ids);

/* ------------------------------------------------------------ loading */

/* path: a model folder containing tokenizer.json, or the path of a
 * tokenizer.json. tokenizer_config.json next to it (if present) supplies
 * bos_token / eos_token / add_bos_token / chat_template. Free with
 * tok_free (NULL ok). */
int tok_load(ds_tokenizer **out, const char *path, ds_err *e);
/* The same from memory: `json` is a tokenizer.json document (len bytes),
 * `config_json` an optional tokenizer_config.json (NULL, 0 if none). `what`
 * names the source in error messages. */
int tok_load_buf(ds_tokenizer **out, const char *what, const char *json, size_t len,
                 const char *config_json, size_t config_len, ds_err *e);
void tok_free(ds_tokenizer *t);

/* From a GGUF file's metadata (tok_gguf.c): tokenizer.ggml.model "gpt2"
 * with tokenizer.ggml.pre deepseek-v3, deepseek-llm or deepseek-coder (the
 * pre-tokenizer regexes of those tokenizer.json files), .tokens, .token_type
 * (CONTROL = special added token, USER_DEFINED = added, UNUSED = no token),
 * .merges, .bos/eos_token_id, .add_bos/add_eos_token and
 * tokenizer.chat_template. Ids are those of the HF tokenizer.json the file
 * was converted from. `g` is a `const struct ds_gguf *` (io/gguf.h). */
struct ds_gguf;
int tok_load_gguf(ds_tokenizer **out, const struct ds_gguf *g, ds_err *e);

/* The tokenizer of a model, by precedence: `explicit_path` (--tokenizer: a
 * folder with tokenizer.json, a tokenizer.json, or a .gguf) if given; for a
 * model folder its tokenizer.json; for a .gguf model (any part of a split
 * one) tokenizer.json beside the file, then the GGUF's own metadata. On
 * failure the message lists each source tried and why it failed. */
int tok_load_for_model(ds_tokenizer **out, const char *model, const char *explicit_path, ds_err *e);

/* ------------------------------------------------------------ encoding */

enum {
    TOK_PARSE_SPECIAL = 1u << 0, /* match added tokens (special or not) in the text */
    TOK_ADD_SPECIAL = 1u << 1,   /* apply the post_processor (e.g. a BOS template) */
};
/* HF `Tokenizer.encode(text).ids` = flags TOK_PARSE_SPECIAL | TOK_ADD_SPECIAL.
 * Without TOK_PARSE_SPECIAL no added token is recognized (special or not):
 * the text is pre-tokenized and BPE-encoded literally, so e.g. a user typing
 * "<｜end▁of▁sentence｜>" gets plain-text tokens. text may hold any bytes;
 * invalid UTF-8 is encoded as byte tokens (decode gives the bytes back).
 * Appends to *ids (on failure *ids keeps what it had). */
int tok_encode_append(const ds_tokenizer *t, const char *text, size_t len, unsigned flags,
                      tok_ids *ids, ds_err *e);
/* Convenience: flags TOK_PARSE_SPECIAL (if parse_special) and no post-processor;
 * *ids is malloc'ed (caller frees, also when *n == 0), *n its length. */
int tok_encode(const ds_tokenizer *t, const char *text, size_t len, bool parse_special,
               int32_t **ids, int64_t *n, ds_err *e);

/* ------------------------------------------------------------ decoding */

/* Exact bytes of the ids concatenated (ByteLevel decoder), which may be
 * invalid UTF-8 when a multi-byte character is split; HF's decode would
 * additionally replace those (see tok_utf8_sanitize). skip_special drops
 * tokens flagged special. Ids outside [0, tok_vocab_size) or unused ids are
 * DS_ERANGE. *out is malloc'ed and NUL-terminated; caller frees. */
int tok_decode(const ds_tokenizer *t, const int32_t *ids, int64_t n, bool skip_special,
               char **out, size_t *len, ds_err *e);
/* Decoded bytes of one token (borrowed, valid until tok_free), or NULL for
 * an unused/out-of-range id. */
const char *tok_id_to_piece(const ds_tokenizer *t, int32_t id, size_t *len);
/* The token's string as written in tokenizer.json (byte-level form such as
 * "Ġthe", or an added token's content); borrowed; NULL if unused. */
const char *tok_id_to_token(const ds_tokenizer *t, int32_t id, size_t *len);
/* Id of a token string (tokenizer.json form, added tokens first), or -1. */
int32_t tok_token_to_id(const ds_tokenizer *t, const char *s, size_t len);
/* Id of an added token with exactly this content, or -1. */
int32_t tok_added_token_id(const ds_tokenizer *t, const char *s, size_t len);

/* Replaces invalid UTF-8 in s[0..n) by U+FFFD (one per maximal invalid
 * subpart, like Rust's from_utf8_lossy and Python's errors='replace').
 * *out malloc'ed, NUL-terminated. */
int tok_utf8_sanitize(const char *s, size_t n, char **out, size_t *out_len, ds_err *e);

/* ------------------------------------------------------------ metadata */

/* Highest token id + 1 (model vocab and added tokens): 128815 for V3. */
int64_t tok_vocab_size(const ds_tokenizer *t);
bool tok_is_special(const ds_tokenizer *t, int32_t id); /* added token flagged special */
bool tok_is_added(const ds_tokenizer *t, int32_t id);
/* BOS/EOS ids from tokenizer_config.json (bos_token/eos_token), else from
 * well-known added tokens; -1 if unknown. */
int32_t tok_bos_id(const ds_tokenizer *t);
int32_t tok_eos_id(const ds_tokenizer *t);
/* tokenizer_config.json add_bos_token / add_eos_token (default false);
 * from a GGUF tokenizer.ggml.add_bos_token / add_eos_token. */
bool tok_add_bos(const ds_tokenizer *t);
bool tok_add_eos(const ds_tokenizer *t);
/* tokenizer_config.json chat_template (borrowed), or NULL. */
const char *tok_chat_template(const ds_tokenizer *t);

/* ------------------------------------------------------ streaming decode */

/* Incremental detokenizer: feed ids one at a time; each push returns text
 * that is always complete, valid UTF-8. Bytes of a multi-byte character
 * split across tokens are held back until the character is complete;
 * bytes that can never form a valid character are replaced by U+FFFD as
 * soon as that is certain. tok_stream_flush emits what is held back (as
 * U+FFFD, since it is an incomplete character). The concatenation of every
 * push and the flush equals tok_utf8_sanitize(tok_decode(all ids)).
 * Caller-owned struct: tok_stream_init, then tok_stream_free. */
typedef struct tok_stream {
    const ds_tokenizer *tok;
    bool skip_special;
    unsigned char pend[4]; /* incomplete UTF-8 sequence held back */
    int n_pend;
    char *buf;             /* output of the last call */
    size_t cap;
} tok_stream;
void tok_stream_init(tok_stream *s, const ds_tokenizer *t, bool skip_special);
/* *text (borrowed until the next call) and *len: the text to emit now,
 * possibly empty. DS_ERANGE for a bad id (state unchanged). */
int tok_stream_push(tok_stream *s, int32_t id, const char **text, size_t *len, ds_err *e);
int tok_stream_flush(tok_stream *s, const char **text, size_t *len, ds_err *e);
void tok_stream_free(tok_stream *s);

#endif
