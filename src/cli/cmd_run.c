/* cmd_run.c — `moeprune run MODEL [PROMPT]`: chat with a model, like `ollama
 * run`. With PROMPT, one answer and exit; without, a REPL on stdin (a
 * terminal or a pipe) with history, /commands and Ctrl-C to stop an answer.
 *
 * Every turn renders the whole conversation with the model's chat format
 * (mp_chat_render: past answers without their thinking), tokenizes it and
 * hands it to the session, which evaluates only what differs from what the
 * KV cache already holds: usually the last answer (re-rendered) and the new
 * question. That keeps the cache and the rendered conversation equal by
 * construction; --no-reuse re-evaluates everything to check it. Thinking is
 * separated from the answer (mp_think_split), shown dimmed on a terminal
 * (between "Thinking..." and "...done thinking." lines otherwise) and left
 * out of the history. Not done: line editing and history recall (the
 * terminal's own line discipline reads the input), tools, images. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/gen_common.h"
#include "util/util.h"

#define CMD "run"

/* Context length when --ctx is not given (mp_context_default_params'). */
#define DEFAULT_CTX 4096

#define ANSI_DIM   "\033[2m"
#define ANSI_RESET "\033[0m"

static const char *const run_usage =
    "usage: moeprune run MODEL [PROMPT...] [options]\n"
    "\n"
    "Chats with MODEL in its chat format (Gemma 4, ChatML). With PROMPT, prints\n"
    "one answer and exits; without, reads messages from stdin, one per line (a\n"
    "terminal or a pipe; \"\"\" starts and ends a message of several lines), and\n"
    "answers each with the conversation so far. Answers stream as they are\n"
    "generated; thinking is shown apart from the answer and not kept in the history.\n"
    "\n"
    "commands:\n"
    "  /bye                     exit (so does end of input)\n"
    "  /clear                   forget the conversation\n"
    "  /set think on|off        let the model think before answering, or not\n"
    "  /set system TEXT         replace the system prompt\n"
    "  /stats                   show a stats line after each answer (toggle)\n"
    "  /?                       this list\n"
    "Ctrl-C stops an answer; Ctrl-D or /bye ends the chat.\n"
    "\n"
    "chat:\n"
    "      --system TEXT        system prompt\n"
    "      --think, --no-think  thinking on or off (default: on when the model's chat\n"
    "                           template supports it; off pre-fills an empty thought)\n"
    "      --hide-thinking      do not show the thinking\n"
    "      --chat-format NAME   gemma4 or chatml (default: from the model)\n"
    "      --verbose            show the setup, and the stats line after each answer\n"
    "      --no-reuse           evaluate the whole conversation every turn\n";

static const char *const run_example =
    "\n"
    "examples:\n"
    "  moeprune run gemma-4-26b-a4b-q4_k_m.gguf\n"
    "  moeprune run model.gguf 'Why is the sky blue?' --no-think --temp 0.3\n"
    "  printf 'Hello\\n/stats\\nWhat is 2+2?\\n/bye\\n' | moeprune run model.gguf -n 64\n";

typedef struct run_opts {
    gen_opts g;
    const char *system;
    int think;       /* 1 on, 0 off, -1 from the template */
    int chat_format; /* mp_chat_family, -1 from the model */
    bool hide_thinking, verbose, no_reuse;
    char *prompt; /* the joined PROMPT words, or NULL */
} run_opts;

/* ------------------------------------------------------------------------ */
/* Ctrl-C: a flag the generation loop polls                                 */
/* ------------------------------------------------------------------------ */

/* File-level because a signal handler can reach nothing else; only the
 * generation loop and read_line look at it. */
static volatile sig_atomic_t interrupted;

static void on_sigint(int sig) {
    (void)sig;
    interrupted = 1;
}

/* restart: system calls resume after the signal (while writing an answer);
 * without it a blocked read returns EINTR (waiting for input). */
static void catch_sigint(bool restart) {
    struct sigaction sa = {.sa_handler = on_sigint, .sa_flags = restart ? SA_RESTART : 0};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
}

/* ------------------------------------------------------------------------ */
/* The conversation                                                         */
/* ------------------------------------------------------------------------ */

typedef struct turn {
    mp_chat_role role;
    char *text;
} turn;

