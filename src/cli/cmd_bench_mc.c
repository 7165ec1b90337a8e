/* cmd_bench_mc.c — `moeprune bench-mc MODEL [FILE.jsonl]`: multiple-choice
 * accuracy by log-likelihood (src/eval/mc.c), offline. Each JSONL line is
 * {"question": "...", "choices": ["...", ...], "answer": 2 or "C"}; with no
 * file, the built-in smoke set. --generate N scores the first choice letter in
 * a greedy answer instead. */
#include <cjson/cJSON.h>
#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "eval/eval.h"

#define CMD            "bench-mc"
#define MC_MAX_CHOICES 26
#define MC_CTX         2048

static const char *const help =
    "usage: moeprune bench-mc MODEL [FILE.jsonl] [--dropmap MAP] [-t N] [--json]\n"
    "\n"
    "Multiple-choice accuracy by log-likelihood, as lm-eval scores it: for each\n"
    "question the model reads \"Question: Q\\nAnswer:\" and every choice is scored\n"
    "by the log-probability of its tokens: acc takes the highest sum, acc_norm the\n"
    "highest per byte. FILE.jsonl lines: {\"question\": \"...\", \"choices\": [...],\n"
    "\"answer\": 0 or \"A\"}. Without a file, a tiny built-in smoke set (8 questions).\n"
    "\n"
    "  --generate N   letter mode: show the choices as A., B., ... and score the\n"
    "                 first choice letter in a greedy answer of up to N tokens\n"
    "\n"
    "example:\n"
    "  moeprune bench-mc gemma-64e.gguf arc-easy.jsonl --json\n";

typedef struct mc_set {
    mp_mc_item *items;
    char **strings; /* everything the items point into */
    size_t n, cap, n_str, cap_str;
} mc_set;

static char *keep_str(mc_set *s, const char *v) {
    if (s->n_str == s->cap_str) {
        size_t cap = s->cap_str ? 2 * s->cap_str : 256;
        char **n = realloc(s->strings, cap * sizeof *n);
        if (!n) return NULL;
        s->strings = n;
        s->cap_str = cap;
    }
    return s->strings[s->n_str++] = strdup(v);
}

static void set_free(mc_set *s) {
    for (size_t i = 0; i < s->n_str; i++) free(s->strings[i]);
    for (size_t i = 0; i < s->n; i++) free((void *)s->items[i].choices);
    free(s->strings);
    free(s->items);
}

static mp_status parse_line(mc_set *s, const char *path, long line_no, const char *txt,
                            mp_err *err) {
    cJSON *o = cJSON_Parse(txt);
    const cJSON *q = cJSON_GetObjectItemCaseSensitive(o, "question");
    const cJSON *ch = cJSON_GetObjectItemCaseSensitive(o, "choices");
    const cJSON *ans = cJSON_GetObjectItemCaseSensitive(o, "answer");
    int nc = cJSON_GetArraySize(ch), a = -1;
    if (cJSON_IsNumber(ans)) a = ans->valueint;
    if (cJSON_IsString(ans) && strlen(ans->valuestring) == 1 &&
        isalpha((unsigned char)ans->valuestring[0]))
        a = toupper((unsigned char)ans->valuestring[0]) - 'A';
    mp_status st = MP_OK;
    if (!cJSON_IsString(q) || !cJSON_IsArray(ch) || nc < 2 || nc > MC_MAX_CHOICES || a < 0 ||
        a >= nc)
        st = mp_err_set(err, MP_ERR_FORMAT,
                        "%s:%ld: expected {\"question\": string, \"choices\": "
                        "[2..%d strings], \"answer\": index or letter within them}",
                        path, line_no, MC_MAX_CHOICES);
    const char **choices = st ? NULL : calloc((size_t)nc, sizeof *choices);
    for (int i = 0; !st && i < nc; i++) {
        const cJSON *c = cJSON_GetArrayItem(ch, i);
        if (!cJSON_IsString(c))
            st = mp_err_set(err, MP_ERR_FORMAT, "%s:%ld: choices[%d] is not a string", path,
                            line_no, i);
        else if (!(choices[i] = keep_str(s, c->valuestring)))
            st = mp_err_set(err, MP_ERR_NOMEM, "out of memory");
    }
    if (!st && s->n == s->cap) {
        size_t cap = s->cap ? 2 * s->cap : 64;
        mp_mc_item *n = realloc(s->items, cap * sizeof *n);
        if (!n)
            st = mp_err_set(err, MP_ERR_NOMEM, "out of memory");
        else
            s->items = n, s->cap = cap;
    }
    const char *qs = st ? NULL : keep_str(s, q->valuestring);
    if (!st && !qs) st = mp_err_set(err, MP_ERR_NOMEM, "out of memory");
    if (!st)
        s->items[s->n++] = (mp_mc_item){qs, choices, nc, a};
    else
        free(choices);
    cJSON_Delete(o);
    return st;
}

