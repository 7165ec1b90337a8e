/* cmd_profile.c — `moeprune profile MODEL [INPUT...] -o OUT.stats`: runs a
 * calibration corpus through the model and records, per MoE layer, expert and
 * class, what the router chose and what each expert contributed
 * (src/profile/profiler.c). Inputs are text files, folders of them, or JSONL
 * ({"text": ...} or {"messages": [...]}, optional "class"); with none, the
 * built-in calibration set (math, logic, code, science, creative). Texts are
 * tokenized (BOS first) and cut into chunks of --ctx tokens, each run from an
 * empty cache; --shard I/N keeps every N-th chunk starting at I, so shards
 * profiled on several machines merge (`moeprune stats merge`) into exactly
 * the statistics of one run. Not yet: --generate (two-phase), --imatrix,
 * resume from a checkpoint. */
#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"
#include "profile/profile.h"

#define CMD         "profile"
#define MAX_INPUTS  256
#define MAX_CLASSES 64
/* Folders are walked this deep at most (a symlink loop ends here). */
#define MAX_DEPTH 16
/* A text file larger than this is refused rather than read whole. */
#define MAX_FILE_BYTES ((size_t)1 << 30)

static const char *const help =
    "usage: moeprune profile MODEL [INPUT...] -o OUT.stats [options]\n"
    "\n"
    "Runs text through MODEL and records, per MoE layer and expert, the router's\n"
    "selections per rank and their weights, and the L2 norm of each chosen expert's\n"
    "weighted output (its contribution; REAP saliency derives from it). The stats\n"
    "feed `moeprune plan`. INPUT is a text file, a folder (its files, recursively),\n"
    "or a .jsonl file of {\"text\": ...} or {\"messages\": [...]} lines with an\n"
    "optional \"class\". With no input, a small built-in set of math, logic, code,\n"
    "science and creative text is used.\n"
    "\n"
    "  -o, --output FILE     stats file (required); -f, --force to replace it\n"
    "  --class NAME=PATH     label everything in PATH as class NAME (repeatable)\n"
    "  --ctx N               tokens per chunk (default 512)\n"
    "  --max-tokens N        stop after N tokens in all (default: everything)\n"
    "  --shard I/N           profile only chunks I, I+N, I+2N, ... (0 <= I < N)\n"
    "  -t, --threads N       worker threads (default: all CPUs)\n"
    "  --quiet               no progress line\n"
    "\n"
    "Sharded runs, e.g. as a Slurm array or with GNU parallel, then merge:\n"
    "  parallel moeprune profile m.gguf corpus/ --shard {}/4 -o s{}.stats ::: 0 1 2 3\n"
    "  moeprune stats merge s0.stats s1.stats s2.stats s3.stats -o all.stats\n"
    "\n"
    "example:\n"
    "  moeprune profile gemma.gguf --class math=math/ --class code=code.jsonl -o g.stats\n";

/* One text to profile. */
typedef struct doc {
    int64_t cls;
    char *text;
    size_t len;
} doc;

typedef struct corpus {
    char *classes[MAX_CLASSES];
    int64_t n_class;
    doc *docs;
    int64_t n_docs, cap;
} corpus;

static void corpus_free(corpus *c) {
    for (int64_t i = 0; i < c->n_docs; i++) free(c->docs[i].text);
    for (int64_t i = 0; i < c->n_class; i++) free(c->classes[i]);
    free(c->docs);
}

static int64_t class_index(corpus *c, const char *name) {
    for (int64_t i = 0; i < c->n_class; i++)
        if (!strcmp(c->classes[i], name)) return i;
    if (c->n_class == MAX_CLASSES) return -1;
    c->classes[c->n_class] = strdup(name);
    return c->classes[c->n_class] ? c->n_class++ : -1;
}

static mp_status add_doc(corpus *c, const char *cls, const char *text, size_t len, mp_err *err) {
    int64_t ci = class_index(c, cls);
    if (ci < 0) return mp_err_set(err, MP_ERR_ARG, "too many classes (at most %d)", MAX_CLASSES);
    if (c->n_docs == c->cap) {
        int64_t cap = c->cap ? 2 * c->cap : 64;
        doc *d = realloc(c->docs, (size_t)cap * sizeof *d);
        if (!d) return mp_err_set(err, MP_ERR_NOMEM, "out of memory");
        c->docs = d;
        c->cap = cap;
    }
    char *t = malloc(len + 1);
    if (!t) return mp_err_set(err, MP_ERR_NOMEM, "out of memory");
    memcpy(t, text, len);
    t[len] = 0;
    c->docs[c->n_docs++] = (doc){ci, t, len};
    return MP_OK;
}