typedef struct chat {
    gen_session s;
    const run_opts *o;
    mp_chat_family family;
    mp_chat_think markers;
    bool thinking, show_stats, color;
    char *system;
    turn *turns;
    size_t n_turns, cap_turns;
    /* one answer being shown */
    mp_think_split split;
    bool showing_thought; /* between "Thinking..." and "...done thinking." */
    bool answer_nl;       /* the answer shown so far ends with a newline (or is empty) */
    mp_buf answer;
    bool answer_oom;
} chat;

static void chat_clear(chat *c) {
    for (size_t i = 0; i < c->n_turns; i++) mp_free(c->turns[i].text);
    c->n_turns = 0;
}

static bool chat_push(chat *c, mp_chat_role role, const char *text, size_t len) {
    if (c->n_turns == c->cap_turns) {
        size_t cap = c->cap_turns ? 2 * c->cap_turns : 16;
        turn *t = mp_realloc(c->turns, cap * sizeof *t);
        if (!t) return false;
        c->turns = t;
        c->cap_turns = cap;
    }
    char *copy = mp_strndup(text, len);
    if (!copy) return false;
    c->turns[c->n_turns++] = (turn){role, copy};
    return true;
}

static void chat_pop(chat *c) {
    if (c->n_turns) mp_free(c->turns[--c->n_turns].text);
}

/* The prompt: system text and turns, rendered and tokenized. */
static mp_status chat_tokens(const chat *c, mp_token **ids, int64_t *n, mp_err *err) {
    mp_chat_msg *msgs = mp_calloc(c->n_turns + 1, sizeof *msgs);
    if (!msgs) return mp_err_set(err, MP_ERR_NOMEM, "out of memory");
    size_t k = 0;
    if (c->system && c->system[0])
        msgs[k++] = (mp_chat_msg){.role = MP_CHAT_SYSTEM, .content = c->system};
    for (size_t i = 0; i < c->n_turns; i++)
        msgs[k++] = (mp_chat_msg){.role = c->turns[i].role, .content = c->turns[i].text};
    char *text = NULL;
    size_t len, count = 0;
    mp_chat_params cp = {.thinking = c->thinking, .add_generation_prompt = true};
    mp_status st = mp_chat_render(c->family, msgs, k, cp, &text, &len, err);
    mp_free(msgs);
    if (st) return st;
    mp_tokenize_params tp = {.add_bos = mp_vocab_specials(c->s.vocab)->add_bos,
                             .parse_special = true};
    st = mp_tokenize(c->s.vocab, text, len, tp, ids, &count, err);
    mp_free(text);
    if (!st) *n = (int64_t)count;
    return st;
}

/* ------------------------------------------------------------------------ */
/* Showing an answer                                                        */
/* ------------------------------------------------------------------------ */

static void show_thought_end(chat *c) {
    if (!c->showing_thought) return;
    fputs(c->color ? "\n...done thinking." ANSI_RESET "\n\n" : "\n...done thinking.\n\n", stdout);
    c->showing_thought = false;
}

static void on_part(void *user, mp_chat_part part, const char *text, size_t len) {
    chat *c = user;
    if (!len) return;
    if (part == MP_CHAT_THINKING) {
        if (c->o->hide_thinking) return;
        if (!c->showing_thought) {
            fputs(c->color ? ANSI_DIM "Thinking...\n" : "Thinking...\n", stdout);
            c->showing_thought = true;
        }
        fwrite(text, 1, len, stdout);
        return;
    }
    show_thought_end(c);
    fwrite(text, 1, len, stdout);
    c->answer_nl = text[len - 1] == '\n';
    if (!c->answer_oom && !mp_buf_append(&c->answer, text, len)) c->answer_oom = true;
}

static void on_token(void *user, mp_token id, const char *text, size_t len) {
    chat *c = user;
    if (len) mp_think_split_push(&c->split, text, len, on_part, c);
    if (id == MP_TOKEN_NULL) mp_think_split_flush(&c->split, on_part, c);
    fflush(stdout);
}

/* ------------------------------------------------------------------------ */
/* One turn                                                                 */
/* ------------------------------------------------------------------------ */

/* Answers `question` with the conversation so far. On success the question
 * and the answer join the history; on failure or Ctrl-C neither does. */
