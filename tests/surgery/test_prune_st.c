/* test_prune_st.c — expert surgery on a small Hugging Face-layout Gemma 4
 * checkpoint built here (3 layers, 8 experts, hidden 64, expert ff 32,
 * random bf16; two shards with an index, a config.json, tokenizer files, a
 * sub-folder and a symbolic link into a "blob store"): every sliced tensor
 * equals the kept slabs of the input byte for byte, everything else is
 * identical, config.json and the index are consistent, the recorded map
 * composes over two prunes; bad maps, non-uniform maps, unsupported layouts
 * and a full disk leave nothing behind; the input never changes. Pass a seed
 * as the first argument to repeat a run. */
#include <cjson/cJSON.h>
#include <dirent.h>
#include <ftw.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "testutil.h"

#define N_LAYER 3
#define N_EXPERT 8
#define N_EMBD 64
#define N_FF_EXP 32
#define PFX "model.language_model.layers."
#define SHARD1 "model-00001-of-00002.safetensors"
#define SHARD2 "model-00002-of-00002.safetensors"

static char root[256], outs[512];
static uint64_t rng;

static const char *const config_gemma4 =
    "{\n  \"architectures\": [\"Gemma4ForConditionalGeneration\"],\n"
    "  \"model_type\": \"gemma4\",\n"
    "  \"text_config\": {\"model_type\": \"gemma4_text\", \"hidden_size\": 64,\n"
    "    \"num_hidden_layers\": 3, \"num_experts\": 8, \"top_k_experts\": 2,\n"
    "    \"moe_intermediate_size\": 32, \"rms_norm_eps\": 1e-06},\n"
    "  \"vision_config\": {\"num_hidden_layers\": 2},\n"
    "  \"torch_dtype\": \"bfloat16\"\n}\n";

/* ------------------------------------------------------------------------ */
/* Fixture                                                                  */
/* ------------------------------------------------------------------------ */

typedef struct fx_opts {
    bool sharded;         /* two shards + index; else one model.safetensors */
    int down_dtype;       /* dtype of experts.down_proj */
    const char *config;   /* config.json text; NULL: none */
    bool module_layout;   /* layer 0 stores experts as experts.N.* modules */
    bool nan_router;      /* layer 1's router holds a NaN */
} fx_opts;

typedef struct fx_tensor {
    char name[128];
    int dtype;
    uint32_t n_dims;
    int64_t shape[4];
    int shard;
} fx_tensor;

static int add(fx_tensor *t, int n, int shard, int dtype, const char *name, uint32_t nd,
               int64_t a, int64_t b, int64_t c) {
    fx_tensor *x = &t[n];
    snprintf(x->name, sizeof x->name, "%s", name);
    x->dtype = dtype;
    x->n_dims = nd;
    x->shape[0] = a;
    x->shape[1] = b;
    x->shape[2] = c;
    x->shard = shard;
    return n + 1;
}

static void write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "wb");
    CHECK_MSG(f && fwrite(text, 1, strlen(text), f) == strlen(text), "cannot write %s", path);
    if (f) fclose(f);
}

static void fill(uint8_t *p, uint64_t n, int dtype, bool nan) {
    if (dtype == MP_ST_BF16 || dtype == MP_ST_F16) {
        for (uint64_t i = 0; i < n / 2; i++) {
            float v = mp_test_randf(&rng);
            uint16_t h = dtype == MP_ST_BF16 ? mp_f32_to_bf16(v) : mp_f32_to_f16(v);
            p[2 * i] = (uint8_t)h;
            p[2 * i + 1] = (uint8_t)(h >> 8);
        }
    } else if (dtype == MP_ST_F32) {
        for (uint64_t i = 0; i < n / 4; i++) {
            float v = mp_test_randf(&rng);
            memcpy(p + 4 * i, &v, 4);
        }
    } else {
        for (uint64_t i = 0; i < n; i++) p[i] = (uint8_t)mp_test_rand(&rng);
    }
    if (nan && dtype == MP_ST_BF16 && n >= 8) {
        p[6] = 0xc0; /* bf16 0x7fc0: a quiet NaN */
        p[7] = 0x7f;
    }
}

