/* cmd_profile.c — `moeprune profile MODEL [INPUT...] -o OUT.stats`: runs a
 * calibration corpus through the model and records, per MoE layer, expert and
 * class, what the router chose and what each expert contributed
 * (src/profile/profiler.c). Inputs are text files, folders of them, or JSONL
 * ({"text": ...} or {"messages": [...]}, optional "class"); with none, the
 * built-in calibration set (math, logic, code, science, creative). Texts are
 * tokenized (BOS first) and cut into chunks of --ctx tokens, each run from an
 * empty cache; --shard I/N keeps every N-th chunk starting at I, so shards
 * profiled on several machines merge (`moeprune stats merge`) into exactly
 * the statistics of one run. --generate N profiles the model's own answers
 * (two-phase); --resume continues from the last minute's checkpoint.
 * --imatrix FILE also writes, in llama.cpp's imatrix.gguf layout, the
 * per-column sums of squared inputs of every weight product
 * (src/profile/imatrix.c): a file of its own, not part of the stats, because
 * it is per model rather than per class and llama-quantize reads it as is. */
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
    "  --generate N          two-phase: each text is a user prompt; the model answers\n"
    "                        (up to N tokens, thinking on unless --no-think, --temp T\n"
    "                        default 0.7, --seed S), then prompt + answer are replayed\n"
    "                        and the answer's tokens counted: what the model routes\n"
    "                        while it reasons\n"
    "  --resume              continue an interrupted run from OUT.partial (written\n"
    "                        every minute; same model, inputs and options)\n"
    "  --stop-after N        profile N chunks, write the checkpoint and stop (for jobs\n"
    "                        with a time limit: run again with --resume)\n"
    "  --imatrix FILE        also write an importance matrix: per weight matrix of the\n"
    "                        layers (per expert for expert tensors), the sum of squared\n"
    "                        inputs per column and the rows seen, in llama.cpp's\n"
    "                        imatrix.gguf layout (llama-quantize --imatrix FILE reads\n"
    "                        it); with --generate it covers prompts and answers\n"
    "\n"
    "Sharded runs, e.g. as a Slurm array or with GNU parallel, then merge:\n"
    "  parallel moeprune profile m.gguf corpus/ --shard {}/4 -o s{}.stats ::: 0 1 2 3\n"
    "  moeprune stats merge s0.stats s1.stats s2.stats s3.stats -o all.stats\n"
    "(with --imatrix s{}.imatrix.gguf, `stats merge` adds the imatrix files the same way)\n"
    "\n"
    "example:\n"
    "  moeprune profile gemma.gguf --class math=math/ --class code=code.jsonl -o g.stats\n"
    "  moeprune profile gemma.gguf corpus/ -o g.stats --imatrix g.imatrix.gguf\n"
    "  llama-quantize --imatrix g.imatrix.gguf gemma.gguf gemma-q4_k_m.gguf Q4_K_M\n";

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
    long long gen_n; /* two-phase: tokens to generate per prompt (0: off) */
    float temp;      /* sampling temperature for --generate */
    long long seed;
    bool no_think;        /* --generate without the thinking turn */
    long long stop_after; /* profile this many chunks, checkpoint, stop (0: all) */
    bool quiet, force, resume;
    const char *imatrix; /* --imatrix FILE (NULL: none) */
} prof_opts;

/* Checkpoints: OUT.partial (a stats file), with --imatrix OUT.partial.imatrix
 * (the sums so far, F64 so that a resumed run adds up bit for bit as one
 * uninterrupted run) and OUT.partial.json ({"chunks_done": K, "plan": "..."}),
 * rewritten every CHECKPOINT_SECONDS; --resume continues after chunk K when
 * the plan (model, corpus, chunking, shard, imatrix or not) is the same. */
#define CHECKPOINT_SECONDS 60.0

static void plan_signature(char *buf, size_t n, const char *sha, int64_t kept, int64_t total,
                           const prof_opts *o) {
    snprintf(buf, n, "%s/%lld chunks/%lld tokens/ctx %lld/shard %lld of %lld/generate %lld%s", sha,
             (long long)kept, (long long)total, o->ctx, o->shard_i, o->shard_n, o->gen_n,
             o->imatrix ? "/imatrix" : "");
}

