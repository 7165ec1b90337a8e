/* test_chat.c — chat prompts as exact strings, format detection, and the
 * streaming thinking/answer splitter.
 *
 * The Gemma 4 strings follow llama.cpp's models/templates/google-gemma-4-
 * 31B-it.jinja; with thinking on, the system+user prompts here were checked
 * token for token against llama.cpp's own Jinja rendering (llama-completion
 * --jinja --verbose-prompt on the tiny fixture). The ChatML strings follow
 * models/templates/Qwen-Qwen3-0.6B.jinja. */
#include <stdlib.h>
#include <unistd.h>

#include "testutil.h"
#include "util/util.h"

#define SYS(t) {MP_CHAT_SYSTEM, t, NULL, NULL}
#define USER(t) {MP_CHAT_USER, t, NULL, NULL}
#define MODEL(t) {MP_CHAT_ASSISTANT, t, NULL, NULL}
#define CALL(name, args) {MP_CHAT_ASSISTANT, NULL, name, args}
#define TOOL(t) {MP_CHAT_TOOL, t, NULL, NULL}

static void renders(mp_chat_family f, const mp_chat_msg *m, size_t n, bool think, bool gen,
                    const char *want, int line) {
    char *out = NULL;
    size_t len = 0;
    mp_err err = {0};
    mp_status s = mp_chat_render(f, m, n, (mp_chat_params){think, gen}, &out, &len, &err);
    CHECK_MSG(s == MP_OK, "line %d: %s", line, err.msg);
    bool same = out && len == strlen(want) && !strcmp(out, want);
    CHECK_MSG(same, "line %d: rendered\n---\n%s\n--- expected\n%s\n---", line, out ? out : "",
              want);
    mp_free(out);
}

#define RENDERS(f, think, gen, want, ...)                                              \
    do {                                                                               \
        const mp_chat_msg m_[] = {__VA_ARGS__};                                        \
        renders(f, m_, sizeof m_ / sizeof m_[0], think, gen, want, __LINE__);          \
    } while (0)

