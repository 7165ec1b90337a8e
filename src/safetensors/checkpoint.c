/* checkpoint.c — a Hugging Face checkpoint: a folder holding either
 * model.safetensors.index.json plus the shard files its weight_map names, or
 * one model.safetensors; or a single .safetensors file given by name.
 *
 * The index is checked against the shards before anything uses it: every
 * shard is a plain file name inside the folder (no path tricks), every
 * weight_map entry names a tensor its shard really holds, every tensor of
 * every shard is listed, and no tensor is in two shards. Shards are mapped
 * read-only by the reader (reader.c). config.json and the other files of the
 * folder are not read here (see surgery/safetensors.c). */
#include <cjson/cJSON.h>
#include <errno.h>
#include <inttypes.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

#include "safetensors/st.h"

#define INDEX_NAME "model.safetensors.index.json"
#define SINGLE_NAME "model.safetensors"

typedef struct st_entry {
    const char *name;
    const mp_st_tensor *t;
    int64_t shard;
} st_entry;

struct mp_st_model {
    char *dir;
    bool is_dir, indexed;
    int64_t n_shards;
    char **shard_names;
    mp_st **shards;
    int64_t n_tensors;
    st_entry *index; /* every tensor, sorted by name */
};

void mp_st_model_free(mp_st_model *m) {
    if (!m) return;
    for (int64_t i = 0; i < m->n_shards; i++) {
        if (m->shards) mp_st_free(m->shards[i]);
        mp_free(m->shard_names[i]);
    }
    mp_free(m->shards);
    mp_free(m->shard_names);
    mp_free(m->index);
    mp_free(m->dir);
    mp_free(m);
}

static bool ends_with(const char *s, const char *suffix) {
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && !strcmp(s + a - b, suffix);
}

bool mp_st_is_checkpoint_path(const char *path) {
    struct stat st;
    if (stat(path, &st) != 0) return false;
    return S_ISDIR(st.st_mode) || (S_ISREG(st.st_mode) && ends_with(path, ".safetensors"));
}

static char *join(const char *dir, const char *name) {
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = mp_malloc(n);
    if (p) snprintf(p, n, "%s/%s", dir, name);
    return p;
}

/* 1: dir/name is a regular file, 0: it is not, -1: out of memory. */
static int file_exists(const char *dir, const char *name) {
    char *p = join(dir, name);
    if (!p) return -1;
    struct stat st;
    int ok = stat(p, &st) == 0 && S_ISREG(st.st_mode);
    mp_free(p);
    return ok;
}

/* A shard name from an index must stay inside the folder. */
static bool plain_name(const char *s) {
    return s[0] && strcmp(s, ".") && strcmp(s, "..") && !strchr(s, '/');
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static int cmp_entry(const void *a, const void *b) {
    return strcmp(((const st_entry *)a)->name, ((const st_entry *)b)->name);
}

static const st_entry *find_entry(const mp_st_model *m, const char *name) {
    int64_t lo = 0, hi = m->n_tensors;
    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2;
        int c = strcmp(m->index[mid].name, name);
        if (c == 0) return &m->index[mid];
        if (c < 0) lo = mid + 1;
        else hi = mid;
    }
    return NULL;
}

/* Opens the named shards (names sorted, unique) and indexes their tensors. */
static mp_status open_shards(mp_st_model *m, mp_err *err) {
    if (!(m->shards = mp_calloc((size_t)(m->n_shards ? m->n_shards : 1), sizeof *m->shards)))
        return mp_err_set(err, MP_ERR_NOMEM, "%s: out of memory", m->dir);
    int64_t total = 0;
    for (int64_t i = 0; i < m->n_shards; i++) {
        char *p = join(m->dir, m->shard_names[i]);
        if (!p) return mp_err_set(err, MP_ERR_NOMEM, "%s: out of memory", m->dir);
        mp_status s = mp_st_open(&m->shards[i], p, err);
        mp_free(p);
        if (s) return s;
        total += mp_st_n_tensors(m->shards[i]);
    }
    if (!(m->index = mp_calloc((size_t)(total ? total : 1), sizeof *m->index)))
        return mp_err_set(err, MP_ERR_NOMEM, "%s: out of memory", m->dir);
    for (int64_t i = 0; i < m->n_shards; i++)
        for (int64_t j = 0; j < mp_st_n_tensors(m->shards[i]); j++) {
            const mp_st_tensor *t = mp_st_tensor_at(m->shards[i], j);
            m->index[m->n_tensors++] = (st_entry){t->name, t, i};
        }
    qsort(m->index, (size_t)m->n_tensors, sizeof *m->index, cmp_entry);
    for (int64_t i = 1; i < m->n_tensors; i++)
        if (!strcmp(m->index[i].name, m->index[i - 1].name))
            return mp_err_set(err, MP_ERR_FORMAT, "%s: tensor '%s' is in both %s and %s", m->dir,
                              m->index[i].name, m->shard_names[m->index[i - 1].shard],
                              m->shard_names[m->index[i].shard]);
    return MP_OK;
}

