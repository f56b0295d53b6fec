/*
 * test_rewards.c - the rule-based rewards and task generators
 * (src/train/rewards.c, tasks.c): answer extraction, exact / numeric
 * equality, the format reward, the Countdown checker — each with
 * adversarial strings (nested or unterminated tags, several answers, reused
 * numbers, division by zero, overflow, unary minus, deep nesting, junk
 * bytes) — the generators' solutions scoring 1/1 by the checkers, the
 * train/eval split being disjoint, and user problems from JSONL.
 */
#include "test.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "train/rewards.h"
#include "train/tasks.h"

static void ex(const char *text, const char *want) {
    char out[64];
    bool got = ds_answer_extract(text, out, sizeof out);
    if (!want) CHECK_MSG(!got, "extract(%s): got '%s', want none", text, out);
    else CHECK_MSG(got && !strcmp(out, want), "extract(%s): got %d '%s', want '%s'", text, got, got ? out : "", want);
}

TEST(rewards_extract) {
    ex("<answer>42</answer>", "42");
    ex("<answer> 42 \n</answer>", "42");
    ex("x <answer>1</answer> then <answer>2</answer>", "2");           /* the last one */
    ex("<answer>1</answer> <answer>2", "1");                            /* unterminated last: the complete one */
    ex("<answer><answer>7</answer>", "7");
    ex("so \\boxed{12}", "12");
    ex("\\boxed{\\frac{1}{2}}", "\\frac{1}{2}");                       /* braces balanced */
    ex("\\boxed{3} and \\boxed{4", "3");                                /* unterminated box */
    ex("\\boxed{1} <answer>9</answer>", "9");                           /* <answer> wins */
    ex("no answer here", NULL);
    ex("", NULL);
    ex("</answer><answer>", NULL);
    ex("\\boxed{", NULL);
    ex("\\boxed}{", NULL);
    /* long answers are cut to the buffer */
    char big[300];
    memset(big, '9', sizeof big);
    memcpy(big, "<answer>", 8);
    strcpy(big + 280, "</answer>");
    char out[16];
    CHECK(ds_answer_extract(big, out, sizeof out) && strlen(out) == 15);
}

TEST(rewards_equal) {
    CHECK(ds_answer_equal("42", "42"));
    CHECK(ds_answer_equal(" 42 ", "42"));
    CHECK(ds_answer_equal("042", "42"));
    CHECK(ds_answer_equal("+42", "42"));
    CHECK(ds_answer_equal("1,234", "1234"));
    CHECK(ds_answer_equal("-0", "0"));
    CHECK(ds_answer_equal("42.0", "42"));
    CHECK(ds_answer_equal("0.5", "1/2"));
    CHECK(ds_answer_equal("6/4", "1.5"));
    CHECK(ds_answer_equal("Paris", "Paris"));
    CHECK(ds_answer_equal("123456789012345678901234567890", "123456789012345678901234567890"));
    CHECK(!ds_answer_equal("123456789012345678901234567891", "123456789012345678901234567890"));  /* digit for digit */
    CHECK(!ds_answer_equal("43", "42"));
    CHECK(!ds_answer_equal("-42", "42"));
    CHECK(!ds_answer_equal("", "42"));
    CHECK(!ds_answer_equal("", ""));
    CHECK(!ds_answer_equal("42abc", "42"));
    CHECK(!ds_answer_equal("0x2a", "42"));
    CHECK(!ds_answer_equal("4.2e1", "42"));
    CHECK(!ds_answer_equal("nan", "NaN"));
    CHECK(!ds_answer_equal("inf", "1e999"));
    CHECK(!ds_answer_equal("1/0", "2/0"));
    CHECK(!ds_answer_equal("12,34", "1234"));
    CHECK(!ds_answer_equal("1,2345", "12345"));
    CHECK(!ds_answer_equal(",123", "123"));
    CHECK(!ds_answer_equal("1.2.3", "1.23"));
    CHECK(!ds_answer_equal("1/2/3", "1/6"));
    CHECK(!ds_answer_equal("paris", "Paris"));
}

