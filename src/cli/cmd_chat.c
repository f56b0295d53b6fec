/*
 * cmd_chat.c - `deepseek chat`: an interactive terminal chat.
 *
 * Line editing and history come from libedit (readline API). Replies
 * stream as they are decoded; reasoning (<think> ... </think>, R1 and V3.1
 * thinking) is shown dimmed and separated from the answer, or hidden with
 * /think off. Ctrl-C stops the current answer and returns to the prompt.
 * Each turn re-renders the whole conversation with the model's chat
 * template and reuses the longest cached prefix, so earlier turns are not
 * recomputed. With stdin not a terminal, turns are read from stdin (one per
 * line; a line ending in '\' continues) and only the replies are printed.
 */
#include "cli.h"
#include "../dist/dist.h"
#include "../core/thread.h"
#include "../runtime/generate.h"
#include "../runtime/stop.h"
#include "../tokenizer/chat.h"

#include <editline/readline.h>
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *C = "chat";
static volatile sig_atomic_t g_interrupt;

static void on_sigint(int sig) {
    (void)sig;
    g_interrupt = 1;
}

static void usage(FILE *f) {
    fprintf(f,
        "usage: deepseek chat [-m MODEL_DIR] [options]\n"
        "  Interactive chat in the model's format: its chat template (V3, R1, V3.1 or V2), or\n"
        "  for V3.2 / V4 folders the format their encoding_dsv32.py / encoding_dsv4.py define.\n"
        "  --system TEXT        system prompt\n"
        "  --format NAME        chat format: auto, v3, r1, v3.1, v2, v3.2, v4 (default auto)\n"
        "  --tokenizer PATH     tokenizer.json, its folder, or a .gguf (default: the model folder's;\n"
        "                       for a .gguf the tokenizer.json beside it, then its metadata)\n"
        "  --think              V3.1, V3.2, V4 and V2-format reasoners: thinking mode (the reply starts with\n"
        "                       reasoning); the default for a model whose generation_config.json\n"
        "                       says \"thinking\": true (models/reasoner)\n"
        "  --no-think           not thinking mode, whatever the model's default\n"
        "  --hide-think         do not show reasoning (same as /think off)\n"
        "  --reasoning-effort E V4 in thinking mode: max (the format's maximum-effort preface) or\n"
        "                       high (the default; nothing added)\n"
        "  -n, --max-tokens N   reply length limit (default 1024)\n"
        "  --temperature T --top-p P --top-k K --min-p P --repeat-penalty R\n"
        "  --frequency-penalty F --presence-penalty P --seed S --stop STR (repeatable)\n"
        "  --ctx N              context size in tokens (default: the model's max_position_embeddings,\n"
        "                       at most 4096); the oldest exchanges are forgotten when it fills\n"
        "  -t, --threads N      threads\n"
        "  --verbose            print tokens/s after each answer\n"
        "\n"
        "In the chat: /help, /exit, /clear, /think on|off, /system TEXT, /set NAME VALUE\n"
        "(temperature, top_p, top_k, min_p, seed, max_tokens, repeat_penalty,\n"
        "frequency_penalty, presence_penalty). End a line with '\\' to continue it, or\n"
        "wrap a block in \"\"\" lines. Ctrl-C stops the current answer.\n");
}

/* ------------------------------------------------------------------ state */

typedef struct {
    ds_chat_role role;
    char *content;
    size_t len;   /* content's bytes: a reply may hold the byte 0 */
} turn;

typedef struct {
    ds_model *m;
    ds_tokenizer *tok;
    ds_chat_format fmt;
    bool thinking, show_think, verbose, tty_in, tty_out;
    ds_reasoning_effort effort;
    ds_session ss;           /* cache, sampler, detokenizer, stop strings */
    tok_ids cached;          /* the tokens whose latents are in the cache, in order */
    turn *turns;
    int n_turns, cap_turns;
    char *system;
    ds_sampler_params sp;
    int64_t max_tokens;
    int32_t eos;
} chat;