/* Reads the index: the sorted, unique shard names, then checks the
 * weight_map against what the shards hold. */
static mp_status load_index(mp_st_model *m, mp_err *err) {
    char *path = join(m->dir, INDEX_NAME), *text = NULL;
    size_t len = 0;
    cJSON *root = NULL;
    bool *seen = NULL;
    const char **names = NULL; /* borrowed from the JSON */
    mp_status s;
    if (!path) return mp_err_set(err, MP_ERR_NOMEM, "%s: out of memory", m->dir);
    if ((s = mp_st_read_small(path, &text, &len, err))) goto done;
    if (mp_st_json_values(text, len) > MP_ST_MAX_JSON_VALUES) {
        s = mp_err_set(err, MP_ERR_FORMAT, "%s: more than %lld JSON values", path,
                       MP_ST_MAX_JSON_VALUES);
        goto done;
    }
    if (!(root = cJSON_ParseWithLength(text, len))) {
        s = mp_err_set(err, MP_ERR_FORMAT, "%s: not valid JSON", path);
        goto done;
    }
    const cJSON *wm = cJSON_GetObjectItemCaseSensitive(root, "weight_map");
    if (!cJSON_IsObject(wm)) {
        s = mp_err_set(err, MP_ERR_FORMAT, "%s: \"weight_map\" is missing or not an object",
                       path);
        goto done;
    }
    int64_t n = cJSON_GetArraySize(wm);
    names = mp_calloc((size_t)(n ? n : 1), sizeof *names);
    m->shard_names = mp_calloc((size_t)(n ? n : 1), sizeof *m->shard_names);
    if (!names || !m->shard_names) {
        s = mp_err_set(err, MP_ERR_NOMEM, "%s: out of memory", path);
        goto done;
    }
    int64_t k = 0;
    const cJSON *v;
    cJSON_ArrayForEach(v, wm) {
        if (!cJSON_IsString(v) || !plain_name(v->valuestring)) {
            s = mp_err_set(err, MP_ERR_FORMAT, "%s: weight_map[\"%s\"] is not a file name in the "
                           "folder", path, v->string);
            goto done;
        }
        names[k++] = v->valuestring;
    }
    qsort(names, (size_t)k, sizeof *names, cmp_str);
    for (int64_t i = 0; i < k; i++) {
        if (m->n_shards && !strcmp(names[i], m->shard_names[m->n_shards - 1])) continue;
        if (!(m->shard_names[m->n_shards] = mp_strdup(names[i]))) {
            s = mp_err_set(err, MP_ERR_NOMEM, "%s: out of memory", path);
            goto done;
        }
        m->n_shards++;
    }
    if ((s = open_shards(m, err))) goto done;
    if (!(seen = mp_calloc((size_t)(m->n_tensors ? m->n_tensors : 1), sizeof *seen))) {
        s = mp_err_set(err, MP_ERR_NOMEM, "%s: out of memory", path);
        goto done;
    }
    cJSON_ArrayForEach(v, wm) {
        const st_entry *e = find_entry(m, v->string);
        if (!e || strcmp(m->shard_names[e->shard], v->valuestring)) {
            s = mp_err_set(err, MP_ERR_FORMAT, "%s: weight_map puts '%s' in %s, which does not "
                           "hold it", path, v->string, v->valuestring);
            goto done;
        }
        if (seen[e - m->index]) {
            s = mp_err_set(err, MP_ERR_FORMAT, "%s: weight_map lists '%s' twice", path, v->string);
            goto done;
        }
        seen[e - m->index] = true;
    }
    for (int64_t i = 0; i < m->n_tensors; i++)
        if (!seen[i]) {
            s = mp_err_set(err, MP_ERR_FORMAT, "%s: %s holds tensor '%s', which the weight_map "
                           "does not list", path, m->shard_names[m->index[i].shard],
                           m->index[i].name);
            goto done;
        }
done:
    mp_free(names);
    mp_free(seen);
    cJSON_Delete(root);
    mp_free(text);
    mp_free(path);
    return s;
}

