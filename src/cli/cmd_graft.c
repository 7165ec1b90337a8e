/* cmd_graft.c — `moeprune graft -o OUT.gguf A.gguf B.gguf [...]`: one model
 * whose experts per layer are the inputs' experts side by side. The work is
 * mp_graft_gguf (src/surgery/graft.c). */
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"

static const char *const help =
    "usage: moeprune graft -o OUT.gguf A.gguf B.gguf [C.gguf ...] [options]\n"
    "\n"
    "Builds one model from several models of the same base (same architecture,\n"
    "layer count and non-expert tensor shapes and types): each MoE layer gets the\n"
    "experts of A, then those of B, and so on (expert slabs, router rows and\n"
    "per-expert scales copied byte for byte, in any tensor type). The expert\n"
    "count becomes the sum; if that differs between layers, the output records\n"
    "per-layer counts that only moeprune runs. Where each input's experts went is\n"
    "recorded in the output's metadata (moeprune.graft).\n"
    "\n"
    "  -o, --output FILE    output file (required)\n"
    "  --average            non-expert tensors: the element-wise mean of all inputs\n"
    "                       (F32, F16 and BF16 tensors only) instead of A's\n"
    "  -f, --force          replace an existing output file\n"
    "\n"
    "example (prune, fine-tune each half, merge back):\n"
    "  moeprune graft -o merged-128e.gguf tuned-first64.gguf tuned-last64.gguf\n";

int cmd_graft(int argc, char **argv) {
    static const struct option opts[] = {{"output", required_argument, NULL, 'o'},
                                         {"average", no_argument, NULL, 'a'},
                                         {"force", no_argument, NULL, 'f'},
                                         {"help", no_argument, NULL, 'h'},
                                         {0, 0, 0, 0}};
    const char *out = NULL;
    mp_graft_params p = {0};
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "o:fh", opts, NULL)) != -1) {
        switch (c) {
        case 'o': out = optarg; break;
        case 'a': p.average = true; break;
        case 'f': p.overwrite = true; break;
        case 'h': fputs(help, stdout); return MP_EXIT_OK;
        default: return cli_usage_error("graft", "unknown option");
        }
    }
    if (!out) return cli_usage_error("graft", "-o OUT.gguf is required");
    int n = argc - optind;
    if (n < 2) return cli_usage_error("graft", "expected at least two input models, got %d", n);
    mp_err err = {0};
    if (mp_graft_gguf((const char *const *)(argv + optind), n, out, &p, &err))
        return cli_fail("graft", &err);
    fprintf(stderr, "%s: grafted the experts of %d models%s\n", out, n,
            p.average ? " (non-expert tensors averaged)" : "");
    return MP_EXIT_OK;
}