typedef struct {
    chat *c;
    char *reply;             /* all decoded text of this reply */
    size_t n_reply, cap_reply;
    /* display state */
    int mode;                /* 0 undecided (may start with <think>), 1 reasoning, 2 content */
    char pend[64];           /* text held back at a possible marker boundary */
    size_t n_pend;
    bool shown_reasoning;
    int32_t *gen;            /* generated ids */
    int64_t n_gen, cap_gen;
} reply_state;

static void out_str(const char *s, size_t n) {
    fwrite(s, 1, n, stdout);
    fflush(stdout);
}

static void dim_on(chat *c) { if (c->tty_out) out_str("\x1b[2m", 4); }
static void dim_off(chat *c) { if (c->tty_out) out_str("\x1b[0m", 4); }

static void show_reasoning(reply_state *r, const char *s, size_t n) {
    chat *c = r->c;
    if (!c->show_think || n == 0) return;
    if (!r->shown_reasoning) {
        r->shown_reasoning = true;
        dim_on(c);
        if (!c->tty_out) out_str("[thinking]\n", 11);
    } else {
        dim_on(c);
    }
    out_str(s, n);
    dim_off(c);
}

static void show_content(reply_state *r, const char *s, size_t n) {
    out_str(s, n);
    (void)r;
}

/* Longest suffix of s[0..n) that is a proper prefix of marker. */
static size_t partial_suffix(const char *s, size_t n, const char *marker) {
    size_t ml = strlen(marker);
    for (size_t k = DS_MIN(ml - 1, n); k > 0; k--)
        if (memcmp(s + n - k, marker, k) == 0) return k;
    return 0;
}

/* Routes decoded text to the reasoning or the content display. */
static void display(reply_state *r, const char *text, size_t len) {
    char buf[4096];
    size_t n = 0;
    /* pend + text, processed in pieces that fit buf */
    while (len > 0 || r->n_pend > 0) {
        n = r->n_pend;
        memcpy(buf, r->pend, n);
        size_t take = DS_MIN(len, sizeof buf - n - 1);
        memcpy(buf + n, text, take);
        n += take;
        text += take;
        len -= take;
        r->n_pend = 0;
        size_t i = 0;
        while (i < n) {
            if (r->mode == 0) {
                /* skip leading whitespace-free check: does the reply open with <think>? */
                const char *open = "<think>";
                size_t ol = strlen(open), have = n - i;
                if (have < ol && memcmp(buf + i, open, have) == 0) {   /* undecided yet */
                    memcpy(r->pend, buf + i, have);
                    r->n_pend = have;
                    i = n;
                    break;
                }
                if (have >= ol && memcmp(buf + i, open, ol) == 0) { r->mode = 1; i += ol; continue; }
                r->mode = 2;
                continue;
            }
            if (r->mode == 1) {
                const char *close = "</think>";
                char *hit = memmem(buf + i, n - i, close, strlen(close));
                if (hit) {
                    show_reasoning(r, buf + i, (size_t)(hit - (buf + i)));
                    i = (size_t)(hit - buf) + strlen(close);
                    r->mode = 2;
                    if (r->shown_reasoning && r->c->show_think) {
                        dim_on(r->c);
                        out_str(r->c->tty_out ? "\n" : "\n[/thinking]\n", r->c->tty_out ? 1 : 13);
                        dim_off(r->c);
                        if (r->c->tty_out) out_str("\n", 1);
                    }
                    /* the answer usually starts with blank lines: drop them */
                    while (i < n && (buf[i] == '\n')) i++;
                    continue;
                }
                size_t keep = partial_suffix(buf + i, n - i, close);
                show_reasoning(r, buf + i, n - i - keep);
                memcpy(r->pend, buf + n - keep, keep);
                r->n_pend = keep;
                i = n;
                break;
            }
            show_content(r, buf + i, n - i);
            i = n;
        }
        if (len == 0) break;
    }
}

static bool push_reply(reply_state *r, const char *s, size_t n) {
    if (r->n_reply + n + 1 > r->cap_reply) {
        size_t nc = r->cap_reply ? r->cap_reply * 2 : 1024;
        while (nc < r->n_reply + n + 1) nc *= 2;
        char *nb = realloc(r->reply, nc);
        if (!nb) return false;
        r->reply = nb;
        r->cap_reply = nc;
    }
    memcpy(r->reply + r->n_reply, s, n);
    r->n_reply += n;
    r->reply[r->n_reply] = 0;
    return true;
}