static void test_gemma4(void) {
    const mp_chat_family G = MP_CHAT_GEMMA4;
    RENDERS(G, false, true,
            "<|turn>user\nHello<turn|>\n<|turn>model\n<|channel>thought\n<channel|>",
            USER("Hello"));
    RENDERS(G, true, true,
            "<|turn>system\n<|think|>\nYou are terse.<turn|>\n<|turn>user\nHi<turn|>\n"
            "<|turn>model\n",
            SYS("You are terse."), USER("Hi"));
    RENDERS(G, false, true,
            "<|turn>system\nYou are terse.<turn|>\n<|turn>user\nHi<turn|>\n<|turn>model\n"
            "<|channel>thought\n<channel|>",
            SYS("  You are terse.\n"), USER("\tHi  "));
    /* thinking on makes a system turn of its own */
    RENDERS(G, true, true,
            "<|turn>system\n<|think|>\n<turn|>\n<|turn>user\nHi there<turn|>\n<|turn>model\n",
            USER("Hi there"));
    /* history: past thinking is dropped, texts trimmed */
    RENDERS(G, false, true,
            "<|turn>user\nWhat is 2+2?<turn|>\n<|turn>model\nThe answer is 4.<turn|>\n"
            "<|turn>user\nAnd 3+3?<turn|>\n<|turn>model\n<|channel>thought\n<channel|>",
            USER("  What is 2+2?  \n"),
            MODEL("<|channel>thought\nadd them<channel|>\nThe answer is 4.\n"),
            USER("And 3+3?"));
    /* two thought blocks and an unclosed one */
    RENDERS(G, true, false,
            "<|turn>system\n<|think|>\n<turn|>\n<|turn>user\nq<turn|>\n<|turn>model\nab<turn|>\n",
            USER("q"), MODEL("<|channel>x<channel|>a<|channel>y<channel|>b<|channel>z"));
    /* a tool call with its result: the model's turn stays open */
    RENDERS(G, false, true,
            "<|turn>system\nUse tools.<turn|>\n<|turn>user\nWeather in Paris?<turn|>\n"
            "<|turn>model\n<|tool_call>call:get_weather{city:<|\"|>Paris<|\"|>}<tool_call|>"
            "<|tool_response>response:get_weather{value:<|\"|>sunny, 21C<|\"|>}"
            "<tool_response|>",
            SYS("Use tools."), USER("Weather in Paris?"),
            CALL("get_weather", "city:<|\"|>Paris<|\"|>"), TOOL("sunny, 21C"));
    /* ... and the answer after it continues that turn */
    RENDERS(G, false, true,
            "<|turn>user\nWeather in Paris?<turn|>\n<|turn>model\n"
            "<|tool_call>call:get_weather{city:<|\"|>Paris<|\"|>}<tool_call|>"
            "<|tool_response>response:get_weather{value:<|\"|>sunny, 21C<|\"|>}"
            "<tool_response|>It is sunny.<turn|>\n<|turn>user\nThanks<turn|>\n<|turn>model\n"
            "<|channel>thought\n<channel|>",
            USER("Weather in Paris?"), CALL("get_weather", "city:<|\"|>Paris<|\"|>"),
            TOOL("sunny, 21C"), MODEL("It is sunny."), USER("Thanks"));
    /* two results, the second naming its tool */
    RENDERS(G, false, true,
            "<|turn>user\nx<turn|>\n<|turn>model\n<|tool_call>call:f{}<tool_call|>"
            "<|tool_response>response:f{value:<|\"|>1<|\"|>}<tool_response|>"
            "<|tool_response>response:g{value:<|\"|>2<|\"|>}<tool_response|>",
            USER("x"), CALL("f", NULL), TOOL("1"), {MP_CHAT_TOOL, "2", "g", NULL});
    /* a call without a result yet ends in <|tool_response> (an EOG token) */
    RENDERS(G, false, true,
            "<|turn>user\nx<turn|>\n<|turn>model\n<|tool_call>call:f{}<tool_call|>"
            "<|tool_response>",
            USER("x"), CALL("f", NULL));
    RENDERS(G, false, false, "<|turn>user\nHello<turn|>\n", USER("Hello"));
    RENDERS(G, false, true,
            "<|turn>user\nHi<turn|>\n<|turn>system\nLater rules.<turn|>\n<|turn>model\n"
            "<|channel>thought\n<channel|>",
            USER("Hi"), SYS("Later rules."));

    /* refused */
    char *out = NULL;
    size_t len;
    mp_err err = {0};
    mp_chat_msg bad1[] = {USER("x"), TOOL("orphan")};
    CHECK_STATUS(MP_ERR_ARG, mp_chat_render(G, bad1, 2, (mp_chat_params){0}, &out, &len, &err),
                 &err);
    mp_chat_msg bad2[] = {{(mp_chat_role)7, "x", NULL, NULL}};
    CHECK_STATUS(MP_ERR_ARG, mp_chat_render(G, bad2, 1, (mp_chat_params){0}, &out, &len, &err),
                 &err);
    CHECK_STATUS(MP_ERR_ARG, mp_chat_render((mp_chat_family)9, bad1, 1, (mp_chat_params){0},
                                            &out, &len, &err), &err);
    CHECK(out == NULL);
}

static void test_chatml(void) {
    const mp_chat_family C = MP_CHAT_CHATML;
    RENDERS(C, false, true,
            "<|im_start|>system\nYou are terse.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
            "<|im_start|>assistant\n<think>\n\n</think>\n\n",
            SYS("You are terse."), USER("Hi"));
    RENDERS(C, true, true,
            "<|im_start|>user\nQ1<|im_end|>\n<|im_start|>assistant\nA1<|im_end|>\n"
            "<|im_start|>user\nQ2<|im_end|>\n<|im_start|>assistant\n",
            USER("Q1"), MODEL("<think>\nr\n</think>\n\nA1"), USER("Q2"));
    RENDERS(C, true, true,
            "<|im_start|>user\nWeather?<|im_end|>\n<|im_start|>assistant\n<tool_call>\n"
            "{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>"
            "<|im_end|>\n<|im_start|>user\n<tool_response>\nsunny\n</tool_response>\n"
            "<tool_response>\nwarm\n</tool_response><|im_end|>\n<|im_start|>assistant\n",
            USER("Weather?"), CALL("get_weather", "{\"city\": \"Paris\"}"), TOOL("sunny"),
            TOOL("warm"));
    /* the last assistant message after the query keeps a (here empty) think block */
    RENDERS(C, true, false,
            "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
            "Hel<|im_end|>\n",
            USER("Hi"), MODEL("Hel"));
}

