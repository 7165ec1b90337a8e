/* test_mc_letter.c — letter extraction for bench-mc's letter mode: the first
 * choice letter that stands alone, within the number of choices. */
#include "eval/eval.h"
#include "testutil.h"

int main(void) {
    const struct {
        const char *text;
        int n, want;
    } cases[] = {
        {"B", 4, 1},
        {" (C) because", 4, 2},
        {"The answer is D.", 4, 3},
        {"A", 4, 0},
        {"Answer: b", 4, -1},         /* lower case is a word, not a letter */
        {"BA is not a letter", 4, -1},
        {"E", 4, -1},                 /* beyond the choices */
        {"E or B", 4, 1},
        {"I think it's C, not A", 4, 2},
        {"", 4, -1},
        {"::::", 2, -1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        CHECK_MSG(mp_mc_extract_letter(cases[i].text, cases[i].n) == cases[i].want,
                  "\"%s\": got %d, want %d", cases[i].text,
                  mp_mc_extract_letter(cases[i].text, cases[i].n), cases[i].want);
    return mp_test_end("test_mc_letter");
}