static int on_token(void *ud, int32_t id, const char *em, size_t el) {
    reply_state *r = ud;
    if (r->n_gen == r->cap_gen) {
        int64_t nc = r->cap_gen ? r->cap_gen * 2 : 256;
        int32_t *ng = realloc(r->gen, (size_t)nc * sizeof *ng);
        if (!ng) return 1;
        r->gen = ng;
        r->cap_gen = nc;
    }
    r->gen[r->n_gen++] = id;
    if (g_interrupt) return 1;
    push_reply(r, em, el);
    display(r, em, el);
    return g_interrupt ? 1 : 0;
}

static void add_turn(chat *c, ds_chat_role role, const char *text, size_t len) {
    if (c->n_turns == c->cap_turns) {
        c->cap_turns = c->cap_turns ? c->cap_turns * 2 : 16;
        c->turns = realloc(c->turns, (size_t)c->cap_turns * sizeof *c->turns);
        if (!c->turns) cli_die(C, "out of memory");
    }
    c->turns[c->n_turns].role = role;
    char *p = malloc(len + 1);
    if (!p) cli_die(C, "out of memory");
    memcpy(p, text, len);
    p[len] = 0;
    c->turns[c->n_turns].content = p;
    c->turns[c->n_turns].len = len;
    c->n_turns++;
}

static void clear_turns(chat *c) {
    for (int i = 0; i < c->n_turns; i++) free(c->turns[i].content);
    c->n_turns = 0;
}