static mp_status chat_turn(chat *c, const char *question, mp_err *err) {
    mp_token *toks = NULL;
    int64_t n = 0;
    if (!chat_push(c, MP_CHAT_USER, question, strlen(question)))
        return mp_err_set(err, MP_ERR_NOMEM, "out of memory");
    mp_status st = chat_tokens(c, &toks, &n, err);
    if (!st && c->o->no_reuse) c->s.n_cache = 0;
    interrupted = 0;
    catch_sigint(true);
    if (!st) st = gen_session_prefill(&c->s, toks, n, &interrupted, err);
    if (st == MP_ERR_ARG && n > c->s.n_ctx)
        mp_err_set(err, st,
                   "the conversation (%" PRId64 " tokens) does not fit the context "
                   "(--ctx %" PRId64 "): /clear to start over",
                   n, c->s.n_ctx);
    mp_gen_params gp = gen_params(&c->o->g);
    gp.think_open = c->markers.open_id;
    gp.think_close = c->markers.close_id;
    gp.in_thinking = !st && gen_in_thinking(toks, n, &c->markers);
    mp_think_split_init(&c->split, c->family, gp.in_thinking);
    c->answer.len = 0;
    c->answer_oom = false;
    c->answer_nl = true;
    if (!st) st = gen_session_generate(&c->s, &gp, on_token, c, &interrupted, err);
    mp_free(toks);
    show_thought_end(c);
    if (!c->answer_nl) putchar('\n');
    fflush(stdout);
    if (!st && c->s.stats.interrupted) st = mp_err_set(err, MP_ERR_CHECK, "interrupted");
    if (!st && c->answer_oom) st = mp_err_set(err, MP_ERR_NOMEM, "out of memory");
    if (!st && !chat_push(c, MP_CHAT_ASSISTANT, c->answer.data ? (char *)c->answer.data : "",
                          c->answer.len))
        st = mp_err_set(err, MP_ERR_NOMEM, "out of memory");
    if (st) {
        chat_pop(c);
        return st;
    }
    if (c->s.stats.ctx_full)
        fprintf(stderr, "(the context of %" PRId64 " tokens is full: /clear to start over)\n",
                c->s.n_ctx);
    if (c->show_stats || c->o->verbose) gen_stats_print(stderr, &c->s);
    return MP_OK;
}

/* ------------------------------------------------------------------------ */
/* The REPL                                                                 */
/* ------------------------------------------------------------------------ */

static const char *const repl_help =
    "  /bye                 exit\n"
    "  /clear               forget the conversation\n"
    "  /set think on|off    thinking on or off\n"
    "  /set system TEXT     replace the system prompt\n"
    "  /stats               toggle the stats line after each answer\n"
    "  \"\"\"                  start or end a message of several lines\n";

/* Reads one line without its newline into *line; false at end of input.
 * Ctrl-C while waiting clears the line and says how to leave. */
static bool read_line(char **line, size_t *cap, const char *prompt, bool tty) {
    for (;;) {
        if (tty) {
            fputs(prompt, stdout);
            fflush(stdout);
        }
        interrupted = 0;
        catch_sigint(false);
        errno = 0;
        ssize_t n = getline(line, cap, stdin);
        if (n >= 0) {
            while (n > 0 && ((*line)[n - 1] == '\n' || (*line)[n - 1] == '\r')) (*line)[--n] = 0;
            return true;
        }
        if (!interrupted && errno != EINTR) return false;
        clearerr(stdin);
        fputs("\nUse Ctrl-D or /bye to exit.\n", stderr);
    }
}

/* A message: one line, or the lines between two """. */
static bool read_message(mp_buf *msg, char **line, size_t *cap, bool tty) {
    msg->len = 0;
    if (!read_line(line, cap, ">>> ", tty)) return false;
    const char *l = *line;
    size_t n = strlen(l);
    bool multi = !strncmp(l, "\"\"\"", 3);
    if (!multi || (n >= 6 && !strcmp(l + n - 3, "\"\"\""))) {
        if (multi) {
            l += 3;
            n -= 6;
        }
        return mp_buf_append(msg, l, n) && mp_buf_append(msg, "", 1);
    }
    if (!mp_buf_append(msg, l + 3, n - 3)) return false;
    for (;;) {
        bool more = read_line(line, cap, "... ", tty);
        n = more ? strlen(*line) : 0;
        bool end = !more || (n >= 3 && !strcmp(*line + n - 3, "\"\"\""));
        if (end && more) n -= 3;
        if (msg->len && !mp_buf_append(msg, "\n", 1)) return false;
        if (!mp_buf_append(msg, *line, more ? n : 0)) return false;
        if (end) return mp_buf_append(msg, "", 1);
    }
}

