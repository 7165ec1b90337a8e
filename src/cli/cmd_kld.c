/* cmd_kld.c — `moeprune kld BASE CANDIDATE... TEXT`: runs the base model and
 * every candidate on the same windows of the same tokens and reports, per
 * candidate, the statistics llama-perplexity's KL mode gives (KL divergence
 * mean and percentiles, Δp of the correct token, top-1 agreement) plus the
 * perplexity ratio and resource numbers, as one table (or --json,
 * --markdown). Window by window: the base's log-probabilities of a window are
 * kept only while the candidates run on it. --save-base keeps the base's top
 * K log-probabilities per scored token (and its probability of the correct
 * token) so later runs reuse them with --base-logits instead of running the
 * base again: a full-vocabulary dump of a 262,144-token model is ~1 MB per
 * token, K = 64 is 512 bytes. */
#include <cjson/cJSON.h>
#include <getopt.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"
#include "eval/eval.h"

#define CMD            "kld"
#define MAX_CANDIDATES 32

static const char *const help =
    "usage: moeprune kld BASE CANDIDATE [CANDIDATE...] TEXT [--ctx N] [--chunks C]\n"
    "                    [-t N] [--json | --markdown]\n"
    "\n"
    "Compares each CANDIDATE (a pruned or quantized BASE, say) with BASE on the\n"
    "text file TEXT, window by window as llama-perplexity does: KL divergence\n"
    "KL(base || candidate) per scored token (mean +/- error, max, 99.9%, 99%,\n"
    "90%, median, 10%, 5%, 1%, min), the change of the correct token's\n"
    "probability (mean and RMS delta-p), top-1 agreement (\"same top p\"), and\n"
    "perplexity and its ratio to the base's. BASE and candidates must share the\n"
    "vocabulary. A candidate written as FILE:MAP.json runs FILE with the drop\n"
    "map's experts masked (no pruned file needed).\n"
    "\n"
    "  --ctx N, --chunks C    windows (default 512, all that fit)\n"
    "  --save-base FILE       also save the base's top-K log-probs per token\n"
    "  --top-k K              K for --save-base (default 64)\n"
    "  --base-logits FILE     reuse a saved base instead of running it (same text\n"
    "                         and --ctx); KLD is then a lower bound, exact when K\n"
    "                         covers the vocabulary: the tail counts as one event\n"
    "  -t N, --json, --markdown\n"
    "\n"
    "example:\n"
    "  moeprune kld gemma.gguf gemma-109e.gguf gemma-64e.gguf wiki.test.raw --ctx 512\n";

typedef struct cand {
    const char *label, *path, *map_path;
    char path_buf[4096]; /* FILE of a FILE:MAP.json argument */
    mp_model *m;
    mp_context *c;
    mp_dropmap *map;
    mp_kld_acc acc;
    double secs;
} cand;

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* Same vocabulary: same size and the same text for every token. */
static mp_status same_vocab(const mp_vocab *a, const mp_vocab *b, const char *pa, const char *pb,
                            mp_err *err) {
    int32_t n = mp_vocab_n_tokens(a);
    if (n != mp_vocab_n_tokens(b))
        return mp_err_set(err, MP_ERR_CHECK,
                          "%s has %d tokens but %s has %d: different vocabularies", pb,
                          mp_vocab_n_tokens(b), pa, n);
    for (int32_t i = 0; i < n; i++) {
        size_t la, lb;
        const char *ta = mp_vocab_text(a, i, &la), *tb = mp_vocab_text(b, i, &lb);
        if (la != lb || memcmp(ta, tb, la))
            return mp_err_set(err, MP_ERR_CHECK,
                              "%s and %s differ at token %d: different "
                              "vocabularies",
                              pa, pb, i);
    }
    return MP_OK;
}

static mp_status open_model(cand *k, const char *arg, long long ctx_n, int threads, mp_err *err) {
    k->label = arg;
    k->path = arg;
    const char *colon = strrchr(arg, ':');
    if (colon && strstr(colon, ".json")) {
        snprintf(k->path_buf, sizeof k->path_buf, "%.*s", (int)(colon - arg), arg);
        k->path = k->path_buf;
        k->map_path = colon + 1;
    }
    mp_context_params cp = mp_context_default_params();
    cp.n_ctx = ctx_n;
    cp.n_threads = threads;
    mp_status s = mp_model_load(&k->m, k->path, err);
    if (!s) s = mp_context_init(&k->c, k->m, cp, err);
    if (!s) s = mp_context_apply_file_mask(k->c, k->m, err);
    if (!s && k->map_path) s = mp_dropmap_load(&k->map, k->map_path, err);
    if (!s && k->map) s = mp_context_apply_dropmap(k->c, k->m, k->map, err);
    return s;
}

