/* cmd_plan.c — `moeprune plan STATS --method M (--keep K | --drop D |
 * --retain T) -o dropmap.json`: a drop map by one of the published recipes
 * (src/plan/plan.c), and the numbers behind it per layer. */
#include <cjson/cJSON.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"

#define PLAN_MAX_CLASSES 64

static const char *const help =
    "usage: moeprune plan STATS --method M (--keep K | --drop D | --retain T) -o MAP.json\n"
    "\n"
    "Turns profile statistics into a drop map and prints, per layer, the kept and\n"
    "dropped counts and the retained share of the contribution and of the router's\n"
    "selections.\n"
    "\n"
    "  --method M          frequency | utility | contribution | multiclass | reap\n"
    "  --keep K            keep K experts in every layer (uniform budget)\n"
    "  --drop D            drop D experts in every layer\n"
    "  --retain T          the smallest uniform K with every layer keeping at least\n"
    "                      share T of its total score (e.g. --method contribution\n"
    "                      --retain 0.99: the 128 -> 109 Gemma 4 recipe)\n"
    "  --per-layer         with --retain: the smallest K per layer instead\n"
    "  --global            with --keep K: K x layers experts in all, spread over the\n"
    "                      layers by per-layer-normalised score\n"
    "  --classes a,b       use only these classes of the stats\n"
    "  --whitelist         utility: always keep experts of average rank < 2 with at\n"
    "                      least 10 selections\n"
    "  --reasoning-class C utility: swap in class C's top experts ...\n"
    "  --max-swaps N       ... at most N per layer (default 3)\n"
    "  --compare M2        also plan with method M2 and show the keep-set overlap\n"
    "  --model MODEL.gguf  check that the stats were taken on this model's layout\n"
    "  --json              the report as JSON\n"
    "  -o, --output FILE   the drop map (required); -f, --force to replace it\n"
    "\n"
    "Ties in score go to the lower expert id. No layer keeps fewer experts than\n"
    "the model uses per token.\n"
    "\n"
    "example:\n"
    "  moeprune plan gemma.stats --method contribution --retain 0.99 -o keep99.json\n"
    "  moeprune plan gemma.stats --method utility --keep 64 --whitelist \\\n"
    "      --reasoning-class math --max-swaps 3 -o keep64.json\n";

/* Kept share of the contribution and of the selections in one layer. */
static void retained(const mp_stats *s, int64_t l, const mp_dropmap_layer *L, double *contrib,
                     double *select) {
    int64_t x = s->n_expert[l], k = s->n_expert_used;
    double kc = 0, tc = 0, ks = 0, ts = 0;
    for (int64_t c = 0; c < s->n_class; c++) {
        const mp_stats_cell *cell = mp_stats_cell_at(s, l, c);
        for (int64_t i = 0, j = 0; i < x; i++) {
            bool kept = j < L->n_keep && L->keep[j] == i;
            if (kept) j++;
            double sel = 0;
            for (int64_t r = 0; r < k; r++) sel += cell->count[r * x + i];
            tc += cell->contrib[i];
            ts += sel;
            if (kept) {
                kc += cell->contrib[i];
                ks += sel;
            }
        }
    }
    *contrib = tc > 0 ? kc / tc : 1;
    *select = ts > 0 ? ks / ts : 1;
}

static int64_t overlap(const mp_dropmap_layer *a, const mp_dropmap_layer *b) {
    int64_t n = 0;
    for (int64_t i = 0, j = 0; i < a->n_keep && j < b->n_keep;) {
        if (a->keep[i] == b->keep[j]) {
            n++;
            i++;
            j++;
        } else if (a->keep[i] < b->keep[j]) {
            i++;
        } else {
            j++;
        }
    }
    return n;
}

