/* cli.h — what the subcommands share: the command table entry points, exit
 * codes, and small helpers for messages and options. Each subcommand lives in
 * its own file (cmd_<name>.c) and is registered in main.c. */
#ifndef MP_CLI_H
#define MP_CLI_H

#include <stdio.h>

#include "moeprune.h"

/* Exit codes (style.md): success, failure, usage error, interrupted. */
enum { MP_EXIT_OK = 0, MP_EXIT_FAIL = 1, MP_EXIT_USAGE = 2, MP_EXIT_INTERRUPTED = 130 };

int cmd_inspect(int argc, char **argv);
int cmd_synth(int argc, char **argv);
int cmd_vocab(int argc, char **argv);
int cmd_tokenize(int argc, char **argv);
int cmd_detokenize(int argc, char **argv);
int cmd_prune(int argc, char **argv);
int cmd_graft(int argc, char **argv);
int cmd_plan(int argc, char **argv);
int cmd_stats(int argc, char **argv);
int cmd_logits(int argc, char **argv);
int cmd_profile(int argc, char **argv);
int cmd_run(int argc, char **argv);
int cmd_generate(int argc, char **argv);
int cmd_ppl(int argc, char **argv);
int cmd_kld(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_bench_mc(int argc, char **argv);

/* Prints "moeprune CMD: MESSAGE" for a failed status and returns MP_EXIT_FAIL. */
int cli_fail(const char *cmd, const mp_err *err);
/* Prints a usage error plus a pointer to --help and returns MP_EXIT_USAGE. */
/* The windowed-evaluation options ppl and kld share: --ctx N, --chunks N
 * and -t/--threads N. Give getopt_long CLI_OPT_CTX and CLI_OPT_CHUNKS as
 * their values and pass every option to cli_window_opt: 1 when it was one
 * of the three (stored), 0 when not, -1 after a usage error was printed. */
enum { CLI_OPT_CTX = 0x1000, CLI_OPT_CHUNKS };
typedef struct cli_window {
    long long ctx, chunks, threads; /* defaults: 512, 0 (all), 0 (all CPUs) */
} cli_window;
int cli_window_opt(const char *cmd, int c, const char *arg, cli_window *w);

/* Prints root (pretty) on stdout and deletes it: MP_EXIT_OK, or MP_EXIT_FAIL
 * with a message when the text cannot be built. */
struct cJSON;
int cli_print_json(const char *cmd, struct cJSON *root);
int cli_usage_error(const char *cmd, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
/* Parses a non-negative integer option value; false (after a usage message)
 * when it is not a number in [min, max]. */
int cli_parse_int(const char *cmd, const char *opt, const char *val, long long min,
                  long long max, long long *out);

#endif
