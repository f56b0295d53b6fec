/*
 * chat.h - DeepSeek chat formats: conversation -> token ids for the V3, R1,
 * V3.1 (thinking / non-thinking) and V2 templates and for the prompt formats
 * V3.2 and V4 ship as Python (encoding_dsv32.py / encoding_dsv4.py: DSML
 * tool calls, reasoning effort; chat_dsml.c), template detection, and
 * helpers to split a generated reply into reasoning and content and to parse
 * tool calls out of it. Used by the chat REPL and the HTTP server.
 *
 * Rendering reproduces the official Jinja chat templates (including their
 * quirks) token for token, as transformers' apply_chat_template would, with
 * one deliberate difference: message text (system, user, assistant, tool
 * content, tool names and arguments) is tokenized with special-token
 * recognition OFF, so "<｜end▁of▁sentence｜>" typed by a user is plain text.
 * Only the template's own markers become added-token ids. (For text without
 * added-token strings the two are identical, which the tests check.)
 */
#ifndef DS_CHAT_H
#define DS_CHAT_H

#include "tokenizer.h"

typedef enum ds_chat_format {
    DS_CHAT_AUTO = 0, /* chat_render: use chat_format_detect on the tokenizer's template */
    DS_CHAT_V3,       /* DeepSeek-V3 (original template) */
    DS_CHAT_R1,       /* DeepSeek-R1: prompt ends "<｜Assistant｜><think>\n" */
    DS_CHAT_V31,      /* DeepSeek-V3.1 hybrid: thinking ("<think>") or not ("</think>") */
    DS_CHAT_V2,       /* DeepSeek-V2 / V2-Lite: "User: ...\n\nAssistant:" */
    DS_CHAT_V32,      /* DeepSeek-V3.2 (encoding_dsv32.py): DSML <｜DSML｜function_calls> */
    DS_CHAT_V4,       /* DeepSeek-V4 (encoding_dsv4.py): DSML <｜DSML｜tool_calls>, reasoning effort */
} ds_chat_format;

/* V4's reasoning_effort: MAX prepends its "Reasoning Effort" preface to the
 * prompt in thinking mode; HIGH (and DEFAULT) add nothing. V3.2 has none. */
typedef enum ds_reasoning_effort { DS_EFFORT_DEFAULT = 0, DS_EFFORT_HIGH, DS_EFFORT_MAX } ds_reasoning_effort;

typedef enum ds_chat_role { DS_ROLE_SYSTEM, DS_ROLE_USER, DS_ROLE_ASSISTANT, DS_ROLE_TOOL } ds_chat_role;

typedef struct ds_tool_call {
    const char *type;      /* "function" if NULL */
    const char *name;
    const char *arguments; /* JSON text, as the model writes it */
    const char *id;        /* optional call id (V4 orders tool results by it) */
} ds_tool_call;

typedef struct ds_chat_msg {
    ds_chat_role role;
    const char *content;   /* UTF-8, NUL-terminated; NULL = none (assistant with tool calls) */
    const char *reasoning; /* optional reasoning_content; the official templates drop earlier
                              reasoning from history, so it is not rendered */
    const ds_tool_call *tool_calls; /* assistant only; n_tool_calls > 0 means "has tool_calls" */
    int n_tool_calls;
    bool prefix;           /* V3.1: assistant prefix completion ("prefix": true) */
    const char *tool_call_id; /* tool messages: the call answered (V4 sorts results by call order) */
    size_t content_len;    /* content's bytes when it holds NUL characters (an API message may: a
                              model can write the byte 0); 0: strlen(content) */
} ds_chat_msg;

/* Options of chat_render_opts beyond chat_render's. */
typedef struct ds_chat_opts {
    bool add_generation_prompt, thinking;
    ds_reasoning_effort effort;   /* V4 */
    /* V3.2 / V4: the OpenAI "tools" array as JSON text ([{"type": "function",
     * "function": {...}}, ...]) or NULL. Rendered, as the official encoders
     * do, into the first message when it is a system message, else into an
     * empty system message put first (how vLLM and SGLang pass a request's
     * tools to encode_messages). Ignored by the Jinja formats. */
    const char *tools_json;
} ds_chat_opts;

/* Renders msgs[0..n) and appends the ids to *ids (on failure *ids is left
 * as it was). add_generation_prompt: end with the assistant turn opener;
 * thinking: V3.1, and V2 ("Assistant: <think>\n", the R1 way: our reasoner's
 * prompt); R1 always thinks, V3 never. fmt DS_CHAT_AUTO
 * detects from tok_chat_template(t). DS_EINVAL for a bad message (unknown
 * role, NULL name). Missing content (NULL) renders as "" except where a
 * template gives NULL a meaning (assistant tool-call messages). */
int chat_render(const ds_tokenizer *t, ds_chat_format fmt, const ds_chat_msg *msgs, int n,
                bool add_generation_prompt, bool thinking, tok_ids *ids, ds_err *e);