static void report(const mp_stats *s, const mp_dropmap *m, const mp_dropmap *cmp, bool json) {
    cJSON *root = json ? cJSON_CreateObject() : NULL, *layers = NULL;
    if (json) {
        cJSON_AddStringToObject(root, "method", m->method);
        cJSON *params = cJSON_Parse(m->method_params);
        if (params) cJSON_AddItemToObject(root, "params", params);
        if (cmp) cJSON_AddStringToObject(root, "compare", cmp->method);
        layers = cJSON_AddArrayToObject(root, "layers");
    } else {
        printf("method %s %s\n%5s %7s %5s %7s %10s %10s", m->method, m->method_params, "layer",
               "experts", "kept", "dropped", "contrib", "selections");
        if (cmp) printf("  overlap with %s", cmp->method);
        printf("\n");
    }
    int64_t kept = 0, total = 0;
    for (int64_t i = 0; i < m->n_layers; i++) {
        const mp_dropmap_layer *L = &m->layers[i];
        double rc, rs;
        retained(s, L->layer, L, &rc, &rs);
        kept += L->n_keep;
        total += L->n_keep + L->n_drop;
        const mp_dropmap_layer *C = cmp ? mp_dropmap_find(cmp, L->layer) : NULL;
        if (json) {
            cJSON *o = cJSON_CreateObject();
            cJSON_AddNumberToObject(o, "layer", (double)L->layer);
            cJSON_AddNumberToObject(o, "n_expert", (double)(L->n_keep + L->n_drop));
            cJSON_AddNumberToObject(o, "kept", (double)L->n_keep);
            cJSON_AddNumberToObject(o, "dropped", (double)L->n_drop);
            cJSON_AddNumberToObject(o, "retained_score", L->retained);
            cJSON_AddNumberToObject(o, "retained_contribution", rc);
            cJSON_AddNumberToObject(o, "retained_selections", rs);
            if (C) {
                cJSON_AddNumberToObject(o, "overlap", (double)overlap(L, C));
                cJSON_AddNumberToObject(o, "compare_kept", (double)C->n_keep);
            }
            cJSON_AddItemToArray(layers, o);
        } else {
            printf("%5lld %7lld %5lld %7lld %10.4f %10.4f", (long long)L->layer,
                   (long long)(L->n_keep + L->n_drop), (long long)L->n_keep, (long long)L->n_drop,
                   rc, rs);
            if (C) printf("  %lld of %lld", (long long)overlap(L, C), (long long)C->n_keep);
            printf("\n");
        }
    }
    if (json) {
        cJSON_AddNumberToObject(root, "kept", (double)kept);
        cJSON_AddNumberToObject(root, "total", (double)total);
        char *txt = cJSON_Print(root);
        if (txt) puts(txt);
        free(txt);
        cJSON_Delete(root);
    } else {
        printf("total: kept %lld of %lld experts\n", (long long)kept, (long long)total);
    }
}

/* Splits "a,b,c" in place into at most PLAN_MAX_CLASSES names. */
static int64_t split_classes(char *list, const char **out) {
    int64_t n = 0;
    for (char *tok = strtok(list, ","); tok && n < PLAN_MAX_CLASSES; tok = strtok(NULL, ","))
        out[n++] = tok;
    return n;
}

