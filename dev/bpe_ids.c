// dev/bpe_ids.c: prints what memr2's tokenizer makes of each input line; driven by
// dev/tokenizer_check.py to compare with Hugging Face `tokenizers`.
//
//   build/rel/dev/bpe_ids TOKENIZER.tok            stdin: one hex-encoded text per line
//   build/rel/dev/bpe_ids TOKENIZER.tok --ordinary the same with bpe_encode_ordinary
//   build/rel/dev/bpe_ids TOKENIZER.tok --chat     stdin: role<TAB>hex content<TAB>role<TAB>...
//                                                  (a trailing "+" field: add_generation_prompt)
// Output per line: the ids separated by spaces, a TAB, then the hex of decode(ids) (for --chat:
// the hex of the rendered template text instead). A first line "hash HEX vocab N pre NAME".
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bpe.h"

static int unhex(char *s, size_t *len) {  // in place
    size_t n = strlen(s);
    if (n % 2) return -1;
    for (size_t i = 0; i < n / 2; i++) {
        unsigned v;
        if (sscanf(s + 2 * i, "%2x", &v) != 1) return -1;
        s[i] = (char)v;
    }
    s[n / 2] = '\0';
    *len = n / 2;
    return 0;
}

static void put_hex(const char *p, size_t n) {
    for (size_t i = 0; i < n; i++) printf("%02x", (unsigned char)p[i]);
}

enum { MODE_TEXT, MODE_ORDINARY, MODE_CHAT };

static int do_line(const Bpe *t, char *line, int mode, char *err) {
    BpeIds ids = {0};
    char *text = NULL;
    size_t text_len = 0;
    int rc = -1;
    if (mode == MODE_CHAT) {
        BpeMessage msgs[64];
        int n = 0, gen = 0;
        for (char *f = strtok(line, "\t"); f; f = strtok(NULL, "\t")) {
            if (strcmp(f, "+") == 0) {
                gen = 1;
                continue;
            }
            char *c = strtok(NULL, "\t");
            size_t len;
            if (!c || n == 64 || unhex(c, &len)) {
                snprintf(err, 256, "bad chat line");
                goto out;
            }
            msgs[n++] = (BpeMessage){f, c};
        }
        if (bpe_chat_render(t, msgs, n, gen, &text, err, 256) ||
            bpe_chat(t, msgs, n, gen, &ids, err, 256))
            goto out;
        text_len = strlen(text);
    } else {
        size_t len;
        if (unhex(line, &len)) {
            snprintf(err, 256, "bad hex line");
            goto out;
        }
        if ((mode == MODE_ORDINARY ? bpe_encode_ordinary(t, line, len, &ids, err, 256)
                                   : bpe_encode(t, line, len, &ids, err, 256)) ||
            bpe_decode(t, ids.ids, ids.n, &text, &text_len, err, 256))
            goto out;
    }
    for (size_t i = 0; i < ids.n; i++) printf(i ? " %d" : "%d", ids.ids[i]);
    printf("\t");
    put_hex(text, text_len);
    printf("\n");
    rc = 0;
out:
    free(text);
    bpe_ids_free(&ids);
    return rc;
}

int main(int argc, char **argv) {
    int mode = MODE_TEXT;
    if (argc == 3 && strcmp(argv[2], "--chat") == 0) mode = MODE_CHAT;
    if (argc == 3 && strcmp(argv[2], "--ordinary") == 0) mode = MODE_ORDINARY;
    if (argc < 2 || argc > 3 || (argc == 3 && mode == MODE_TEXT)) {
        fprintf(stderr, "usage: %s TOKENIZER.tok [--chat | --ordinary] < lines\n", argv[0]);
        return 2;
    }
    char err[256];
    Bpe *t = bpe_load(argv[1], err, sizeof err);
    if (!t) {
        fprintf(stderr, "bpe_ids: %s\n", err);
        return 1;
    }
    printf("hash %016llx vocab %d pre %s\n", (unsigned long long)bpe_hash(t), bpe_vocab_size(t),
           bpe_pre_name(t));
    size_t cap = 0;
    char *line = NULL;
    ssize_t n;
    int rc = 0;
    while ((n = getline(&line, &cap, stdin)) > 0) {
        if (line[n - 1] == '\n') line[n - 1] = '\0';
        if (do_line(t, line, mode, err)) {
            fprintf(stderr, "bpe_ids: %s\n", err);
            rc = 1;
            break;
        }
    }
    free(line);
    bpe_free(t);
    return rc;
}