/* One user turn: render, reuse the cached prefix, generate, record. */
static void respond(chat *c, const char *user) {
    add_turn(c, DS_ROLE_USER, user, strlen(user));
    tok_ids ids = { 0 };
    ds_err e = { 0 };
    /* render; while the conversation leaves too little room for a reply,
     * forget the oldest exchange (the system prompt stays) */
    int64_t room = DS_MIN(c->max_tokens, c->ss.cache->max_ctx / 4);
    int dropped = 0;
    for (;;) {
        int n_msgs = c->n_turns + (c->system ? 1 : 0);
        ds_chat_msg *msgs = calloc((size_t)n_msgs, sizeof *msgs);
        if (!msgs) cli_die(C, "out of memory");
        int k = 0;
        ds_chat_opts o = { .add_generation_prompt = true, .thinking = c->thinking, .effort = c->effort };
        if (c->system) msgs[k++] = (ds_chat_msg){ .role = DS_ROLE_SYSTEM, .content = c->system };
        for (int i = 0; i < c->n_turns; i++) msgs[k++] = (ds_chat_msg){ .role = c->turns[i].role, .content = c->turns[i].content,
                                                   .content_len = c->turns[i].len };
        ids.n = 0;
        if (chat_render_opts(c->tok, c->fmt, msgs, n_msgs, &o, &ids, NULL, &e)) cli_die_err(C, &e);
        free(msgs);
        if (ids.n + room <= c->ss.cache->max_ctx || c->n_turns < 3) break;
        int drop = c->turns[1].role == DS_ROLE_ASSISTANT ? 2 : 1;
        for (int i = 0; i < drop; i++) free(c->turns[i].content);
        memmove(c->turns, c->turns + drop, (size_t)(c->n_turns - drop) * sizeof *c->turns);
        c->n_turns -= drop;
        dropped++;
    }
    if (dropped && c->tty_in) {
        dim_on(c);
        printf("(the %d oldest exchange%s no longer fit the %lld-token context and %s forgotten)\n", dropped,
               dropped > 1 ? "s" : "", (long long)c->ss.cache->max_ctx, dropped > 1 ? "were" : "was");
        dim_off(c);
    }
    if (ids.n >= c->ss.cache->max_ctx) {
        fprintf(stderr, "deepseek chat: the conversation (%lld tokens) fills the context (%lld tokens); "
                "use /clear or a larger --ctx\n", (long long)ids.n, (long long)c->ss.cache->max_ctx);
        c->n_turns--;
        free(c->turns[c->n_turns].content);
        tok_ids_free(&ids);
        return;
    }
    /* longest prefix already in the cache; at least one token must be fed */
    int64_t p = 0;
    while (p < c->cached.n && p < ids.n && c->cached.v[p] == ids.v[p]) p++;
    if (p == ids.n) p--;
    p = ds_kvcache_truncate(c->ss.cache, p);   /* 0 when a V4 cache's rings no longer reach back to p */
    int64_t hit = p;
    if (ds_session_begin(&c->ss, &c->sp, ids.v, ids.n, &e)) cli_die_err(C, &e);
    reply_state r = { .c = c };
    bool starts = chat_reply_starts_in_reasoning(c->fmt, c->thinking);
    r.mode = starts ? 1 : 0;
    g_interrupt = 0;
    int32_t eos = c->eos;
    int64_t budget = DS_MIN(c->max_tokens, c->ss.cache->max_ctx - ids.n);
    ds_gen_opts o = { .max_tokens = budget, .stop_ids = &eos, .n_stop_ids = eos >= 0 ? 1 : 0 };
    ds_gen_stats st;
    int rc = ds_generate(&c->ss, ids.v + p, ids.n - p, &o, on_token, &r, &st, &e);
    if (!g_interrupt) {
        const char *txt;
        size_t len;
        ds_session_finish(&c->ss, &txt, &len);
        push_reply(&r, txt, len);
        display(&r, txt, len);
    }
    if (r.n_pend && (r.mode != 1 || c->show_think)) {
        if (r.mode == 1) show_reasoning(&r, r.pend, r.n_pend);
        else out_str(r.pend, r.n_pend);
    }
    if (g_interrupt) {
        dim_on(c);
        out_str(" [stopped]", 10);
        dim_off(c);
    }
    out_str("\n", 1);
    if (rc) fprintf(stderr, "deepseek chat: %s\n", e.msg);
    /* the cache now holds prompt + generated tokens except the last one */
    c->cached.n = 0;
    for (int64_t i = 0; i < ids.n; i++) tok_ids_push(&c->cached, ids.v[i], &e);
    for (int64_t i = 0; i < r.n_gen; i++) tok_ids_push(&c->cached, r.gen[i], &e);
    if (c->cached.n > c->ss.cache->n_past) c->cached.n = c->ss.cache->n_past;
    /* history keeps the answer; the templates drop earlier reasoning anyway */
    ds_reply_split sp;
    chat_split_reasoning(r.reply ? r.reply : "", r.n_reply, starts, &sp);
    add_turn(c, DS_ROLE_ASSISTANT, sp.content ? sp.content : "", sp.content ? sp.content_len : 0);
    if (c->verbose) {
        int64_t dec = st.n_gen > 1 ? st.n_gen - 1 : 0;
        fprintf(stderr, "%s[prompt %lld tokens (%lld cached), %.1f tok/s; reply %lld tokens, %.1f tok/s]%s\n",
                c->tty_out ? "\x1b[2m" : "", (long long)ids.n, (long long)hit, (ids.n - hit) / (st.t_prefill > 0 ? st.t_prefill : 1e-9),
                (long long)st.n_gen, dec / (st.t_decode > 0 ? st.t_decode : 1e-9), c->tty_out ? "\x1b[0m" : "");
        fflush(stderr);
    }
    free(r.reply);
    free(r.gen);
    tok_ids_free(&ids);
}

/* ---------------------------------------------------------------- commands */

