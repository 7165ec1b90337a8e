/* cmd_stats.c — `moeprune stats merge A B... -o C` and `moeprune stats show
 * FILE [--json]`: combine profile shards and read what they say. merge also
 * adds up imatrix files (profile --imatrix shards; general.type "imatrix"). */
#include <cjson/cJSON.h>
#include <getopt.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"

/* top-N sets compared between classes in the summary */
#define SHOW_OVERLAP_TOP 32
#define SHOW_TOP_SHARE   8

static const char *const help =
    "usage: moeprune stats merge A.stats B.stats [C.stats...] -o OUT.stats [--force]\n"
    "       moeprune stats show FILE.stats [--json]\n"
    "\n"
    "merge  adds shards of the same model (profiled with --shard I/N on several\n"
    "       machines, say) into one file: counts add exactly, sums to float\n"
    "       rounding; a different model or layout is an error. Imatrix files\n"
    "       (profile --imatrix, or llama-imatrix's GGUF ones) merge the same way:\n"
    "       sums and counts add, datasets join; the result is what llama-quantize\n"
    "       --imatrix reads.\n"
    "show   per-layer summaries: share of the contribution held by the top 8\n"
    "       experts, experts needed for 80/90/99% of it, Gini coefficient, and the\n"
    "       overlap of the top-32 sets between classes; --json prints\n"
    "       {\"model\", \"n_tokens\", \"n_expert_used\", \"classes\", \"layers\": [...]}\n"
    "\n"
    "example:\n"
    "  moeprune stats merge shard-*.stats -o all.stats\n"
    "  moeprune stats merge shard-*.imatrix.gguf -o all.imatrix.gguf\n"
    "  moeprune stats show all.stats --json | jq '.layers[0].contribution'\n";

/* Per-expert totals over all classes: selections, weight sums, contribution. */
static void totals(const mp_stats *s, int64_t l, const int64_t *cls, int64_t n_cls, double *count,
                   double *wsum, double *contrib) {
    int64_t x = s->n_expert[l], k = s->n_expert_used;
    for (int64_t e = 0; e < x; e++) count[e] = wsum[e] = contrib[e] = 0;
    for (int64_t i = 0; i < n_cls; i++) {
        const mp_stats_cell *c = mp_stats_cell_at(s, l, cls[i]);
        for (int64_t e = 0; e < x; e++) {
            for (int64_t r = 0; r < k; r++) {
                count[e] += c->count[r * x + e];
                wsum[e] += c->weight_sum[r * x + e];
            }
            contrib[e] += c->contrib[e];
        }
    }
}

static cJSON *arr(const double *v, int64_t n) {
    cJSON *a = cJSON_CreateArray();
    for (int64_t i = 0; i < n; i++) cJSON_AddItemToArray(a, cJSON_CreateNumber(v[i]));
    return a;
}

static cJSON *layer_json(const mp_stats *s, int64_t l, const int64_t *cls, int64_t n_cls,
                         double *buf) {
    int64_t x = s->n_expert[l];
    double *count = buf, *wsum = buf + x, *contrib = buf + 2 * x, *reap = buf + 3 * x;
    totals(s, l, cls, n_cls, count, wsum, contrib);
    for (int64_t e = 0; e < x; e++) reap[e] = count[e] > 0 ? contrib[e] / count[e] : 0;
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "layer", (double)l);
    cJSON_AddItemToObject(o, "count", arr(count, x));
    cJSON_AddItemToObject(o, "weight_sum", arr(wsum, x));
    cJSON_AddItemToObject(o, "contribution", arr(contrib, x));
    cJSON_AddItemToObject(o, "reap", arr(reap, x));
    return o;
}

static int show_json(const mp_stats *s, int64_t *all, double *buf) {
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "model", s->model_name);
    cJSON_AddStringToObject(root, "sha256", s->model_sha256);
    cJSON_AddStringToObject(root, "arch", s->arch);
    double n_tok = 0;
    for (int64_t c = 0; c < s->n_class; c++) n_tok += s->class_tokens[c];
    cJSON_AddNumberToObject(root, "n_tokens", n_tok);
    cJSON_AddNumberToObject(root, "n_expert_used", (double)s->n_expert_used);
    cJSON *classes = cJSON_AddArrayToObject(root, "classes");
    for (int64_t c = 0; c < s->n_class; c++)
        cJSON_AddItemToArray(classes, cJSON_CreateString(s->classes[c]));
    cJSON *layers = cJSON_AddArrayToObject(root, "layers");
    for (int64_t l = 0; l < s->n_layer; l++)
        if (s->n_expert[l]) cJSON_AddItemToArray(layers, layer_json(s, l, all, s->n_class, buf));
    if (s->n_class > 1) {
        cJSON *per = cJSON_AddObjectToObject(root, "per_class");
        for (int64_t c = 0; c < s->n_class; c++) {
            cJSON *co = cJSON_AddObjectToObject(per, s->classes[c]);
            cJSON_AddNumberToObject(co, "n_tokens", s->class_tokens[c]);
            cJSON *cl = cJSON_AddArrayToObject(co, "layers");
            for (int64_t l = 0; l < s->n_layer; l++)
                if (s->n_expert[l]) cJSON_AddItemToArray(cl, layer_json(s, l, &c, 1, buf));
        }
    }
    return cli_print_json("stats", root);
}

