/* cmd_inspect.c — `moeprune inspect FILE [--json]`: what a GGUF file holds.
 *
 * Human output: file facts, architecture and hyper-parameters, tokenizer, the
 * tensor table, and a MoE summary with the size left after keeping K experts
 * per layer. `--json` prints one object with every metadata key (long arrays
 * summarised by element type and length) and every tensor's name, type, ne
 * (GGUF order), offset and bytes. Reads only the header and the tensor table:
 * no tensor data is touched. */
#include <cjson/cJSON.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "arch/arch.h"
#include "cli/cli.h"

/* Arrays up to this length are printed in full; longer ones are summarised. */
#define INSPECT_MAX_ARRAY 64

static const char *const help =
    "usage: moeprune inspect FILE [--json]\n"
    "\n"
    "Shows a GGUF file: architecture, hyper-parameters, tokenizer, every tensor\n"
    "(name, type, shape in GGUF order, bytes) and a MoE summary (MoE layers,\n"
    "experts per layer, experts used per token, bytes in expert tensors, and the\n"
    "file size if every layer kept K experts).\n"
    "\n"
    "  --json   one JSON object: {\"file\", \"metadata\": {key: value...},\n"
    "           \"tensors\": [{\"name\", \"type\", \"ne\", \"offset\", \"bytes\"}], \"moe\"}\n"
    "\n"
    "example:\n"
    "  moeprune inspect gemma-4-26B-A4B-Q4_K_M.gguf\n"
    "  moeprune inspect model.gguf --json | jq '.tensors | length'\n";

/* Replaces bytes that are not valid UTF-8 with '?', so JSON stays valid. */
static char *utf8_clean(const char *s, size_t n) {
    char *d = malloc(n + 1);
    if (!d) return NULL;
    size_t i = 0, o = 0;
    while (i < n) {
        unsigned char c = (unsigned char)s[i];
        size_t len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
        bool ok = len > 0 && c != 0 && i + len <= n;
        for (size_t k = 1; ok && k < len; k++) ok = ((unsigned char)s[i + k] >> 6) == 2;
        if (!ok) {
            d[o++] = '?';
            i++;
            continue;
        }
        memcpy(d + o, s + i, len);
        o += len;
        i += len;
    }
    d[o] = 0;
    return d;
}

/* One element of KV i as a JSON item. */
static cJSON *element_json(const mp_gguf *g, int64_t i, uint64_t j, mp_gguf_vtype t) {
    switch (t) {
    case MP_GGUF_FLOAT32:
    case MP_GGUF_FLOAT64: {
        double v = 0;
        mp_gguf_get_float(g, i, j, &v, NULL);
        return cJSON_CreateNumber(v);
    }
    case MP_GGUF_BOOL: {
        bool v = false;
        mp_gguf_get_bool(g, i, j, &v, NULL);
        return cJSON_CreateBool(v);
    }
    case MP_GGUF_STRING: {
        const char *s = "";
        size_t n = 0;
        mp_gguf_get_str(g, i, j, &s, &n, NULL);
        char *c = utf8_clean(s, n);
        cJSON *r = cJSON_CreateString(c ? c : "");
        free(c);
        return r;
    }
    case MP_GGUF_UINT64: {
        uint64_t v = 0;
        mp_gguf_get_uint(g, i, j, &v, NULL);
        return cJSON_CreateNumber((double)v);
    }
    default: {
        int64_t v = 0;
        mp_gguf_get_int(g, i, j, &v, NULL);
        return cJSON_CreateNumber((double)v);
    }
    }
}

static cJSON *kv_json(const mp_gguf *g, int64_t i) {
    mp_gguf_vtype t = mp_gguf_kv_type(g, i);
    if (t != MP_GGUF_ARRAY) return element_json(g, i, 0, t);
    mp_gguf_vtype et = mp_gguf_arr_type(g, i);
    uint64_t n = mp_gguf_arr_len(g, i);
    if (n > INSPECT_MAX_ARRAY) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "type", "array");
        cJSON_AddStringToObject(o, "element_type", mp_gguf_vtype_name(et));
        cJSON_AddNumberToObject(o, "length", (double)n);
        return o;
    }
    cJSON *a = cJSON_CreateArray();
    for (uint64_t j = 0; j < n; j++) cJSON_AddItemToArray(a, element_json(g, i, j, et));
    return a;
}