static void make_fixture(const char *d, const fx_opts *o) {
    fx_tensor t[64];
    int n = 0;
    char name[128];
    mkdir(d, 0755);
    n = add(t, n, 0, MP_ST_BF16, "model.language_model.embed_tokens.weight", 2, 128, N_EMBD, 0);
    n = add(t, n, 0, MP_ST_BF16, "model.language_model.norm.weight", 1, N_EMBD, 0, 0);
    n = add(t, n, 0, MP_ST_F32, "model.vision_tower.encoder.layers.0.mlp.fc1.weight", 2, 16, 8,
            0);
    /* a router-like name outside the language model: never sliced */
    n = add(t, n, 0, MP_ST_F32, "model.vision_tower.encoder.layers.1.router.proj.weight", 2, 8,
            4, 0);
    n = add(t, n, 0, MP_ST_I64, "model.audio_tower.position_ids", 2, 1, 16, 0);
    for (int l = 0; l < N_LAYER; l++) {
        int sh = o->sharded && l == N_LAYER - 1 ? 1 : 0;
#define T(dt, suffix, nd, a, b, c)                                                     \
    do {                                                                               \
        snprintf(name, sizeof name, PFX "%d.%s", l, suffix);                           \
        n = add(t, n, sh, dt, name, nd, a, b, c);                                      \
    } while (0)
        T(MP_ST_BF16, "input_layernorm.weight", 1, N_EMBD, 0, 0);
        T(MP_ST_BF16, "self_attn.q_proj.weight", 2, N_EMBD, N_EMBD, 0);
        T(MP_ST_BF16, "mlp.down_proj.weight", 2, N_EMBD, 128, 0);
        T(MP_ST_BF16, "router.proj.weight", 2, N_EXPERT, N_EMBD, 0);
        T(MP_ST_BF16, "router.scale", 1, N_EMBD, 0, 0);
        T(MP_ST_BF16, "router.per_expert_scale", 1, N_EXPERT, 0, 0);
        T(MP_ST_BF16, "layer_scalar", 1, 1, 0, 0);
        if (l == 0 && o->module_layout) {
            for (int e = 0; e < N_EXPERT; e++) {
                char s[64];
                snprintf(s, sizeof s, "experts.%d.down_proj.weight", e);
                T(MP_ST_BF16, s, 2, N_EMBD, N_FF_EXP, 0);
            }
        } else if (l == 2) { /* the split form in one layer */
            T(MP_ST_BF16, "experts.gate_proj", 3, N_EXPERT, N_FF_EXP, N_EMBD);
            T(MP_ST_BF16, "experts.up_proj", 3, N_EXPERT, N_FF_EXP, N_EMBD);
        } else {
            T(MP_ST_BF16, "experts.gate_up_proj", 3, N_EXPERT, 2 * N_FF_EXP, N_EMBD);
        }
        if (!(l == 0 && o->module_layout))
            T(o->down_dtype, "experts.down_proj", 3, N_EXPERT, N_EMBD, N_FF_EXP);
#undef T
    }
    mp_err err = {0};
    uint64_t total = 0;
    for (int s = 0; s < (o->sharded ? 2 : 1); s++) {
        char path[600];
        snprintf(path, sizeof path, "%s/%s", d,
                 o->sharded ? (s ? SHARD2 : SHARD1) : "model.safetensors");
        mp_st_writer *w = NULL;
        CHECK_STATUS(MP_OK, mp_st_writer_open(&w, path, false, &err), &err);
        if (!w) return;
        CHECK_STATUS(MP_OK, mp_st_writer_meta(w, "format", "pt", &err), &err);
        for (int i = 0; i < n; i++)
            if (t[i].shard == s)
                CHECK_STATUS(MP_OK, mp_st_writer_add_tensor(w, t[i].name, t[i].dtype,
                                                            t[i].n_dims, t[i].shape, &err), &err);
        for (int i = 0; i < n; i++) {
            if (t[i].shard != s) continue;
            uint64_t bytes = (uint64_t)mp_st_dtype_bits(t[i].dtype) / 8;
            for (uint32_t k = 0; k < t[i].n_dims; k++) bytes *= (uint64_t)t[i].shape[k];
            uint8_t *buf = malloc(bytes);
            bool nan = o->nan_router && strstr(t[i].name, "layers.1.router.proj");
            fill(buf, bytes, t[i].dtype, nan);
            CHECK_STATUS(MP_OK, mp_st_writer_write_data(w, buf, bytes, &err), &err);
            free(buf);
            total += bytes;
        }
        CHECK_STATUS(MP_OK, mp_st_writer_finish(w, &err), &err);
        mp_st_writer_free(w);
    }
    char path[600];
    if (o->sharded) {
        static char idx[16384];
        int k = snprintf(idx, sizeof idx, "{\n  \"metadata\": {\"total_size\": %llu},\n"
                         "  \"weight_map\": {\n", (unsigned long long)total);
        for (int i = 0; i < n; i++)
            k += snprintf(idx + k, sizeof idx - (size_t)k, "    \"%s\": \"%s\"%s\n", t[i].name,
                          t[i].shard ? SHARD2 : SHARD1, i + 1 < n ? "," : "");
        snprintf(idx + k, sizeof idx - (size_t)k, "  }\n}\n");
        snprintf(path, sizeof path, "%s/model.safetensors.index.json", d);
        write_text(path, idx);
    }
    if (o->config) {
        snprintf(path, sizeof path, "%s/config.json", d);
        write_text(path, o->config);
    }
    snprintf(path, sizeof path, "%s/tokenizer.json", d);
    write_text(path, "{\"version\": \"1.0\", \"model\": {}}\n");
    snprintf(path, sizeof path, "%s/generation_config.json", d);
    write_text(path, "{\"do_sample\": true}\n");
    snprintf(path, sizeof path, "%s/extra", d);
    mkdir(path, 0755);
    snprintf(path, sizeof path, "%s/extra/notes.txt", d);
    write_text(path, "notes\n");
    /* Hugging Face cache snapshots are links into a blob store */
    char blob[600];
    snprintf(blob, sizeof blob, "%s/blob-tokenizer-model", root);
    write_text(blob, "sentencepiece bytes");
    snprintf(path, sizeof path, "%s/tokenizer.model", d);
    CHECK(symlink(blob, path) == 0);
}