/* Saved base log-probabilities: the base's top K per scored position, its
 * probability of the correct token, and the tokens they were computed on
 * (a GGUF: general.type "moeprune-kldbase"). */
typedef struct kbase {
    int64_t K, n_pos;
    int32_t *ids;  /* [n_pos][K] */
    float *logp;   /* [n_pos][K] */
    float *p_next; /* [n_pos] */
    mp_gguf *g;    /* when loaded: the arrays point into it */
} kbase;

static mp_status kbase_save(const kbase *b, const char *path, const char *base_path,
                            const mp_token *tokens, int64_t n_ctx, int64_t n_chunk, int64_t V,
                            mp_err *err) {
    mp_gguf_writer *w = NULL;
    mp_status s = mp_gguf_writer_open(&w, path, true, err);
    if (s) return s;
    uint8_t *tk = mp_malloc((size_t)(n_ctx * n_chunk) * 4);
    if (!tk) s = mp_err_set(err, MP_ERR_NOMEM, "out of memory");
    for (int64_t i = 0; !s && i < n_ctx * n_chunk; i++)
        mp_store_u32(tk + 4 * i, (uint32_t)tokens[i]);
    if (!s) s = mp_gguf_writer_kv_str(w, "general.type", "moeprune-kldbase", err);
    if (!s) s = mp_gguf_writer_kv_u32(w, "moeprune.kldbase.version", 1, err);
    if (!s) s = mp_gguf_writer_kv_str(w, "moeprune.kldbase.model", base_path, err);
    if (!s) s = mp_gguf_writer_kv_u32(w, "moeprune.kldbase.n_ctx", (uint32_t)n_ctx, err);
    if (!s) s = mp_gguf_writer_kv_u32(w, "moeprune.kldbase.n_vocab", (uint32_t)V, err);
    if (!s)
        s = mp_gguf_writer_kv_arr(w, "moeprune.kldbase.tokens", MP_GGUF_INT32, tk,
                                  (uint64_t)(n_ctx * n_chunk), err);
    mp_free(tk);
    int64_t ne2[2] = {b->K, b->n_pos}, ne1[1] = {b->n_pos};
    if (!s) s = mp_gguf_writer_add_tensor(w, "ids", MP_TYPE_I32, 2, ne2, err);
    if (!s) s = mp_gguf_writer_add_tensor(w, "logp", MP_TYPE_F32, 2, ne2, err);
    if (!s) s = mp_gguf_writer_add_tensor(w, "p_next", MP_TYPE_F32, 1, ne1, err);
    /* little-endian hosts only write these arrays as they are in memory */
    if (!s) s = mp_gguf_writer_write_data(w, b->ids, (size_t)(b->K * b->n_pos) * 4, err);
    if (!s) s = mp_gguf_writer_write_data(w, b->logp, (size_t)(b->K * b->n_pos) * 4, err);
    if (!s) s = mp_gguf_writer_write_data(w, b->p_next, (size_t)b->n_pos * 4, err);
    if (!s) s = mp_gguf_writer_finish(w, err);
    mp_gguf_writer_free(w);
    return s;
}

