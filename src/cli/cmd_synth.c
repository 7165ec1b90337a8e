/* cmd_synth.c — `moeprune synth --preset NAME -o OUT.gguf`: writes a model
 * with random weights and the real layout and metadata of an architecture
 * (mp_synth_write), for tests and benchmarks without downloading a model. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>

#include "cli/cli.h"
#include "synth/synth.h"

static void synth_help(FILE *f) {
    fputs("usage: moeprune synth --preset NAME -o OUT.gguf [options]\n"
          "\n"
          "Writes a random-weight model with the tensor names, shapes and metadata of a\n"
          "real architecture. Weights are a pure function of the seed: the same command\n"
          "writes the same bytes. The vocabulary (tokenizer.* keys) is copied from a\n"
          "vocabulary GGUF (see `moeprune vocab`).\n"
          "\n"
          "  -p, --preset NAME      architecture preset (below)\n"
          "  -o, --output FILE      output GGUF (required)\n"
          "  -l, --layers N         keep only the first N layers (default: all)\n"
          "  -s, --seed S           weight seed, 0..2^64-1 (default 0)\n"
          "  -t, --type TYPE        weight matrices as f32, f16, bf16 or q8_0 (default f32);\n"
          "                         norms, scales and the router stay f32\n"
          "      --vocab FILE       vocabulary GGUF (default: the preset's, from the data\n"
          "                         folder; MOEPRUNE_DATA overrides its location)\n"
          "      --split-experts    ffn_gate_exps + ffn_up_exps instead of ffn_gate_up_exps\n"
          "      --v-all-layers     attn_v on global layers too\n"
          "  -f, --force            replace OUT if it exists\n"
          "  -h, --help             this text\n"
          "\n"
          "presets:\n",
          f);
    for (const char *const *p = mp_synth_presets(); *p; p++) fprintf(f, "  %s\n", *p);
    fputs("\n"
          "example:\n"
          "  moeprune synth --preset gemma4-26b-a4b --layers 2 --type q8_0 -o g26-2l.gguf\n",
          f);
}

static int parse_type(const char *val, int *out) {
    static const struct {
        const char *name;
        int type;
    } types[] = {{"f32", MP_TYPE_F32}, {"f16", MP_TYPE_F16}, {"bf16", MP_TYPE_BF16},
                 {"q8_0", MP_TYPE_Q8_0}};
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++)
        if (!strcasecmp(val, types[i].name)) {
            *out = types[i].type;
            return 1;
        }
    return 0;
}

static int parse_seed(const char *val, uint64_t *out) {
    char *end;
    errno = 0;
    unsigned long long v = strtoull(val, &end, 0);
    if (errno || end == val || *end || val[0] == '-') return 0;
    *out = v;
    return 1;
}

int cmd_synth(int argc, char **argv) {
    enum { OPT_VOCAB = 256, OPT_SPLIT, OPT_VALL };
    static const struct option opts[] = {
        {"preset", required_argument, NULL, 'p'},
        {"output", required_argument, NULL, 'o'},
        {"layers", required_argument, NULL, 'l'},
        {"seed", required_argument, NULL, 's'},
        {"type", required_argument, NULL, 't'},
        {"vocab", required_argument, NULL, OPT_VOCAB},
        {"split-experts", no_argument, NULL, OPT_SPLIT},
        {"v-all-layers", no_argument, NULL, OPT_VALL},
        {"force", no_argument, NULL, 'f'},
        {"help", no_argument, NULL, 'h'},
        {0, 0, 0, 0},
    };
    mp_synth_params p = {0};
    const char *out = NULL;
    long long layers = 0;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "p:o:l:s:t:fh", opts, NULL)) != -1) {
        switch (c) {
        case 'p': p.preset = optarg; break;
        case 'o': out = optarg; break;
        case 'l':
            if (!cli_parse_int("synth", "--layers", optarg, 1, 1 << 20, &layers))
                return MP_EXIT_USAGE;
            p.n_layer = layers;
            break;
        case 's':
            if (!parse_seed(optarg, &p.seed))
                return cli_usage_error("synth", "--seed: '%s' is not an integer in 0..2^64-1",
                                       optarg);
            break;
        case 't':
            if (!parse_type(optarg, &p.type))
                return cli_usage_error("synth", "--type: '%s' is not one of f32, f16, bf16, q8_0",
                                       optarg);
            break;
        case OPT_VOCAB: p.vocab_path = optarg; break;
        case OPT_SPLIT: p.split_experts = true; break;
        case OPT_VALL: p.v_every_layer = true; break;
        case 'f': p.overwrite = true; break;
        case 'h': synth_help(stdout); return MP_EXIT_OK;
        default: return cli_usage_error("synth", "unknown option");
        }
    }
    if (optind != argc)
        return cli_usage_error("synth", "unexpected argument '%s'", argv[optind]);
    if (!p.preset || !out) {
        synth_help(stderr);
        return cli_usage_error("synth", "%s is required", !p.preset ? "--preset" : "-o/--output");
    }
    const mp_synth_hparams *hp = mp_synth_hparams_find(p.preset);
    if (!hp) {
        fprintf(stderr, "moeprune synth: unknown preset '%s'; presets:\n", p.preset);
        for (const char *const *n = mp_synth_presets(); *n; n++) fprintf(stderr, "  %s\n", *n);
        return MP_EXIT_USAGE;
    }
    if (p.n_layer > (int64_t)hp->n_layer)
        return cli_usage_error("synth", "--layers %lld: preset %s has %u layers", layers,
                               hp->name, hp->n_layer);
    struct stat st;
    if (!p.overwrite && stat(out, &st) == 0) {
        fprintf(stderr, "moeprune synth: %s exists (use --force to replace it)\n", out);
        return MP_EXIT_FAIL;
    }
    mp_err err = {0};
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    if (mp_synth_write(out, &p, &err)) return cli_fail("synth", &err);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double secs = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
    long long bytes = stat(out, &st) == 0 ? (long long)st.st_size : -1;
    printf("%s: preset %s, %s weights, seed %" PRIu64 ": %lld bytes in %.1f s\n", out, p.preset,
           mp_type_name(p.type), p.seed, bytes, secs);
    return MP_EXIT_OK;
}