/* ------------------------------------------------------------------------ */
/* Helpers                                                                  */
/* ------------------------------------------------------------------------ */

static int dir_entries(const char *d) {
    DIR *h = opendir(d);
    int n = 0;
    for (struct dirent *e; h && (e = readdir(h));)
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) n++;
    if (h) closedir(h);
    return n;
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void rm_rf(const char *p) {
    CHECK_MSG(nftw(p, rm_one, 16, FTW_DEPTH | FTW_PHYS) == 0, "cannot remove %s", p);
}

/* keep[l] lists n_keep[l] ids of layer l, for a map over n_expert experts. */
static mp_dropmap *make_map(int64_t n_layer, int64_t n_expert, int64_t used,
                            const int *const *keep, const int *n_keep) {
    char json[8192];
    int o = snprintf(json, sizeof json,
                     "{\"format\":\"moeprune.dropmap/1\",\"model\":{\"arch\":\"gemma4\","
                     "\"n_layer\":%lld,\"n_expert\":%lld,\"n_expert_used\":%lld},"
                     "\"method\":{\"name\":\"test\"},\"layers\":[",
                     (long long)n_layer, (long long)n_expert, (long long)used);
    for (int64_t l = 0; l < n_layer; l++) {
        o += snprintf(json + o, sizeof json - (size_t)o, "%s{\"layer\":%lld,\"keep\":[",
                      l ? "," : "", (long long)l);
        for (int k = 0; k < n_keep[l]; k++)
            o += snprintf(json + o, sizeof json - (size_t)o, "%s%d", k ? "," : "", keep[l][k]);
        o += snprintf(json + o, sizeof json - (size_t)o, "]}");
    }
    snprintf(json + o, sizeof json - (size_t)o, "]}");
    mp_dropmap *m = NULL;
    mp_err err;
    if (mp_dropmap_parse(&m, json, strlen(json), "gen", &err))
        fprintf(stderr, "make_map: %s\n", err.msg);
    return m;
}

static const int k0[] = {1, 3, 4, 6}, k1[] = {0, 2, 5, 7}, k2[] = {0, 1, 2, 3};
static const int *const keep4[] = {k0, k1, k2, k0};
static const int n4[] = {4, 4, 4, 4};

static bool is_sliced(const char *name) {
    if (strncmp(name, PFX, strlen(PFX))) return false;
    return strstr(name, ".experts.") || strstr(name, ".router.proj.weight") ||
           strstr(name, ".router.per_expert_scale");
}

