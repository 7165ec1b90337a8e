/* cmd_detokenize.c — `moeprune detokenize MODEL IDS...`: prints the text
 * token ids stand for. Ids may be separate arguments or one argument with
 * spaces or commas (the output of `tokenize` pasted as is); without IDS they
 * are read from stdin. */
#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"
#include "util/util.h"

static const char *const detokenize_help =
    "usage: moeprune detokenize MODEL [IDS...] [--special] [--raw]\n"
    "\n"
    "Prints the text of the token ids IDS (separate arguments, or lists\n"
    "separated by spaces or commas; read from stdin when none are given).\n"
    "Control tokens such as <bos> print nothing unless --special is given;\n"
    "user-defined tokens such as <|channel> always print. Bytes of byte tokens\n"
    "are written as they are, even when they do not form valid UTF-8.\n"
    "\n"
    "  -s, --special   also print control tokens (<bos>, <|turn>, ...)\n"
    "  -r, --raw       print exactly the text, without the final newline\n"
    "  -h, --help      this text\n"
    "\n"
    "examples:\n"
    "  moeprune detokenize model.gguf 2 9259 1902\n"
    "  moeprune detokenize model.gguf --special \"$(cat prompt0.tokens.txt)\"\n"
    "  moeprune tokenize model.gguf 'Hi there' | moeprune detokenize model.gguf\n";

/* Appends the ids in s (separated by spaces, tabs, newlines or commas). */
static bool parse_ids(const char *s, mp_buf *ids, const char **bad) {
    while (*s) {
        while (*s && (isspace((unsigned char)*s) || *s == ',')) s++;
        if (!*s) break;
        char *end;
        errno = 0;
        long long v = strtoll(s, &end, 10);
        if (end == s || errno || v < 0 || v > INT32_MAX ||
            (*end && !isspace((unsigned char)*end) && *end != ',')) {
            *bad = s;
            return false;
        }
        mp_token id = (mp_token)v;
        if (!mp_buf_append(ids, &id, sizeof id)) {
            *bad = NULL;
            return false;
        }
        s = end;
    }
    return true;
}

static char *read_stdin(void) {
    mp_buf b = {0};
    char chunk[65536];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, stdin)) > 0)
        if (!mp_buf_append(&b, chunk, n)) break;
    if (!mp_buf_append(&b, "", 1)) {
        mp_buf_free(&b);
        return NULL;
    }
    return (char *)b.data;
}

int cmd_detokenize(int argc, char **argv) {
    static const struct option opts[] = {{"special", no_argument, NULL, 's'},
                                         {"raw", no_argument, NULL, 'r'},
                                         {"help", no_argument, NULL, 'h'},
                                         {0, 0, 0, 0}};
    bool special = false, raw = false;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "srh", opts, NULL)) != -1) {
        switch (c) {
        case 's': special = true; break;
        case 'r': raw = true; break;
        case 'h': fputs(detokenize_help, stdout); return MP_EXIT_OK;
        default: return cli_usage_error("detokenize", "unknown option");
        }
    }
    if (optind >= argc) return cli_usage_error("detokenize", "expected MODEL");
    mp_buf ids = {0};
    const char *bad = NULL;
    bool ok = true;
    for (int i = optind + 1; i < argc && ok; i++) ok = parse_ids(argv[i], &ids, &bad);
    if (ok && optind + 1 == argc) {
        if (isatty(STDIN_FILENO))
            return cli_usage_error("detokenize", "expected IDS (or ids on stdin)");
        char *in = read_stdin();
        ok = in && parse_ids(in, &ids, &bad);
        if (!ok && bad) { /* report the bad id before `in` goes */
            int rc = cli_usage_error("detokenize", "not a token id: '%.*s'",
                                     (int)strcspn(bad, " \t\r\n,"), bad);
            free(in);
            mp_buf_free(&ids);
            return rc;
        }
        free(in);
    }
    if (!ok) {
        mp_buf_free(&ids);
        if (!bad) {
            fprintf(stderr, "moeprune detokenize: out of memory\n");
            return MP_EXIT_FAIL;
        }
        return cli_usage_error("detokenize", "not a token id: '%.*s'",
                               (int)strcspn(bad, " \t\r\n,"), bad);
    }
    mp_err err = {0};
    mp_vocab *v = NULL;
    char *text = NULL;
    size_t len = 0;
    mp_status s = mp_vocab_open(&v, argv[optind], &err);
    if (!s)
        s = mp_detokenize(v, (const mp_token *)ids.data, ids.len / sizeof(mp_token), special,
                          &text, &len, &err);
    mp_vocab_free(v);
    mp_buf_free(&ids);
    if (s) return cli_fail("detokenize", &err);
    fwrite(text, 1, len, stdout);
    if (!raw) fputc('\n', stdout);
    mp_free(text);
    if (fflush(stdout) || ferror(stdout)) {
        fprintf(stderr, "moeprune detokenize: writing the output failed\n");
        return MP_EXIT_FAIL;
    }
    return MP_EXIT_OK;
}