int cmd_plan(int argc, char **argv) {
    static const struct option opts[] = {{"method", required_argument, NULL, 'm'},
                                         {"keep", required_argument, NULL, 'k'},
                                         {"drop", required_argument, NULL, 'd'},
                                         {"retain", required_argument, NULL, 'r'},
                                         {"per-layer", no_argument, NULL, 'p'},
                                         {"global", no_argument, NULL, 'g'},
                                         {"classes", required_argument, NULL, 'c'},
                                         {"whitelist", no_argument, NULL, 'w'},
                                         {"reasoning-class", required_argument, NULL, 'R'},
                                         {"max-swaps", required_argument, NULL, 'S'},
                                         {"compare", required_argument, NULL, 'C'},
                                         {"json", no_argument, NULL, 'j'},
                                         {"output", required_argument, NULL, 'o'},
                                         {"force", no_argument, NULL, 'f'},
                                         {"model", required_argument, NULL, 'M'},
                                         {"help", no_argument, NULL, 'h'},
                                         {0, 0, 0, 0}};
    mp_plan_params p = {.method = MP_PLAN_METHOD_COUNT, .max_swaps = 3};
    long long keep = -1, drop = -1, v;
    double retain = -1;
    bool per_layer = false, global = false, json = false, force = false;
    const char *out = NULL, *cmp_name = NULL, *model_path = NULL;
    char *class_list = NULL;
    const char *classes[PLAN_MAX_CLASSES];
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "o:fh", opts, NULL)) != -1) {
        switch (c) {
        case 'm':
            if (mp_plan_method_from_name(optarg) < 0)
                return cli_usage_error("plan",
                                       "unknown method '%s' (frequency, utility, "
                                       "contribution, multiclass, reap)",
                                       optarg);
            p.method = (mp_plan_method)mp_plan_method_from_name(optarg);
            break;
        case 'k':
            if (!cli_parse_int("plan", "--keep", optarg, 1, 1 << 20, &keep)) return MP_EXIT_USAGE;
            break;
        case 'd':
            if (!cli_parse_int("plan", "--drop", optarg, 0, 1 << 20, &drop)) return MP_EXIT_USAGE;
            break;
        case 'r': {
            char *end;
            retain = strtod(optarg, &end);
            if (*end || !(retain > 0 && retain <= 1))
                return cli_usage_error("plan", "--retain: '%s' is not a share in (0, 1]", optarg);
            break;
        }
        case 'p': per_layer = true; break;
        case 'g': global = true; break;
        case 'c': class_list = optarg; break;
        case 'w': p.whitelist = true; break;
        case 'R': p.reasoning_class = optarg; break;
        case 'S':
            if (!cli_parse_int("plan", "--max-swaps", optarg, 0, 1 << 20, &v)) return MP_EXIT_USAGE;
            p.max_swaps = v;
            break;
        case 'C':
            if (mp_plan_method_from_name(optarg) < 0)
                return cli_usage_error("plan", "--compare: unknown method '%s'", optarg);
            cmp_name = optarg;
            break;
        case 'M': model_path = optarg; break;
        case 'j': json = true; break;
        case 'o': out = optarg; break;
        case 'f': force = true; break;
        case 'h': fputs(help, stdout); return MP_EXIT_OK;
        default: return cli_usage_error("plan", "unknown option");
        }
    }
    if (optind != argc - 1) return cli_usage_error("plan", "expected one STATS file");
    if (p.method == MP_PLAN_METHOD_COUNT) return cli_usage_error("plan", "--method is required");
    if ((keep >= 0) + (drop >= 0) + (retain > 0) != 1)
        return cli_usage_error("plan", "give exactly one of --keep, --drop, --retain");
    if (per_layer && retain <= 0) return cli_usage_error("plan", "--per-layer goes with --retain");
    if (global && keep < 0) return cli_usage_error("plan", "--global goes with --keep");
    if (!out) return cli_usage_error("plan", "-o MAP.json is required");
    if (class_list) {
        p.classes = classes;
        p.n_classes = split_classes(class_list, classes);
    }
    mp_err err = {0};
    mp_stats *s = NULL;
    if (mp_stats_load(&s, argv[optind], &err)) return cli_fail("plan", &err);
    if (model_path) {
        mp_gguf *g = NULL;
        mp_status ms = mp_gguf_open(&g, model_path, &err);
        if (!ms) ms = mp_stats_check_model(s, g, &err);
        mp_gguf_free(g);
        if (ms) {
            mp_stats_free(s);
            return cli_fail("plan", &err);
        }
    }
    if (drop >= 0) {
        int64_t min_x = INT64_MAX;
        for (int64_t l = 0; l < s->n_layer; l++)
            if (s->n_expert[l] && s->n_expert[l] < min_x) min_x = s->n_expert[l];
        keep = min_x - drop;
    }
    p.keep = keep;
    p.retain = retain;
    p.budget = retain > 0 ? (per_layer ? MP_BUDGET_RETAIN_LAYER : MP_BUDGET_RETAIN)
               : global   ? MP_BUDGET_GLOBAL
                          : MP_BUDGET_UNIFORM;
    mp_dropmap *m = NULL, *cm = NULL;
    int rc = MP_EXIT_OK;
    if (mp_plan_make(s, &p, &m, &err)) {
        rc = cli_fail("plan", &err);
    } else if (cmp_name) {
        mp_plan_params q = p;
        q.method = (mp_plan_method)mp_plan_method_from_name(cmp_name);
        q.whitelist = false;
        q.reasoning_class = NULL;
        if (mp_plan_make(s, &q, &cm, &err)) rc = cli_fail("plan", &err);
    }
    if (rc == MP_EXIT_OK && mp_dropmap_save(m, out, force, &err)) rc = cli_fail("plan", &err);
    if (rc == MP_EXIT_OK) report(s, m, cm, json);
    mp_dropmap_free(m);
    mp_dropmap_free(cm);
    mp_stats_free(s);
    return rc;
}