static cJSON *read_json(const char *path) {
    size_t n;
    char *t = mp_test_read_file(path, &n);
    cJSON *j = t ? cJSON_ParseWithLength(t, n) : NULL;
    free(t);
    CHECK_MSG(j != NULL, "%s: not readable JSON", path);
    return j;
}

static bool same_file(const char *a, const char *b) {
    size_t na, nb;
    char *x = mp_test_read_file(a, &na), *y = mp_test_read_file(b, &nb);
    bool same = x && y && na == nb && !memcmp(x, y, na);
    free(x);
    free(y);
    return same;
}

static int64_t cfg_num(cJSON *cfg, const char *sub, const char *key) {
    cJSON *o = sub ? cJSON_GetObjectItemCaseSensitive(cfg, sub) : cfg;
    cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsNumber(v) ? (int64_t)v->valuedouble : -1;
}

/* `out` is `in` pruned by m; `record` is the map the config should hold. */
static void check_pruned(const char *in, const char *out, const mp_dropmap *m,
                         const mp_dropmap *record, bool sharded) {
    mp_err err = {0};
    mp_st_model *a = NULL, *b = NULL;
    CHECK_STATUS(MP_OK, mp_st_model_open(&a, in, &err), &err);
    CHECK_STATUS(MP_OK, mp_st_model_open(&b, out, &err), &err);
    if (!a || !b) goto done;
    CHECK_INT(mp_st_model_n_shards(a), mp_st_model_n_shards(b));
    CHECK_INT(mp_st_model_n_tensors(a), mp_st_model_n_tensors(b));
    CHECK(mp_st_model_indexed(b) == sharded);
    uint64_t total = 0;
    int sliced = 0;
    for (int64_t i = 0; i < mp_st_model_n_shards(a); i++) {
        const mp_st *fa = mp_st_model_shard(a, i);
        CHECK(!strcmp(mp_st_model_shard_name(a, i), mp_st_model_shard_name(b, i)));
        CHECK(!strcmp(mp_st_meta_get(mp_st_model_shard(b, i), "format"), "pt"));
        for (int64_t j = 0; j < mp_st_n_tensors(fa); j++) {
            const mp_st_tensor *ta = mp_st_tensor_at(fa, j);
            int64_t shard = -1;
            const mp_st_tensor *tb = mp_st_model_find(b, ta->name, &shard);
            CHECK_MSG(tb && shard == i && tb->dtype == ta->dtype && tb->n_dims == ta->n_dims,
                      "%s: %s missing or changed", out, ta->name);
            if (!tb) continue;
            total += tb->nbytes;
            if (!is_sliced(ta->name)) {
                CHECK_MSG(!memcmp(ta->shape, tb->shape, sizeof ta->shape) &&
                              ta->nbytes == tb->nbytes && !memcmp(ta->data, tb->data, ta->nbytes),
                          "%s: %s changed", out, ta->name);
                continue;
            }
            sliced++;
            int l = atoi(ta->name + strlen(PFX));
            const mp_dropmap_layer *L = mp_dropmap_find(m, l);
            CHECK_INT(L->n_keep, tb->shape[0]);
            for (uint32_t d = 1; d < ta->n_dims; d++) CHECK_INT(ta->shape[d], tb->shape[d]);
            uint64_t slab = ta->nbytes / (uint64_t)ta->shape[0];
            CHECK_INT(slab * (uint64_t)L->n_keep, tb->nbytes);
            for (int64_t k = 0; k < L->n_keep && tb->nbytes == slab * (uint64_t)L->n_keep; k++)
                CHECK_MSG(!memcmp((const uint8_t *)tb->data + k * slab,
                                  (const uint8_t *)ta->data + L->keep[k] * slab, slab),
                          "%s: %s: slab %lld is not expert %d", out, ta->name, (long long)k,
                          L->keep[k]);
        }
    }
    CHECK_INT(4 + 4 + 5, sliced); /* router, scale, gate_up (layer 2: gate + up), down */

    char pa[600], pb[600];
    snprintf(pb, sizeof pb, "%s/config.json", out);
    cJSON *cfg = read_json(pb);
    if (cfg) {
        CHECK_INT(m->layers[0].n_keep, cfg_num(cfg, "text_config", "num_experts"));
        CHECK_INT(2, cfg_num(cfg, "text_config", "top_k_experts"));
        CHECK_INT(3, cfg_num(cfg, "text_config", "num_hidden_layers"));
        CHECK_INT(2, cfg_num(cfg, "vision_config", "num_hidden_layers"));
        CHECK(!strcmp(cJSON_GetObjectItem(cfg, "model_type")->valuestring, "gemma4"));
        char *rec = cJSON_PrintUnformatted(cJSON_GetObjectItem(cfg, "moeprune_dropmap"));
        mp_dropmap *r = NULL;
        CHECK_STATUS(MP_OK, mp_dropmap_parse(&r, rec ? rec : "", rec ? strlen(rec) : 0, "rec",
                                             &err), &err);
        for (int64_t l = 0; r && l < record->n_layers; l++)
            CHECK(r->layers[l].n_keep == record->layers[l].n_keep &&
                  !memcmp(r->layers[l].keep, record->layers[l].keep,
                          (size_t)record->layers[l].n_keep * sizeof(int32_t)));
        if (r) CHECK_INT(record->n_expert, r->n_expert);
        mp_dropmap_free(r);
        free(rec);
        cJSON_Delete(cfg);
    }
    if (sharded) {
        snprintf(pa, sizeof pa, "%s/model.safetensors.index.json", in);
        snprintf(pb, sizeof pb, "%s/model.safetensors.index.json", out);
        cJSON *ia = read_json(pa), *ib = read_json(pb);
        if (ia && ib) {
            char *wa = cJSON_PrintUnformatted(cJSON_GetObjectItem(ia, "weight_map"));
            char *wb = cJSON_PrintUnformatted(cJSON_GetObjectItem(ib, "weight_map"));
            CHECK_MSG(wa && wb && !strcmp(wa, wb), "%s: weight_map changed", out);
            free(wa);
            free(wb);
            cJSON *meta = cJSON_GetObjectItem(ib, "metadata");
            CHECK_INT(total, (uint64_t)cJSON_GetObjectItem(meta, "total_size")->valuedouble);
        }
        cJSON_Delete(ia);
        cJSON_Delete(ib);
    }
    const char *others[] = {"tokenizer.json", "generation_config.json", "extra/notes.txt",
                            "tokenizer.model", NULL};
    for (int i = 0; others[i]; i++) {
        snprintf(pa, sizeof pa, "%s/%s", in, others[i]);
        snprintf(pb, sizeof pb, "%s/%s", out, others[i]);
        CHECK_MSG(same_file(pa, pb), "%s not copied", pb);
    }
    struct stat st;
    snprintf(pb, sizeof pb, "%s/tokenizer.model", out);
    CHECK(lstat(pb, &st) == 0 && S_ISREG(st.st_mode)); /* the link's content, not the link */
done:
    mp_st_model_free(a);
    mp_st_model_free(b);
}