static mp_status kbase_load(kbase *b, const char *path, const mp_token *tokens, int64_t n_ctx,
                            int64_t n_chunk, int64_t V, int64_t scored, mp_err *err) {
    mp_status s = mp_gguf_open(&b->g, path, err);
    if (s) return s;
    uint64_t ctx = 0, nv = 0;
    int64_t ti = mp_gguf_find_key(b->g, "moeprune.kldbase.tokens");
    const mp_gguf_tensor *ids = mp_gguf_find_tensor(b->g, "ids");
    const mp_gguf_tensor *lp = mp_gguf_find_tensor(b->g, "logp");
    const mp_gguf_tensor *pn = mp_gguf_find_tensor(b->g, "p_next");
    mp_gguf_key_uint(b->g, "moeprune.kldbase.n_ctx", &ctx, NULL);
    mp_gguf_key_uint(b->g, "moeprune.kldbase.n_vocab", &nv, NULL);
    if (ti < 0 || !ids || !lp || !pn || ids->type != MP_TYPE_I32 || lp->type != MP_TYPE_F32 ||
        pn->type != MP_TYPE_F32 || ids->ne[0] != lp->ne[0] || ids->ne[1] != lp->ne[1] ||
        pn->ne[0] != ids->ne[1] || ids->ne[0] < 1 || ids->ne[0] > V)
        return mp_err_set(err, MP_ERR_FORMAT, "%s: not a saved kld base (--save-base)", path);
    if ((int64_t)ctx != n_ctx || (int64_t)nv != V)
        return mp_err_set(err, MP_ERR_CHECK,
                          "%s: saved with --ctx %llu and %llu tokens of "
                          "vocabulary, this run uses --ctx %lld and %lld",
                          path, (unsigned long long)ctx, (unsigned long long)nv, (long long)n_ctx,
                          (long long)V);
    if (ids->ne[1] < n_chunk * scored || mp_gguf_arr_len(b->g, ti) < (uint64_t)(n_chunk * n_ctx))
        return mp_err_set(err, MP_ERR_CHECK, "%s: holds fewer windows than this run needs (%lld)",
                          path, (long long)n_chunk);
    for (int64_t i = 0; i < n_chunk * n_ctx; i++) {
        int64_t t = -1;
        mp_gguf_get_int(b->g, ti, (uint64_t)i, &t, NULL);
        if (t != tokens[i])
            return mp_err_set(err, MP_ERR_CHECK,
                              "%s: saved for other tokens (token %lld "
                              "differs): same text and model?",
                              path, (long long)i);
    }
    for (int64_t i = 0; i < ids->ne[0] * ids->ne[1]; i++) {
        int32_t id = (int32_t)mp_load_u32((const uint8_t *)ids->data + 4 * i);
        if (id < 0 || id >= V)
            return mp_err_set(err, MP_ERR_FORMAT, "%s: ids[%lld] = %d out of the vocabulary", path,
                              (long long)i, id);
    }
    b->K = ids->ne[0];
    b->n_pos = ids->ne[1];
    b->ids = (int32_t *)ids->data;
    b->logp = (float *)lp->data;
    b->p_next = (float *)pn->data;
    return MP_OK;
}

static void summary_json(cJSON *row, const mp_kld_summary *s, double base_ppl) {
    cJSON_AddNumberToObject(row, "ppl", s->ppl);
    cJSON_AddNumberToObject(row, "ppl_stderr", s->ppl_err);
    cJSON_AddNumberToObject(row, "ppl_ratio", base_ppl > 0 ? s->ppl / base_ppl : 0);
    cJSON_AddNumberToObject(row, "kld_mean", s->mean);
    cJSON_AddNumberToObject(row, "kld_stderr", s->mean_err);
    cJSON_AddNumberToObject(row, "kld_max", s->max);
    cJSON_AddNumberToObject(row, "kld_p99_9", s->p999);
    cJSON_AddNumberToObject(row, "kld_p99", s->p99);
    cJSON_AddNumberToObject(row, "kld_p90", s->p90);
    cJSON_AddNumberToObject(row, "kld_median", s->median);
    cJSON_AddNumberToObject(row, "kld_p10", s->p10);
    cJSON_AddNumberToObject(row, "kld_p5", s->p5);
    cJSON_AddNumberToObject(row, "kld_p1", s->p1);
    cJSON_AddNumberToObject(row, "kld_min", s->min);
    cJSON_AddNumberToObject(row, "delta_p_mean", s->dp_mean);
    cJSON_AddNumberToObject(row, "delta_p_rms", s->dp_rms);
    cJSON_AddNumberToObject(row, "same_top_p", s->same_top);
    cJSON_AddNumberToObject(row, "n_tokens", (double)s->n);
}

/* The last `w` characters of s (a long path keeps its informative end). */
static const char *tail(const char *s, size_t w) {
    size_t n = strlen(s);
    return n > w ? s + n - w : s;
}

