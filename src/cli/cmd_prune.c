/* cmd_prune.c — `moeprune prune MODEL.gguf DROPMAP.json -o OUT.gguf`: removes
 * (or zeroes) the experts a drop map drops; `--keep-map PRUNED.gguf -o MAP.json`
 * writes back the map a pruned file records. A folder or a .safetensors file
 * is a Hugging Face checkpoint. The surgery itself is mp_prune_gguf
 * (src/surgery/prune.c) or mp_prune_safetensors (src/surgery/safetensors.c). */
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"

static const char *const help =
    "usage: moeprune prune MODEL.gguf DROPMAP.json -o OUT.gguf [options]\n"
    "       moeprune prune MODEL_DIR DROPMAP.json -o OUT_DIR [options]\n"
    "       moeprune prune --keep-map PRUNED.gguf|PRUNED_DIR -o MAP.json\n"
    "\n"
    "Rewrites MODEL without the experts DROPMAP drops: the kept experts' slabs of\n"
    "every expert tensor and their router rows are copied byte for byte, in any\n"
    "tensor type (no requantization), and the map is recorded in the output's\n"
    "metadata (moeprune.dropmap). The output appears only when complete.\n"
    "\n"
    "MODEL_DIR is a Hugging Face checkpoint folder (model.safetensors.index.json\n"
    "and its shards, or model.safetensors; a single .safetensors file works too):\n"
    "the stacked expert tensors, router rows and per-expert scales (BF16, F16,\n"
    "F32) lose the dropped experts, config.json gets the new expert count and the\n"
    "map (\"moeprune_dropmap\"), other files are copied. The map must keep the\n"
    "same number of experts in every layer.\n"
    "\n"
    "  -o, --output FILE    output file (required)\n"
    "  --mode remove|zero   remove the experts (default), or keep the shapes and\n"
    "                       zero their weights and router rows; moeprune never\n"
    "                       routes to zeroed experts, other engines still do\n"
    "  --target auto|llama.cpp|moeprune\n"
    "                       llama.cpp and ollama need one expert count in every\n"
    "                       layer: `llama.cpp` refuses a non-uniform map; `moeprune`\n"
    "                       writes per-layer counts only moeprune runs; `auto`\n"
    "                       (default) picks llama.cpp for uniform maps\n"
    "  --keep-map           read PRUNED.gguf's recorded map and write it to -o\n"
    "  -f, --force          replace an existing output file\n"
    "\n"
    "example:\n"
    "  moeprune prune gemma-4-26B-A4B-Q4_K_M.gguf keep64.json -o gemma-4-64e-Q4_K_M.gguf\n"
    "  moeprune prune gemma-4-26b-a4b-it/ keep64.json -o gemma-4-64e-it/\n";

static int keep_map(const char *model, const char *out, bool force) {
    mp_err err = {0};
    mp_gguf *g = NULL;
    mp_dropmap *m = NULL;
    bool st = mp_st_is_checkpoint_path(model);
    if ((st ? mp_dropmap_from_safetensors(model, &m, &err)
            : (mp_gguf_open(&g, model, &err) || mp_dropmap_from_gguf(g, &m, &err))) ||
        mp_dropmap_save(m, out, force, &err)) {
        mp_dropmap_free(m);
        mp_gguf_free(g);
        return cli_fail("prune", &err);
    }
    fprintf(stderr, "%s: drop map of %s (%lld layers)\n", out, model, (long long)m->n_layers);
    mp_dropmap_free(m);
    mp_gguf_free(g);
    return MP_EXIT_OK;
}

int cmd_prune(int argc, char **argv) {
    static const struct option opts[] = {{"output", required_argument, NULL, 'o'},
                                         {"mode", required_argument, NULL, 'm'},
                                         {"target", required_argument, NULL, 't'},
                                         {"keep-map", no_argument, NULL, 'k'},
                                         {"force", no_argument, NULL, 'f'},
                                         {"help", no_argument, NULL, 'h'},
                                         {0, 0, 0, 0}};
    const char *out = NULL;
    bool force = false, want_keep_map = false;
    mp_prune_params p = {.mode = MP_PRUNE_REMOVE, .target = MP_TARGET_AUTO};
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "o:fh", opts, NULL)) != -1) {
        switch (c) {
        case 'o': out = optarg; break;
        case 'f': force = true; break;
        case 'k': want_keep_map = true; break;
        case 'm':
            if (!strcmp(optarg, "remove"))
                p.mode = MP_PRUNE_REMOVE;
            else if (!strcmp(optarg, "zero"))
                p.mode = MP_PRUNE_ZERO;
            else
                return cli_usage_error("prune", "--mode: '%s' is not remove or zero", optarg);
            break;
        case 't':
            if (!strcmp(optarg, "auto"))
                p.target = MP_TARGET_AUTO;
            else if (!strcmp(optarg, "llama.cpp"))
                p.target = MP_TARGET_LLAMA_CPP;
            else if (!strcmp(optarg, "moeprune"))
                p.target = MP_TARGET_MOEPRUNE;
            else
                return cli_usage_error("prune",
                                       "--target: '%s' is not auto, llama.cpp or "
                                       "moeprune",
                                       optarg);
            break;
        case 'h': fputs(help, stdout); return MP_EXIT_OK;
        default: return cli_usage_error("prune", "unknown option");
        }
    }
    if (!out) return cli_usage_error("prune", "-o OUT is required");
    if (want_keep_map) {
        if (optind != argc - 1)
            return cli_usage_error("prune", "--keep-map takes one PRUNED.gguf or PRUNED_DIR");
        return keep_map(argv[optind], out, force);
    }
    if (optind != argc - 2) return cli_usage_error("prune", "expected MODEL.gguf and DROPMAP.json");
    p.overwrite = force;
    mp_err err = {0};
    mp_dropmap *m = NULL;
    const char *model = argv[optind];
    if (mp_dropmap_load(&m, argv[optind + 1], &err) ||
        (mp_st_is_checkpoint_path(model) ? mp_prune_safetensors(model, m, out, &p, &err)
                                         : mp_prune_gguf(model, m, out, &p, &err))) {
        mp_dropmap_free(m);
        return cli_fail("prune", &err);
    }
    int64_t kept = 0, total = 0;
    for (int64_t i = 0; i < m->n_layers; i++) {
        kept += m->layers[i].n_keep;
        total += m->layers[i].n_keep + m->layers[i].n_drop;
    }
    fprintf(stderr, "%s: kept %lld of %lld experts over %lld layers\n", out, (long long)kept,
            (long long)total, (long long)m->n_layers);
    mp_dropmap_free(m);
    return MP_EXIT_OK;
}
