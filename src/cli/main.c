/*
 * main.c - the `deepseek` binary: dispatches to one subcommand.
 * Each command lives in cmd_<name>.c; commands not built into this binary
 * are weak symbols and report so.
 */
#include "cli.h"
#include "../core/cpu.h"

#include <stdlib.h>
#include <string.h>

typedef int (*cmd_fn)(int argc, char **argv);

#define DECL(n) int cmd_##n(int argc, char **argv) __attribute__((weak));
DECL(info) DECL(logits) DECL(generate) DECL(chat) DECL(serve) DECL(tokenize) DECL(detokenize)
DECL(train) DECL(grad) DECL(prepare_data) DECL(train_tokenizer) DECL(plot) DECL(convert) DECL(bench) DECL(pull)
DECL(list) DECL(rm) DECL(eval) DECL(grpo) DECL(sft_data)
#undef DECL

static const struct { const char *name; const char *help; } k_cmds[] = {
    { "info", "show a model's architecture, parameter counts and KV-cache size" },
    { "logits", "write the logits of one forward pass to a file" },
    { "generate", "continue a prompt" },
    { "chat", "interactive chat in the terminal" },
    { "serve", "OpenAI/DeepSeek-compatible HTTP server and web chat" },
    { "tokenize", "text -> token ids" },
    { "detokenize", "token ids -> text" },
    { "train", "train a DeepSeek-V3-architecture model" },
    { "grad", "loss and gradients of one sequence (or a GRPO batch)" },
    { "grpo", "reinforcement learning with verifiable rewards (GRPO)" },
    { "eval", "score a model on a verifiable task (pass@1, pass@K, maj@K)" },
    { "sft-data", "prompt/response pairs with step-by-step solutions of a task" },
    { "prepare-data", "tokenize text files into training shards" },
    { "train-tokenizer", "train a byte-level BPE tokenizer" },
    { "plot", "plot training metrics to PNG" },
    { "convert", "convert a Hugging Face folder to GGUF" },
    { "bench", "prompt-processing and generation speed" },
    { "pull", "download a model from the Hugging Face hub into its cache" },
    { "list", "the models in the Hugging Face cache, with sizes" },
    { "rm", "remove a model from the Hugging Face cache" },
};

static cmd_fn lookup(const char *name) {
    if (!strcmp(name, "info")) return cmd_info;
    if (!strcmp(name, "logits")) return cmd_logits;
    if (!strcmp(name, "generate")) return cmd_generate;
    if (!strcmp(name, "chat")) return cmd_chat;
    if (!strcmp(name, "serve")) return cmd_serve;
    if (!strcmp(name, "tokenize")) return cmd_tokenize;
    if (!strcmp(name, "detokenize")) return cmd_detokenize;
    if (!strcmp(name, "train")) return cmd_train;
    if (!strcmp(name, "grad")) return cmd_grad;
    if (!strcmp(name, "grpo")) return cmd_grpo;
    if (!strcmp(name, "eval")) return cmd_eval;
    if (!strcmp(name, "sft-data")) return cmd_sft_data;
    if (!strcmp(name, "prepare-data")) return cmd_prepare_data;
    if (!strcmp(name, "train-tokenizer")) return cmd_train_tokenizer;
    if (!strcmp(name, "plot")) return cmd_plot;
    if (!strcmp(name, "convert")) return cmd_convert;
    if (!strcmp(name, "bench")) return cmd_bench;
    if (!strcmp(name, "pull")) return cmd_pull;
    if (!strcmp(name, "list")) return cmd_list;
    if (!strcmp(name, "rm")) return cmd_rm;
    return NULL;
}

static void usage(FILE *f) {
    fprintf(f, "usage: deepseek <command> [options]   (deepseek <command> --help for details)\n"
               "       deepseek --version              (version, commit, compiler, CPU kernels)\n\ncommands:\n");
    for (size_t i = 0; i < sizeof k_cmds / sizeof k_cmds[0]; i++)
        if (lookup(k_cmds[i].name)) fprintf(f, "  %-16s %s\n", k_cmds[i].name, k_cmds[i].help);
}

/* -m / --model ORG/NAME[@REV] (and $DEEPSEEK_MODEL) that is not a path on
 * disk: the snapshot folder `deepseek pull` made in the Hugging Face cache
 * (cmd_pull.c). Every command then sees an ordinary model folder. */
static void resolve_hub_models(int argc, char **argv) {
    if (!cli_hub_resolve || !strcmp(argv[1], "pull")) return;
    static char paths[4][4096];
    int k = 0;
    for (int i = 2; i + 1 < argc && k < 3; i++) {
        if (strcmp(argv[i], "-m") && strcmp(argv[i], "--model")) continue;
        int r = cli_hub_resolve(argv[i + 1], paths[k], sizeof paths[k]);
        if (r < 0) cli_die(argv[1], "model '%s' is neither a path nor in the Hugging Face cache; run: deepseek pull %s",
                           argv[i + 1], argv[i + 1]);
        if (r > 0) argv[i + 1] = paths[k++];
    }
    const char *env = getenv("DEEPSEEK_MODEL");
    if (env && *env) {
        int r = cli_hub_resolve(env, paths[3], sizeof paths[3]);
        if (r < 0) cli_die(argv[1], "DEEPSEEK_MODEL '%s' is neither a path nor in the Hugging Face cache; run: deepseek pull %s",
                           env, env);
        if (r > 0) setenv("DEEPSEEK_MODEL", paths[3], 1);
    }
}

int main(int argc, char **argv) {
    if (argc < 2 || cli_is_help(argv[1])) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 1 : 0;
    }
    if (!strcmp(argv[1], "--version") || !strcmp(argv[1], "-V")) {
        cli_print_version(stdout);
        return 0;
    }
    cmd_fn fn = lookup(argv[1]);
    if (!fn) {
        fprintf(stderr, "deepseek: unknown command '%s'\n", argv[1]);
        usage(stderr);
        return 1;
    }
    if (ds_isa_env_error()[0]) {   /* a mistyped or impossible DS_ISA must not silently mean "best" */
        fprintf(stderr, "deepseek: %s\n", ds_isa_env_error());
        return 2;
    }
    cli_dist_start(argv[1]);
    resolve_hub_models(argc, argv);
    int rc = fn(argc - 1, argv + 1);
    cli_dist_end();
    return rc;
}