static bool set_param(chat *c, const char *name, const char *val) {
    char *end;
    double v = strtod(val, &end);
    if (end == val || *end) { printf("/set %s: '%s' is not a number\n", name, val); return false; }
    ds_sampler_params p = c->sp;
    if (!strcmp(name, "temperature")) p.temperature = (float)v;
    else if (!strcmp(name, "top_p")) p.top_p = (float)v;
    else if (!strcmp(name, "top_k")) p.top_k = (int32_t)v;
    else if (!strcmp(name, "min_p")) p.min_p = (float)v;
    else if (!strcmp(name, "seed")) p.seed = (uint64_t)v;
    else if (!strcmp(name, "repeat_penalty")) p.repetition_penalty = (float)v;
    else if (!strcmp(name, "frequency_penalty")) p.frequency_penalty = (float)v;
    else if (!strcmp(name, "presence_penalty")) p.presence_penalty = (float)v;
    else if (!strcmp(name, "max_tokens")) {
        if (v < 1 || v > 1e9) { printf("/set max_tokens: must be >= 1\n"); return false; }
        c->max_tokens = (int64_t)v;
        return true;
    } else { printf("/set: unknown parameter '%s'\n", name); return false; }
    ds_err e = { 0 };
    if (ds_sampler_params_check(&p, &e)) { printf("/set: %s\n", e.msg); return false; }
    c->sp = p;
    return true;
}

/* Returns 1 to exit. */
static int command(chat *c, char *line) {
    char *cmd = strtok(line, " \t");
    char *arg = strtok(NULL, "");
    while (arg && (*arg == ' ' || *arg == '\t')) arg++;
    if (!strcmp(cmd, "/exit") || !strcmp(cmd, "/quit") || !strcmp(cmd, "/bye")) return 1;
    if (!strcmp(cmd, "/help")) {
        printf("/exit  /clear  /think on|off  /system TEXT  /set NAME VALUE\n"
               "  temperature %.2f, top_p %.2f, top_k %d, min_p %.2f, seed %llu, max_tokens %lld,\n"
               "  repeat_penalty %.2f, frequency_penalty %.2f, presence_penalty %.2f\n",
               c->sp.temperature, c->sp.top_p, c->sp.top_k, c->sp.min_p, (unsigned long long)c->sp.seed,
               (long long)c->max_tokens, c->sp.repetition_penalty, c->sp.frequency_penalty, c->sp.presence_penalty);
    } else if (!strcmp(cmd, "/clear")) {
        clear_turns(c);
        printf("(conversation cleared)\n");
    } else if (!strcmp(cmd, "/think")) {
        if (arg && !strcmp(arg, "on")) c->show_think = true;
        else if (arg && !strcmp(arg, "off")) c->show_think = false;
        else { printf("/think on|off (reasoning is %s)\n", c->show_think ? "shown" : "hidden"); return 0; }
        printf("(reasoning %s)\n", c->show_think ? "shown" : "hidden");
    } else if (!strcmp(cmd, "/system")) {
        free(c->system);
        c->system = arg && *arg ? strdup(arg) : NULL;
        clear_turns(c);
        printf(c->system ? "(system prompt set; conversation cleared)\n" : "(system prompt removed)\n");
    } else if (!strcmp(cmd, "/set")) {
        char *name = arg ? strtok(arg, " \t") : NULL, *val = name ? strtok(NULL, " \t") : NULL;
        if (!name || !val) printf("/set NAME VALUE\n");
        else if (set_param(c, name, val)) printf("(%s = %s)\n", name, val);
    } else {
        printf("unknown command %s (try /help)\n", cmd);
    }
    fflush(stdout);
    return 0;
}

/* ------------------------------------------------------------------ input */

/* After readline returned NULL: Ctrl-C (true) or the end of input. libedit
 * re-raises the SIGINT it caught with kill(), and a signal sent to the process
 * runs its handler on any thread that does not block it (a worker of the pool),
 * so g_interrupt can be set a moment after readline returns (a Ctrl-C here once
 * ended the chat). An interrupted read (EINTR) waits up to 100 ms for it; EINTR
 * alone is not enough: a resized terminal (SIGWINCH, which libedit handles
 * itself) leaves it behind a later Ctrl-D. */
static bool ctrl_c_at_prompt(void) {
    if (g_interrupt) return true;
    if (errno != EINTR) return false;
    for (int i = 0; i < 100 && !g_interrupt; i++) usleep(1000);
    return g_interrupt != 0;
}