static int cmp_desc(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x > y ? -1 : x < y;
}

/* Top-n expert ids of v (ties: lower id) as a membership mask. */
static void top_mask(const double *v, int64_t x, int64_t n, bool *mask) {
    for (int64_t e = 0; e < x; e++) mask[e] = false;
    for (int64_t t = 0; t < n && t < x; t++) {
        int64_t best = -1;
        for (int64_t e = 0; e < x; e++)
            if (!mask[e] && (best < 0 || v[e] > v[best])) best = e;
        mask[best] = true;
    }
}

static void show_human(const mp_stats *s, int64_t *all, double *buf) {
    double n_tok = 0;
    for (int64_t c = 0; c < s->n_class; c++) n_tok += s->class_tokens[c];
    printf("model:   %s (%s)\nsha256:  %s\ntokens:  %.0f, top-%lld routing\nclasses:",
           s->model_name[0] ? s->model_name : "?", s->arch,
           s->model_sha256[0] ? s->model_sha256 : "(not recorded)", n_tok,
           (long long)s->n_expert_used);
    for (int64_t c = 0; c < s->n_class; c++)
        printf(" %s (%.0f tokens)", s->classes[c], s->class_tokens[c]);
    printf("\n\n%5s %7s %9s %6s %6s %6s %6s", "layer", "experts", "top8share", "n@80%", "n@90%",
           "n@99%", "gini");
    if (s->n_class > 1)
        printf("  top-%d overlap between classes (min, mean; top half when fewer experts)",
               SHOW_OVERLAP_TOP);
    printf("\n");
    for (int64_t l = 0; l < s->n_layer; l++) {
        int64_t x = s->n_expert[l];
        if (!x) continue;
        double *count = buf, *wsum = buf + x, *contrib = buf + 2 * x, *sorted = buf + 3 * x;
        totals(s, l, all, s->n_class, count, wsum, contrib);
        memcpy(sorted, contrib, (size_t)x * sizeof *sorted);
        qsort(sorted, (size_t)x, sizeof *sorted, cmp_desc);
        double total = 0, cum = 0, top = 0, gini_num = 0;
        for (int64_t e = 0; e < x; e++) total += sorted[e];
        int64_t need[3] = {x, x, x};
        const double share[3] = {0.80, 0.90, 0.99};
        for (int64_t e = 0; e < x; e++) {
            cum += sorted[e];
            if (e < SHOW_TOP_SHARE) top += sorted[e];
            for (int i = 0; i < 3; i++)
                if (need[i] == x && total > 0 && cum / total >= share[i]) need[i] = e + 1;
            /* Gini over ascending order: sum (2i - n - 1) v_i / (n sum v) */
            gini_num += (2.0 * (double)(x - e) - (double)x - 1.0) * sorted[e];
        }
        double gini = total > 0 ? gini_num / ((double)x * total) : 0;
        printf("%5lld %7lld %9.3f %6lld %6lld %6lld %6.3f", (long long)l, (long long)x,
               total > 0 ? top / total : 0, (long long)need[0], (long long)need[1],
               (long long)need[2], gini);
        if (s->n_class > 1) {
            bool *ma = calloc((size_t)x * 2, 1);
            double *ca = malloc((size_t)x * 2 * sizeof *ca);
            double omin = 1, osum = 0;
            int pairs = 0;
            for (int64_t a = 0; ma && ca && a < s->n_class; a++)
                for (int64_t b = a + 1; b < s->n_class; b++) {
                    memcpy(ca, mp_stats_cell_at(s, l, a)->contrib, (size_t)x * sizeof *ca);
                    memcpy(ca + x, mp_stats_cell_at(s, l, b)->contrib, (size_t)x * sizeof *ca);
                    int64_t n = SHOW_OVERLAP_TOP < x / 2 ? SHOW_OVERLAP_TOP : x / 2, both = 0;
                    top_mask(ca, x, n, ma);
                    top_mask(ca + x, x, n, ma + x);
                    for (int64_t e = 0; e < x; e++) both += ma[e] && ma[x + e];
                    double o = (double)both / (double)n;
                    omin = o < omin ? o : omin;
                    osum += o;
                    pairs++;
                }
            printf("  %.3f, %.3f", omin, pairs ? osum / pairs : 1.0);
            free(ma);
            free(ca);
        }
        printf("\n");
    }
}

