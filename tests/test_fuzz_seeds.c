// tests/test_fuzz_seeds.c: every committed fuzz corpus file (tests/fuzz/corpus/<name>/) through
// its harness (tests/fuzz/fuzz_<name>.c, built by gcc like every test), so inputs that once
// crashed stay regression tests without clang; and the MANAGE corpus reaches every operation
// (the fuzzer mutates from there, so UPDATE and DELETE are explored, not just INSERT).
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "memory.h"
#include "tests/check.h"
#include "tests/fuzz/fuzz_common.h"

static unsigned char *read_file(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 1 << 16, len = 0;
    unsigned char *b = malloc(cap);
    size_t got;
    while (b && (got = fread(b + len, 1, cap - len, f)) > 0) {
        len += got;
        if (len == cap) {
            unsigned char *nb = realloc(b, cap *= 2);
            if (!nb) free(b);
            b = nb;
        }
    }
    fclose(f);
    *n = len;
    return b;
}

// Runs fn over every file of tests/fuzz/corpus/<name>; returns how many ran.
static int replay(const char *name, int (*fn)(const uint8_t *, size_t), int kinds[4]) {
    char dir[256];
    snprintf(dir, sizeof dir, "tests/fuzz/corpus/%s", name);
    DIR *d = opendir(dir);
    CHECK(d != NULL, "corpus %s exists", dir);
    if (!d) return 0;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char path[512];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        size_t len = 0;
        unsigned char *b = read_file(path, &len);
        CHECK(b != NULL, "read %s", path);
        if (!b) continue;
        if (kinds) fuzz_manage_ops(b, len, kinds);
        else fn(b, len);
        free(b);
        n++;
    }
    closedir(d);
    return n;
}

int main(void) {
    struct {
        const char *name;
        int (*fn)(const uint8_t *, size_t);
    } h[] = {{"episodes", fuzz_episodes}, {"vocab", fuzz_vocab},     {"checkpoint", fuzz_checkpoint},
             {"state", fuzz_state},       {"runstate", fuzz_runstate},       {"extract", fuzz_extract}, {"manage", fuzz_manage},
             {"bpe", fuzz_bpe},       {"dialogue_parse", fuzz_dialogue_parse}};
    for (size_t i = 0; i < sizeof h / sizeof h[0]; i++) {
        int n = replay(h[i].name, h[i].fn, NULL);
        CHECK(n >= 2, "corpus %s has %d files (want >= 2)", h[i].name, n);
        printf("fuzz corpus %-10s %d files replayed\n", h[i].name, n);
    }
    int kinds[4] = {0};
    replay("manage", NULL, kinds);
    printf("manage corpus: ops applied INSERT %d UPDATE %d DELETE %d NOOP %d\n", kinds[OP_INSERT],
           kinds[OP_UPDATE], kinds[OP_DELETE], kinds[OP_NOOP]);
    CHECK(kinds[OP_INSERT] > 0 && kinds[OP_UPDATE] > 0 && kinds[OP_DELETE] > 0 &&
              kinds[OP_NOOP] > 0,
          "the manage corpus reaches every operation");
    return check_summary("test_fuzz_seeds");
}
