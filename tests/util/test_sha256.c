/* test_sha256.c — SHA-256 against the FIPS 180-4 examples, chunked updates
 * against one-shot, and every fixture file against its SHA256SUMS entry. */
#include <stdio.h>
#include <stdlib.h>

#include "testutil.h"
#include "util/util.h"

static void hex_of(const void *data, size_t n, size_t chunk, char out[65]) {
    mp_sha256 s;
    mp_sha256_init(&s);
    const uint8_t *p = data;
    for (size_t o = 0; o < n; o += chunk) mp_sha256_update(&s, p + o, n - o < chunk ? n - o : chunk);
    mp_sha256_hex(&s, out);
}

/* The SHA-extension rounds against the plain C ones on random blocks, from
 * random states, for 0..9 blocks per call. */
static void check_shani(void) {
    uint64_t rng = 0x243f6a8885a308d3ULL;
    uint8_t buf[64 * 9];
    int calls = 0;
    for (int round = 0; round < 200; round++) {
        uint32_t a[8], b[8];
        for (int i = 0; i < 8; i++) a[i] = b[i] = (uint32_t)mp_test_rand(&rng);
        for (size_t i = 0; i < sizeof buf; i++) buf[i] = (uint8_t)mp_test_rand(&rng);
        const size_t n = (size_t)round % 10;
        if (!mp_sha256_blocks_shani(a, buf, n)) break;
        mp_sha256_blocks_ref(b, buf, n);
        CHECK(!memcmp(a, b, sizeof a));
        calls++;
    }
    printf("SHA extensions: %s\n", calls ? "checked against the plain rounds" : "not on this CPU");
}

int main(void) {
    check_shani();
    char h[65];
    hex_of("", 0, 1, h);
    CHECK(!strcmp(h, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"));
    hex_of("abc", 3, 3, h);
    CHECK(!strcmp(h, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"));
    const char *two = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    for (size_t chunk = 1; chunk <= 64; chunk += 7) {
        hex_of(two, strlen(two), chunk, h);
        CHECK(!strcmp(h, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"));
    }
    char *mil = malloc(1000000);
    memset(mil, 'a', 1000000);
    hex_of(mil, 1000000, 4099, h);
    CHECK(!strcmp(h, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"));
    free(mil);

    /* the fixtures' own checksums, made by sha256sum */
    char path[512];
    size_t n;
    char *sums = mp_test_read_file(mp_test_data(path, sizeof path, "gemma4-tiny-a/SHA256SUMS"), &n);
    CHECK(sums != NULL);
    int files = 0;
    for (char *line = sums ? strtok(sums, "\n") : NULL; line; line = strtok(NULL, "\n")) {
        char want[65], name[256];
        if (sscanf(line, "%64s %255s", want, name) != 2) continue;
        char rel[300];
        snprintf(rel, sizeof rel, "gemma4-tiny-a/%s", name[0] == '*' ? name + 1 : name);
        size_t len;
        char *data = mp_test_read_file(mp_test_data(path, sizeof path, rel), &len);
        if (!data) continue;
        hex_of(data, len, 1 << 20, h);
        CHECK_MSG(!strcmp(h, want), "%s: %s, SHA256SUMS says %s", rel, h, want);
        free(data);
        files++;
    }
    CHECK(files >= 16);
    free(sums);
    return mp_test_end("test_sha256");
}