/* chat_render with options; text (optional): the rendered prompt as one
 * string, markers included (what the official encoders return), malloc'ed.
 * V3.2 / V4 follow encode_messages(messages, thinking_mode) of
 * encoding_dsv32.py / encoding_dsv4.py (drop_thinking=True,
 * add_default_bos_token=True): a user turn always ends with the assistant
 * opener ("<think>" when thinking and it is the last user turn, else
 * "</think>"); an assistant turn after the last user turn carries its
 * reasoning; earlier ones lose it (V4 keeps it when tools are given);
 * tool calls render as DSML. With add_generation_prompt false and an
 * assistant message last, that message is left open (no end of sentence:
 * prefix completion). DS_EINVAL for what the encoders reject (a tool
 * result with no call to answer, V3.2 arguments that are not a JSON
 * object, a thinking-mode assistant turn after the last user turn with
 * neither reasoning nor tool calls in V3.2). */
int chat_render_opts(const ds_tokenizer *t, ds_chat_format fmt, const ds_chat_msg *msgs, int n,
                     const ds_chat_opts *o, tok_ids *ids, char **text, ds_err *e);
/* "max" / "high" / "low" (and NULL, "") -> effort; -1 if unknown. */
int chat_effort_from_name(const char *name);
/* The DSML block opener that starts tool calls in a reply of fmt
 * ("\n\n<｜DSML｜function_calls" / "\n\n<｜DSML｜tool_calls"), NULL for the
 * Jinja formats. */
const char *chat_dsml_opener(ds_chat_format fmt);

/* The format for a model: the encoder its folder ships (see
 * chat_format_detect), else the tokenizer's chat template tmpl when there is
 * one (the tokenizer may come from elsewhere), else chat_format_detect(path). */
ds_chat_format chat_format_resolve(const char *path, const char *tmpl);

/* Format of a chat template string (markers: V3.1 "is_last_user"/thinking,
 * R1 "<think>", V2 "User: ", V3 "<｜User｜>"); DS_CHAT_V3 when NULL/unknown. */
ds_chat_format chat_format_from_template(const char *tmpl);
/* Whether tmpl has the markers of one of the formats above (else
 * chat_format_from_template's V3 is a guess). */
bool chat_template_known(const char *tmpl);
/* The format of a model folder (or the folder of a tokenizer.json): V3.2 /
 * V4 when the folder ships encoding/encoding_dsv32.py / encoding_dsv4.py;
 * else tokenizer_config.json's chat_template (or chat_template.jinja; V3.2-Exp
 * ships V3.1's); else V3.2 / V4 when config.json's model_type is
 * deepseek_v32 / deepseek_v4; else DS_CHAT_V3. */
ds_chat_format chat_format_detect(const char *model_path);
/* "v3", "r1", "v3.1", "v2", "v3.2", "v4" (also "deepseek-v3", "deepseek-r1",
 * "deepseek-v3.1", "deepseek-v2", "deepseek-v3.2", "deepseek-v4", "auto");
 * returns -1 if unknown. */
int chat_format_from_name(const char *name);
const char *chat_format_name(ds_chat_format fmt);
/* "system", "user", "assistant", "tool" -> role, or -1. */
int chat_role_from_name(const char *name);

/* Whether the generation prompt of this format/mode opens a reasoning block,
 * i.e. the model's reply starts inside <think> (R1 always, V3.1, V3.2, V4 and
 * V2 thinking). */
bool chat_reply_starts_in_reasoning(ds_chat_format fmt, bool thinking);

/* Splits generated text into reasoning and content (pointers into text).
 * starts_in_reasoning: the prompt opened <think> (see above). A leading
 * "<think>" in the text also opens reasoning. Reasoning ends at the first
 * "</think>"; if there is none and reasoning was open, everything is
 * reasoning and reasoning_done is false (still thinking / cut off). */
typedef struct ds_reply_split {
    const char *reasoning;
    size_t reasoning_len;
    const char *content;
    size_t content_len;
    bool has_reasoning, reasoning_done;
} ds_reply_split;
void chat_split_reasoning(const char *text, size_t len, bool starts_in_reasoning, ds_reply_split *out);

/* Tool calls parsed from generated text (decoded with the tool markers
 * kept). V3/R1: "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>TYPE<｜tool▁sep｜>NAME\n```json\nARGS\n```
 * <｜tool▁call▁end｜>..." ; V3.1: "...<｜tool▁call▁begin｜>NAME<｜tool▁sep｜>ARGS<｜tool▁call▁end｜>...".
 * content: the text before the tool calls (all of it if there are none). All
 * strings malloc'ed; free with chat_tool_parse_free. DS_EFORMAT if the
 * calls are malformed or cut off (content and the complete calls are still
 * filled in). */
typedef struct ds_parsed_call { char *type, *name, *arguments; } ds_parsed_call;
typedef struct ds_tool_parse {
    char *content;
    ds_parsed_call *calls;
    int n_calls;
} ds_tool_parse;
/* V3.2 / V4 (fmt): DSML, "\n\n<｜DSML｜function_calls>\n<｜DSML｜invoke name=\"N\">\n
 * <｜DSML｜parameter name=\"K\" string=\"true|false\">V</｜DSML｜parameter>\n...
 * </｜DSML｜invoke>\n</｜DSML｜function_calls>" (tool_calls for V4), parsed as
 * parse_tool_calls of the official encoders; arguments rebuilt as they do
 * ({"K": "V", "K2": V2}: string values JSON-quoted, others verbatim).
 * DS_EFORMAT for a malformed block (content is then the whole text). */
int chat_parse_tool_calls(ds_chat_format fmt, const char *text, size_t len, ds_tool_parse *out, ds_err *e);
void chat_tool_parse_free(ds_tool_parse *p);

#endif