static void print_table(cand *ks, int nk, const mp_kld_summary *sm, double base_ppl,
                        bool markdown) {
    if (markdown)
        printf("| model | size MiB | resident MiB | PPL | PPL ratio | mean KLD | max | 99.9%% | "
               "99%% | median | 1%% | mean Δp | RMS Δp | same top p | tok/s |\n"
               "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    else
        printf("%-28s %8s %8s %11s %7s %17s %8s %8s %8s %8s %8s %8s %7s %8s %7s\n", "model",
               "size MiB", "res MiB", "PPL", "ratio", "mean KLD", "max", "99.9%", "99%", "median",
               "1%", "mean dp", "RMS dp", "same top", "tok/s");
    for (int i = 0; i < nk; i++) {
        const mp_kld_summary *s = &sm[i];
        const mp_gguf *g = mp_model_gguf(ks[i].m);
        double mib = (double)mp_gguf_file_size(g) / (1 << 20);
        double res = (double)mp_eval_mapped_resident(g) / (1 << 20);
        double tps = ks[i].secs > 0 ? (double)s->n * 2 / ks[i].secs : 0;
        if (markdown)
            printf("| %s | %.1f | %.1f | %.4f ± %.4f | %.4f | %.6f ± %.6f | %.5f | %.5f | %.5f | "
                   "%.6f | %.6f | %+.4f%% | %.4f%% | %.2f%% | %.1f |\n",
                   ks[i].label, mib, res, s->ppl, s->ppl_err, s->ppl / base_ppl, s->mean,
                   s->mean_err, s->max, s->p999, s->p99, s->median, s->p1, 100 * s->dp_mean,
                   100 * s->dp_rms, 100 * s->same_top, tps);
        else
            printf("%-28.28s %8.1f %8.1f %11.4f %7.4f %8.6f±%8.6f %8.5f %8.5f %8.5f %8.6f %8.6f "
                   "%+7.3f%% %6.3f%% %7.2f%% %7.1f\n",
                   tail(ks[i].label, 28), mib, res, s->ppl, s->ppl / base_ppl, s->mean, s->mean_err,
                   s->max, s->p999, s->p99, s->median, s->p1, 100 * s->dp_mean, 100 * s->dp_rms,
                   100 * s->same_top, tps);
    }
}

int cmd_kld(int argc, char **argv) {
    enum { OPT_JSON = 256, OPT_MD, OPT_SAVE, OPT_LOAD, OPT_TOPK };
    static const struct option opts[] = {{"ctx", required_argument, NULL, CLI_OPT_CTX},
                                         {"chunks", required_argument, NULL, CLI_OPT_CHUNKS},
                                         {"threads", required_argument, NULL, 't'},
                                         {"json", no_argument, NULL, OPT_JSON},
                                         {"markdown", no_argument, NULL, OPT_MD},
                                         {"save-base", required_argument, NULL, OPT_SAVE},
                                         {"base-logits", required_argument, NULL, OPT_LOAD},
                                         {"top-k", required_argument, NULL, OPT_TOPK},
                                         {"help", no_argument, NULL, 'h'},
                                         {0, 0, 0, 0}};
    cli_window win = {.ctx = 512};
    long long top_k = 64;
    bool json = false, md = false;
    const char *save_base = NULL, *base_logits = NULL;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "t:h", opts, NULL)) != -1) {
        const int wo = cli_window_opt(CMD, c, optarg, &win);
        if (wo < 0) return MP_EXIT_USAGE;
        if (wo > 0) continue;
        switch (c) {
        case OPT_JSON: json = true; break;
        case OPT_MD: md = true; break;
        case OPT_SAVE: save_base = optarg; break;
        case OPT_LOAD: base_logits = optarg; break;
        case OPT_TOPK:
            if (!cli_parse_int(CMD, "--top-k", optarg, 1, 1 << 24, &top_k)) return MP_EXIT_USAGE;
            break;
        case 'h': fputs(help, stdout); return MP_EXIT_OK;
        default: return cli_usage_error(CMD, "unknown option");
        }
    }
    const long long ctx_n = win.ctx, chunks = win.chunks, threads = win.threads;
    int npos = argc - optind;
    if (npos < 3) return cli_usage_error(CMD, "expected BASE, at least one CANDIDATE, and TEXT");
    if (npos - 2 > MAX_CANDIDATES)
        return cli_usage_error(CMD, "at most %d candidates", MAX_CANDIDATES);
    if (json && md) return cli_usage_error(CMD, "--json and --markdown exclude each other");
    if (save_base && base_logits)
        return cli_usage_error(CMD, "--save-base and --base-logits exclude each other");
    const char *text = argv[argc - 1];
    cand base = {0}, ks[MAX_CANDIDATES] = {{0}};
    int nk = npos - 2;
    mp_err err = {0};
    mp_vocab *vb = NULL, *vc = NULL;
    mp_token *tokens = NULL, *window = NULL;
    float *logits = NULL, *base_lp = NULL, *lp = NULL;
    int64_t n = 0, n_chunk = 0;
    int rc = MP_EXIT_FAIL;
    mp_eval_params ep = {.n_ctx = ctx_n, .n_chunks = chunks};
    if (open_model(&base, argv[optind], ctx_n, (int)threads, &err) ||
        mp_vocab_load(&vb, mp_model_gguf(base.m), &err))
        goto done;
    for (int i = 0; i < nk; i++) {
        if (open_model(&ks[i], argv[optind + 1 + i], ctx_n, (int)threads, &err) ||
            mp_vocab_load(&vc, mp_model_gguf(ks[i].m), &err) ||
            same_vocab(vb, vc, base.path, ks[i].path, &err))
            goto done;
        mp_vocab_free(vc);
        vc = NULL;
    }
    if (mp_eval_tokenize_file(vb, text, &tokens, &n, &err)) goto done;
    if (mp_eval_windows(n, &ep, &n_chunk, &err)) {
        char why[MP_ERR_MSG_MAX];
        snprintf(why, sizeof why, "%s", err.msg);
        mp_err_set(&err, MP_ERR_ARG, "%s: %s", text, why);
        goto done;
    }
    const int64_t V = mp_model_n_vocab(base.m), first = ctx_n / 2, scored = ctx_n - 1 - first;
    logits = mp_malloc((size_t)(ctx_n * V) * sizeof *logits);
    base_lp = mp_malloc((size_t)(scored * V) * sizeof *base_lp);
    lp = mp_malloc((size_t)V * sizeof *lp);
    window = mp_malloc((size_t)ctx_n * sizeof *window);
    if (!logits || !base_lp || !lp || !window) {
        mp_err_set(&err, MP_ERR_NOMEM, "out of memory for the logits of %lld tokens", ctx_n);
        goto done;
    }
    mp_token bos = mp_vocab_specials(vb)->add_bos ? mp_vocab_specials(vb)->bos : -1;
    kbase kb = {0};
    if (base_logits && kbase_load(&kb, base_logits, tokens, ctx_n, n_chunk, V, scored, &err))
        goto done_kb;
    if (save_base) {
        kb.K = top_k < V ? top_k : V;
        kb.n_pos = n_chunk * scored;
        kb.ids = mp_malloc((size_t)(kb.K * kb.n_pos) * sizeof *kb.ids);
        kb.logp = mp_malloc((size_t)(kb.K * kb.n_pos) * sizeof *kb.logp);
        kb.p_next = mp_malloc((size_t)kb.n_pos * sizeof *kb.p_next);
        if (!kb.ids || !kb.logp || !kb.p_next) {
            mp_err_set(&err, MP_ERR_NOMEM, "out of memory for the saved base");
            goto done_kb;
        }
    }
    for (int64_t w = 0; w < n_chunk; w++) {
        double t0 = now_s();
        if (!kb.g) {
            if (mp_eval_chunk(base.c, tokens, &ep, w, bos, logits, window, &err)) goto done_kb;
            base.secs += now_s() - t0;
        }
        for (int64_t j = 0; j < scored; j++) {
            int64_t pos = w * scored + j;
            mp_token next = tokens[w * ctx_n + first + j + 1];
            if (kb.g) { /* the base's own PPL from its saved probabilities */
                double nll = -log((double)kb.p_next[pos]);
                base.acc.ppl.nll += nll;
                base.acc.ppl.nll2 += nll * nll;
                base.acc.ppl.count++;
                continue;
            }
            mp_eval_log_softmax(logits + (first + j) * V, V, base_lp + j * V);
            if (mp_kld_add(&base.acc, base_lp + j * V, base_lp + j * V, V, next, &err))
                goto done_kb;
            if (save_base) {
                mp_kld_topk(base_lp + j * V, V, kb.K, kb.ids + pos * kb.K, kb.logp + pos * kb.K);
                kb.p_next[pos] = (float)exp((double)base_lp[j * V + next]);
            }
        }
        for (int i = 0; i < nk; i++) {
            t0 = now_s();
            if (mp_eval_chunk(ks[i].c, tokens, &ep, w, bos, logits, window, &err)) goto done_kb;
            ks[i].secs += now_s() - t0;
            for (int64_t j = 0; j < scored; j++) {
                int64_t pos = w * scored + j;
                mp_token next = tokens[w * ctx_n + first + j + 1];
                mp_eval_log_softmax(logits + (first + j) * V, V, lp);
                mp_status st =
                    kb.g ? mp_kld_add_topk(&ks[i].acc, kb.ids + pos * kb.K, kb.logp + pos * kb.K,
                                           kb.K, kb.p_next[pos], lp, V, next, &err)
                         : mp_kld_add(&ks[i].acc, base_lp + j * V, lp, V, next, &err);
                if (st) goto done_kb;
            }
        }
        if (!json && !md && isatty(2))
            fprintf(stderr, "\r[%lld/%lld] windows", (long long)(w + 1), (long long)n_chunk);
    }
    if (save_base && kbase_save(&kb, save_base, base.path, tokens, ctx_n, n_chunk, V, &err))
        goto done_kb;
    if (!kb.g) {
        mp_free(kb.ids);
        mp_free(kb.logp);
        mp_free(kb.p_next);
    }
    mp_gguf_free(kb.g);
    kb = (kbase){0};
    if (!json && !md && isatty(2)) fputc('\n', stderr);
    mp_kld_summary bs, sm[MAX_CANDIDATES];
    mp_kld_summarise(&base.acc, &bs);
    for (int i = 0; i < nk; i++) mp_kld_summarise(&ks[i].acc, &sm[i]);
    if (json) {
        cJSON *root = cJSON_CreateObject();
        cJSON_AddStringToObject(root, "base", base.path);
        cJSON_AddNumberToObject(root, "base_ppl", bs.ppl);
        cJSON_AddNumberToObject(root, "base_ppl_stderr", bs.ppl_err);
        cJSON_AddNumberToObject(root, "ctx", (double)ctx_n);
        cJSON_AddNumberToObject(root, "chunks", (double)n_chunk);
        cJSON *rows = cJSON_AddArrayToObject(root, "candidates");
        for (int i = 0; i < nk; i++) {
            cJSON *row = cJSON_CreateObject();
            cJSON_AddStringToObject(row, "model", ks[i].label);
            cJSON_AddNumberToObject(row, "file_size",
                                    (double)mp_gguf_file_size(mp_model_gguf(ks[i].m)));
            cJSON_AddNumberToObject(row, "resident_bytes",
                                    (double)mp_eval_mapped_resident(mp_model_gguf(ks[i].m)));
            cJSON_AddNumberToObject(row, "tokens_per_s",
                                    ks[i].secs > 0 ? (double)(n_chunk * ctx_n) / ks[i].secs : 0);
            summary_json(row, &sm[i], bs.ppl);
            cJSON_AddItemToArray(rows, row);
        }
        cJSON_AddNumberToObject(root, "rss_bytes", (double)mp_eval_rss_bytes());
        char *txt = cJSON_Print(root);
        if (txt) puts(txt);
        free(txt);
        cJSON_Delete(root);
    } else {
        printf("base %s: PPL %.4f ± %.4f over %lld tokens (%lld windows of %lld)\n", base.path,
               bs.ppl, bs.ppl_err, (long long)bs.n, (long long)n_chunk, ctx_n);
        print_table(ks, nk, sm, bs.ppl, md);
    }
    rc = MP_EXIT_OK;
    goto done;
done_kb:
    if (!kb.g) {
        mp_free(kb.ids);
        mp_free(kb.logp);
        mp_free(kb.p_next);
    }
    mp_gguf_free(kb.g);
done:
    if (rc) cli_fail(CMD, &err);
    mp_free(logits);
    mp_free(base_lp);
    mp_free(lp);
    mp_free(window);
    mp_free(tokens);
    mp_vocab_free(vb);
    mp_vocab_free(vc);
    cand *all[MAX_CANDIDATES + 1] = {&base};
    for (int i = 0; i < nk; i++) all[i + 1] = &ks[i];
    for (int i = 0; i <= nk; i++) {
        mp_kld_free(&all[i]->acc);
        mp_dropmap_free(all[i]->map);
        mp_context_free(all[i]->c);
        mp_model_free(all[i]->m);
    }
    return rc;
}