/* ------------------------------------------------------------------------ */
/* Detection                                                                */
/* ------------------------------------------------------------------------ */

/* Writes a copy of the tiny fixture's vocabulary with a chat template. */
static mp_vocab *vocab_with_template(const char *dir, const char *tmpl) {
    char src[512], path[1024];
    mp_test_data(src, sizeof src, "gemma4-tiny-a/tiny-a-f32.gguf");
    snprintf(path, sizeof path, "%s/tmpl.gguf", dir);
    mp_err err = {0};
    mp_gguf *g = NULL;
    mp_gguf_writer *w = NULL;
    mp_vocab *v = NULL;
    CHECK_STATUS(MP_OK, mp_gguf_open(&g, src, &err), &err);
    CHECK_STATUS(MP_OK, mp_gguf_writer_open(&w, path, true, &err), &err);
    if (!g || !w) goto done;
    for (int64_t i = 0; i < mp_gguf_n_kv(g); i++)
        if (!strncmp(mp_gguf_key(g, i), "tokenizer.", 10)) mp_gguf_writer_kv_copy(w, g, i, &err);
    if (tmpl) mp_gguf_writer_kv_str(w, "tokenizer.chat_template", tmpl, &err);
    CHECK_STATUS(MP_OK, mp_gguf_writer_finish(w, &err), &err);
    CHECK_STATUS(MP_OK, mp_vocab_open(&v, path, &err), &err);
done:
    mp_gguf_writer_free(w);
    mp_gguf_free(g);
    unlink(path);
    return v;
}

static void detects(const char *dir, const char *tmpl, mp_status want_s, mp_chat_family want) {
    mp_vocab *v = vocab_with_template(dir, tmpl);
    if (!v) return;
    mp_chat_family f = MP_CHAT_FAMILY_COUNT;
    mp_err err = {0};
    CHECK_STATUS(want_s, mp_chat_detect(v, &f, &err), &err);
    if (want_s == MP_OK) CHECK_MSG(f == want, "template \"%.30s\": got %s", tmpl ? tmpl : "(none)",
                                   mp_chat_family_name(f));
    if (tmpl) CHECK(mp_vocab_chat_template(v) && !strcmp(mp_vocab_chat_template(v), tmpl));
    mp_vocab_free(v);
}

static void test_detect(void) {
    char dir[512];
    CHECK(mp_test_tmpdir(dir, sizeof dir, "chat") != NULL);
    detects(dir, "{{ bos_token }}{{ '<|turn>user\\n' }}", MP_OK, MP_CHAT_GEMMA4);
    detects(dir, "{% for m in messages %}<|im_start|>{{ m.role }}{% endfor %}", MP_OK,
            MP_CHAT_CHATML); /* the template wins over the Gemma tokens */
    detects(dir, "{{ messages }}", MP_OK, MP_CHAT_GEMMA4); /* unknown: the vocabulary decides */
    detects(dir, NULL, MP_OK, MP_CHAT_GEMMA4);
    rmdir(dir);
    CHECK_INT(MP_CHAT_CHATML, mp_chat_family_from_name("chatml"));
    CHECK_INT(-1, mp_chat_family_from_name("llama3"));
    CHECK(!strcmp(mp_chat_role_name(MP_CHAT_TOOL), "tool"));
    CHECK(!strcmp(mp_chat_role_name(99), "?"));
}

/* ------------------------------------------------------------------------ */
/* Thinking splitter                                                        */
/* ------------------------------------------------------------------------ */

typedef struct collected {
    char text[2][512];
    size_t n[2];
    int calls;
    bool bad; /* a call with an empty run or an invalid part */
} collected;

static void collect(void *user, mp_chat_part part, const char *text, size_t len) {
    collected *c = user;
    c->calls++;
    if (len == 0 || (int)part < 0 || part >= MP_CHAT_PART_COUNT) {
        c->bad = true;
        return;
    }
    if (c->n[part] + len < sizeof c->text[part]) memcpy(c->text[part] + c->n[part], text, len);
    c->n[part] += len;
    c->text[part][c->n[part]] = 0;
}

