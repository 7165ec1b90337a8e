/* bench_tokenize.c — encoding speed of the Gemma 4 tokenizer on English
 * text, optionally side by side with llama.cpp's llama-tokenize on the same
 * bytes (issue 5's target: >= 10 MB/s, and at least llama.cpp's speed).
 *
 *   bench_tokenize [--vocab V.gguf] [--file F]... [--mb N] [--reps N]
 *                  [--llama-tokenize PATH] [--json]
 *
 * The text is the files given (concatenated, then repeated up to --mb MB),
 * or a built-in English passage repeated to --mb MB (default 4). Each
 * repetition times one mp_tokenize call over the whole text (no BOS, no
 * special-token parsing: plain text). llama-tokenize cannot be timed without
 * its model load, so it runs twice per repetition, on the text and on a
 * 2-byte file, and the difference is its tokenizing time; the two
 * tokenizers alternate so the machine's noise hits both alike. Medians are
 * reported, and their ratio. The ids of both are compared once. Prints one
 * line per configuration, or one JSON object with --json. */
#include <errno.h>
#include <fcntl.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "moeprune.h"

extern char **environ;

/* Public-domain-style English prose written for this benchmark: mixed
 * sentence lengths, punctuation, numbers, a little markup, so the merge
 * work resembles documentation and chat text. */
static const char k_passage[] =
    "The river rose slowly through the night, and by morning the lower fields were "
    "gone. Nobody in the village had seen anything like it since 1953, when the old "
    "bridge washed away and the school was closed for three weeks. Maria walked down "
    "to the water's edge at six o'clock, carrying a thermos of coffee and a notebook, "
    "because somebody had to write down what was happening before the stories began "
    "to change.\n\n"
    "She counted the fence posts that still stood above the surface: twelve on the "
    "north side, nine on the south. The current carried branches, a plastic chair, "
    "and what looked like half of a wooden door. \"It will crest by noon,\" said the "
    "man from the county office, though he did not sound as sure as he wanted to. He "
    "had a radio, a map covered in pencil marks, and the tired voice of someone who "
    "had been awake for thirty hours.\n\n"
    "By ten o'clock the rain had stopped. The sky turned a pale, washed-out blue, and "
    "for a while the whole valley was strangely quiet. People came out of their "
    "houses in rubber boots to look; children threw sticks into the brown water and "
    "watched them spin away. Somebody's dog refused to go any closer than the "
    "church steps.\n\n"
    "Later, when the engineers wrote their report, they would say that the levee had "
    "performed \"largely as designed\" and that the damage, estimated at $4.2 million, "
    "was \"within the expected range for an event of this magnitude.\" Maria kept her "
    "notebook anyway. On the last page she wrote: *the water remembers where it used "
    "to go* - a line her grandmother used to say, which nobody had believed.\n\n"
    "## Notes for next season\n\n"
    "1. Move the pumps to higher ground before October.\n"
    "2. Check the drainage pipes under Mill Road (see the photos from 3/14).\n"
    "3. Ask the county for the updated flood maps; the 2019 edition is out of date.\n\n"
    "What struck her most, reading it all again a year later, was how ordinary the "
    "day had felt while it was happening. There was no music, no sense of history; "
    "just wet socks, cold coffee, and the long patience of waiting for the water to "
    "decide what it would do.\n\n";

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static char *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    char *buf = NULL;
    size_t n = 0, cap = 0, k;
    char chunk[65536];
    while ((k = fread(chunk, 1, sizeof chunk, f)) > 0) {
        if (n + k > cap) {
            cap = (n + k) * 2;
            char *b = realloc(buf, cap);
            if (!b) {
                free(buf);
                fclose(f);
                return NULL;
            }
            buf = b;
        }
        memcpy(buf + n, chunk, k);
        n += k;
    }
    fclose(f);
    *len = n;
    return buf;
}