static void refused(const char *in, const mp_dropmap *m, const mp_prune_params *p,
                    mp_status want, const char *needle) {
    char out[600];
    snprintf(out, sizeof out, "%s/refused", outs);
    mp_err err = {0};
    mp_status s = mp_prune_safetensors(in, m, out, p, &err);
    CHECK_MSG(s == want && strstr(err.msg, needle), "expected %s with '%s', got %s: %s",
              mp_status_name(want), needle, mp_status_name(s), err.msg);
    CHECK_MSG(dir_entries(outs) == 0, "%s: refusal left %d entries", outs, dir_entries(outs));
}

/* A full disk: the write limit makes write() fail with EFBIG part way. */
static void full_disk(const char *in, const mp_dropmap *m) {
    char out[600];
    snprintf(out, sizeof out, "%s/full", outs);
    pid_t pid = fork();
    if (pid == 0) {
        signal(SIGXFSZ, SIG_IGN);
        struct rlimit rl = {.rlim_cur = 16384, .rlim_max = 16384};
        setrlimit(RLIMIT_FSIZE, &rl);
        mp_err err = {0};
        mp_status s = mp_prune_safetensors(in, m, out, NULL, &err);
        _exit(s == MP_ERR_IO && strstr(err.msg, "full") ? 0 : 1);
    }
    int st = 0;
    waitpid(pid, &st, 0);
    CHECK_MSG(WIFEXITED(st) && WEXITSTATUS(st) == 0, "full disk: child status %d", st);
    CHECK_INT(0, dir_entries(outs));
}

