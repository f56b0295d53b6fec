/*
 * chat.c - libdeepseek in a few lines: load a model, render one chat turn
 * with the model's template (or use a plain prompt when the model has no
 * chat template, like the bundled byte-level Shakespeare model), and stream
 * the reply.
 *
 *   cc chat.c $(pkg-config --cflags --libs deepseek) -o chat
 *   ./chat MODEL [MESSAGE]
 */
#include <deepseek.h>
#include <stdio.h>
#include <string.h>

static int on_text(void *user, int32_t token, const char *text, size_t len) {
    (void)user;
    (void)token;
    fwrite(text, 1, len, stdout);
    fflush(stdout);
    return 0;   /* non-zero would stop the generation */
}

int main(int argc, char **argv) {
    const char *path = argc > 1 ? argv[1] : "models/default";
    const char *message = argc > 2 ? argv[2] : "ROMEO:";
    deepseek_error err = { 0 };
    deepseek_model *model = NULL;
    deepseek_session *session = NULL;
    int32_t *ids = NULL;
    int64_t n = 0;
    int rc = 1;

    if (deepseek_model_load(&model, path, NULL, &err)) goto fail;
    deepseek_model_info info;
    deepseek_model_get_info(model, &info);
    fprintf(stderr, "libdeepseek %s: %s, %lld layers, vocab %lld\n", deepseek_version(), info.architecture,
            (long long)info.n_layer, (long long)info.vocab_size);

    if (info.has_chat_template) {
        deepseek_chat_message msgs[] = { { "user", message } };
        if (deepseek_chat_apply(model, DEEPSEEK_CHAT_AUTO, msgs, 1, 1, 0, &ids, &n, &err)) goto fail;
    } else if (deepseek_tokenize(model, message, strlen(message),
                                 DEEPSEEK_TOKENIZE_SPECIAL | DEEPSEEK_TOKENIZE_ADD_BOS, &ids, &n, &err)) {
        goto fail;
    }

    deepseek_session_options so;
    deepseek_session_options_default(&so);
    so.sampling.temperature = 0.8f;
    so.sampling.top_p = 0.95f;
    so.sampling.seed = 42;
    if (deepseek_session_new(&session, model, &so, &err)) goto fail;

    deepseek_generate_options go;
    deepseek_generate_options_default(&go);
    go.max_tokens = 48;
    deepseek_generate_result res;
    if (deepseek_generate(session, ids, n, &go, on_text, NULL, &res, &err)) goto fail;
    printf("\n");
    fprintf(stderr, "%lld prompt tokens, %lld generated\n", (long long)res.n_prompt, (long long)res.n_gen);
    rc = 0;
fail:
    if (rc) fprintf(stderr, "error: %s\n", err.message);
    deepseek_free(ids);
    deepseek_session_free(session);
    deepseek_model_free(model);
    return rc;
}