mp_status mp_st_model_open(mp_st_model **out, const char *path, mp_err *err) {
    struct stat st;
    if (stat(path, &st) != 0)
        return mp_err_set(err, MP_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    mp_st_model *m = mp_calloc(1, sizeof *m);
    if (!m) return mp_err_set(err, MP_ERR_NOMEM, "%s: out of memory", path);
    mp_status s = MP_OK;
    if (S_ISDIR(st.st_mode)) {
        m->is_dir = true;
        int has_index = file_exists(path, INDEX_NAME);
        int has_single = has_index ? 0 : file_exists(path, SINGLE_NAME);
        if (!(m->dir = mp_strdup(path)) || has_index < 0 || has_single < 0) goto nomem;
        if (has_index) {
            m->indexed = true;
            s = load_index(m, err);
        } else if (has_single) {
            if (!(m->shard_names = mp_calloc(1, sizeof *m->shard_names))) goto nomem;
            m->n_shards = 1;
            if (!(m->shard_names[0] = mp_strdup(SINGLE_NAME))) goto nomem;
            s = open_shards(m, err);
        } else {
            s = mp_err_set(err, MP_ERR_NOT_FOUND, "%s: a folder without %s or %s: not a "
                           "safetensors checkpoint", path, INDEX_NAME, SINGLE_NAME);
        }
    } else if (S_ISREG(st.st_mode) && ends_with(path, ".safetensors")) {
        char *dcopy = mp_strdup(path), *bcopy = mp_strdup(path);
        if (dcopy && bcopy) {
            m->dir = mp_strdup(dirname(dcopy));
            if ((m->shard_names = mp_calloc(1, sizeof *m->shard_names))) {
                m->n_shards = 1;
                m->shard_names[0] = mp_strdup(basename(bcopy));
            }
        }
        mp_free(dcopy);
        mp_free(bcopy);
        if (!m->dir || !m->shard_names || !m->shard_names[0]) goto nomem;
        s = open_shards(m, err);
    } else {
        s = mp_err_set(err, MP_ERR_ARG, "%s: neither a checkpoint folder nor a .safetensors "
                       "file", path);
    }
    if (s) {
        mp_st_model_free(m);
        return s;
    }
    *out = m;
    return MP_OK;
nomem:
    mp_st_model_free(m);
    return mp_err_set(err, MP_ERR_NOMEM, "%s: out of memory", path);
}

const char *mp_st_model_dir(const mp_st_model *m) { return m->dir; }
bool mp_st_model_is_dir(const mp_st_model *m) { return m->is_dir; }
bool mp_st_model_indexed(const mp_st_model *m) { return m->indexed; }
int64_t mp_st_model_n_shards(const mp_st_model *m) { return m->n_shards; }
int64_t mp_st_model_n_tensors(const mp_st_model *m) { return m->n_tensors; }

const mp_st *mp_st_model_shard(const mp_st_model *m, int64_t i) {
    return i >= 0 && i < m->n_shards ? m->shards[i] : NULL;
}

const char *mp_st_model_shard_name(const mp_st_model *m, int64_t i) {
    return i >= 0 && i < m->n_shards ? m->shard_names[i] : NULL;
}

const mp_st_tensor *mp_st_model_find(const mp_st_model *m, const char *name, int64_t *shard) {
    const st_entry *e = find_entry(m, name);
    if (e && shard) *shard = e->shard;
    return e ? e->t : NULL;
}