/* Feeds text in chunks of every size from 1 to its length. */
static void splits(mp_chat_family f, bool in_thinking, const char *text, const char *answer,
                   const char *thinking, int line) {
    size_t n = strlen(text);
    for (size_t chunk = 1; chunk <= (n ? n : 1); chunk++) {
        mp_think_split s;
        collected c = {0};
        mp_think_split_init(&s, f, in_thinking);
        for (size_t i = 0; i < n; i += chunk)
            mp_think_split_push(&s, text + i, n - i < chunk ? n - i : chunk, collect, &c);
        mp_think_split_flush(&s, collect, &c);
        CHECK_MSG(!c.bad && !strcmp(c.text[MP_CHAT_ANSWER], answer) &&
                  !strcmp(c.text[MP_CHAT_THINKING], thinking),
                  "line %d, chunks of %zu: answer \"%s\", thinking \"%s\"", line, chunk,
                  c.text[MP_CHAT_ANSWER], c.text[MP_CHAT_THINKING]);
    }
}

static void test_splitter(void) {
    const mp_chat_family G = MP_CHAT_GEMMA4, C = MP_CHAT_CHATML;
    splits(G, false, "<|channel>thought\nLet me think.<channel|>The answer.", "The answer.",
           "Let me think.", __LINE__);
    splits(G, false, "Just an answer, no block.", "Just an answer, no block.", "", __LINE__);
    splits(G, false, "a < b <|chan x <channel|> y", "a < b <|chan x <channel|> y", "", __LINE__);
    splits(G, false, "ends with a marker start <|chan", "ends with a marker start <|chan", "",
           __LINE__);
    splits(G, true, "still thinking<channel|>done", "done", "still thinking", __LINE__);
    splits(G, false, "<|channel><channel|>empty name", "empty name", "", __LINE__);
    splits(G, false, "<|channel>thought\n<<<|channel><channel|>x", "x", "<<<|channel>", __LINE__);
    splits(C, false, "<think>\nhmm\n</think>\n\nAnswer", "\n\nAnswer", "\nhmm\n", __LINE__);
    splits(C, true, "hmm</think>A<think>", "A", "hmm", __LINE__);
    mp_think_split s;
    mp_think_split_init(&s, G, false);
    CHECK(!mp_think_split_thinking(&s));
    collected c = {0};
    mp_think_split_push(&s, "<|channel>", 10, collect, &c);
    CHECK(mp_think_split_thinking(&s));
    CHECK_INT(0, c.calls);
}

static void test_markers(void) {
    char path[512];
    mp_vocab *v = NULL;
    mp_err err = {0};
    CHECK_STATUS(MP_OK, mp_vocab_open(&v, mp_test_data(path, sizeof path,
                 "gemma4-tiny-a/tiny-a-f32.gguf"), &err), &err);
    if (!v) return;
    mp_chat_think m = mp_chat_think_markers(MP_CHAT_GEMMA4, v);
    CHECK(!strcmp(m.open, "<|channel>") && !strcmp(m.close, "<channel|>"));
    CHECK_INT(mp_vocab_find(v, "<|channel>", 10), m.open_id);
    CHECK_INT(mp_vocab_find(v, "<channel|>", 10), m.close_id);
    CHECK(m.open_id != MP_TOKEN_NULL && m.close_id != MP_TOKEN_NULL);
    mp_token close = m.close_id;
    m = mp_chat_think_markers(MP_CHAT_CHATML, v);
    CHECK_INT(MP_TOKEN_NULL, m.open_id); /* no <think> token in a Gemma vocabulary */
    /* a rendered prompt tokenizes into the chat tokens, one each */
    mp_chat_msg msgs[] = {USER("Hi")};
    char *text;
    size_t len, n;
    mp_token *ids;
    CHECK_STATUS(MP_OK, mp_chat_render(MP_CHAT_GEMMA4, msgs, 1, (mp_chat_params){false, true},
                                       &text, &len, &err), &err);
    CHECK_STATUS(MP_OK, mp_tokenize(v, text, len, (mp_tokenize_params){true, true}, &ids, &n,
                                    &err), &err);
    CHECK(n > 6 && ids[0] == mp_vocab_specials(v)->bos &&
          ids[1] == mp_vocab_find(v, "<|turn>", 7) && ids[n - 1] == close);
    mp_free(ids);
    mp_free(text);
    mp_vocab_free(v);
}

int main(void) {
    test_gemma4();
    test_chatml();
    test_detect();
    test_splitter();
    test_markers();
    return mp_test_end("test_chat");
}