static mp_status load_set(mc_set *s, const char *path, mp_err *err) {
    FILE *f = fopen(path, "rb");
    if (!f) return mp_err_set(err, MP_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    char *line = NULL;
    size_t cap = 0;
    long no = 0;
    mp_status st = MP_OK;
    for (ssize_t n; !st && (n = getline(&line, &cap, f)) >= 0;) {
        no++;
        bool blank = true;
        for (ssize_t i = 0; i < n && blank; i++) blank = isspace((unsigned char)line[i]);
        if (!blank) st = parse_line(s, path, no, line, err);
    }
    free(line);
    fclose(f);
    if (!st && s->n == 0) st = mp_err_set(err, MP_ERR_FORMAT, "%s: no questions", path);
    return st;
}

int cmd_bench_mc(int argc, char **argv) {
    enum { OPT_JSON = 256, OPT_DROPMAP, OPT_GEN };
    static const struct option opts[] = {{"threads", required_argument, NULL, 't'},
                                         {"dropmap", required_argument, NULL, OPT_DROPMAP},
                                         {"json", no_argument, NULL, OPT_JSON},
                                         {"generate", required_argument, NULL, OPT_GEN},
                                         {"help", no_argument, NULL, 'h'},
                                         {0, 0, 0, 0}};
    long long threads = 0, gen_n = 0;
    bool json = false;
    const char *dropmap = NULL;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "t:h", opts, NULL)) != -1) {
        switch (c) {
        case 't':
            if (!cli_parse_int(CMD, "--threads", optarg, 0, 4096, &threads)) return MP_EXIT_USAGE;
            break;
        case OPT_DROPMAP: dropmap = optarg; break;
        case OPT_JSON: json = true; break;
        case OPT_GEN:
            if (!cli_parse_int(CMD, "--generate", optarg, 1, 256, &gen_n)) return MP_EXIT_USAGE;
            break;
        case 'h': fputs(help, stdout); return MP_EXIT_OK;
        default: return cli_usage_error(CMD, "unknown option");
        }
    }
    if (argc - optind < 1 || argc - optind > 2)
        return cli_usage_error(CMD, "expected MODEL [FILE.jsonl]");
    mp_err err = {0};
    mc_set set = {0};
    mp_model *m = NULL;
    mp_vocab *v = NULL;
    mp_context *ctx = NULL;
    mp_dropmap *map = NULL;
    float *logits = NULL;
    int rc = MP_EXIT_FAIL;
    const mp_mc_item *items;
    size_t n_items;
    if (argc - optind == 2) {
        if (load_set(&set, argv[optind + 1], &err)) goto done;
        items = set.items;
        n_items = set.n;
    } else {
        items = mp_mc_builtin(&n_items);
    }
    mp_context_params cp = mp_context_default_params();
    cp.n_ctx = MC_CTX;
    cp.n_threads = (int)threads;
    if (mp_model_load(&m, argv[optind], &err) || mp_vocab_load(&v, mp_model_gguf(m), &err) ||
        mp_context_init(&ctx, m, cp, &err) || mp_context_apply_file_mask(ctx, m, &err) ||
        (dropmap &&
         (mp_dropmap_load(&map, dropmap, &err) || mp_context_apply_dropmap(ctx, m, map, &err))))
        goto done;
    const int64_t V = mp_model_n_vocab(m);
    if (!(logits = mp_malloc((size_t)(MC_CTX * V) * sizeof *logits))) {
        mp_err_set(&err, MP_ERR_NOMEM, "out of memory");
        goto done;
    }
    int correct = 0, correct_norm = 0;
    cJSON *root = json ? cJSON_CreateObject() : NULL, *per = NULL;
    if (root) per = cJSON_AddArrayToObject(root, "questions");
    for (size_t i = 0; i < n_items; i++) {
        double ll[MC_MAX_CHOICES];
        int pred = -1, pred_norm = -1;
        char *answer = NULL;
        mp_status st = gen_n
                           ? mp_mc_letter(ctx, v, V, &items[i], (int)gen_n, &pred, &answer, &err)
                           : mp_mc_score(ctx, v, V, &items[i], logits, ll, &pred, &pred_norm, &err);
        if (st) {
            cJSON_Delete(root);
            goto done;
        }
        if (gen_n) pred_norm = pred;
        correct += pred == items[i].answer;
        correct_norm += pred_norm == items[i].answer;
        if (per) {
            cJSON *q = cJSON_CreateObject();
            cJSON_AddNumberToObject(q, "answer", items[i].answer);
            cJSON_AddNumberToObject(q, "pred", pred);
            if (gen_n) {
                cJSON_AddStringToObject(q, "generated", answer ? answer : "");
            } else {
                cJSON_AddNumberToObject(q, "pred_norm", pred_norm);
                cJSON *a = cJSON_AddArrayToObject(q, "loglik");
                for (int j = 0; j < items[i].n_choices; j++)
                    cJSON_AddItemToArray(a, cJSON_CreateNumber(ll[j]));
            }
            cJSON_AddItemToArray(per, q);
        }
        mp_free(answer);
    }
    double acc = (double)correct / (double)n_items, accn = (double)correct_norm / (double)n_items;
    if (root) {
        cJSON_AddStringToObject(root, "model", argv[optind]);
        cJSON_AddNumberToObject(root, "n", (double)n_items);
        cJSON_AddNumberToObject(root, "acc", acc);
        cJSON_AddNumberToObject(root, "acc_norm", accn);
        char *txt = cJSON_Print(root);
        if (txt) puts(txt);
        free(txt);
        cJSON_Delete(root);
    } else {
        if (gen_n)
            printf("%s: letter accuracy %.4f (%d/%zu), greedy answers of up to %lld tokens%s\n",
                   argv[optind], acc, correct, n_items, gen_n,
                   argc - optind == 2 ? "" : ", built-in smoke set");
        else
            printf("%s: acc %.4f (%d/%zu), acc_norm %.4f (%d/%zu)%s\n", argv[optind], acc, correct,
                   n_items, accn, correct_norm, n_items,
                   argc - optind == 2 ? "" : " on the built-in smoke set");
    }
    rc = MP_EXIT_OK;
done:
    if (rc) cli_fail(CMD, &err);
    mp_free(logits);
    mp_dropmap_free(map);
    mp_context_free(ctx);
    mp_vocab_free(v);
    mp_model_free(m);
    set_free(&set);
    return rc;
}