TEST(rewards_format) {
    CHECK(ds_reward_format("<think>a</think><answer>1</answer>", false) == 1.0);
    CHECK(ds_reward_format("  <think>\nwork\n</think>\n<answer>1</answer>\n", false) == 1.0);
    CHECK(ds_reward_format("<think>w</think> The answer is \\boxed{5}", false) == 1.0);
    CHECK(ds_reward_format("work\n</think>\n<answer>1</answer>", true) == 1.0);   /* the prompt opened <think> */
    CHECK(ds_reward_format("<think>w</think><answer>1</answer> extra", false) == 0.0);   /* something after */
    CHECK(ds_reward_format("<think>w</think> \\boxed{5}.", false) == 0.0);
    CHECK(ds_reward_format("<answer>1</answer>", false) == 0.0);                   /* no thinking */
    CHECK(ds_reward_format("<think>w<think>x</think><answer>1</answer>", false) == 0.0);  /* nested */
    CHECK(ds_reward_format("<think>w</think></think><answer>1</answer>", false) == 0.0);
    CHECK(ds_reward_format("<think>w</think><answer>1</answer><answer>2</answer>", false) == 0.0);
    CHECK(ds_reward_format("<think>w</think><answer> </answer>", false) == 0.0);   /* empty answer */
    CHECK(ds_reward_format("<think>w</think><answer>1", false) == 0.0);
    CHECK(ds_reward_format("<think>w</think>", false) == 0.0);
    CHECK(ds_reward_format("<think>w</think>\\boxed{}", false) == 0.0);
    CHECK(ds_reward_format("x<think>w</think><answer>1</answer>", false) == 0.0);  /* text before */
    CHECK(ds_reward_format("<think>w</think>\nblah <answer>1</answer>", false) == 0.0);
    CHECK(ds_reward_format("", false) == 0.0);
    CHECK(ds_reward_format("<think>", true) == 0.0);
    CHECK(ds_reward_format("\xff\xfe<think>\x01</think><answer>\x80</answer>", false) == 0.0);
    CHECK(ds_reward_format("<think>\x01</think><answer>\x80</answer>", false) == 1.0);   /* any bytes inside */
}

TEST(rewards_countdown) {
    int64_t n[4] = { 3, 7, 25, 50 };
    CHECK(ds_countdown_check("50 + 25 - 7 + 3", n, 4, 71));
    CHECK(ds_countdown_check("(50 - 25) * 3 - 7", n, 4, 68));
    CHECK(ds_countdown_check("50 × 3 ÷ 25", n, 4, 6));
    CHECK(ds_countdown_check("50 \xe2\x88\x92 7", n, 4, 43));          /* U+2212 minus */
    CHECK(ds_countdown_check("50 + 25 = 75", n, 4, 75));
    CHECK(ds_countdown_check("(50 * 7) / (25 / 3)", n, 4, 42));      /* exact rationals: 350/(25/3) = 42 */
    CHECK(!ds_countdown_check("50 + 25 = 76", n, 4, 75));
    CHECK(!ds_countdown_check("50 + 50 - 25", n, 4, 75));              /* 50 used twice */
    CHECK(!ds_countdown_check("50 + 21", n, 4, 71));                   /* 21 not given */
    CHECK(!ds_countdown_check("50 / (7 - 7)", n, 4, 0));               /* division by zero (and 7 twice) */
    CHECK(!ds_countdown_check("25 / (3 - 3)", (int64_t[]){ 25, 3, 3 }, 3, 0));
    CHECK(!ds_countdown_check("-3 + 50", n, 4, 47));                   /* no unary minus */
    CHECK(!ds_countdown_check("50 / 3", n, 4, 16));                    /* 50/3 is not 16 */
    CHECK(!ds_countdown_check("", n, 4, 0));
    CHECK(!ds_countdown_check("()", n, 4, 0));
    CHECK(!ds_countdown_check("(50 + 3", n, 4, 53));
    CHECK(!ds_countdown_check("50 + 3)", n, 4, 53));
    CHECK(!ds_countdown_check("50 ** 3", n, 4, 150));
    CHECK(!ds_countdown_check("50 3", n, 4, 53));
    CHECK(!ds_countdown_check("50+3; rm -rf /", n, 4, 53));
    CHECK(!ds_countdown_check("2^3", (int64_t[]){ 2, 3 }, 2, 8));
    CHECK(!ds_countdown_check("1e3", (int64_t[]){ 1, 3 }, 2, 1000));
    CHECK(!ds_countdown_check("99999999999999999999 - 99999999999999999998", n, 4, 1));   /* overflow: rejected */
    int64_t big[6] = { 999999, 999999, 999999, 999999, 999999, 999999 };
    CHECK(!ds_countdown_check("999999*999999*999999*999999*999999*999999", big, 6, 0));   /* overflow, no crash */
    char deep[400];
    memset(deep, '(', 200);
    strcpy(deep + 200, "3");
    memset(deep + 201, ')', 198);
    deep[399] = 0;
    CHECK(!ds_countdown_check(deep, n, 4, 3));                         /* nesting too deep: refused, no stack blow-up */
    CHECK(ds_countdown_check("((3))", n, 4, 3));
}

