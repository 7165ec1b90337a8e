/* chat.c — chat prompts and the thinking/answer splitter.
 *
 * We do not run Jinja. Each family's published template is rendered by hand
 * for the message shapes mp_chat_msg can express (text turns, one tool call
 * per assistant message, tool results); tool declarations and images are
 * outside that. References: llama.cpp's models/templates/google-gemma-4-31B-
 * it.jinja for Gemma 4 (spec: ../docs/gemma4-gguf-spec.md section 6.3) and
 * models/templates/Qwen-Qwen3-0.6B.jinja for ChatML. The tests pin the exact
 * strings. */
#include <string.h>

#include "tokenizer/tokenizer.h"
#include "util/util.h"

const char *mp_chat_family_name(int family) {
    switch (family) {
    case MP_CHAT_GEMMA4: return "gemma4";
    case MP_CHAT_CHATML: return "chatml";
    default: return "?";
    }
}

int mp_chat_family_from_name(const char *name) {
    for (int f = 0; f < MP_CHAT_FAMILY_COUNT; f++)
        if (!strcmp(name, mp_chat_family_name(f))) return f;
    return -1;
}

const char *mp_chat_role_name(int role) {
    static const char *const names[MP_CHAT_ROLE_COUNT] = {"system", "user", "assistant", "tool"};
    return role >= 0 && role < MP_CHAT_ROLE_COUNT ? names[role] : "?";
}

static bool has_token(const mp_vocab *v, const char *text) {
    return mp_vocab_find(v, text, strlen(text)) != MP_TOKEN_NULL;
}

mp_status mp_chat_detect(const mp_vocab *v, mp_chat_family *out, mp_err *err) {
    const char *t = mp_vocab_chat_template(v);
    if (t && strstr(t, "<|turn>")) {
        *out = MP_CHAT_GEMMA4;
    } else if (t && strstr(t, "<|im_start|>")) {
        *out = MP_CHAT_CHATML;
    } else if (has_token(v, "<|turn>") && has_token(v, "<turn|>")) {
        *out = MP_CHAT_GEMMA4; /* fallback: no template, or one we do not know */
    } else if (has_token(v, "<|im_start|>") && has_token(v, "<|im_end|>")) {
        *out = MP_CHAT_CHATML;
    } else {
        return mp_err_set(err, MP_ERR_UNSUPPORTED, "chat format: %s, and the vocabulary has "
                          "neither <|turn>/<turn|> (Gemma 4) nor <|im_start|>/<|im_end|> "
                          "(ChatML) tokens; name the format explicitly",
                          t ? "tokenizer.chat_template is of no known family"
                            : "no tokenizer.chat_template");
    }
    return MP_OK;
}

mp_chat_think mp_chat_think_markers(mp_chat_family family, const mp_vocab *v) {
    mp_chat_think m = {"<|channel>", "<channel|>", MP_TOKEN_NULL, MP_TOKEN_NULL};
    if (family == MP_CHAT_CHATML) {
        m.open = "<think>";
        m.close = "</think>";
    }
    if (v) {
        m.open_id = mp_vocab_find(v, m.open, strlen(m.open));
        m.close_id = mp_vocab_find(v, m.close, strlen(m.close));
    }
    return m;
}

/* ------------------------------------------------------------------------ */
/* Text helpers                                                             */
/* ------------------------------------------------------------------------ */

/* A string builder that remembers an allocation failure. */
typedef struct sbuf {
    mp_buf b;
    bool oom;
} sbuf;

static void sb_put(sbuf *s, const char *p, size_t n) {
    if (!s->oom && !mp_buf_append(&s->b, p, n)) s->oom = true;
}

static void sb_puts(sbuf *s, const char *p) { sb_put(s, p, strlen(p)); }

/* A slice of a message text. */
typedef struct slice {
    const char *p;
    size_t n;
} slice;

static slice slice_of(const char *s) { return (slice){s ? s : "", s ? strlen(s) : 0}; }