static mp_status checkpoint_save(const mp_stats *s, const mp_imatrix *im, const prof_opts *o,
                                 int64_t done, const char *sig, mp_err *err) {
    char path[4096], meta[8192];
    snprintf(path, sizeof path, "%s.partial", o->out);
    mp_status st = mp_stats_save(s, path, true, err);
    if (st) return st;
    snprintf(path, sizeof path, "%s.partial.imatrix", o->out);
    if (im && (st = mp_imatrix_save(im, path, true, true, err))) return st;
    snprintf(path, sizeof path, "%s.partial.json", o->out);
    int n = snprintf(meta, sizeof meta, "{\"chunks_done\": %lld, \"plan\": \"%s\"}\n",
                     (long long)done, sig);
    return mp_file_write_atomic(path, meta, (size_t)n, true, err);
}

/* Loads a checkpoint matching `sig`: chunks done and the stats so far; with
 * im, adds the checkpoint's imatrix sums to it. */
static mp_status checkpoint_load(const prof_opts *o, const char *sig, int64_t *done,
                                 mp_stats **stats, mp_imatrix *im, mp_err *err) {
    char path[4096];
    snprintf(path, sizeof path, "%s.partial.json", o->out);
    size_t len;
    char *txt = read_all(path, &len, err);
    if (!txt) return err->status;
    cJSON *j = cJSON_ParseWithLength(txt, len);
    free(txt);
    const cJSON *d = cJSON_GetObjectItem(j, "chunks_done"), *p = cJSON_GetObjectItem(j, "plan");
    mp_status st = MP_OK;
    if (!cJSON_IsNumber(d) || !cJSON_IsString(p))
        st = mp_err_set(err, MP_ERR_FORMAT, "%s: not a profile checkpoint", path);
    else if (strcmp(p->valuestring, sig))
        st = mp_err_set(err, MP_ERR_CHECK,
                        "%s: the checkpoint is for another run (%s), this one is %s", path,
                        p->valuestring, sig);
    else
        *done = (int64_t)d->valuedouble;
    cJSON_Delete(j);
    if (st) return st;
    if (im) {
        mp_imatrix *prev = NULL;
        snprintf(path, sizeof path, "%s.partial.imatrix", o->out);
        st = mp_imatrix_load(&prev, path, err);
        if (!st) st = mp_imatrix_merge(im, prev, err);
        mp_imatrix_free(prev);
        if (st) return st;
    }
    snprintf(path, sizeof path, "%s.partial", o->out);
    return mp_stats_load(stats, path, err);
}

static void checkpoint_remove(const prof_opts *o) {
    char path[4096];
    snprintf(path, sizeof path, "%s.partial", o->out);
    unlink(path);
    snprintf(path, sizeof path, "%s.partial.imatrix", o->out);
    unlink(path);
    snprintf(path, sizeof path, "%s.partial.json", o->out);
    unlink(path);
}

/* Two-phase: the text as a user turn, up to gen_n sampled tokens of answer
 * with the profiler (and imatrix) detached, then prompt + answer replayed in
 * one pass with only the answer's tokens counted in the stats. The imatrix,
 * when there is one, sees the whole replay: the matmul hook does not know the
 * positions of an expert's rows. Returns the tokens counted. */
static mp_status two_phase(mp_context *ctx, const mp_vocab *v, mp_profiler *prof, mp_imatrix *im,
                           mp_sampler *smp, const prof_opts *o, const char *text, int64_t *counted,
                           mp_err *err) {
    mp_chat_family fam;
    mp_status st = mp_chat_detect(v, &fam, err);
    if (st) return st;
    mp_chat_msg msg = {.role = MP_CHAT_USER, .content = text};
    mp_chat_params cp = {.thinking = !o->no_think, .add_generation_prompt = true};
    char *prompt = NULL;
    size_t plen = 0, np = 0;
    mp_token *toks = NULL;
    if ((st = mp_chat_render(fam, &msg, 1, cp, &prompt, &plen, err))) return st;
    mp_tokenize_params tp = {.add_bos = mp_vocab_specials(v)->add_bos, .parse_special = true};
    st = mp_tokenize(v, prompt, plen, tp, &toks, &np, err);
    mp_free(prompt);
    if (st) return st;
    int64_t cap = (int64_t)np + o->gen_n, n = (int64_t)np;
    int64_t V = 0;
    mp_token *all = NULL;
    float *logits = NULL;
    if (cap > o->ctx) {
        st = mp_err_set(err, MP_ERR_ARG,
                        "a prompt of %zu tokens plus --generate %lld does not fit --ctx %lld", np,
                        o->gen_n, o->ctx);
        goto done;
    }
    V = mp_vocab_n_tokens(v);
    all = mp_malloc((size_t)cap * sizeof *all);
    logits = mp_malloc((size_t)V * sizeof *logits);
    if (!all || !logits) {
        st = mp_err_set(err, MP_ERR_NOMEM, "out of memory");
        goto done;
    }
    memcpy(all, toks, np * sizeof *toks);
    mp_sampler_reset(smp);
    for (size_t i = 0; i < np; i++) mp_sampler_accept(smp, toks[i]);
    mp_context_truncate(ctx, 0);
    if ((st = mp_context_set_moe_hook(ctx, NULL, err)) ||
        (st = mp_context_set_matmul_hook(ctx, NULL, NULL, err)) ||
        (st = mp_context_eval(ctx, all, n, MP_LOGITS_LAST, logits, err)))
        goto done;
    while (n < cap) {
        mp_token t = mp_sampler_sample(smp, logits);
        mp_sampler_accept(smp, t);
        all[n++] = t;
        if (mp_vocab_is_eog(v, t) || n == cap) break;
        if ((st = mp_context_eval(ctx, &t, 1, MP_LOGITS_LAST, logits, err))) goto done;
    }
    mp_context_truncate(ctx, 0);
    mp_profiler_set_min_pos(prof, (int64_t)np);
    if ((st = mp_profiler_attach(prof, ctx, err)) ||
        (im && (st = mp_imatrix_attach(im, ctx, err))) ||
        (st = mp_context_eval(ctx, all, n, MP_LOGITS_NONE, NULL, err)))
        goto done;
    mp_profiler_set_min_pos(prof, 0);
    *counted = n - (int64_t)np;
done:
    mp_free(toks);
    mp_free(all);
    mp_free(logits);
    return st;
}

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

