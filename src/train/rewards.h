/*
 * rewards.h - rule-based rewards without a reward model (DeepSeek-R1 §2.2.2):
 * the answer a completion gives, answer equality (exact or numeric), the
 * format reward, and the Countdown checker (a tiny exact-rational expression
 * evaluator). Pure string functions: no allocation beyond the caller's
 * buffers, any input bytes accepted (adversarial strings are tested).
 */
#ifndef DS_REWARDS_H
#define DS_REWARDS_H

#include "../core/base.h"

/* The answer in text: the content of the last complete <answer>…</answer>,
 * else of the last \boxed{…} (braces balanced), whitespace-trimmed, copied
 * to out (cap bytes, NUL-terminated; longer answers are cut, which can only
 * make them wrong). false when text holds neither. */
bool ds_answer_extract(const char *text, char *out, size_t cap);

/* Whether an extracted answer equals the reference: equal after trimming, or
 * both numbers (integers with optional sign and 1,234 grouping; decimals;
 * fractions p/q) of equal value: integers digit for digit, others within
 * 1e-9 relative. Non-finite or malformed numbers are never numerically equal. */
bool ds_answer_equal(const char *got, const char *want);

/* Format reward: 1 when text is "<think>…</think>" then the answer
 * ("<answer>…</answer>", or text ending in "\boxed{…}") and nothing after
 * but whitespace; each of <think>, </think> (and <answer>, </answer>) exactly
 * once, the answer non-empty. think_open: the prompt already ended with
 * "<think>" (R1's template), so text starts inside the reasoning. Else 0. */
double ds_reward_format(const char *text, bool think_open);

/* Countdown: whether expr (digits, + - * / × ÷, parentheses, spaces; an
 * optional trailing "= target") evaluates exactly to target using each of
 * nums[0..n) at most once (numbers in expr must be a sub-multiset of nums;
 * no unary minus; division must not be by zero; exact rationals, overflow =
 * invalid). */
bool ds_countdown_check(const char *expr, const int64_t *nums, int n, int64_t target);

#endif