static cJSON *moe_json(const mp_moe_info *m) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "n_layer", (double)m->n_layer);
    cJSON_AddNumberToObject(o, "n_moe_layers", (double)m->n_moe_layers);
    cJSON_AddNumberToObject(o, "n_expert", (double)m->n_expert);
    cJSON_AddNumberToObject(o, "n_expert_used", (double)m->n_expert_used);
    cJSON_AddBoolToObject(o, "uniform", m->uniform);
    cJSON *per = cJSON_AddArrayToObject(o, "experts_per_layer");
    for (int64_t l = 0; l < m->n_layer; l++)
        cJSON_AddItemToArray(per, cJSON_CreateNumber((double)m->layers[l].n_expert));
    cJSON_AddNumberToObject(o, "bytes_experts", (double)m->bytes_experts);
    cJSON_AddNumberToObject(o, "bytes_router", (double)m->bytes_router);
    cJSON_AddNumberToObject(o, "bytes_other", (double)m->bytes_other);
    return o;
}

static int print_json(const mp_gguf *g, const mp_moe_info *m) {
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "file", mp_gguf_path(g));
    cJSON_AddNumberToObject(root, "file_size", (double)mp_gguf_file_size(g));
    cJSON_AddNumberToObject(root, "version", mp_gguf_version(g));
    cJSON_AddNumberToObject(root, "alignment", mp_gguf_alignment(g));
    cJSON_AddNumberToObject(root, "data_offset", (double)mp_gguf_data_offset(g));
    cJSON_AddStringToObject(root, "architecture", m->arch);
    cJSON *md = cJSON_AddObjectToObject(root, "metadata");
    for (int64_t i = 0; i < mp_gguf_n_kv(g); i++) {
        const char *key = mp_gguf_key(g, i);
        char *clean = utf8_clean(key, strlen(key));
        cJSON_AddItemToObject(md, clean ? clean : "?", kv_json(g, i));
        free(clean);
    }
    cJSON *ts = cJSON_AddArrayToObject(root, "tensors");
    for (int64_t i = 0; i < mp_gguf_n_tensors(g); i++) {
        const mp_gguf_tensor *t = mp_gguf_tensor_at(g, i);
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "name", t->name);
        cJSON_AddStringToObject(o, "type", mp_type_name(t->type));
        cJSON *ne = cJSON_AddArrayToObject(o, "ne");
        for (uint32_t d = 0; d < t->n_dims; d++)
            cJSON_AddItemToArray(ne, cJSON_CreateNumber((double)t->ne[d]));
        cJSON_AddNumberToObject(o, "offset", (double)t->offset);
        cJSON_AddNumberToObject(o, "bytes", (double)t->nbytes);
        cJSON_AddItemToArray(ts, o);
    }
    cJSON_AddItemToObject(root, "moe", moe_json(m));
    return cli_print_json("inspect", root);
}

/* ------------------------------------------------------------------------ */
/* Human output                                                             */
/* ------------------------------------------------------------------------ */

static void print_bytes(uint64_t b) {
    if (b >= (1ull << 30))
        printf("%.2f GiB", (double)b / (1ull << 30));
    else if (b >= (1ull << 20))
        printf("%.2f MiB", (double)b / (1ull << 20));
    else if (b >= 1024)
        printf("%.1f KiB", (double)b / 1024);
    else
        printf("%" PRIu64 " B", b);
}

/* Prints a value on one line: arrays up to 16 elements in full. */
static void print_value(const mp_gguf *g, int64_t i) {
    cJSON *v = kv_json(g, i);
    mp_gguf_vtype t = mp_gguf_kv_type(g, i);
    if (t == MP_GGUF_ARRAY && mp_gguf_arr_len(g, i) > 16) {
        printf("[%s x %" PRIu64 "]", mp_gguf_vtype_name(mp_gguf_arr_type(g, i)),
               mp_gguf_arr_len(g, i));
    } else {
        char *s = cJSON_PrintUnformatted(v);
        if (s && strlen(s) > 200) strcpy(s + 197, "...");
        printf("%s", s ? s : "?");
        free(s);
    }
    cJSON_Delete(v);
}

static void print_shape(const mp_gguf_tensor *t, char *buf, size_t n) {
    int o = snprintf(buf, n, "{");
    for (uint32_t d = 0; d < t->n_dims && o > 0 && (size_t)o < n; d++)
        o += snprintf(buf + o, n - (size_t)o, "%s%" PRId64, d ? ", " : "", t->ne[d]);
    if (o > 0 && (size_t)o < n) snprintf(buf + o, n - (size_t)o, "}");
}