/* sha256 of the model file, streamed through the mapping. The pages stay
 * mapped (no mp_gguf_release): the engine reads them all next, and the first
 * chunk would otherwise fault every page in again. */
static void file_sha256(const mp_gguf *g, char hex[65]) {
    mp_sha256 s;
    mp_sha256_init(&s);
    const uint8_t *p = mp_gguf_base(g);
    uint64_t n = mp_gguf_file_size(g);
    for (uint64_t o = 0; o < n; o += 64u << 20) {
        size_t k = n - o < (64u << 20) ? (size_t)(n - o) : (size_t)64u << 20;
        mp_sha256_update(&s, p + o, k);
    }
    mp_sha256_hex(&s, hex);
}

/* Fails now rather than after hours of profiling when `path` could not be
 * written: an existing file without --force, a missing or read-only folder.
 * The writer makes and removes a temporary file beside `path`. */
static mp_status probe_output(const char *path, bool overwrite, mp_err *err) {
    mp_gguf_writer *w = NULL;
    mp_status st = mp_gguf_writer_open(&w, path, overwrite, err);
    if (!st) mp_gguf_writer_free(w);
    return st;
}

/* --imatrix: accumulators for every weight of the model's layers, hooked to
 * the context; the inputs (or the built-in set) are its datasets. */
static mp_status imatrix_begin(mp_imatrix **out, const mp_model *m, mp_context *ctx,
                               const prof_opts *o, mp_err *err) {
    mp_imatrix *im = NULL;
    mp_status st = mp_imatrix_create(&im, m, err);
    if (!st) st = mp_imatrix_attach(im, ctx, err);
    if (!st && o->n_inputs == 0) st = mp_imatrix_add_dataset(im, "moeprune:builtin", err);
    for (int i = 0; !st && i < o->n_inputs; i++) st = mp_imatrix_add_dataset(im, o->inputs[i], err);
    if (st) {
        mp_imatrix_free(im);
        return st;
    }
    im->chunk_size = o->ctx;
    *out = im;
    return MP_OK;
}

/* Writes the imatrix and says what it holds: experts that no token reached
 * have count 0 there, and llama-quantize treats their columns as equal. */
static mp_status imatrix_end(mp_imatrix *im, const char *sha, const prof_opts *o, mp_err *err) {
    char *s = mp_strdup(sha);
    if (!s) return mp_err_set(err, MP_ERR_NOMEM, "out of memory");
    mp_free(im->model_sha256);
    im->model_sha256 = s;
    mp_status st = mp_imatrix_save(im, o->imatrix, o->force || o->resume, false, err);
    if (st) return st;
    int64_t n_mat = 0, n_slab = 0, n_empty = 0;
    for (int64_t i = 0; i < im->n_entry; i++) {
        const mp_imatrix_entry *e = &im->entries[i];
        int64_t empty = 0;
        for (int64_t j = 0; j < e->n_slab; j++) empty += e->count[j] == 0;
        if (empty == e->n_slab) continue; /* never multiplied: not in the file */
        n_mat++;
        if (e->n_slab > 1) {
            n_slab += e->n_slab;
            n_empty += empty;
        }
    }
    fprintf(stderr, "%s: imatrix of %" PRId64 " weight matrices", o->imatrix, n_mat);
    if (n_slab)
        fprintf(stderr, "; %" PRId64 " of %" PRId64 " expert slabs saw no token", n_empty, n_slab);
    fputc('\n', stderr);
    return MP_OK;
}