/* Repeats src[0..n) until the result holds `want` bytes (at least one copy). */
static char *repeat_to(const char *src, size_t n, size_t want, size_t *len) {
    size_t copies = want > n ? (want + n - 1) / n : 1;
    char *t = malloc(copies * n);
    if (!t) return NULL;
    for (size_t i = 0; i < copies; i++) memcpy(t + i * n, src, n);
    *len = copies * n;
    return t;
}

/* Runs llama-tokenize on a file, stdout into out_path; wall seconds, or -1. */
static double time_llama(const char *exe, const char *vocab, const char *file, const char *out) {
    char *argv[] = {(char *)exe, "-m", (char *)vocab, "-f", (char *)file, "--ids",
                    "--log-disable", "--no-parse-special", "--no-escape", "--no-bos",
                    NULL};
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, out, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
    pid_t pid;
    double t0 = now_s();
    int rc = posix_spawn(&pid, exe, &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    if (rc) return -1;
    int st;
    if (waitpid(pid, &st, 0) < 0 || !WIFEXITED(st) || WEXITSTATUS(st)) return -1;
    return now_s() - t0;
}

/* Compares our ids with llama-tokenize's "[a, b, ...]" output file. */
static long compare_ids(const char *path, const mp_token *ids, size_t n) {
    size_t len;
    char *s = read_file(path, &len);
    if (!s) return -1;
    char *z = realloc(s, len + 1);
    if (!z) {
        free(s);
        return -1;
    }
    s = z;
    s[len] = 0;
    size_t i = 0;
    long first_diff = -2; /* -2: equal */
    for (char *p = s; *p;) {
        while (*p && (*p < '0' || *p > '9')) p++;
        if (!*p) break;
        long v = strtol(p, &p, 10);
        if (first_diff == -2 && (i >= n || v != ids[i])) first_diff = (long)i;
        i++;
    }
    if (first_diff == -2 && i != n) first_diff = (long)(i < n ? i : n);
    free(s);
    return first_diff;
}

int main(int argc, char **argv) {
    const char *vocab_path = MP_DATA_DIR "/gemma4-vocab.gguf", *llama = NULL;
    const char *files[64];
    int n_files = 0, reps = 5;
    double mb = 4;
    bool json = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        bool more = i + 1 < argc;
        if (!strcmp(a, "--vocab") && more) vocab_path = argv[++i];
        else if (!strcmp(a, "--file") && more && n_files < 64) files[n_files++] = argv[++i];
        else if (!strcmp(a, "--mb") && more) mb = atof(argv[++i]);
        else if (!strcmp(a, "--reps") && more) reps = atoi(argv[++i]);
        else if (!strcmp(a, "--llama-tokenize") && more) llama = argv[++i];
        else if (!strcmp(a, "--json")) json = true;
        else {
            fprintf(stderr, "usage: %s [--vocab V.gguf] [--file F]... [--mb N] [--reps N] "
                    "[--llama-tokenize PATH] [--json]\n", argv[0]);
            return 2;
        }
    }
    if (reps < 1 || reps > 1000 || !(mb > 0)) {
        fprintf(stderr, "bench_tokenize: --reps 1..1000 and --mb > 0\n");
        return 2;
    }

    /* the text */
    char *src = NULL;
    size_t n_src = 0;
    for (int f = 0; f < n_files; f++) {
        size_t k;
        char *d = read_file(files[f], &k);
        char *g = d ? realloc(src, n_src + k) : NULL;
        if (!g) {
            fprintf(stderr, "bench_tokenize: cannot read %s\n", files[f]);
            return 1;
        }
        src = g;
        memcpy(src + n_src, d, k);
        n_src += k;
        free(d);
    }
    size_t n_text;
    char *text = n_files ? repeat_to(src, n_src, (size_t)(mb * 1e6), &n_text)
                         : repeat_to(k_passage, sizeof k_passage - 1, (size_t)(mb * 1e6), &n_text);
    free(src);
    if (!text) return 1;

    mp_err err = {0};
    mp_vocab *v = NULL;
    double t0 = now_s();
    if (mp_vocab_open(&v, vocab_path, &err)) {
        fprintf(stderr, "bench_tokenize: %s\n", err.msg);
        return 1;
    }
    double t_load = now_s() - t0;

    /* files for llama-tokenize */
    char big[] = "/tmp/bench-tok-XXXXXX", tiny[] = "/tmp/bench-tiny-XXXXXX";
    char out[] = "/tmp/bench-out-XXXXXX";
    if (llama) {
        int fb = mkstemp(big), ft = mkstemp(tiny), fo = mkstemp(out);
        if (fb < 0 || ft < 0 || fo < 0 || write(fb, text, n_text) != (ssize_t)n_text ||
            write(ft, "Hi", 2) != 2) {
            fprintf(stderr, "bench_tokenize: cannot write temp files: %s\n", strerror(errno));
            return 1;
        }
        close(fb);
        close(ft);
        close(fo);
    }

    double *ours = calloc((size_t)reps, sizeof *ours);
    double *theirs = calloc((size_t)reps, sizeof *theirs);
    size_t n_ids = 0;
    mp_token *ids = NULL;
    long diff = -2;
    for (int r = 0; r < reps; r++) {
        mp_free(ids);
        t0 = now_s();
        if (mp_tokenize(v, text, n_text, (mp_tokenize_params){false, false}, &ids, &n_ids, &err)) {
            fprintf(stderr, "bench_tokenize: %s\n", err.msg);
            return 1;
        }
        ours[r] = now_s() - t0;
        if (llama) {
            double tb = time_llama(llama, vocab_path, big, out);
            if (r == 0 && tb > 0) diff = compare_ids(out, ids, n_ids);
            double tt = time_llama(llama, vocab_path, tiny, out);
            if (tb < 0 || tt < 0) {
                fprintf(stderr, "bench_tokenize: running %s failed\n", llama);
                return 1;
            }
            theirs[r] = tb - tt;
        }
    }
    double mbytes = (double)n_text / 1e6;
    double m_ours = median(ours, reps), best = ours[0];
    double m_theirs = llama ? median(theirs, reps) : 0;
    if (json) {
        printf("{\"bytes\": %zu, \"tokens\": %zu, \"reps\": %d, \"load_s\": %.4f, "
               "\"median_s\": %.4f, \"best_s\": %.4f, \"mb_per_s\": %.2f",
               n_text, n_ids, reps, t_load, m_ours, best, mbytes / m_ours);
        if (llama)
            printf(", \"llama_median_s\": %.4f, \"llama_mb_per_s\": %.2f, \"ratio\": %.2f, "
                   "\"ids_equal\": %s", m_theirs, mbytes / m_theirs, m_theirs / m_ours,
                   diff == -2 ? "true" : "false");
        printf("}\n");
    } else {
        printf("vocab %s: loaded in %.3f s\n", vocab_path, t_load);
        printf("text: %.2f MB (%s), %zu tokens (%.2f bytes/token)\n", mbytes,
               n_files ? "files" : "built-in passage", n_ids, (double)n_text / (double)n_ids);
        printf("moeprune   : median %.3f s, best %.3f s over %d reps: %.1f MB/s (best %.1f)\n",
               m_ours, best, reps, mbytes / m_ours, mbytes / best);
        if (llama) {
            printf("llama.cpp  : median %.3f s (text minus 2-byte run): %.1f MB/s\n", m_theirs,
                   mbytes / m_theirs);
            printf("ratio      : moeprune is %.2fx llama.cpp's speed; ids %s\n",
                   m_theirs / m_ours, diff == -2 ? "identical" : "DIFFER");
            if (diff >= 0) printf("first differing id at position %ld\n", diff);
        }
    }
    if (llama) {
        unlink(big);
        unlink(tiny);
        unlink(out);
    }
    mp_free(ids);
    mp_vocab_free(v);
    free(ours);
    free(theirs);
    free(text);
    return diff == -2 ? 0 : 1;
}