static bool is_space(char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

/* Jinja's trim, on ASCII whitespace. */
static slice slice_trim(slice s) {
    while (s.n && is_space(s.p[0])) s.p++, s.n--;
    while (s.n && is_space(s.p[s.n - 1])) s.n--;
    return s;
}

static slice lstrip_nl(slice s) {
    while (s.n && s.p[0] == '\n') s.p++, s.n--;
    return s;
}

static slice rstrip_nl(slice s) {
    while (s.n && s.p[s.n - 1] == '\n') s.n--;
    return s;
}

/* First occurrence of needle in s, or NULL. */
static const char *slice_find(slice s, const char *needle) {
    size_t m = strlen(needle);
    if (m > s.n) return NULL;
    for (size_t i = 0; i + m <= s.n; i++)
        if (s.p[i] == needle[0] && !memcmp(s.p + i, needle, m)) return s.p + i;
    return NULL;
}

/* Last occurrence of needle in s, or NULL. */
static const char *slice_find_last(slice s, const char *needle) {
    size_t m = strlen(needle);
    if (m > s.n) return NULL;
    for (size_t i = s.n - m + 1; i-- > 0;)
        if (s.p[i] == needle[0] && !memcmp(s.p + i, needle, m)) return s.p + i;
    return NULL;
}

static void sb_put_slice(sbuf *s, slice x) { sb_put(s, x.p, x.n); }

/* Checks every message's role and that each tool result answers a call. */
static mp_status check_messages(const mp_chat_msg *msgs, size_t n, bool tools_need_call,
                                mp_err *err) {
    for (size_t i = 0; i < n; i++) {
        if ((int)msgs[i].role < 0 || msgs[i].role >= MP_CHAT_ROLE_COUNT)
            return mp_err_set(err, MP_ERR_ARG, "chat: message %zu has invalid role %d", i,
                              (int)msgs[i].role);
        if (msgs[i].role != MP_CHAT_TOOL || !tools_need_call) continue;
        size_t j = i;
        while (j > 0 && msgs[j - 1].role == MP_CHAT_TOOL) j--;
        if (j == 0 || msgs[j - 1].role != MP_CHAT_ASSISTANT || !msgs[j - 1].tool_name)
            return mp_err_set(err, MP_ERR_ARG, "chat: message %zu is a tool result that "
                              "follows no assistant message calling a tool", i);
    }
    return MP_OK;
}

/* ------------------------------------------------------------------------ */
/* Gemma 4                                                                  */
/* ------------------------------------------------------------------------ */

/* The template's strip_thinking: drops every "<|channel>...<channel|>" span
 * (and an unclosed "<|channel>..." tail), then trims. */
static void put_stripped(sbuf *s, slice text) {
    static const char open[] = "<|channel>", close[] = "<channel|>";
    mp_buf keep = {0};
    sbuf k = {keep, false};
    slice rest = text;
    for (;;) {
        const char *c = slice_find(rest, close);
        slice part = {rest.p, c ? (size_t)(c - rest.p) : rest.n};
        const char *o = slice_find(part, open);
        sb_put(&k, part.p, o ? (size_t)(o - part.p) : part.n);
        if (!c) break;
        rest = (slice){c + sizeof close - 1, rest.n - (size_t)(c - rest.p) - (sizeof close - 1)};
    }
    if (k.oom) s->oom = true;
    else sb_put_slice(s, slice_trim((slice){(const char *)k.b.data, k.b.len}));
    mp_buf_free(&k.b);
}

enum prev_kind { PREV_NONE, PREV_TOOL_CALL, PREV_TOOL_RESPONSE };

static void render_gemma4(sbuf *s, const mp_chat_msg *m, size_t n, mp_chat_params p) {
    bool first_sys = n > 0 && m[0].role == MP_CHAT_SYSTEM;
    if (p.thinking || first_sys) {
        sb_puts(s, "<|turn>system\n");
        if (p.thinking) sb_puts(s, "<|think|>\n");
        if (first_sys) sb_put_slice(s, slice_trim(slice_of(m[0].content)));
        sb_puts(s, "<turn|>\n");
    }
    size_t start = first_sys ? 1 : 0;
    enum prev_kind prev = PREV_NONE;
    for (size_t i = start; i < n; i++) {
        if (m[i].role == MP_CHAT_TOOL) continue; /* written with the call it answers */
        prev = PREV_NONE;
        bool model = m[i].role == MP_CHAT_ASSISTANT;
        /* an assistant message right after an assistant one (tool results
         * between them) continues the same model turn */
        size_t j = i;
        while (j > start && m[j - 1].role == MP_CHAT_TOOL) j--;
        bool same_turn = model && j > start && m[j - 1].role == MP_CHAT_ASSISTANT;
        if (!same_turn) {
            sb_puts(s, "<|turn>");
            sb_puts(s, model ? "model" : mp_chat_role_name(m[i].role));
            sb_puts(s, "\n");
        }
        bool responses = false;
        if (model && m[i].tool_name) {
            sb_puts(s, "<|tool_call>call:");
            sb_puts(s, m[i].tool_name);
            sb_puts(s, "{");
            if (m[i].tool_args) sb_puts(s, m[i].tool_args);
            sb_puts(s, "}<tool_call|>");
            prev = PREV_TOOL_CALL;
            for (size_t k = i + 1; k < n && m[k].role == MP_CHAT_TOOL; k++) {
                sb_puts(s, "<|tool_response>response:");
                sb_puts(s, m[k].tool_name ? m[k].tool_name : m[i].tool_name);
                sb_puts(s, "{value:<|\"|>");
                sb_put_slice(s, slice_of(m[k].content));
                sb_puts(s, "<|\"|>}<tool_response|>");
                responses = true;
                prev = PREV_TOOL_RESPONSE;
            }
        }
        slice content = slice_of(m[i].content);
        if (model)
            put_stripped(s, content);
        else
            sb_put_slice(s, slice_trim(content));
        if (prev == PREV_TOOL_CALL && !responses)
            sb_puts(s, "<|tool_response>");
        else if (!(responses && content.n == 0))
            sb_puts(s, "<turn|>\n");
    }
    if (p.add_generation_prompt && prev != PREV_TOOL_CALL && prev != PREV_TOOL_RESPONSE) {
        sb_puts(s, "<|turn>model\n");
        if (!p.thinking) sb_puts(s, "<|channel>thought\n<channel|>");
    }
}

/* ------------------------------------------------------------------------ */
/* ChatML (Qwen 3)                                                          */
/* ------------------------------------------------------------------------ */

static bool is_wrapped_tool_response(slice c) {
    static const char a[] = "<tool_response>", b[] = "</tool_response>";
    return c.n >= sizeof a - 1 && !memcmp(c.p, a, sizeof a - 1) && c.n >= sizeof b - 1 &&
           !memcmp(c.p + c.n - (sizeof b - 1), b, sizeof b - 1);
}

static void render_chatml_assistant(sbuf *s, const mp_chat_msg *m, bool after_query,
                                    bool last) {
    slice c = slice_of(m->content), reasoning = {"", 0};
    const char *end = slice_find(c, "</think>");
    if (end) {
        const char *after = slice_find_last(c, "</think>") + 8;
        slice head = rstrip_nl((slice){c.p, (size_t)(end - c.p)});
        const char *open = slice_find_last(head, "<think>");
        if (open) head = (slice){open + 7, head.n - (size_t)(open + 7 - head.p)};
        reasoning = lstrip_nl(head);
        c = lstrip_nl((slice){after, c.n - (size_t)(after - c.p)});
    }
    sb_puts(s, "<|im_start|>assistant\n");
    if (after_query && (last || reasoning.n)) {
        sb_puts(s, "<think>\n");
        sb_put_slice(s, lstrip_nl(rstrip_nl(reasoning)));
        sb_puts(s, "\n</think>\n\n");
        sb_put_slice(s, lstrip_nl(c));
    } else {
        sb_put_slice(s, c);
    }
    if (m->tool_name) {
        if (c.n) sb_puts(s, "\n");
        sb_puts(s, "<tool_call>\n{\"name\": \"");
        sb_puts(s, m->tool_name);
        sb_puts(s, "\", \"arguments\": ");
        sb_puts(s, m->tool_args ? m->tool_args : "{}");
        sb_puts(s, "}\n</tool_call>");
    }
    sb_puts(s, "<|im_end|>\n");
}

static void render_chatml(sbuf *s, const mp_chat_msg *m, size_t n, mp_chat_params p) {
    size_t last_query = n ? n - 1 : 0;
    for (size_t i = n; i-- > 0;)
        if (m[i].role == MP_CHAT_USER && !is_wrapped_tool_response(slice_of(m[i].content))) {
            last_query = i;
            break;
        }
    for (size_t i = 0; i < n; i++) {
        switch (m[i].role) {
        case MP_CHAT_SYSTEM:
        case MP_CHAT_USER:
            sb_puts(s, "<|im_start|>");
            sb_puts(s, mp_chat_role_name(m[i].role));
            sb_puts(s, "\n");
            sb_put_slice(s, slice_of(m[i].content));
            sb_puts(s, "<|im_end|>\n");
            break;
        case MP_CHAT_ASSISTANT:
            render_chatml_assistant(s, &m[i], i > last_query, i + 1 == n);
            break;
        default: /* tool results group into one user turn */
            if (i == 0 || m[i - 1].role != MP_CHAT_TOOL) sb_puts(s, "<|im_start|>user");
            sb_puts(s, "\n<tool_response>\n");
            sb_put_slice(s, slice_of(m[i].content));
            sb_puts(s, "\n</tool_response>");
            if (i + 1 == n || m[i + 1].role != MP_CHAT_TOOL) sb_puts(s, "<|im_end|>\n");
        }
    }
    if (p.add_generation_prompt) {
        sb_puts(s, "<|im_start|>assistant\n");
        if (!p.thinking) sb_puts(s, "<think>\n\n</think>\n\n");
    }
}

mp_status mp_chat_render(mp_chat_family family, const mp_chat_msg *msgs, size_t n,
                         mp_chat_params p, char **out, size_t *len, mp_err *err) {
    if (n && !msgs) return mp_err_set(err, MP_ERR_ARG, "chat: messages are NULL");
    if ((int)family < 0 || family >= MP_CHAT_FAMILY_COUNT)
        return mp_err_set(err, MP_ERR_ARG, "chat: invalid format %d", (int)family);
    mp_status st = check_messages(msgs, n, family == MP_CHAT_GEMMA4, err);
    if (st) return st;
    sbuf s = {{0}, false};
    if (family == MP_CHAT_GEMMA4)
        render_gemma4(&s, msgs, n, p);
    else
        render_chatml(&s, msgs, n, p);
    sb_put(&s, "", 1); /* NUL */
    if (s.oom) {
        mp_buf_free(&s.b);
        return mp_err_set(err, MP_ERR_NOMEM, "chat: out of memory rendering %zu messages", n);
    }
    *out = (char *)s.b.data;
    *len = s.b.len - 1;
    return MP_OK;
}

/* ------------------------------------------------------------------------ */
/* Thinking splitter                                                        */
/* ------------------------------------------------------------------------ */

enum split_state {
    SPLIT_ANSWER,   /* looking for the open marker */
    SPLIT_HEADER,   /* Gemma 4: dropping the channel name up to its newline */
    SPLIT_THINKING, /* looking for the close marker */
};

static const char *split_marker(const mp_think_split *s) {
    mp_chat_think m = mp_chat_think_markers(s->family, NULL);
    return s->state == SPLIT_ANSWER ? m.open : m.close;
}

static mp_chat_part split_part(const mp_think_split *s) {
    return s->state == SPLIT_ANSWER ? MP_CHAT_ANSWER : MP_CHAT_THINKING;
}

void mp_think_split_init(mp_think_split *s, mp_chat_family family, bool in_thinking) {
    memset(s, 0, sizeof *s);
    s->family = family;
    s->state = in_thinking ? SPLIT_THINKING : SPLIT_ANSWER;
}

bool mp_think_split_thinking(const mp_think_split *s) { return s->state != SPLIT_ANSWER; }

static void split_marker_done(mp_think_split *s) {
    s->n_hold = 0;
    if (s->state == SPLIT_ANSWER)
        s->state = s->family == MP_CHAT_GEMMA4 ? SPLIT_HEADER : SPLIT_THINKING;
    else
        s->state = SPLIT_ANSWER;
}

/* Adds one byte to the held marker prefix; bytes that can no longer start
 * the marker go out. */
static void split_byte(mp_think_split *s, char c, mp_chat_emit emit, void *user) {
    const char *mk = split_marker(s);
    size_t mlen = strlen(mk);
    s->hold[s->n_hold++] = c;
    for (;;) {
        if (s->n_hold == mlen && !memcmp(s->hold, mk, mlen)) {
            split_marker_done(s);
            return;
        }
        if (!memcmp(s->hold, mk, s->n_hold)) return; /* still a prefix */
        emit(user, split_part(s), s->hold, 1);
        memmove(s->hold, s->hold + 1, --s->n_hold);
        if (!s->n_hold) return;
    }
}

void mp_think_split_push(mp_think_split *s, const char *text, size_t len, mp_chat_emit emit,
                         void *user) {
    size_t i = 0;
    while (i < len) {
        if (s->state == SPLIT_HEADER) {
            /* the name ends at its newline; a '<' means the name was left out */
            while (i < len && text[i] != '\n' && text[i] != '<') i++;
            if (i < len) {
                s->state = SPLIT_THINKING;
                if (text[i] == '\n') i++;
            }
            continue;
        }
        if (!s->n_hold) {
            /* fast path: everything up to the next possible marker start */
            const char *mk = split_marker(s);
            const char *lt = memchr(text + i, mk[0], len - i);
            size_t j = lt ? (size_t)(lt - text) : len;
            if (j > i) emit(user, split_part(s), text + i, j - i);
            i = j;
            if (i == len) break;
        }
        split_byte(s, text[i++], emit, user);
    }
}

void mp_think_split_flush(mp_think_split *s, mp_chat_emit emit, void *user) {
    if (s->n_hold) emit(user, split_part(s), s->hold, s->n_hold);
    s->n_hold = 0;
}
