/* main.c — `moeprune <command> [options] <args>`: dispatches to one file per
 * subcommand (cmd_*.c). */
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "cli/cli.h"
#include "util/util.h"

typedef struct command {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
} command;

static const command commands[] = {
    {"inspect", cmd_inspect, "show a GGUF file: hyper-parameters, tensors, MoE summary"},
    {"synth", cmd_synth, "write a random-weight model with a real architecture's layout"},
    {"vocab", cmd_vocab, "extract a vocabulary-only GGUF from a model"},
    {"tokenize", cmd_tokenize, "print the token ids of a text"},
    {"detokenize", cmd_detokenize, "print the text of token ids"},
    {"profile", cmd_profile, "record expert statistics from a calibration corpus"},
    {"stats", cmd_stats, "merge profile shards, show what a stats file says"},
    {"plan", cmd_plan, "turn expert statistics into a drop map"},
    {"prune", cmd_prune, "remove (or zero) the experts a drop map drops"},
    {"graft", cmd_graft, "merge the experts of several models of one base into one"},
    {"logits", cmd_logits, "run token ids through the engine, write logits (and greedy tokens)"},
    {"run", cmd_run, "chat with a model (one question, or interactively)"},
    {"generate", cmd_generate, "continue a text with a model (raw completion for scripts)"},
    {"ppl", cmd_ppl, "perplexity over a text, as llama-perplexity measures it"},
    {"kld", cmd_kld, "KL divergence and top-1 agreement of candidates against a base model"},
    {"bench", cmd_bench, "prompt and generation speed (tokens/s), as llama-bench measures it"},
    {"bench-mc", cmd_bench_mc, "multiple-choice accuracy by log-likelihood (built-in smoke set)"},
};

static void usage(FILE *f) {
    fprintf(f, "usage: moeprune <command> [options] <args>\n\ncommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].summary);
    fprintf(f, "\n`moeprune <command> --help` describes each command.\n");
}

int cli_fail(const char *cmd, const mp_err *err) {
    fprintf(stderr, "moeprune %s: %s\n", cmd, err->msg[0] ? err->msg : mp_status_name(err->status));
    return MP_EXIT_FAIL;
}

int cli_window_opt(const char *cmd, int c, const char *arg, cli_window *w) {
    switch (c) {
    case CLI_OPT_CTX: return cli_parse_int(cmd, "--ctx", arg, 4, 1 << 20, &w->ctx) ? 1 : -1;
    case CLI_OPT_CHUNKS: return cli_parse_int(cmd, "--chunks", arg, 1, 1 << 30, &w->chunks) ? 1 : -1;
    case 't': return cli_parse_int(cmd, "--threads", arg, 0, 4096, &w->threads) ? 1 : -1;
    default: return 0;
    }
}

int cli_print_json(const char *cmd, struct cJSON *root) {
    char *txt = cJSON_Print(root);
    cJSON_Delete(root);
    if (!txt) {
        fprintf(stderr, "moeprune %s: out of memory building JSON\n", cmd);
        return MP_EXIT_FAIL;
    }
    puts(txt);
    free(txt);
    return MP_EXIT_OK;
}

int cli_usage_error(const char *cmd, const char *fmt, ...) {
    va_list ap;
    fprintf(stderr, "moeprune %s: ", cmd);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n(see `moeprune %s --help`)\n", cmd);
    return MP_EXIT_USAGE;
}

int cli_parse_int(const char *cmd, const char *opt, const char *val, long long min,
                  long long max, long long *out) {
    char *end;
    errno = 0;
    long long v = strtoll(val, &end, 0);
    if (errno || end == val || *end || v < min || v > max) {
        cli_usage_error(cmd, "%s: '%s' is not an integer in %lld..%lld", opt, val, min, max);
        return 0;
    }
    *out = v;
    return 1;
}

/* Ctrl-C or a kill removes the outputs being written (they are temporary files
 * until complete), then exits 128 + signal: 130 for SIGINT. */
static void on_signal(int sig) {
    mp_tempfiles_remove_all();
    _exit(128 + sig);
}

int main(int argc, char **argv) {
    struct sigaction sa = {.sa_handler = on_signal};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    if (argc < 2) {
        usage(stderr);
        return MP_EXIT_USAGE;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return MP_EXIT_OK;
    }
    if (!strcmp(argv[1], "--version")) {
        printf("moeprune 0.1.0\n");
        return MP_EXIT_OK;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (!strcmp(argv[1], commands[i].name)) return commands[i].run(argc - 1, argv + 1);
    fprintf(stderr, "moeprune: unknown command '%s'\n\n", argv[1]);
    usage(stderr);
    return MP_EXIT_USAGE;
}
