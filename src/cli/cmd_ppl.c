/* cmd_ppl.c — `moeprune ppl MODEL TEXT --ctx N`: perplexity over
 * non-overlapping windows, scoring the second half of each, as
 * llama-perplexity does (src/eval/eval.c), so the numbers compare. */
#include <cjson/cJSON.h>
#include <getopt.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"
#include "eval/eval.h"

#define CMD "ppl"

static const char *const help =
    "usage: moeprune ppl MODEL TEXT [--ctx N] [--chunks C] [-t N] [--json]\n"
    "\n"
    "Perplexity of MODEL on the text file TEXT: the tokens (BOS first) are cut\n"
    "into windows of N tokens; each runs from an empty cache and its second half\n"
    "is scored, as llama-perplexity does, so the numbers compare.\n"
    "\n"
    "  --ctx N            window length (default 512)\n"
    "  --chunks C         use the first C windows only\n"
    "  --dropmap MAP      mask the experts the drop map drops\n"
    "  -t, --threads N    worker threads (default: all CPUs)\n"
    "  --json             {\"ppl\", \"ppl_stderr\", \"nll\", \"n_tokens\", \"ctx\", ...}\n"
    "\n"
    "example:\n"
    "  moeprune ppl gemma-64e.gguf wiki.test.raw --ctx 512 --chunks 20\n";

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

int cmd_ppl(int argc, char **argv) {
    enum { OPT_JSON = 256, OPT_DROPMAP };
    static const struct option opts[] = {{"ctx", required_argument, NULL, CLI_OPT_CTX},
                                         {"chunks", required_argument, NULL, CLI_OPT_CHUNKS},
                                         {"threads", required_argument, NULL, 't'},
                                         {"dropmap", required_argument, NULL, OPT_DROPMAP},
                                         {"json", no_argument, NULL, OPT_JSON},
                                         {"help", no_argument, NULL, 'h'},
                                         {0, 0, 0, 0}};
    cli_window win = {.ctx = 512};
    bool json = false;
    const char *dropmap = NULL;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "t:h", opts, NULL)) != -1) {
        const int wo = cli_window_opt(CMD, c, optarg, &win);
        if (wo < 0) return MP_EXIT_USAGE;
        if (wo > 0) continue;
        switch (c) {
        case OPT_DROPMAP: dropmap = optarg; break;
        case OPT_JSON: json = true; break;
        case 'h': fputs(help, stdout); return MP_EXIT_OK;
        default: return cli_usage_error(CMD, "unknown option");
        }
    }
    const long long ctx_n = win.ctx, chunks = win.chunks, threads = win.threads;
    if (argc - optind != 2) return cli_usage_error(CMD, "expected MODEL and TEXT");
    const char *model_path = argv[optind], *text = argv[optind + 1];
    mp_err err = {0};
    mp_model *m = NULL;
    mp_vocab *v = NULL;
    mp_context *ctx = NULL;
    mp_dropmap *map = NULL;
    mp_token *tokens = NULL, *window = NULL;
    float *logits = NULL, *lp = NULL;
    int64_t n = 0, n_chunk = 0;
    int rc = MP_EXIT_FAIL;
    mp_eval_params ep = {.n_ctx = ctx_n, .n_chunks = chunks};
    if (mp_model_load(&m, model_path, &err) || mp_vocab_load(&v, mp_model_gguf(m), &err) ||
        mp_eval_tokenize_file(v, text, &tokens, &n, &err))
        goto done;
    if (mp_eval_windows(n, &ep, &n_chunk, &err)) {
        char why[MP_ERR_MSG_MAX];
        snprintf(why, sizeof why, "%s", err.msg);
        mp_err_set(&err, MP_ERR_ARG, "%s: %s", text, why);
        goto done;
    }
    mp_context_params cp = mp_context_default_params();
    cp.n_ctx = ctx_n;
    cp.n_threads = (int)threads;
    if (mp_context_init(&ctx, m, cp, &err) || mp_context_apply_file_mask(ctx, m, &err) ||
        (dropmap &&
         (mp_dropmap_load(&map, dropmap, &err) || mp_context_apply_dropmap(ctx, m, map, &err))))
        goto done;
    const int64_t V = mp_model_n_vocab(m);
    logits = mp_malloc((size_t)(ctx_n * V) * sizeof *logits);
    lp = mp_malloc((size_t)V * sizeof *lp);
    window = mp_malloc((size_t)ctx_n * sizeof *window);
    if (!logits || !lp || !window) {
        mp_err_set(&err, MP_ERR_NOMEM, "out of memory for %lld x %lld logits", ctx_n, (long long)V);
        goto done;
    }
    mp_eval_acc acc = {0};
    const int64_t first = ctx_n / 2;
    mp_token bos = mp_vocab_specials(v)->add_bos ? mp_vocab_specials(v)->bos : -1;
    double t0 = now_s();
    for (int64_t i = 0; i < n_chunk; i++) {
        if (mp_eval_chunk(ctx, tokens, &ep, i, bos, logits, window, &err)) goto done;
        for (int64_t j = first; j < ctx_n - 1; j++) {
            mp_eval_log_softmax(logits + j * V, V, lp);
            mp_eval_acc_ppl(&acc, lp, window[j + 1]);
        }
        if (!json && isatty(2))
            fprintf(stderr, "\r[%lld/%lld] ppl %.4f", (long long)(i + 1), (long long)n_chunk,
                    exp(acc.nll / (double)acc.count));
    }
    if (!json && isatty(2)) fputc('\n', stderr);
    double secs = now_s() - t0, ppl, ppl_err, nll;
    mp_eval_ppl_finish(&acc, &ppl, &ppl_err, &nll);
    double tps = secs > 0 ? (double)(n_chunk * ctx_n) / secs : 0;
    if (json) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddNumberToObject(o, "ppl", ppl);
        cJSON_AddNumberToObject(o, "ppl_stderr", ppl_err);
        cJSON_AddNumberToObject(o, "nll", nll);
        cJSON_AddNumberToObject(o, "n_tokens", (double)acc.count);
        cJSON_AddNumberToObject(o, "ctx", (double)ctx_n);
        cJSON_AddNumberToObject(o, "chunks", (double)n_chunk);
        cJSON_AddStringToObject(o, "model", model_path);
        cJSON_AddNumberToObject(o, "file_size", (double)mp_gguf_file_size(mp_model_gguf(m)));
        cJSON_AddNumberToObject(o, "rss_bytes", (double)mp_eval_rss_bytes());
        cJSON_AddNumberToObject(o, "tokens_per_s", tps);
        char *txt = cJSON_Print(o);
        if (txt) puts(txt);
        free(txt);
        cJSON_Delete(o);
    } else {
        printf("%s: PPL = %.4f +/- %.5f (mean NLL %.6f) over %lld scored tokens, %lld windows of "
               "%lld; %.1f tokens/s, RSS %.1f MiB\n",
               model_path, ppl, ppl_err, nll, (long long)acc.count, (long long)n_chunk, ctx_n, tps,
               (double)mp_eval_rss_bytes() / (1 << 20));
    }
    rc = MP_EXIT_OK;
done:
    if (rc) cli_fail(CMD, &err);
    mp_free(logits);
    mp_free(lp);
    mp_free(window);
    mp_free(tokens);
    mp_dropmap_free(map);
    mp_context_free(ctx);
    mp_vocab_free(v);
    mp_model_free(m);
    return rc;
}