static int stats_show(int argc, char **argv) {
    bool json = false;
    const char *file = NULL;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--json"))
            json = true;
        else if (argv[i][0] == '-')
            return cli_usage_error("stats", "unknown option %s", argv[i]);
        else if (file)
            return cli_usage_error("stats", "show takes one FILE");
        else
            file = argv[i];
    }
    if (!file) return cli_usage_error("stats", "show needs a FILE");
    mp_err err = {0};
    mp_stats *s = NULL;
    if (mp_stats_load(&s, file, &err)) return cli_fail("stats", &err);
    int64_t max_x = 1;
    for (int64_t l = 0; l < s->n_layer; l++)
        if (s->n_expert[l] > max_x) max_x = s->n_expert[l];
    int64_t *all = calloc((size_t)s->n_class, sizeof *all);
    double *buf = calloc((size_t)max_x * 4, sizeof *buf);
    int rc = MP_EXIT_FAIL;
    if (all && buf) {
        for (int64_t c = 0; c < s->n_class; c++) all[c] = c;
        if (json)
            rc = show_json(s, all, buf);
        else {
            show_human(s, all, buf);
            rc = MP_EXIT_OK;
        }
    }
    free(all);
    free(buf);
    mp_stats_free(s);
    return rc;
}

/* True when `path` is an imatrix GGUF (general.type "imatrix"), which
 * `merge` adds up with mp_imatrix_merge instead of as stats. */
static bool is_imatrix(const char *path) {
    mp_gguf *g = NULL;
    char *type = NULL;
    bool yes = !mp_gguf_open(&g, path, NULL) &&
               !mp_gguf_key_strdup(g, "general.type", &type, NULL) && !strcmp(type, "imatrix");
    mp_free(type);
    mp_gguf_free(g);
    return yes;
}

/* merge for imatrix files (profile --imatrix shards, or llama-imatrix's own):
 * sums and counts add, datasets join; written as F32 for llama-quantize. */
static int imatrix_merge(char **files, int n, const char *out, bool force) {
    mp_err err = {0};
    mp_imatrix *acc = NULL;
    for (int i = 0; i < n; i++) {
        mp_imatrix *im = NULL;
        mp_err e2 = {0};
        if (mp_imatrix_load(&im, files[i], &err) || (acc && mp_imatrix_merge(acc, im, &e2))) {
            if (e2.status) mp_err_set(&err, e2.status, "%s: %s", files[i], e2.msg);
            mp_imatrix_free(im);
            mp_imatrix_free(acc);
            return cli_fail("stats", &err);
        }
        if (!acc)
            acc = im;
        else
            mp_imatrix_free(im);
    }
    mp_status st = mp_imatrix_save(acc, out, force, false, &err);
    mp_imatrix_free(acc);
    return st ? cli_fail("stats", &err) : MP_EXIT_OK;
}

static int stats_merge(int argc, char **argv) {
    static const struct option opts[] = {
        {"output", required_argument, NULL, 'o'}, {"force", no_argument, NULL, 'f'}, {0, 0, 0, 0}};
    const char *out = NULL;
    bool force = false;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "o:f", opts, NULL)) != -1) {
        if (c == 'o')
            out = optarg;
        else if (c == 'f')
            force = true;
        else
            return cli_usage_error("stats", "unknown option");
    }
    if (!out) return cli_usage_error("stats", "merge needs -o OUT.stats");
    if (argc - optind < 2) return cli_usage_error("stats", "merge needs at least two files");
    if (is_imatrix(argv[optind])) {
        for (int i = optind; i < argc; i++)
            if (mp_file_same(argv[i], out))
                return cli_usage_error("stats", "output %s is also an input", out);
        return imatrix_merge(argv + optind, argc - optind, out, force);
    }
    mp_err err = {0};
    mp_stats *acc = NULL;
    for (int i = optind; i < argc; i++) {
        if (mp_file_same(argv[i], out)) {
            mp_stats_free(acc);
            return cli_usage_error("stats", "output %s is also an input", out);
        }
        mp_stats *s = NULL;
        mp_err e2 = {0};
        if (mp_stats_load(&s, argv[i], &err) || (acc && mp_stats_merge(acc, s, &e2))) {
            if (e2.status) mp_err_set(&err, e2.status, "%s: %s", argv[i], e2.msg);
            mp_stats_free(s);
            mp_stats_free(acc);
            return cli_fail("stats", &err);
        }
        if (!acc)
            acc = s;
        else
            mp_stats_free(s);
    }
    mp_status st = mp_stats_save(acc, out, force, &err);
    mp_stats_free(acc);
    return st ? cli_fail("stats", &err) : MP_EXIT_OK;
}

int cmd_stats(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        fputs(help, argc < 2 ? stderr : stdout);
        return argc < 2 ? MP_EXIT_USAGE : MP_EXIT_OK;
    }
    if (!strcmp(argv[1], "show")) return stats_show(argc - 2, argv + 2);
    if (!strcmp(argv[1], "merge")) return stats_merge(argc - 1, argv + 1);
    return cli_usage_error("stats", "unknown subcommand '%s' (merge, show)", argv[1]);
}
