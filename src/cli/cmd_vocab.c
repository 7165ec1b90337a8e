/* cmd_vocab.c — `moeprune vocab MODEL -o OUT.gguf`: writes a vocabulary-only
 * GGUF (mp_vocab_extract) that `moeprune synth --vocab` can use. */
#include <getopt.h>
#include <sys/stat.h>

#include "cli/cli.h"

static const char *const vocab_help =
    "usage: moeprune vocab MODEL -o OUT.gguf [--force]\n"
    "\n"
    "Writes a vocabulary-only GGUF: general.architecture, the <arch>.*\n"
    "hyper-parameters and every tokenizer.* key of MODEL, copied byte for byte;\n"
    "no tensors. `moeprune synth --vocab OUT.gguf` copies its tokenizer.\n"
    "\n"
    "  -o, --output FILE   output GGUF (required)\n"
    "  -f, --force         replace OUT if it exists\n"
    "  -h, --help          this text\n"
    "\n"
    "example:\n"
    "  moeprune vocab tests/data/gemma4-tiny-a/tiny-a-f32.gguf -o data/gemma4-tiny-vocab.gguf\n";

int cmd_vocab(int argc, char **argv) {
    static const struct option opts[] = {{"output", required_argument, NULL, 'o'},
                                         {"force", no_argument, NULL, 'f'},
                                         {"help", no_argument, NULL, 'h'},
                                         {0, 0, 0, 0}};
    const char *out = NULL;
    bool force = false;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "o:fh", opts, NULL)) != -1) {
        switch (c) {
        case 'o': out = optarg; break;
        case 'f': force = true; break;
        case 'h': fputs(vocab_help, stdout); return MP_EXIT_OK;
        default: return cli_usage_error("vocab", "unknown option");
        }
    }
    if (optind != argc - 1)
        return cli_usage_error("vocab", "expected one MODEL, got %d arguments", argc - optind);
    if (!out) return cli_usage_error("vocab", "-o/--output is required");
    struct stat st;
    if (!force && stat(out, &st) == 0) {
        fprintf(stderr, "moeprune vocab: %s exists (use --force to replace it)\n", out);
        return MP_EXIT_FAIL;
    }
    mp_err err = {0};
    mp_gguf *g = NULL;
    if (mp_gguf_open(&g, argv[optind], &err)) return cli_fail("vocab", &err);
    mp_status s = mp_vocab_extract(g, out, force, &err);
    mp_gguf_free(g);
    if (s) return cli_fail("vocab", &err);
    printf("%s: vocabulary of %s\n", out, argv[optind]);
    return MP_EXIT_OK;
}
