/* mc_builtin.c — a tiny built-in multiple-choice smoke set, written for this
 * project, so `bench-mc` (and the demo) can show a score with no data at
 * hand. Eight easy questions across arithmetic, science, language and common
 * sense: a real model gets most of them; a random-weight model scores near
 * chance. Not a benchmark. */
#include "eval/eval.h"

static const char *const q0[] = {"3", "4", "5", "22"};
static const char *const q1[] = {"ice", "steam", "water", "sand"};
static const char *const q2[] = {"Paris", "Rome", "Madrid", "Berlin"};
static const char *const q3[] = {"a fish", "a mammal", "a bird", "an insect"};
static const char *const q4[] = {"cold", "warm", "wet", "tall"};
static const char *const q5[] = {"Monday", "Wednesday", "Sunday", "Friday"};
static const char *const q6[] = {"12", "7", "32", "3"};
static const char *const q7[] = {"the Moon", "the Sun", "Mars", "a comet"};

static const mp_mc_item items[] = {
    {"What is 2 + 2?", q0, 4, 1},
    {"What does water become when it freezes?", q1, 4, 0},
    {"What is the capital of France?", q2, 4, 0},
    {"A whale is", q3, 4, 1},
    {"The opposite of hot is", q4, 4, 0},
    {"Which day comes after Tuesday?", q5, 4, 1},
    {"What is 4 times 3?", q6, 4, 0},
    {"Which star is closest to the Earth?", q7, 4, 1},
};

const mp_mc_item *mp_mc_builtin(size_t *n) {
    *n = sizeof items / sizeof items[0];
    return items;
}