static bool set_system(chat *c, const char *text) {
    char *copy = mp_strdup(text);
    if (!copy) return false;
    mp_free(c->system);
    c->system = copy;
    return true;
}

/* Handles a /command; false for /bye. */
static bool command(chat *c, const char *line) {
    if (!strcmp(line, "/bye") || !strcmp(line, "/exit") || !strcmp(line, "/quit")) return false;
    if (!strcmp(line, "/clear")) {
        chat_clear(c);
        fputs("Cleared the conversation.\n", stderr);
    } else if (!strcmp(line, "/stats")) {
        c->show_stats = !c->show_stats;
        fprintf(stderr, "Stats %s.\n",
                c->o->verbose   ? "are always on with --verbose"
                : c->show_stats ? "on"
                                : "off");
    } else if (!strcmp(line, "/set think on") || !strcmp(line, "/set think")) {
        c->thinking = true;
        fputs("Thinking on.\n", stderr);
    } else if (!strcmp(line, "/set think off") || !strcmp(line, "/set nothink")) {
        c->thinking = false;
        fputs("Thinking off.\n", stderr);
    } else if (!strncmp(line, "/set system ", 12)) {
        if (!set_system(c, line + 12))
            fputs("moeprune run: out of memory\n", stderr);
        else
            fputs("Set the system prompt.\n", stderr);
    } else if (!strcmp(line, "/?") || !strcmp(line, "/help")) {
        fputs(repl_help, stderr);
    } else {
        fprintf(stderr, "Unknown command '%s'. Type /? for help.\n", line);
    }
    return true;
}

