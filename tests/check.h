// tests/check.h: the tiny test harness every test program uses.
//
// CHECK(cond, fmt, ...) records one assertion; a failure prints the file, line and message.
// CHECK_CLOSE(name, got, want, rtol, atol) compares with a tolerance and prints the measured error
// on failure. Every test program ends with check_summary(), which prints
//   "<program>: N passed, N failed"
// and returns the exit status; tests/run.sh adds the counts of all programs into one final line.
#ifndef MEMR2_CHECK_H
#define MEMR2_CHECK_H

#include <math.h>
#include <stdio.h>

typedef struct {
    int passed, failed;
} CheckCounts;

static CheckCounts check_counts;  // one per test program, never shared across files

#define CHECK(cond, ...)                                                              \
    do {                                                                              \
        if (cond) {                                                                   \
            check_counts.passed++;                                                    \
        } else {                                                                      \
            check_counts.failed++;                                                    \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);                      \
            fprintf(stderr, __VA_ARGS__);                                             \
            fprintf(stderr, "\n");                                                    \
        }                                                                             \
    } while (0)

// |got - want| <= atol + rtol * |want|, and got is finite.
#define CHECK_CLOSE(name, got, want, rtol, atol)                                      \
    do {                                                                              \
        double g_ = (double)(got), w_ = (double)(want);                               \
        CHECK(isfinite(g_) && fabs(g_ - w_) <= (atol) + (rtol) * fabs(w_),            \
              "%s: got %.9g want %.9g (abs err %.3g)", (name), g_, w_, fabs(g_ - w_)); \
    } while (0)

static inline int check_summary(const char *program) {
    printf("%s: %d passed, %d failed\n", program, check_counts.passed, check_counts.failed);
    return check_counts.failed ? 1 : 0;
}

#endif
