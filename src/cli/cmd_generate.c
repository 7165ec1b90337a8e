/* cmd_generate.c — `moeprune generate MODEL -p TEXT`: raw completion for
 * scripts. The prompt is BOS + the text (special-token text parsed only with
 * --parse-special), or token ids from a file; the continuation streams to
 * stdout as it is generated, a token at a time and never splitting a UTF-8
 * character, until an end-of-generation token, -n tokens, a --stop string or
 * a full context. --ids prints the generated ids instead (the fixtures'
 * format), which is how the tests compare with llama.cpp's greedy tokens.
 * No chat template is applied: that is `moeprune run`. */
#include <getopt.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/gen_common.h"
#include "util/util.h"

#define CMD "generate"

/* Context length when --ctx is not given and generation is unbounded:
 * the prompt plus this many tokens (mp_context_default_params' size). */
#define DEFAULT_GEN_ROOM 4096

static const char *const generate_usage =
    "usage: moeprune generate MODEL (-p TEXT | -f FILE | --tokens IDS.txt) [options]\n"
    "\n"
    "Continues a text with MODEL, without any chat template, and streams the\n"
    "continuation to stdout exactly as generated (a final newline is added only\n"
    "on a terminal). The prompt is BOS followed by the text's tokens. Generation\n"
    "ends at an end-of-generation token (not printed), after -n tokens, at a --stop\n"
    "string (not printed) or when the context is full.\n"
    "\n"
    "prompt:\n"
    "  -p, --prompt TEXT        the text to continue\n"
    "  -f, --file FILE          read the text from FILE ('-': stdin), bytes as they are\n"
    "      --tokens IDS.txt     the prompt as token ids (space-separated; no BOS added)\n"
    "  -s, --parse-special      text of control tokens (\"<|turn>\") becomes their ids\n"
    "      --no-bos             do not prepend BOS\n"
    "output:\n"
    "      --ids                print the generated token ids (space-separated, one\n"
    "                           line; an end-of-generation token is included)\n"
    "      --raw-special        print control tokens (\"<|turn>\") as text\n";

static const char *const generate_example =
    "\n"
    "examples:\n"
    "  moeprune generate model.gguf -p 'The capital of France is' -n 32 --temp 0\n"
    "  moeprune generate tiny-a-q8_0.gguf --tokens prompt0.tokens.txt --ids -n 16 --temp 0\n";

typedef struct generate_opts {
    gen_opts g;
    const char *prompt, *file, *tokens;
    bool parse_special, no_bos, ids, raw_special;
} generate_opts;

static int parse_args(int argc, char **argv, generate_opts *o) {
    enum { OPT_TOKENS = 256, OPT_NO_BOS, OPT_IDS, OPT_RAW_SPECIAL };
    static const struct option opts[] = {
        {"prompt", required_argument, NULL, 'p'},
        {"file", required_argument, NULL, 'f'},
        {"tokens", required_argument, NULL, OPT_TOKENS},
        {"parse-special", no_argument, NULL, 's'},
        {"no-bos", no_argument, NULL, OPT_NO_BOS},
        {"ids", no_argument, NULL, OPT_IDS},
        {"raw-special", no_argument, NULL, OPT_RAW_SPECIAL},
        {"help", no_argument, NULL, 'h'},
        GEN_LONG_OPTIONS,
        {0, 0, 0, 0},
    };
    gen_opts_init(&o->g);
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "p:f:sn:t:h", opts, NULL)) != -1) {
        int r = gen_opts_parse(&o->g, CMD, c, optarg);
        if (r < 0) return MP_EXIT_USAGE;
        if (r > 0) continue;
        switch (c) {
        case 'p': o->prompt = optarg; break;
        case 'f': o->file = optarg; break;
        case OPT_TOKENS: o->tokens = optarg; break;
        case 's': o->parse_special = true; break;
        case OPT_NO_BOS: o->no_bos = true; break;
        case OPT_IDS: o->ids = true; break;
        case OPT_RAW_SPECIAL: o->raw_special = true; break;
        case 'h':
            fputs(generate_usage, stdout);
            fputs(gen_options_help, stdout);
            fputs(generate_example, stdout);
            return -1;
        default: return cli_usage_error(CMD, "unknown option");
        }
    }
    if (optind >= argc) return cli_usage_error(CMD, "MODEL is required");
    if (optind + 1 < argc)
        return cli_usage_error(CMD, "unexpected argument '%s' (the prompt goes after -p)",
                               argv[optind + 1]);
    o->g.model = argv[optind];
    int n_src = !!o->prompt + !!o->file + !!o->tokens;
    if (n_src != 1)
        return cli_usage_error(CMD, n_src ? "-p, -f and --tokens exclude each other"
                                          : "a prompt is required (-p TEXT, -f FILE or --tokens)");
    if (o->tokens && (o->parse_special || o->no_bos))
        return cli_usage_error(CMD, "--parse-special and --no-bos apply to text, not --tokens");
    gen_opts_finish(&o->g);
    return 0;
}

