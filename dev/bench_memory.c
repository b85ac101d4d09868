// dev/bench_memory.c: speed of the memory bank's two hot paths.
//
//   bench snapshot_gb_s X   snapshot + restore, bytes copied per second (both directions counted),
//                           cycling through G x H = 8 x 32 separate snapshot buffers as
//                           LoGo-GRPO does (6.8 MiB for the default bank, so not all in cache)
//   bench snapshot_hot_gb_s X   the same with one buffer (cache-resident: an upper bound)
//   bench retrieve_per_s X  memory_retrieve calls per second (k = 5, 8-token queries) on a bank
//                           of --alive slots; retrieve_masked_per_s with a stop-word mask
//
// Build and run: make bench_memory (or make bench). Flags: --cap N --slot-len N --alive N
// --seconds S (time per measurement); other flags are ignored. Single-threaded: the bank code
// has no threads.
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../memory.h"
#include "../rng.h"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void fill(MemoryBank *m, int alive, int vocab, Rng *rng) {
    int fact[1024];
    memory_clear(m);
    for (int i = 0; i < alive; i++) {
        int n = 4 + (int)rng_below(rng, (uint32_t)(m->slot_len > 4 ? m->slot_len - 3 : 1));
        if (n > 1024) n = 1024;
        for (int j = 0; j < n; j++) fact[j] = (int)rng_below(rng, (uint32_t)vocab);
        MemoryOp op = {OP_INSERT, -1, fact, n, DIA_CODE(1 + i / 10, i % 10)};
        memory_apply(m, &op, 1 + i / 10, NULL);
    }
}

int main(int argc, char **argv) {
    int cap = 256, slot_len = 24, alive = 200, vocab = 512;
    double seconds = 0.5;
    static const struct option opts[] = {{"cap", required_argument, 0, 'c'},
                                         {"slot-len", required_argument, 0, 'l'},
                                         {"alive", required_argument, 0, 'a'},
                                         {"seconds", required_argument, 0, 's'},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    int ch;
    opterr = 0;  // `make bench` may pass the model's flags (-V -T ...): not ours, ignored
    while ((ch = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (ch) {
        case 'c': cap = atoi(optarg); break;
        case 'l': slot_len = atoi(optarg); break;
        case 'a': alive = atoi(optarg); break;
        case 's': seconds = atof(optarg); break;
        case '?': break;
        default:
            fprintf(stderr, "usage: %s [--cap N] [--slot-len N] [--alive N] [--seconds S]\n",
                    argv[0]);
            return ch == 'h' ? 0 : 2;
        }
    }
    if (alive > cap) alive = cap;
    if (seconds <= 0) seconds = 0.5;
    MemoryBank m;
    if (memory_init(&m, cap, slot_len)) return 1;
    Rng rng;
    rng_seed(&rng, 42);
    fill(&m, alive, vocab, &rng);
    size_t bytes = memory_snapshot_bytes(&m);
    enum { NBUF = 8 * 32 };
    unsigned char *bufs = malloc(bytes * NBUF);
    if (!bufs) { fprintf(stderr, "bench_memory: out of memory (%zu bytes)\n", bytes * NBUF); return 1; }
    for (int i = 0; i < NBUF; i++) memory_snapshot(&m, bufs + (size_t)i * bytes);
    printf("memory bank: cap=%d slot_len=%d alive=%d snapshot_bytes=%zu GxH_bytes=%zu\n",
           cap, slot_len, alive, bytes, bytes * NBUF);

    // Snapshot + restore: snapshot into buffer i, restore from buffer i + 1 (all hold the same
    // bank, so the bank is unchanged and the loop cannot be folded away).
    long reps = 0;
    double t0 = now_s(), t;
    do {
        for (int r = 0; r < 256; r++, reps++) {
            int i = (int)(reps % NBUF);
            memory_snapshot(&m, bufs + (size_t)i * bytes);
            memory_restore(&m, bufs + (size_t)((i + 1) % NBUF) * bytes);
        }
        t = now_s() - t0;
    } while (t < seconds);
    printf("bench snapshot_gb_s %.2f\n", 2.0 * (double)bytes * (double)reps / t / 1e9);
    reps = 0;
    t0 = now_s();
    do {
        for (int r = 0; r < 256; r++, reps++) {
            memory_snapshot(&m, bufs);
            memory_restore(&m, bufs);
        }
        t = now_s() - t0;
    } while (t < seconds);
    printf("bench snapshot_hot_gb_s %.2f\n", 2.0 * (double)bytes * (double)reps / t / 1e9);

    // Retrieval: 1024 pre-drawn queries of 8 tokens, k = 5 (the manager's retrieval per fact).
    enum { NQ = 1024, QLEN = 8, K = 5 };
    static int queries[NQ][QLEN];
    for (int i = 0; i < NQ; i++)
        for (int j = 0; j < QLEN; j++) queries[i][j] = (int)rng_below(&rng, (uint32_t)vocab);
    uint8_t *ignore = calloc((size_t)vocab, 1);
    if (!ignore) return 1;
    for (int i = 0; i < vocab; i += 16) ignore[i] = 1;  // 1/16 of the vocabulary as stop words
    for (int masked = 0; masked < 2; masked++) {
        long calls = 0, found = 0;
        int out[K] = {0};
        t0 = now_s();
        do {
            for (int r = 0; r < 1024; r++, calls++) {
                const int *q = queries[calls % NQ];
                found += masked ? memory_retrieve_masked(&m, q, QLEN, ignore, vocab, K, out)
                                : memory_retrieve(&m, q, QLEN, K, out);
                found += out[0] & 1;  // keep the results live
            }
            t = now_s() - t0;
        } while (t < seconds);
        printf("bench %s %.0f\n", masked ? "retrieve_masked_per_s" : "retrieve_per_s",
               (double)calls / t);
        if (found < 0) printf("unreachable\n");
    }
    free(ignore);
    free(bufs);
    memory_free(&m);
    return 0;
}