/* Snapshot of the input's shard bytes, to show the input never changes. */
static uint64_t shard_sum(const char *d) {
    char p[600];
    uint64_t h = 1469598103934665603ull;
    const char *names[] = {SHARD1, SHARD2, "model.safetensors", "config.json",
                           "model.safetensors.index.json", NULL};
    for (int i = 0; names[i]; i++) {
        snprintf(p, sizeof p, "%s/%s", d, names[i]);
        size_t n = 0;
        char *x = mp_test_read_file(p, &n);
        for (size_t j = 0; x && j < n; j++) h = (h ^ (uint8_t)x[j]) * 1099511628211ull;
        free(x);
    }
    return h;
}

/* ------------------------------------------------------------------------ */

int main(int argc, char **argv) {
    rng = mp_test_seed(argc, argv);
    CHECK(mp_test_tmpdir(root, sizeof root, "prune-st") != NULL);
    snprintf(outs, sizeof outs, "%s/outs", root);
    mkdir(outs, 0755);
    char in[600], out[800], out2[800], out3[800];
    mp_err err = {0};
    fx_opts o = {.sharded = true, .down_dtype = MP_ST_BF16, .config = config_gemma4};
    snprintf(in, sizeof in, "%s/gemma4", root);
    make_fixture(in, &o);
    uint64_t before = shard_sum(in);
    mp_dropmap *m4 = make_map(N_LAYER, N_EXPERT, 2, keep4, n4);
    CHECK(m4 != NULL);
    if (!m4) return mp_test_end("test_prune_st");

    /* sharded checkpoint: prune and check everything */
    snprintf(out, sizeof out, "%s/p4", outs);
    CHECK_STATUS(MP_OK, mp_prune_safetensors(in, m4, out, NULL, &err), &err);
    check_pruned(in, out, m4, m4, true);
    mp_dropmap *rec = NULL;
    CHECK_STATUS(MP_OK, mp_dropmap_from_safetensors(out, &rec, &err), &err);
    CHECK(rec && rec->n_layers == N_LAYER && rec->layers[1].keep[3] == 7);
    mp_dropmap_free(rec);
    CHECK_STATUS(MP_ERR_NOT_FOUND, mp_dropmap_from_safetensors(in, &rec, &err), &err);

    /* a second prune (4 -> 2) records ids of the original 8, and equals one
     * prune with that composed map */
    static const int j0[] = {1, 3}, j1[] = {0, 2}, j2[] = {2, 3};
    static const int *const keep2[] = {j0, j1, j2};
    static const int n2[] = {2, 2, 2};
    mp_dropmap *m2 = make_map(N_LAYER, 4, 2, keep2, n2);
    snprintf(out2, sizeof out2, "%s/p2", outs);
    snprintf(out3, sizeof out3, "%s/direct2", outs);
    CHECK_STATUS(MP_OK, mp_prune_safetensors(out, m2, out2, NULL, &err), &err);
    rec = NULL;
    CHECK_STATUS(MP_OK, mp_dropmap_from_safetensors(out2, &rec, &err), &err);
    if (rec) {
        CHECK_INT(N_EXPERT, rec->n_expert);
        for (int l = 0; l < N_LAYER; l++)
            for (int k = 0; k < 2; k++) CHECK_INT(keep4[l][keep2[l][k]], rec->layers[l].keep[k]);
        CHECK_STATUS(MP_OK, mp_prune_safetensors(in, rec, out3, NULL, &err), &err);
        check_pruned(in, out3, rec, rec, true);
        const char *files[] = {SHARD1, SHARD2, "config.json", "model.safetensors.index.json",
                               NULL};
        for (int i = 0; files[i]; i++) {
            char a[900], b[900];
            snprintf(a, sizeof a, "%s/%s", out2, files[i]);
            snprintf(b, sizeof b, "%s/%s", out3, files[i]);
            CHECK_MSG(same_file(a, b), "%s differs from %s", a, b);
        }
    }
    mp_dropmap_free(rec);
    mp_dropmap_free(m2);
    rm_rf(out2);
    rm_rf(out3);

    /* an existing output: refused, or replaced with overwrite */
    mp_prune_params p = {0};
    CHECK_STATUS(MP_ERR_ARG, mp_prune_safetensors(in, m4, out, &p, &err), &err);
    CHECK(strstr(err.msg, "exists") != NULL);
    char marker[900];
    snprintf(marker, sizeof marker, "%s/stale.txt", out);
    write_text(marker, "old");
    p.overwrite = true;
    CHECK_STATUS(MP_OK, mp_prune_safetensors(in, m4, out, &p, &err), &err);
    CHECK(access(marker, F_OK) != 0);
    check_pruned(in, out, m4, m4, true);
    CHECK_INT(1, dir_entries(outs));
    rm_rf(out);

    /* refusals: nothing left behind */
    p = (mp_prune_params){0};
    mp_dropmap *bad = make_map(4, N_EXPERT, 2, keep4, n4);
    refused(in, bad, &p, MP_ERR_CHECK, "for 4 layers");
    mp_dropmap_free(bad);
    static const int w0[] = {0, 1, 2, 3};
    static const int *const keep16[] = {w0, w0, w0};
    bad = make_map(N_LAYER, 16, 2, keep16, n4);
    refused(in, bad, &p, MP_ERR_CHECK, "covers 16 experts");
    mp_dropmap_free(bad);
    static const int one[] = {3};
    static const int *const keep1[] = {one, one, one};
    static const int n1[] = {1, 1, 1};
    bad = make_map(N_LAYER, N_EXPERT, 1, keep1, n1);
    refused(in, bad, &p, MP_ERR_CHECK, "fewer than the 2 used per token");
    mp_dropmap_free(bad);
    static const int r1[] = {0, 1, 2, 3, 4};
    static const int *const ragged2[] = {w0, r1, w0};
    static const int nr2[] = {4, 5, 4};
    bad = make_map(N_LAYER, N_EXPERT, 2, ragged2, nr2);
    refused(in, bad, &p, MP_ERR_ARG, "one expert count for every layer");
    mp_dropmap_free(bad);
    p.mode = MP_PRUNE_ZERO;
    refused(in, m4, &p, MP_ERR_UNSUPPORTED, "--mode zero");
    p = (mp_prune_params){.target = MP_TARGET_MOEPRUNE};
    refused(in, m4, &p, MP_ERR_UNSUPPORTED, "--target moeprune");
    p = (mp_prune_params){0};
    int n_in = dir_entries(in);
    snprintf(out, sizeof out, "%s/inside", in);
    CHECK_STATUS(MP_ERR_ARG, mp_prune_safetensors(in, m4, out, &p, &err), &err);
    CHECK(strstr(err.msg, "inside") != NULL);
    CHECK_INT(n_in, dir_entries(in));
    CHECK_STATUS(MP_ERR_ARG, mp_prune_safetensors(in, m4, in, &p, &err), &err);
    /* --force never replaces a folder that is not a checkpoint, nor "." */
    p.overwrite = true;
    snprintf(out, sizeof out, "%s/plain", root);
    mkdir(out, 0755);
    CHECK_STATUS(MP_ERR_ARG, mp_prune_safetensors(in, m4, out, &p, &err), &err);
    CHECK(strstr(err.msg, "not a safetensors checkpoint folder") != NULL);
    CHECK(rmdir(out) == 0);
    CHECK_STATUS(MP_ERR_ARG, mp_prune_safetensors(in, m4, ".", &p, &err), &err);
    p.overwrite = false;
    snprintf(out, sizeof out, "%s/no/such/folder", root);
    CHECK_STATUS(MP_ERR_IO, mp_prune_safetensors(in, m4, out, &p, &err), &err);
    full_disk(in, m4);

    /* allocation failures: reported, nothing left behind */
    snprintf(out, sizeof out, "%s/p4", outs);
    int fails = 0;
    for (long k = 1; k < 100000; k++) {
        mp_malloc_fail_at(k);
        mp_status s = mp_prune_safetensors(in, m4, out, &p, &err);
        mp_malloc_fail_at(0);
        if (s == MP_OK) break;
        fails++;
        CHECK_STATUS(MP_ERR_NOMEM, s, &err);
        CHECK_INT(0, dir_entries(outs));
    }
    CHECK(fails > 10);
    check_pruned(in, out, m4, m4, true);
    rm_rf(out);
    CHECK_MSG(before == shard_sum(in), "%s changed", in);

    /* one model.safetensors in a folder, and the same file by name */
    char single[600];
    snprintf(single, sizeof single, "%s/single", root);
    o.sharded = false;
    make_fixture(single, &o);
    snprintf(out, sizeof out, "%s/s4", outs);
    CHECK_STATUS(MP_OK, mp_prune_safetensors(single, m4, out, &p, &err), &err);
    check_pruned(single, out, m4, m4, false);
    rm_rf(out);
    char file[700];
    snprintf(file, sizeof file, "%s/model.safetensors", single);
    snprintf(out, sizeof out, "%s/s4.safetensors", outs);
    CHECK_STATUS(MP_OK, mp_prune_safetensors(file, m4, out, &p, &err), &err);
    mp_st_model *a = NULL, *b = NULL;
    CHECK_STATUS(MP_OK, mp_st_model_open(&a, file, &err), &err);
    CHECK_STATUS(MP_OK, mp_st_model_open(&b, out, &err), &err);
    if (a && b) {
        const mp_st_tensor *ta = mp_st_model_find(a, PFX "1.experts.down_proj", NULL);
        const mp_st_tensor *tb = mp_st_model_find(b, PFX "1.experts.down_proj", NULL);
        CHECK(ta && tb && tb->shape[0] == 4);
        uint64_t slab = ta ? ta->nbytes / N_EXPERT : 0;
        for (int k = 0; ta && tb && k < 4; k++)
            CHECK(!memcmp((const uint8_t *)tb->data + k * slab,
                          (const uint8_t *)ta->data + keep4[1][k] * slab, slab));
        CHECK_INT(mp_st_model_n_tensors(a), mp_st_model_n_tensors(b));
    }
    mp_st_model_free(a);
    mp_st_model_free(b);
    unlink(out);
    rm_rf(single);

    /* checkpoints that must be refused */
    struct {
        fx_opts o;
        mp_status want;
        const char *needle;
    } variants[] = {
        {{.sharded = true, .down_dtype = MP_ST_F8_E4M3, .config = config_gemma4},
         MP_ERR_UNSUPPORTED, "is F8_E4M3: only BF16, F16 and F32"},
        {{.sharded = true, .down_dtype = MP_ST_BF16, .config = config_gemma4,
          .module_layout = true}, MP_ERR_UNSUPPORTED, "own module"},
        {{.sharded = true, .down_dtype = MP_ST_BF16, .config = config_gemma4,
          .nan_router = true}, MP_ERR_CHECK, "not finite"},
        {{.sharded = true, .down_dtype = MP_ST_BF16,
          .config = "{\"model_type\": \"llama\", \"num_experts\": 8}"},
         MP_ERR_CHECK, "architecture 'gemma4'"},
        {{.sharded = true, .down_dtype = MP_ST_BF16,
          .config = "{\"model_type\": \"gemma4\", \"text_config\": {\"num_hidden_layers\": 3}}"},
         MP_ERR_NOT_FOUND, "names no expert count"},
        {{.sharded = true, .down_dtype = MP_ST_BF16,
          .config = "{\"model_type\": \"gemma4\", \"num_hidden_layers\": 4, \"num_experts\": 8}"},
         MP_ERR_CHECK, "for 3 layers but"},
        {{.sharded = true, .down_dtype = MP_ST_BF16, .config = "{\"num_experts\": 8,"},
         MP_ERR_FORMAT, "not a JSON object"},
    };
    for (size_t i = 0; i < sizeof variants / sizeof variants[0]; i++) {
        char v[600];
        snprintf(v, sizeof v, "%s/variant", root);
        make_fixture(v, &variants[i].o);
        uint64_t h = shard_sum(v);
        refused(v, m4, &p, variants[i].want, variants[i].needle);
        CHECK_MSG(h == shard_sum(v), "variant %zu: input changed", i);
        rm_rf(v);
    }

    /* no config.json: the shards are still pruned */
    o = (fx_opts){.sharded = true, .down_dtype = MP_ST_F32};
    snprintf(single, sizeof single, "%s/noconfig", root);
    make_fixture(single, &o);
    snprintf(out, sizeof out, "%s/nc", outs);
    CHECK_STATUS(MP_OK, mp_prune_safetensors(single, m4, out, &p, &err), &err);
    mp_st_model *nc = NULL;
    CHECK_STATUS(MP_OK, mp_st_model_open(&nc, out, &err), &err);
    if (nc) {
        const mp_st_tensor *t = mp_st_model_find(nc, PFX "2.experts.down_proj", NULL);
        CHECK(t && t->dtype == MP_ST_F32 && t->shape[0] == 4);
    }
    mp_st_model_free(nc);
    rm_rf(out);
    rm_rf(single);

    mp_dropmap_free(m4);
    rm_rf(root);
    return mp_test_end("test_prune_st");
}