/* Byte offset of the first invalid UTF-8 sequence (or a NUL), or -1. */
static long long utf8_error(const char *s, size_t n) {
    for (size_t i = 0; i < n;) {
        unsigned char c = (unsigned char)s[i];
        size_t len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
        if (c == 0 || len == 0 || i + len > n) return (long long)i;
        for (size_t k = 1; k < len; k++)
            if (((unsigned char)s[i + k] >> 6) != 2) return (long long)i;
        i += len;
    }
    return -1;
}

static char *read_all(const char *path, size_t *len, mp_err *err) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        mp_err_set(err, MP_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    mp_buf b = {0};
    char chunk[65536];
    size_t n;
    bool ok = true;
    while (ok && (n = fread(chunk, 1, sizeof chunk, f)) > 0)
        ok = b.len + n <= MAX_FILE_BYTES && mp_buf_append(&b, chunk, n);
    bool rerr = ferror(f);
    fclose(f);
    if (!ok || rerr) {
        mp_err_set(err, ok ? MP_ERR_IO : MP_ERR_ARG, "%s: %s", path,
                   ok ? "read error" : "larger than 1 GiB: split it");
        mp_buf_free(&b);
        return NULL;
    }
    *len = b.len;
    if (!b.data) b.data = mp_malloc(1);
    return (char *)b.data;
}

/* A JSONL line: {"text": ...} or {"messages": [{"role", "content"}...]}. */
static mp_status jsonl_line(corpus *c, const mp_vocab *v, const char *cls, const char *path,
                            long line_no, const char *s, size_t n, mp_err *err) {
    cJSON *o = cJSON_ParseWithLength(s, n);
    if (!cJSON_IsObject(o)) {
        cJSON_Delete(o);
        return mp_err_set(err, MP_ERR_FORMAT, "%s:%ld: not a JSON object", path, line_no);
    }
    const cJSON *k = cJSON_GetObjectItemCaseSensitive(o, "class");
    if (cJSON_IsString(k)) cls = k->valuestring;
    const cJSON *text = cJSON_GetObjectItemCaseSensitive(o, "text");
    const cJSON *msgs = cJSON_GetObjectItemCaseSensitive(o, "messages");
    mp_status st = MP_OK;
    if (cJSON_IsString(text)) {
        st = add_doc(c, cls, text->valuestring, strlen(text->valuestring), err);
    } else if (cJSON_IsArray(msgs) && cJSON_GetArraySize(msgs) > 0) {
        int nm = cJSON_GetArraySize(msgs);
        mp_chat_msg *m = calloc((size_t)nm, sizeof *m);
        mp_chat_family fam;
        mp_err derr = {0};
        if (!m)
            st = mp_err_set(err, MP_ERR_NOMEM, "out of memory");
        else if (mp_chat_detect(v, &fam, &derr))
            st = mp_err_set(err, MP_ERR_ARG, "%s:%ld: chat messages need a chat format: %s", path,
                            line_no, derr.msg);
        for (int i = 0; !st && i < nm; i++) {
            const cJSON *mi = cJSON_GetArrayItem(msgs, i);
            const cJSON *role = cJSON_GetObjectItemCaseSensitive(mi, "role");
            const cJSON *content = cJSON_GetObjectItemCaseSensitive(mi, "content");
            const char *r = cJSON_IsString(role) ? role->valuestring : "";
            m[i].role = !strcmp(r, "system")      ? MP_CHAT_SYSTEM
                        : !strcmp(r, "user")      ? MP_CHAT_USER
                        : !strcmp(r, "assistant") ? MP_CHAT_ASSISTANT
                        : !strcmp(r, "model")     ? MP_CHAT_ASSISTANT
                        : !strcmp(r, "tool")      ? MP_CHAT_TOOL
                                                  : MP_CHAT_ROLE_COUNT;
            m[i].content = cJSON_IsString(content) ? content->valuestring : NULL;
            if (m[i].role == MP_CHAT_ROLE_COUNT || !m[i].content)
                st = mp_err_set(err, MP_ERR_FORMAT,
                                "%s:%ld: messages[%d] needs a role (system, user, assistant, "
                                "tool) and a string content",
                                path, line_no, i);
        }
        char *rendered = NULL;
        size_t rlen = 0;
        if (!st) {
            mp_chat_params cp = {0};
            st = mp_chat_render(fam, m, (size_t)nm, cp, &rendered, &rlen, err);
        }
        if (!st) st = add_doc(c, cls, rendered, rlen, err);
        mp_free(rendered);
        free(m);
    } else {
        st =
            mp_err_set(err, MP_ERR_FORMAT,
                       "%s:%ld: expected a \"text\" string or a \"messages\" array", path, line_no);
    }
    cJSON_Delete(o);
    return st;
}