/* The prompt's token ids. */
static mp_status prompt_tokens(const generate_opts *o, const mp_vocab *v, mp_token **ids,
                               int64_t *n, mp_err *err) {
    if (o->tokens) return gen_read_token_file(o->tokens, ids, n, err);
    size_t len;
    char *owned = NULL;
    const char *text = o->prompt;
    if (o->file) {
        if (!(owned = gen_read_file(o->file, &len, err))) return err->status;
        text = owned;
    } else {
        len = strlen(text);
    }
    mp_tokenize_params tp = {.add_bos = !o->no_bos && mp_vocab_specials(v)->add_bos,
                             .parse_special = o->parse_special};
    size_t count;
    mp_status st = mp_tokenize(v, text, len, tp, ids, &count, err);
    mp_free(owned);
    if (!st && count == 0) {
        mp_free(*ids);
        st = mp_err_set(err, MP_ERR_ARG, "the prompt is empty (and no BOS is added)");
    }
    if (!st) *n = (int64_t)count;
    return st;
}

typedef struct output {
    bool ids;
    bool first;
    bool last_nl; /* the text printed so far ends with a newline (or is empty) */
} output;

static void on_token(void *user, mp_token id, const char *text, size_t len) {
    output *out = user;
    if (out->ids) {
        if (id == MP_TOKEN_NULL) return;
        printf(out->first ? "%" PRId32 : " %" PRId32, id);
        out->first = false;
    } else if (len) {
        fwrite(text, 1, len, stdout);
        out->last_nl = text[len - 1] == '\n';
    }
    fflush(stdout);
}

/* The thinking markers when a reasoning budget needs them. */
static mp_status reasoning_setup(const generate_opts *o, const mp_vocab *v, const mp_token *toks,
                                 int64_t n, mp_gen_params *gp, mp_err *err) {
    if (o->g.reasoning_budget < 0) return MP_OK;
    mp_chat_family fam;
    mp_status st = mp_chat_detect(v, &fam, err);
    if (st) return st;
    mp_chat_think m = mp_chat_think_markers(fam, v);
    if (m.open_id == MP_TOKEN_NULL || m.close_id == MP_TOKEN_NULL)
        return mp_err_set(err, MP_ERR_UNSUPPORTED,
                          "--reasoning-budget: the vocabulary has no %s/%s tokens", m.open,
                          m.close);
    gp->think_open = m.open_id;
    gp->think_close = m.close_id;
    gp->in_thinking = gen_in_thinking(toks, n, &m);
    return MP_OK;
}

static int run(const generate_opts *o) {
    mp_err err = {0};
    gen_session s;
    mp_token *toks = NULL;
    int64_t n = 0;
    int rc = MP_EXIT_FAIL;
    if (gen_session_load(&s, &o->g, &err) || prompt_tokens(o, s.vocab, &toks, &n, &err)) goto done;
    mp_gen_params gp = gen_params(&o->g);
    gp.special = o->raw_special;
    if (reasoning_setup(o, s.vocab, toks, n, &gp, &err)) goto done;
    int64_t n_ctx =
        o->g.ctx ? o->g.ctx : n + (o->g.max_tokens ? o->g.max_tokens : DEFAULT_GEN_ROOM);
    output out = {.ids = o->ids, .first = true, .last_nl = true};
    if (gen_session_start(&s, &o->g, n_ctx, &err) || gen_session_prefill(&s, toks, n, NULL, &err) ||
        gen_session_generate(&s, &gp, on_token, &out, NULL, &err))
        goto done;
    if (o->ids || (!out.last_nl && isatty(STDOUT_FILENO))) putchar('\n');
    if (fflush(stdout) || ferror(stdout)) {
        mp_err_set(&err, MP_ERR_IO, "writing the output failed");
        goto done;
    }
    if (s.stats.ctx_full)
        fprintf(stderr, "moeprune %s: stopped: the context (%" PRId64 " tokens) is full\n", CMD,
                s.n_ctx);
    if (o->g.stats) gen_stats_print(stderr, &s);
    rc = MP_EXIT_OK;
done:
    if (rc != MP_EXIT_OK) cli_fail(CMD, &err);
    mp_free(toks);
    gen_session_close(&s);
    return rc;
}

int cmd_generate(int argc, char **argv) {
    generate_opts o = {0};
    int rc = parse_args(argc, argv, &o);
    if (rc) return rc < 0 ? MP_EXIT_OK : rc;
    return run(&o);
}