static int repl(chat *c) {
    bool tty = isatty(STDIN_FILENO);
    char *line = NULL;
    size_t cap = 0;
    mp_buf msg = {0};
    int rc = MP_EXIT_OK;
    while (read_message(&msg, &line, &cap, tty)) {
        const char *m = (const char *)msg.data;
        if (!m || !m[0]) continue;
        if (m[0] == '/' && msg.len > 1 && m[1] != '/' && !strchr(m, '\n')) {
            if (!command(c, m)) break;
            continue;
        }
        mp_err err = {0};
        if (chat_turn(c, m, &err)) {
            if (c->s.stats.interrupted)
                fputs("(stopped)\n", stderr);
            else
                cli_fail(CMD, &err);
        }
        putchar('\n');
        fflush(stdout);
    }
    if (tty && feof(stdin)) putchar('\n'); /* leave the terminal on a new line after Ctrl-D */
    if (ferror(stdin)) {
        fprintf(stderr, "moeprune %s: reading stdin failed: %s\n", CMD, mp_errno_str(errno));
        rc = MP_EXIT_FAIL;
    }
    mp_buf_free(&msg);
    free(line); /* getline's buffer */
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Setup                                                                    */
/* ------------------------------------------------------------------------ */

/* Whether the model's template can switch thinking on. */
static bool template_thinks(mp_chat_family fam, const mp_vocab *v) {
    const char *t = mp_vocab_chat_template(v);
    if (!t) return false;
    return fam == MP_CHAT_GEMMA4 ? strstr(t, "<|think|>") != NULL
                                 : strstr(t, "enable_thinking") || strstr(t, "<think>");
}

static mp_status chat_setup(chat *c, const run_opts *o, mp_err *err) {
    c->o = o;
    mp_status st = gen_session_load(&c->s, &o->g, err);
    if (st) return st;
    if (o->chat_format >= 0)
        c->family = (mp_chat_family)o->chat_format;
    else if ((st = mp_chat_detect(c->s.vocab, &c->family, err)))
        return st;
    c->markers = mp_chat_think_markers(c->family, c->s.vocab);
    c->thinking = o->think >= 0 ? o->think : template_thinks(c->family, c->s.vocab);
    c->show_stats = o->g.stats;
    c->color = isatty(STDOUT_FILENO) && !getenv("NO_COLOR");
    if (o->system && !set_system(c, o->system))
        return mp_err_set(err, MP_ERR_NOMEM, "out of memory");
    return gen_session_start(&c->s, &o->g, o->g.ctx ? o->g.ctx : DEFAULT_CTX, err);
}

static void chat_free(chat *c) {
    chat_clear(c);
    mp_free(c->turns);
    mp_free(c->system);
    mp_buf_free(&c->answer);
    gen_session_close(&c->s);
}

static int run(const run_opts *o) {
    chat c = {0};
    mp_err err = {0};
    int rc = MP_EXIT_OK;
    if (chat_setup(&c, o, &err)) {
        rc = cli_fail(CMD, &err);
        goto done;
    }
    if (o->verbose)
        fprintf(stderr,
                "model: %s (%s, %" PRId64 " layers, %d tokens); chat format %s, thinking %s, "
                "context %" PRId64 ", seed %" PRIu64 "\n",
                o->g.model, mp_model_arch(c.s.model), mp_model_n_layer(c.s.model),
                mp_vocab_n_tokens(c.s.vocab), mp_chat_family_name(c.family),
                c.thinking ? "on" : "off", c.s.n_ctx, c.s.seed);
    if (o->prompt) {
        if (chat_turn(&c, o->prompt, &err))
            rc = c.s.stats.interrupted ? MP_EXIT_INTERRUPTED : cli_fail(CMD, &err);
    } else {
        rc = repl(&c);
    }
done:
    chat_free(&c);
    return rc;
}

static int parse_args(int argc, char **argv, run_opts *o) {
    enum {
        OPT_SYSTEM = 256,
        OPT_THINK,
        OPT_NO_THINK,
        OPT_HIDE,
        OPT_FORMAT,
        OPT_VERBOSE,
        OPT_NO_REUSE
    };
    static const struct option opts[] = {
        {"system", required_argument, NULL, OPT_SYSTEM},
        {"think", no_argument, NULL, OPT_THINK},
        {"no-think", no_argument, NULL, OPT_NO_THINK},
        {"hide-thinking", no_argument, NULL, OPT_HIDE},
        {"chat-format", required_argument, NULL, OPT_FORMAT},
        {"verbose", no_argument, NULL, OPT_VERBOSE},
        {"no-reuse", no_argument, NULL, OPT_NO_REUSE},
        {"help", no_argument, NULL, 'h'},
        GEN_LONG_OPTIONS,
        {0, 0, 0, 0},
    };
    gen_opts_init(&o->g);
    o->think = -1;
    o->chat_format = -1;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "n:t:h", opts, NULL)) != -1) {
        int r = gen_opts_parse(&o->g, CMD, c, optarg);
        if (r < 0) return MP_EXIT_USAGE;
        if (r > 0) continue;
        switch (c) {
        case OPT_SYSTEM: o->system = optarg; break;
        case OPT_THINK: o->think = 1; break;
        case OPT_NO_THINK: o->think = 0; break;
        case OPT_HIDE: o->hide_thinking = true; break;
        case OPT_VERBOSE: o->verbose = true; break;
        case OPT_NO_REUSE: o->no_reuse = true; break;
        case OPT_FORMAT:
            if ((o->chat_format = mp_chat_family_from_name(optarg)) < 0)
                return cli_usage_error(CMD, "--chat-format: '%s' is not gemma4 or chatml", optarg);
            break;
        case 'h':
            fputs(run_usage, stdout);
            fputs(gen_options_help, stdout);
            fputs(run_example, stdout);
            return -1;
        default: return cli_usage_error(CMD, "unknown option");
        }
    }
    if (optind >= argc) return cli_usage_error(CMD, "MODEL is required");
    o->g.model = argv[optind++];
    if (optind < argc) { /* the PROMPT words, joined by spaces as a shell would show them */
        mp_buf b = {0};
        bool ok = true;
        for (int i = optind; ok && i < argc; i++)
            ok = (i == optind || mp_buf_append(&b, " ", 1)) &&
                 mp_buf_append(&b, argv[i], strlen(argv[i]));
        if (!ok || !mp_buf_append(&b, "", 1)) {
            mp_buf_free(&b);
            fprintf(stderr, "moeprune %s: out of memory\n", CMD);
            return MP_EXIT_FAIL;
        }
        o->prompt = (char *)b.data;
    }
    gen_opts_finish(&o->g);
    return 0;
}

int cmd_run(int argc, char **argv) {
    run_opts o = {0};
    int rc = parse_args(argc, argv, &o);
    if (!rc) {
        struct sigaction old;
        sigaction(SIGINT, NULL, &old);
        rc = run(&o);
        sigaction(SIGINT, &old, NULL);
    }
    mp_free(o.prompt);
    return rc < 0 ? MP_EXIT_OK : rc;
}