static int run(const prof_opts *o) {
    mp_err err = {0};
    corpus c = {0};
    mp_model *model = NULL;
    mp_vocab *vocab = NULL;
    mp_context *ctx = NULL;
    mp_profiler *prof = NULL;
    mp_sampler *smp = NULL;
    mp_imatrix *im = NULL;
    mp_token **toks = NULL;
    size_t *ntok = NULL;
    chunk *chunks = NULL;
    int rc = MP_EXIT_FAIL;
    if (probe_output(o->out, o->force || o->resume, &err) ||
        (o->imatrix && probe_output(o->imatrix, o->force || o->resume, &err)))
        goto done;
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
    if (!(chunks = calloc((size_t)(n_chunks + c.n_docs + 1), sizeof *chunks))) goto oom;
    int64_t k = 0, kept = 0;
    if (o->gen_n) { /* two-phase: one prompt per text, no chunking */
        for (int64_t d = 0; d < c.n_docs; d++)
            if (d % o->shard_n == o->shard_i) chunks[kept++] = (chunk){d, 0, (int64_t)ntok[d]};
        total = kept * o->gen_n;
    } else {
        for (int64_t d = 0; d < c.n_docs; d++)
            for (int64_t s0 = 0; s0 < (int64_t)ntok[d]; s0 += o->ctx, k++) {
                if (k % o->shard_n != o->shard_i) continue;
                int64_t len = (int64_t)ntok[d] - s0 < o->ctx ? (int64_t)ntok[d] - s0 : o->ctx;
                if (o->max_tokens && total + len > o->max_tokens) len = o->max_tokens - total;
                if (len <= 0) break;
                chunks[kept++] = (chunk){d, s0, len};
                total += len;
            }
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
    if (o->imatrix && imatrix_begin(&im, model, ctx, o, &err)) goto done;
    if (o->gen_n) {
        mp_sampler_params sp = mp_sampler_default_params();
        sp.temperature = o->temp;
        sp.seed = (uint64_t)o->seed;
        if (mp_sampler_init(&smp, (int32_t)mp_vocab_n_tokens(vocab), &sp, &err)) goto done;
    }
    char hex[65], sig[512];
    file_sha256(mp_model_gguf(model), hex);
    plan_signature(sig, sizeof sig, hex, kept, total, o);
    int64_t first_chunk = 0;
    if (o->resume) {
        mp_stats *prev = NULL;
        if (checkpoint_load(o, sig, &first_chunk, &prev, im, &err) ||
            mp_stats_merge(mp_profiler_stats(prof), prev, &err)) {
            mp_stats_free(prev);
            goto done;
        }
        mp_stats_free(prev);
        if (!o->quiet)
            fprintf(stderr, "resuming after chunk %" PRId64 " of %" PRId64 "\n", first_chunk, kept);
    }
    double t0 = now_s(), last_ckpt = t0;
    int64_t done_tok = 0;
    for (int64_t i = first_chunk; i < kept; i++) {
        const chunk *ch = &chunks[i];
        int64_t counted = ch->len;
        if (mp_profiler_set_class(prof, c.docs[ch->doc].cls, &err)) goto done;
        if (o->gen_n) {
            if (two_phase(ctx, vocab, prof, im, smp, o, c.docs[ch->doc].text, &counted, &err))
                goto done;
        } else {
            mp_context_truncate(ctx, 0);
            if (mp_context_eval(ctx, toks[ch->doc] + ch->start, ch->len, MP_LOGITS_NONE, NULL,
                                &err))
                goto done;
        }
        mp_profiler_add_tokens(prof, counted);
        if (im) im->chunk_count++;
        done_tok += o->gen_n ? o->gen_n : counted;
        progress(o, done_tok, total, now_s() - t0);
        if (o->stop_after && i + 1 - first_chunk >= o->stop_after && i + 1 < kept) {
            if (checkpoint_save(mp_profiler_stats(prof), im, o, i + 1, sig, &err)) goto done;
            if (!o->quiet)
                fprintf(stderr,
                        "%s.partial: stopped after chunk %" PRId64 " of %" PRId64
                        "; continue with --resume\n",
                        o->out, i + 1, kept);
            rc = MP_EXIT_OK;
            goto done;
        }
        if (now_s() - last_ckpt > CHECKPOINT_SECONDS && i + 1 < kept) {
            if (checkpoint_save(mp_profiler_stats(prof), im, o, i + 1, sig, &err)) goto done;
            last_ckpt = now_s();
        }
    }
    if (!o->quiet && isatty(2)) fputc('\n', stderr);
    mp_stats *s = mp_profiler_stats(prof);
    char *name = NULL;
    mp_gguf_key_strdup(mp_model_gguf(model), "general.name", &name, NULL);
    mp_free(s->model_name);
    mp_free(s->model_sha256);
    s->model_name = name ? name : mp_strdup("");
    s->model_sha256 = mp_strdup(hex);
    if (!s->model_name || !s->model_sha256) goto oom;
    if (im && imatrix_end(im, hex, o, &err)) goto done;
    if (mp_stats_save(s, o->out, o->force || o->resume, &err)) goto done;
    checkpoint_remove(o);
    double secs = now_s() - t0;
    double counted_all = 0;
    for (int64_t ci = 0; ci < s->n_class; ci++) counted_all += s->class_tokens[ci];
    fprintf(stderr, "%s: %.0f tokens counted in %" PRId64 " %s, %" PRId64 " classes, %.1f s\n",
            o->out, counted_all, kept, o->gen_n ? "prompts (two-phase)" : "chunks", c.n_class,
            secs);
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
    mp_sampler_free(smp);
    mp_imatrix_free(im);
    mp_context_free(ctx);
    mp_vocab_free(vocab);
    mp_model_free(model);
    corpus_free(&c);
    return rc;
}

int cmd_profile(int argc, char **argv) {
    enum {
        OPT_CLASS = 256,
        OPT_CTX,
        OPT_MAX,
        OPT_SHARD,
        OPT_QUIET,
        OPT_GEN,
        OPT_TEMP,
        OPT_SEED,
        OPT_NOTHINK,
        OPT_RESUME,
        OPT_STOP,
        OPT_IMATRIX
    };
    static const struct option opts[] = {{"output", required_argument, NULL, 'o'},
                                         {"class", required_argument, NULL, OPT_CLASS},
                                         {"ctx", required_argument, NULL, OPT_CTX},
                                         {"max-tokens", required_argument, NULL, OPT_MAX},
                                         {"shard", required_argument, NULL, OPT_SHARD},
                                         {"threads", required_argument, NULL, 't'},
                                         {"quiet", no_argument, NULL, OPT_QUIET},
                                         {"force", no_argument, NULL, 'f'},
                                         {"help", no_argument, NULL, 'h'},
                                         {"generate", required_argument, NULL, OPT_GEN},
                                         {"temp", required_argument, NULL, OPT_TEMP},
                                         {"seed", required_argument, NULL, OPT_SEED},
                                         {"no-think", no_argument, NULL, OPT_NOTHINK},
                                         {"resume", no_argument, NULL, OPT_RESUME},
                                         {"stop-after", required_argument, NULL, OPT_STOP},
                                         {"imatrix", required_argument, NULL, OPT_IMATRIX},
                                         {0, 0, 0, 0}};
    prof_opts o = {.ctx = 512, .shard_n = 1, .temp = 0.7f, .seed = 42};
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "o:t:fh", opts, NULL)) != -1) {
        switch (c) {
        case 'o': o.out = optarg; break;
        case 'f': o.force = true; break;
        case OPT_QUIET: o.quiet = true; break;
        case OPT_NOTHINK: o.no_think = true; break;
        case OPT_RESUME: o.resume = true; break;
        case OPT_IMATRIX: o.imatrix = optarg; break;
        case OPT_STOP:
            if (!cli_parse_int(CMD, "--stop-after", optarg, 1, INT64_MAX / 2, &o.stop_after))
                return MP_EXIT_USAGE;
            break;
        case OPT_GEN:
            if (!cli_parse_int(CMD, "--generate", optarg, 1, 1 << 20, &o.gen_n))
                return MP_EXIT_USAGE;
            break;
        case OPT_SEED:
            if (!cli_parse_int(CMD, "--seed", optarg, 0, INT64_MAX / 2, &o.seed))
                return MP_EXIT_USAGE;
            break;
        case OPT_TEMP: {
            char *end;
            o.temp = strtof(optarg, &end);
            if (*end || o.temp < 0) return cli_usage_error(CMD, "--temp: '%s' is not >= 0", optarg);
            break;
        }
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
    if (o.imatrix && (mp_file_same(o.model, o.imatrix) || !strcmp(o.imatrix, o.out) ||
                      mp_file_same(o.imatrix, o.out)))
        return cli_usage_error(CMD, "--imatrix names the model or the -o file");
    return run(&o);
}