/* Reads one turn (continuation lines joined). NULL at end of input. */
static char *read_turn(chat *c) {
    char *acc = NULL;
    size_t n = 0;
    bool block = false;
    for (;;) {
        char *line = NULL;
        if (c->tty_in) {
            g_interrupt = 0;
            errno = 0;
            line = readline(acc ? "... " : ">>> ");
            if (!line) {
                if (ctrl_c_at_prompt()) { free(acc); acc = NULL; n = 0; printf("\n"); continue; }
                free(acc);
                return NULL;
            }
        } else {
            size_t cap = 0;
            ssize_t got = getline(&line, &cap, stdin);
            if (got < 0) {
                free(line);
                if (acc) return acc;
                return NULL;
            }
            if (got > 0 && line[got - 1] == '\n') line[--got] = 0;
            if (got > 0 && line[got - 1] == '\r') line[--got] = 0;
        }
        size_t l = strlen(line);
        bool fence = strcmp(line, "\"\"\"") == 0;
        bool cont = false;
        if (fence) {
            block = !block;
            free(line);
            if (block) continue;
            if (!acc) acc = strdup("");
            return acc;
        }
        if (!block && l > 0 && line[l - 1] == '\\') { line[--l] = 0; cont = true; }
        char *na = realloc(acc, n + l + 2);
        if (!na) cli_die(C, "out of memory");
        acc = na;
        if (n > 0) acc[n++] = '\n';
        memcpy(acc + n, line, l);
        n += l;
        acc[n] = 0;
        free(line);
        if (!cont && !block) return acc;
    }
}