static mp_status add_file(corpus *c, const mp_vocab *v, const char *cls, const char *path,
                          mp_err *err) {
    size_t len;
    char *data = read_all(path, &len, err);
    if (!data) return err->status;
    mp_status st = MP_OK;
    long long bad = utf8_error(data, len);
    size_t plen = strlen(path);
    if (len == 0)
        st = mp_err_set(err, MP_ERR_FORMAT, "%s: empty file", path);
    else if (bad >= 0)
        st = mp_err_set(err, MP_ERR_FORMAT,
                        "%s: not UTF-8 text (invalid byte 0x%02x at offset %lld)", path,
                        (unsigned char)data[bad], bad);
    else if (plen > 6 && !strcmp(path + plen - 6, ".jsonl")) {
        long line_no = 0;
        for (char *p = data, *end; !st && p < data + len; p = end + 1) {
            end = memchr(p, '\n', (size_t)(data + len - p));
            if (!end) end = data + len;
            line_no++;
            size_t n = (size_t)(end - p);
            bool blank = true;
            for (size_t i = 0; i < n && blank; i++)
                blank = p[i] == ' ' || p[i] == '\t' || p[i] == '\r';
            if (!blank) st = jsonl_line(c, v, cls, path, line_no, p, n, err);
        }
    } else {
        st = add_doc(c, cls, data, len, err);
    }
    free(data);
    return st;
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* A file, or every regular file under a folder in name order. */
static mp_status add_path(corpus *c, const mp_vocab *v, const char *cls, const char *path,
                          int depth, mp_err *err) {
    struct stat st;
    if (stat(path, &st) != 0) return mp_err_set(err, MP_ERR_IO, "%s: %s", path, strerror(errno));
    if (!S_ISDIR(st.st_mode)) return add_file(c, v, cls, path, err);
    if (depth >= MAX_DEPTH)
        return mp_err_set(err, MP_ERR_ARG, "%s: folders nested deeper than %d", path, MAX_DEPTH);
    DIR *d = opendir(path);
    if (!d) return mp_err_set(err, MP_ERR_IO, "%s: %s", path, strerror(errno));
    char **names = NULL;
    size_t n = 0, cap = 0;
    mp_status s = MP_OK;
    for (struct dirent *e; !s && (e = readdir(d));) {
        if (e->d_name[0] == '.') continue;
        if (n == cap) {
            cap = cap ? 2 * cap : 32;
            char **nn = realloc(names, cap * sizeof *nn);
            if (!nn)
                s = mp_err_set(err, MP_ERR_NOMEM, "out of memory");
            else
                names = nn;
        }
        if (!s && !(names[n++] = strdup(e->d_name))) s = mp_err_set(err, MP_ERR_NOMEM, "oom");
    }
    closedir(d);
    if (!s) qsort(names, n, sizeof *names, cmp_str);
    for (size_t i = 0; i < n; i++) {
        if (!s) {
            char sub[4096];
            snprintf(sub, sizeof sub, "%s/%s", path, names[i]);
            s = add_path(c, v, cls, sub, depth + 1, err);
        }
        free(names[i]);
    }
    free(names);
    return s;
}

/* One chunk of tokens to run. */
typedef struct chunk {
    int64_t doc, start, len;
} chunk;

typedef struct prof_opts {
    const char *model, *out;
    const char *inputs[MAX_INPUTS], *input_class[MAX_INPUTS];
    int n_inputs;
    long long ctx, max_tokens, threads, shard_i, shard_n;
    bool quiet, force;
} prof_opts;

static void progress(const prof_opts *o, int64_t done, int64_t total, double secs) {
    if (o->quiet || !isatty(2)) return;
    double rate = secs > 0 ? (double)done / secs : 0;
    fprintf(stderr, "\r%" PRId64 "/%" PRId64 " tokens, %.1f tokens/s, ETA %.0f s   ", done, total,
            rate, rate > 0 ? (double)(total - done) / rate : 0);
}

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* sha256 of the model file, streamed through the mapping. */
static void file_sha256(const mp_gguf *g, char hex[65]) {
    mp_sha256 s;
    mp_sha256_init(&s);
    const uint8_t *p = mp_gguf_base(g);
    uint64_t n = mp_gguf_file_size(g);
    for (uint64_t o = 0; o < n; o += 64u << 20) {
        size_t k = n - o < (64u << 20) ? (size_t)(n - o) : (size_t)64u << 20;
        mp_sha256_update(&s, p + o, k);
        mp_gguf_release(g, p + o, k);
    }
    mp_sha256_hex(&s, hex);
}

static int run(const prof_opts *o) {
    mp_err err = {0};
    corpus c = {0};
    mp_model *model = NULL;
    mp_vocab *vocab = NULL;
    mp_context *ctx = NULL;
    mp_profiler *prof = NULL;
    mp_token **toks = NULL;
    size_t *ntok = NULL;
    chunk *chunks = NULL;
    int rc = MP_EXIT_FAIL;
    if (mp_model_load(&model, o->model, &err) || mp_vocab_load(&vocab, mp_model_gguf(model), &err))
        goto done;
    if (o->n_inputs == 0) {
        size_t nb;
        const mp_calib_class *b = mp_calib_builtin(&nb);
        for (size_t i = 0; i < nb; i++)
            if (add_doc(&c, b[i].name, b[i].text, strlen(b[i].text), &err)) goto done;
    }
    for (int i = 0; i < o->n_inputs; i++)
        if (add_path(&c, vocab, o->input_class[i], o->inputs[i], 0, &err)) goto done;
    /* tokenize every text, then cut into chunks */
    toks = calloc((size_t)c.n_docs, sizeof *toks);
    ntok = calloc((size_t)c.n_docs, sizeof *ntok);
    if (!toks || !ntok) goto oom;
    int64_t n_chunks = 0, total = 0;
    for (int64_t d = 0; d < c.n_docs; d++) {
        mp_tokenize_params tp = {.add_bos = mp_vocab_specials(vocab)->add_bos};
        if (mp_tokenize(vocab, c.docs[d].text, c.docs[d].len, tp, &toks[d], &ntok[d], &err))
            goto done;
        n_chunks += ((int64_t)ntok[d] + o->ctx - 1) / o->ctx;
    }
    if (!(chunks = calloc((size_t)(n_chunks ? n_chunks : 1), sizeof *chunks))) goto oom;
    int64_t k = 0, kept = 0;
    for (int64_t d = 0; d < c.n_docs; d++)
        for (int64_t s = 0; s < (int64_t)ntok[d]; s += o->ctx, k++) {
            if (k % o->shard_n != o->shard_i) continue;
            int64_t len = (int64_t)ntok[d] - s < o->ctx ? (int64_t)ntok[d] - s : o->ctx;
            if (o->max_tokens && total + len > o->max_tokens) len = o->max_tokens - total;
            if (len <= 0) break;
            chunks[kept++] = (chunk){d, s, len};
            total += len;
        }
    if (total == 0) {
        mp_err_set(&err, MP_ERR_ARG, "no tokens to profile (shard %lld/%lld of %" PRId64 " chunks)",
                   o->shard_i, o->shard_n, n_chunks);
        goto done;
    }
    mp_context_params cp = mp_context_default_params();
    cp.n_ctx = o->ctx;
    cp.n_threads = (int)o->threads;
    if (mp_context_init(&ctx, model, cp, &err) || mp_context_apply_file_mask(ctx, model, &err) ||
        mp_profiler_init(&prof, model, (const char *const *)c.classes, c.n_class, &err) ||
        mp_profiler_attach(prof, ctx, &err))
        goto done;
    double t0 = now_s();
    int64_t done_tok = 0;
    for (int64_t i = 0; i < kept; i++) {
        const chunk *ch = &chunks[i];
        mp_context_truncate(ctx, 0);
        if (mp_profiler_set_class(prof, c.docs[ch->doc].cls, &err) ||
            mp_context_eval(ctx, toks[ch->doc] + ch->start, ch->len, MP_LOGITS_NONE, NULL, &err))
            goto done;
        mp_profiler_add_tokens(prof, ch->len);
        done_tok += ch->len;
        progress(o, done_tok, total, now_s() - t0);
    }
    if (!o->quiet && isatty(2)) fputc('\n', stderr);
    mp_stats *s = mp_profiler_stats(prof);
    char hex[65];
    file_sha256(mp_model_gguf(model), hex);
    char *name = NULL;
    mp_gguf_key_strdup(mp_model_gguf(model), "general.name", &name, NULL);
    mp_free(s->model_name);
    mp_free(s->model_sha256);
    s->model_name = name ? name : mp_strdup("");
    s->model_sha256 = mp_strdup(hex);
    if (!s->model_name || !s->model_sha256) goto oom;
    if (mp_stats_save(s, o->out, o->force, &err)) goto done;
    double secs = now_s() - t0;
    fprintf(stderr,
            "%s: %" PRId64 " tokens in %" PRId64 " chunks, %" PRId64 " classes, %.1f s "
            "(%.1f tokens/s)\n",
            o->out, total, kept, c.n_class, secs, secs > 0 ? (double)total / secs : 0);
    rc = MP_EXIT_OK;
    goto done;
oom:
    mp_err_set(&err, MP_ERR_NOMEM, "out of memory");
done:
    if (rc != MP_EXIT_OK) cli_fail(CMD, &err);
    for (int64_t d = 0; toks && d < c.n_docs; d++) mp_free(toks[d]);
    free(toks);
    free(ntok);
    free(chunks);
    mp_profiler_free(prof);
    mp_context_free(ctx);
    mp_vocab_free(vocab);
    mp_model_free(model);
    corpus_free(&c);
    return rc;
}

int cmd_profile(int argc, char **argv) {
    enum { OPT_CLASS = 256, OPT_CTX, OPT_MAX, OPT_SHARD, OPT_QUIET };
    static const struct option opts[] = {{"output", required_argument, NULL, 'o'},
                                         {"class", required_argument, NULL, OPT_CLASS},
                                         {"ctx", required_argument, NULL, OPT_CTX},
                                         {"max-tokens", required_argument, NULL, OPT_MAX},
                                         {"shard", required_argument, NULL, OPT_SHARD},
                                         {"threads", required_argument, NULL, 't'},
                                         {"quiet", no_argument, NULL, OPT_QUIET},
                                         {"force", no_argument, NULL, 'f'},
                                         {"help", no_argument, NULL, 'h'},
                                         {0, 0, 0, 0}};
    prof_opts o = {.ctx = 512, .shard_n = 1};
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "o:t:fh", opts, NULL)) != -1) {
        switch (c) {
        case 'o': o.out = optarg; break;
        case 'f': o.force = true; break;
        case OPT_QUIET: o.quiet = true; break;
        case 't':
            if (!cli_parse_int(CMD, "--threads", optarg, 0, 4096, &o.threads)) return MP_EXIT_USAGE;
            break;
        case OPT_CTX:
            if (!cli_parse_int(CMD, "--ctx", optarg, 1, 1 << 20, &o.ctx)) return MP_EXIT_USAGE;
            break;
        case OPT_MAX:
            if (!cli_parse_int(CMD, "--max-tokens", optarg, 1, INT64_MAX / 2, &o.max_tokens))
                return MP_EXIT_USAGE;
            break;
        case OPT_SHARD:
            if (sscanf(optarg, "%lld/%lld", &o.shard_i, &o.shard_n) != 2 || o.shard_n < 1 ||
                o.shard_i < 0 || o.shard_i >= o.shard_n)
                return cli_usage_error(CMD, "--shard: '%s' is not I/N with 0 <= I < N", optarg);
            break;
        case OPT_CLASS: {
            char *eq = strchr(optarg, '=');
            if (!eq || eq == optarg || !eq[1])
                return cli_usage_error(CMD, "--class: '%s' is not NAME=PATH", optarg);
            if (o.n_inputs == MAX_INPUTS) return cli_usage_error(CMD, "too many inputs");
            *eq = 0;
            o.input_class[o.n_inputs] = optarg;
            o.inputs[o.n_inputs++] = eq + 1;
            break;
        }
        case 'h': fputs(help, stdout); return MP_EXIT_OK;
        default: return cli_usage_error(CMD, "unknown option");
        }
    }
    if (optind >= argc) return cli_usage_error(CMD, "MODEL is required");
    o.model = argv[optind++];
    for (; optind < argc; optind++) {
        if (o.n_inputs == MAX_INPUTS) return cli_usage_error(CMD, "too many inputs");
        o.input_class[o.n_inputs] = "all";
        o.inputs[o.n_inputs++] = argv[optind];
    }
    if (!o.out) return cli_usage_error(CMD, "-o OUT.stats is required");
    if (mp_file_same(o.model, o.out)) return cli_usage_error(CMD, "-o names the model file");
    return run(&o);
}