TEST(tasks_solutions_score) {
    ds_rng r;
    ds_rng_seed(&r, 7);
    const char *ops[3] = { "+", "-", "*" };
    char sol[2048];
    for (int kind = 0; kind < 2; kind++)
        for (int i = 0; i < 300; i++) {
            ds_problem p;
            ds_task_opts o = { 1 + i % 4, ops[i % 3], 2 + i % 5, 10 + i % 90 };
            ds_task_generate(&p, kind ? DS_TASK_COUNTDOWN : DS_TASK_ARITHMETIC, &o, (ds_split)(i & 1), &r);
            CHECK(ds_task_split_of(p.key) == (ds_split)(i & 1));
            CHECK(ds_task_solution(&p, sol, sizeof sol));
            double acc, fmt;
            ds_task_score(&p, sol, false, &acc, &fmt, NULL, 0);
            CHECK_MSG(acc == 1.0 && fmt == 1.0, "%s -> %s: acc %g fmt %g", p.prompt, sol, acc, fmt);
            /* a wrong answer scores 0 accuracy, the format still 1 */
            ds_task_score(&p, "<think>x</think><answer>123456789</answer>", false, &acc, &fmt, NULL, 0);
            CHECK(acc == 0.0 && fmt == 1.0);
        }
    ds_problem p;
    ds_task_opts o = { 3, "+", 0, 0 };
    do ds_task_generate(&p, DS_TASK_ARITHMETIC, &o, DS_SPLIT_TRAIN, &r); while (p.a < 100 || p.b < 100);
    CHECK(ds_task_solution(&p, sol, sizeof sol));
    CHECK(strstr(sol, "carry") || strstr(sol, "write"));
}

/* Evaluation problems never coincide with training ones, whatever the seeds. */
TEST(tasks_split_disjoint) {
    for (int kind = 0; kind < 2; kind++) {
        enum { NT = 4000, NE = 500 };
        static char train[NT][96];
        ds_rng r;
        ds_rng_seed(&r, 1);
        ds_task_opts o = { 2, "+-", 3, 12 };   /* small spaces, so collisions would show */
        for (int i = 0; i < NT; i++) {
            ds_problem p;
            ds_task_generate(&p, (ds_task_kind)kind, &o, DS_SPLIT_TRAIN, &r);
            strcpy(train[i], p.key);
        }
        ds_rng_seed(&r, 1);   /* the same seed */
        int dup = 0;
        for (int i = 0; i < NE; i++) {
            ds_problem p;
            ds_task_generate(&p, (ds_task_kind)kind, &o, DS_SPLIT_EVAL, &r);
            for (int j = 0; j < NT; j++) dup += !strcmp(train[j], p.key);
        }
        CHECK_EQ_INT(dup, 0);
    }
}

TEST(tasks_jsonl) {
    char path[] = "/tmp/ds_test_tasks_XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0) { ds_test_fail(__FILE__, __LINE__, "mkstemp"); return; }
    const char *good = "{\"prompt\": \"What is 2 + 2?\", \"answer\": \"4\"}\n\n"
                       "{\"prompt\": \"Capital of France?\", \"answer\": \"Paris\"}\n"
                       "{\"prompt\": \"Make 10 from 2, 5\", \"numbers\": [2, 5], \"target\": 10}\n"
                       "{\"prompt\": \"n\", \"answer\": 12}\n";
    FILE *f = fdopen(fd, "w");
    fputs(good, f);
    fclose(f);
    ds_problem *ps;
    int64_t n;
    ds_err e = { 0 };
    CHECK(ds_task_load_jsonl(path, &ps, &n, &e) == 0);
    if (n == 4) {
        double acc, fmt;
        ds_task_score(&ps[0], "<think>2+2</think><answer>4</answer>", false, &acc, &fmt, NULL, 0);
        CHECK(acc == 1 && fmt == 1);
        ds_task_score(&ps[1], "<answer>Paris</answer>", false, &acc, &fmt, NULL, 0);
        CHECK(acc == 1 && fmt == 0);
        ds_task_score(&ps[2], "<think>x</think><answer>2 * 5</answer>", false, &acc, &fmt, NULL, 0);
        CHECK(acc == 1);
        ds_task_score(&ps[2], "<think>x</think><answer>10</answer>", false, &acc, &fmt, NULL, 0);
        CHECK(acc == 0);   /* the target alone uses no numbers... */
        ds_task_score(&ps[3], "\\boxed{12}", false, &acc, &fmt, NULL, 0);
        CHECK(acc == 1);
        CHECK(!ps[0].countdown && ps[2].countdown);
    } else {
        CHECK_EQ_INT(n, 4);
    }
    free(ps);
    const char *bad[][2] = {
        { "{\"prompt\": \"a\"}\n", ":1: missing required field 'answer'" },
        { "{\"prompt\": \"a\", \"answer\": \"1\"}\n{\"answer\": \"1\"}\n", ":2: missing required field 'prompt'" },
        { "{\"prompt\": \"a\", \"answer\": \"1\"}\nnot json\n", ":2" },
        { "{\"prompt\": \"a\", \"numbers\": [1, \"x\"], \"target\": 3}\n", "numbers[1]" },
        { "{\"prompt\": \"a\", \"numbers\": [1], \"target\": -3}\n", "'target'" },
        { "\n\n", "no problems" },
        { "[1]\n", "not a JSON object" },
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        f = fopen(path, "w");
        fputs(bad[i][0], f);
        fclose(f);
        ds_err_clear(&e);
        int rc = ds_task_load_jsonl(path, &ps, &n, &e);
        CHECK_MSG(rc != 0 && strstr(e.msg, bad[i][1]), "jsonl %zu: rc %d '%s' (want '%s')", i, rc, e.msg, bad[i][1]);
        if (rc == 0) free(ps);
    }
    remove(path);
}