int cmd_chat(int argc, char **argv) {
    const char *dir = NULL, *fmt_name = "auto", *system = NULL, *tokp = NULL;
    int64_t ctx = 0, max_tokens = 1024;
    bool think = false, no_think = false, hide = false, verbose = false;
    int effort = DS_EFFORT_DEFAULT;
    ds_sampler_params sp;
    ds_sampler_params_default(&sp);
    sp.temperature = 0.6f;
    sp.top_p = 0.95f;
    sp.seed = (uint64_t)getpid();
    cli_bcast_u64(C, &sp.seed);   /* rank 0's: every rank of an mpirun job samples alike */
    ds_stop stop;
    ds_stop_init(&stop);
    ds_err e = { 0 };
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (cli_is_help(a)) { usage(stdout); return 0; }
        else if (!strcmp(a, "-m") || !strcmp(a, "--model")) { dir = v; i++; }
        else if (!strcmp(a, "--system")) { system = v; i++; if (!v) cli_die(C, "--system needs a value"); }
        else if (!strcmp(a, "--format")) { fmt_name = v; i++; if (!v) cli_die(C, "--format needs a value"); }
        else if (!strcmp(a, "--tokenizer")) { tokp = v; i++; if (!v) cli_die(C, "--tokenizer needs a path"); }
        else if (!strcmp(a, "--think")) think = true;
        else if (!strcmp(a, "--no-think")) no_think = true;
        else if (!strcmp(a, "--hide-think")) hide = true;
        else if (!strcmp(a, "--reasoning-effort")) {
            effort = v ? chat_effort_from_name(v) : -1;
            if (effort < 0) cli_die(C, "--reasoning-effort: expected max, high or low, got '%s'", v ? v : "");
            i++;
        }
        else if (!strcmp(a, "--verbose") || !strcmp(a, "-v")) verbose = true;
        else if (!strcmp(a, "-n") || !strcmp(a, "--max-tokens")) { max_tokens = cli_parse_int(C, a, v, 1, 1 << 30); i++; }
        else if (!strcmp(a, "--ctx")) { ctx = cli_parse_int(C, a, v, 16, 1ll << 32); i++; }
        else if (cli_sampler_flag(C, a, v, &sp)) i++;
        else if (!strcmp(a, "--stop")) { if (!v || ds_stop_add(&stop, v, &e)) cli_die(C, "--stop: %s", v ? e.msg : "needs a value"); i++; }
        else if (!strcmp(a, "-t") || !strcmp(a, "--threads")) { ds_threads_set((int)cli_parse_int(C, a, v, 1, 1024)); i++; }
        else { usage(stderr); cli_die(C, "unknown option '%s'", a); }
    }
    if (!dir) dir = cli_default_model();
    if (!dir) cli_die(C, "no model given (-m MODEL_DIR) and no bundled model found");
    cli_check_model(C, dir);
    int f = chat_format_from_name(fmt_name);
    if (f < 0) cli_die(C, "--format: unknown chat format '%s' (auto, v3, r1, v3.1, v2, v3.2, v4)", fmt_name);
    chat c;
    memset(&c, 0, sizeof c);
    c.tty_in = isatty(0);
    c.tty_out = isatty(1);
    c.verbose = verbose;
    c.show_think = !hide;
    c.thinking = !no_think && (think || cli_model_thinks(dir));
    c.effort = (ds_reasoning_effort)effort;
    c.sp = sp;
    c.max_tokens = max_tokens;
    c.system = system ? strdup(system) : NULL;
    c.m = cli_open_model(C, dir);
    c.tok = cli_load_tokenizer(C, dir, tokp, "(chat needs the model's tokenizer)");
    if (tok_vocab_size(c.tok) > ds_model_config(c.m)->vocab_size)
        cli_die(C, "%s: the tokenizer has %lld ids but the model only %lld", dir, (long long)tok_vocab_size(c.tok),
                (long long)ds_model_config(c.m)->vocab_size);
    if (f == DS_CHAT_AUTO) {
        c.fmt = chat_format_resolve(dir, tok_chat_template(c.tok));
        if (c.fmt != DS_CHAT_V32 && c.fmt != DS_CHAT_V4 && tok_chat_template(c.tok) &&
            !chat_template_known(tok_chat_template(c.tok)))
            fprintf(stderr, "deepseek chat: the model's chat template is not a DeepSeek V3, R1, V3.1 or V2 template "
                    "deepseek.c knows; using the V3 format (--format v3|r1|v3.1|v2 picks one)\n");
    } else {
        c.fmt = (ds_chat_format)f;
    }
    c.eos = tok_eos_id(c.tok) >= 0 ? tok_eos_id(c.tok) : (int32_t)ds_model_config(c.m)->eos_token_id;
    if (ctx == 0) ctx = DS_MIN(ds_model_config(c.m)->max_position_embeddings, 4096);
    if (ds_session_init(&c.ss, c.m, c.tok, ctx, &c.sp, &e)) cli_die_err(C, &e);
    for (int i = 0; i < stop.n; i++)
        if (ds_session_add_stop(&c.ss, stop.stops[i], &e)) cli_die_err(C, &e);
    ds_stop_free(&stop);

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigint;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);

    char hist[4096] = "";
    if (c.tty_in) {
        const char *home = getenv("HOME");
        if (home) snprintf(hist, sizeof hist, "%s/.deepseek_history", home);
        using_history();
        if (*hist) read_history(hist);
        printf("deepseek.c chat — %s (%s format%s). /help for commands, /exit to leave.\n", dir,
               chat_format_name(c.fmt),
               c.fmt == DS_CHAT_V31 || c.fmt == DS_CHAT_V32 || c.fmt == DS_CHAT_V4 ? (c.thinking ? ", thinking" : ", non-thinking") : "");
    }
    for (;;) {
        /* rank 0 reads the terminal; in an mpirun job every rank runs the turn */
        char *line = cli_bcast_line(C, ds_dist_rank() == 0 ? read_turn(&c) : NULL);
        if (!line) break;
        char *s = line;
        while (*s == ' ' || *s == '\t') s++;
        if (!*s) { free(line); continue; }
        if (c.tty_in) {
            add_history(line);
            if (*hist) write_history(hist);
        }
        if (*s == '/' && !strchr(s, '\n')) {
            int quit = command(&c, s);
            free(line);
            if (quit) break;
            continue;
        }
        respond(&c, line);
        free(line);
    }
    clear_turns(&c);
    free(c.turns);
    free(c.system);
    tok_ids_free(&c.cached);
    ds_session_free(&c.ss);
    tok_free(c.tok);
    ds_model_close(c.m);
    return 0;
}
