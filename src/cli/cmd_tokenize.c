/* cmd_tokenize.c — `moeprune tokenize MODEL [--file F | TEXT] [--no-bos]
 * [--parse-special]`: prints the token ids of a text, space-separated on one
 * line (the format of the fixtures' promptN.tokens.txt). Reads only the
 * tokenizer metadata of MODEL (a vocabulary-only GGUF works too). */
#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "util/util.h"

static const char *const tokenize_help =
    "usage: moeprune tokenize MODEL [--file F | TEXT] [--no-bos] [--parse-special]\n"
    "\n"
    "Prints the token ids of TEXT (or of the bytes of file F; '-' is stdin) as\n"
    "MODEL's tokenizer encodes them, space-separated on one line. The text is\n"
    "taken exactly as given: a file's final newline is part of it.\n"
    "\n"
    "  -f, --file F          read the text from F instead of the command line\n"
    "      --no-bos          do not prepend BOS (added when the model asks for it)\n"
    "  -s, --parse-special   text of control tokens (\"<|turn>\") becomes their ids\n"
    "                        (user-defined tokens like \"<|channel>\" always do)\n"
    "  -h, --help            this text\n"
    "\n"
    "examples:\n"
    "  moeprune tokenize model.gguf 'Hello world'\n"
    "  moeprune tokenize model.gguf --parse-special -f prompt.txt\n"
    "  moeprune tokenize model.gguf --no-bos 'Hi' | xargs moeprune detokenize model.gguf\n";

/* Reads a whole file (or stdin for "-") into memory. */
static char *read_text_file(const char *path, size_t *len, mp_err *err) {
    FILE *f = strcmp(path, "-") ? fopen(path, "rb") : stdin;
    if (!f) {
        mp_err_set(err, MP_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    mp_buf b = {0};
    char chunk[65536];
    size_t n;
    bool ok = true;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) ok = ok && mp_buf_append(&b, chunk, n);
    if (ferror(f)) {
        mp_err_set(err, MP_ERR_IO, "%s: read failed: %s", path, strerror(errno));
        ok = false;
    } else if (!ok) {
        mp_err_set(err, MP_ERR_NOMEM, "%s: out of memory", path);
    }
    if (f != stdin) fclose(f);
    if (!ok) {
        mp_buf_free(&b);
        return NULL;
    }
    *len = b.len;
    if (!b.data) return mp_calloc(1, 1); /* an empty file is an empty text */
    return (char *)b.data;
}

int cmd_tokenize(int argc, char **argv) {
    enum { OPT_NO_BOS = 256 };
    static const struct option opts[] = {{"file", required_argument, NULL, 'f'},
                                         {"no-bos", no_argument, NULL, OPT_NO_BOS},
                                         {"parse-special", no_argument, NULL, 's'},
                                         {"help", no_argument, NULL, 'h'},
                                         {0, 0, 0, 0}};
    const char *file = NULL;
    bool no_bos = false, special = false;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "f:sh", opts, NULL)) != -1) {
        switch (c) {
        case 'f': file = optarg; break;
        case OPT_NO_BOS: no_bos = true; break;
        case 's': special = true; break;
        case 'h': fputs(tokenize_help, stdout); return MP_EXIT_OK;
        default: return cli_usage_error("tokenize", "unknown option");
        }
    }
    int n_args = argc - optind;
    if (n_args < 1) return cli_usage_error("tokenize", "expected MODEL");
    if (file ? n_args != 1 : n_args != 2)
        return cli_usage_error("tokenize", file ? "--file and TEXT exclude each other"
                                                : "expected MODEL and one TEXT (quote it)");
    mp_err err = {0};
    mp_vocab *v = NULL;
    if (mp_vocab_open(&v, argv[optind], &err)) return cli_fail("tokenize", &err);
    size_t len;
    char *owned = NULL;
    const char *text = argv[optind + 1];
    if (file) {
        if (!(owned = read_text_file(file, &len, &err))) {
            mp_vocab_free(v);
            return cli_fail("tokenize", &err);
        }
        text = owned;
    } else {
        len = strlen(text);
    }
    mp_tokenize_params p = {.add_bos = !no_bos && mp_vocab_specials(v)->add_bos,
                            .parse_special = special};
    mp_token *ids = NULL;
    size_t n = 0;
    mp_status s = mp_tokenize(v, text, len, p, &ids, &n, &err);
    mp_free(owned);
    mp_vocab_free(v);
    if (s) return cli_fail("tokenize", &err);
    for (size_t i = 0; i < n; i++) printf(i ? " %d" : "%d", ids[i]);
    printf("\n");
    mp_free(ids);
    if (fflush(stdout) || ferror(stdout)) {
        fprintf(stderr, "moeprune tokenize: writing the output failed\n");
        return MP_EXIT_FAIL;
    }
    return MP_EXIT_OK;
}
