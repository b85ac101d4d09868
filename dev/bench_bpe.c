// dev/bench_bpe.c: tokenizer speed, `bench NAME VALUE` lines like the other benches.
//
//   build/rel/dev/bench_bpe TOKENIZER.tok FILE...     (make bench_bpe: SmolLM2, README + docs)
//
// The files are concatenated and repeated to 4 MB; encode and decode are timed single-threaded,
// best of 3. dev/tokenizer_check.py --bench times Hugging Face tokenizers on the same text.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bpe.h"

#define TARGET_BYTES (4u << 20)

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

static int append_file(const char *path, char **buf, size_t *n, size_t *cap) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "bench_bpe: cannot open %s\n", path);
        return -1;
    }
    char chunk[65536];
    size_t k;
    while ((k = fread(chunk, 1, sizeof chunk, f)) > 0) {
        if (*n + k > *cap) {
            size_t c = 2 * (*n + k);
            char *p = realloc(*buf, c);
            if (!p) {
                fclose(f);
                fprintf(stderr, "bench_bpe: out of memory\n");
                return -1;
            }
            *buf = p;
            *cap = c;
        }
        memcpy(*buf + *n, chunk, k);
        *n += k;
    }
    fclose(f);
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s TOKENIZER.tok FILE...\n", argv[0]);
        return 2;
    }
    char err[512];
    Bpe *t = bpe_load(argv[1], err, sizeof err);
    if (!t) {
        fprintf(stderr, "bench_bpe: %s\n", err);
        return 1;
    }
    char *one = NULL, *text = NULL;
    size_t n1 = 0, cap1 = 0;
    for (int i = 2; i < argc; i++)
        if (append_file(argv[i], &one, &n1, &cap1)) return 1;
    size_t reps = n1 ? (TARGET_BYTES + n1 - 1) / n1 : 0, n = reps * n1;
    if (!n || !(text = malloc(n))) {
        fprintf(stderr, "bench_bpe: no text\n");
        return 1;
    }
    for (size_t r = 0; r < reps; r++) memcpy(text + r * n1, one, n1);
    double enc = 1e30, dec = 1e30;
    size_t n_ids = 0;
    for (int rep = 0; rep < 3; rep++) {
        BpeIds ids = {0};
        double t0 = now();
        if (bpe_encode(t, text, n, &ids, err, sizeof err)) {
            fprintf(stderr, "bench_bpe: %s\n", err);
            return 1;
        }
        double t1 = now();
        char *out = NULL;
        size_t out_len = 0;
        if (bpe_decode(t, ids.ids, ids.n, &out, &out_len, err, sizeof err) || out_len != n ||
            memcmp(out, text, n) != 0) {
            fprintf(stderr, "bench_bpe: decode did not give the text back\n");
            return 1;
        }
        double t2 = now();
        enc = t1 - t0 < enc ? t1 - t0 : enc;
        dec = t2 - t1 < dec ? t2 - t1 : dec;
        n_ids = ids.n;
        free(out);
        bpe_ids_free(&ids);
    }
    printf("bench bpe_text_bytes %zu\n", n);
    printf("bench bpe_tokens %zu\n", n_ids);
    printf("bench bpe_encode_mb_s %.2f\n", n / enc / 1e6);
    printf("bench bpe_encode_tok_s %.0f\n", n_ids / enc);
    printf("bench bpe_decode_mb_s %.1f\n", n / dec / 1e6);
    free(text);
    free(one);
    bpe_free(t);
    return 0;
}