static void print_moe(const mp_moe_info *m, uint64_t data_bytes) {
    printf("\nMoE summary\n");
    if (m->n_moe_layers == 0) {
        printf("  no MoE layers (no blk.N.ffn_gate_inp.weight or *_exps tensors)\n");
        return;
    }
    printf("  MoE layers:            %" PRId64 " of %" PRId64 "\n", m->n_moe_layers, m->n_layer);
    if (m->uniform) {
        int64_t x = 0;
        for (int64_t l = 0; l < m->n_layer && !x; l++) x = m->layers[l].n_expert;
        printf("  experts per layer:     %" PRId64 "%s\n", x,
               m->n_expert && m->n_expert != x ? " (metadata disagrees!)" : "");
    } else {
        printf("  experts per layer:     non-uniform:");
        for (int64_t l = 0; l < m->n_layer; l++) printf(" %" PRId64, m->layers[l].n_expert);
        printf("\n");
    }
    printf("  experts used per token: %" PRId64 "\n", m->n_expert_used);
    printf("  expert tensors:        ");
    print_bytes(m->bytes_experts);
    printf(" (%.1f%% of tensor data)\n  routers:               ", 100.0 * (double)m->bytes_experts /
           (double)(data_bytes ? data_bytes : 1));
    print_bytes(m->bytes_router);
    printf("\n  everything else:       ");
    print_bytes(m->bytes_other);
    printf("\n  keeping K experts per layer leaves (tensor data):\n");
    int64_t max_x = 0;
    for (int64_t l = 0; l < m->n_layer; l++)
        if (m->layers[l].n_expert > max_x) max_x = m->layers[l].n_expert;
    int64_t ks[8], nk = 0;
    for (int64_t k = max_x; k >= 1 && nk < 6; k /= 2) ks[nk++] = k;
    for (int64_t i = 0; i < nk; i++) {
        if (ks[i] < m->n_expert_used) break;
        uint64_t b = mp_moe_bytes_keeping(m, ks[i]);
        printf("    K = %-5" PRId64 " ", ks[i]);
        print_bytes(b);
        printf("  (%.1f%%)\n", 100.0 * (double)b / (double)(data_bytes ? data_bytes : 1));
    }
}

static void print_human(const mp_gguf *g, const mp_moe_info *m) {
    uint64_t data_bytes = 0;
    for (int64_t i = 0; i < mp_gguf_n_tensors(g); i++)
        data_bytes += mp_gguf_tensor_at(g, i)->nbytes;
    printf("file:          %s\n", mp_gguf_path(g));
    printf("size:          ");
    print_bytes(mp_gguf_file_size(g));
    printf(" (%" PRIu64 " bytes), GGUF v%" PRIu32 ", alignment %" PRIu32 "\n",
           mp_gguf_file_size(g), mp_gguf_version(g), mp_gguf_alignment(g));
    printf("tensors:       %" PRId64 " (", mp_gguf_n_tensors(g));
    print_bytes(data_bytes);
    printf(")\nmetadata keys: %" PRId64 "\n", mp_gguf_n_kv(g));
    printf("architecture:  %s\n", m->arch[0] ? m->arch : "(none)");

    printf("\nmetadata\n");
    for (int64_t i = 0; i < mp_gguf_n_kv(g); i++) {
        printf("  %-48s ", mp_gguf_key(g, i));
        print_value(g, i);
        printf("\n");
    }

    printf("\ntensors\n  %-40s %-8s %-24s %12s\n", "name", "type", "shape (ne)", "bytes");
    for (int64_t i = 0; i < mp_gguf_n_tensors(g); i++) {
        const mp_gguf_tensor *t = mp_gguf_tensor_at(g, i);
        char shape[96];
        print_shape(t, shape, sizeof shape);
        printf("  %-40s %-8s %-24s %12" PRIu64 "\n", t->name, mp_type_name(t->type), shape,
               t->nbytes);
    }
    print_moe(m, data_bytes);
}

int cmd_inspect(int argc, char **argv) {
    static const struct option opts[] = {
        {"json", no_argument, NULL, 'j'}, {"help", no_argument, NULL, 'h'}, {0, 0, 0, 0}};
    bool json = false;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "jh", opts, NULL)) != -1) {
        if (c == 'j') json = true;
        else if (c == 'h') {
            fputs(help, stdout);
            return MP_EXIT_OK;
        } else
            return cli_usage_error("inspect", "unknown option");
    }
    if (optind != argc - 1)
        return cli_usage_error("inspect", "expected one FILE, got %d arguments", argc - optind);
    mp_err err = {0};
    mp_gguf *g = NULL;
    mp_moe_info *m = NULL;
    if (mp_gguf_open(&g, argv[optind], &err) || mp_moe_scan(g, &m, &err)) {
        mp_gguf_free(g);
        return cli_fail("inspect", &err);
    }
    int rc = MP_EXIT_OK;
    if (json)
        rc = print_json(g, m);
    else
        print_human(g, m);
    mp_moe_info_free(m);
    mp_gguf_free(g);
    return rc;
}
