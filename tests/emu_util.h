// tests/emu_util.h: helpers shared by the emulated GPU tests of the Llama family
// (test_kernels_llama.cu, test_llama_gpu.cu): one seeded RNG per test program, device buffers
// from and to host vectors, and the normwise relative error every check prints.
#ifndef MEMR2_TESTS_EMU_UTIL_H
#define MEMR2_TESTS_EMU_UTIL_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include <vector>

extern "C" {
#include "rng.h"
}
#include "dev/cuda_cpu.h"
#include "tests/check.h"

static Rng g_rng;  // seeded by each program's main
static inline float frand(float lo, float hi) { return lo + (hi - lo) * rng_float(&g_rng); }
static inline std::vector<float> rand_vec(size_t n, float lo = -1.0f, float hi = 1.0f) {
    std::vector<float> v(n);
    for (auto &x : v) x = frand(lo, hi);
    return v;
}
template <typename T>
static inline T *dnew(size_t n) {
    T *d = NULL;
    if (cudaMalloc(&d, (n ? n : 1) * sizeof(T)) != cudaSuccess) {
        fprintf(stderr, "cudaMalloc failed\n");
        exit(1);
    }
    return d;
}
template <typename T>
static inline T *up(const std::vector<T> &h) {
    T *d = dnew<T>(h.size());
    cudaMemcpy(d, h.data(), h.size() * sizeof(T), cudaMemcpyHostToDevice);
    return d;
}
template <typename T>
static inline std::vector<T> down(const T *d, size_t n) {
    std::vector<T> h(n);
    cudaMemcpy(h.data(), d, n * sizeof(T), cudaMemcpyDeviceToHost);
    return h;
}
// max |got - ref| / max |ref| ("normwise"); NaN in got gives infinity.
template <typename A, typename R>
static inline double rel_err(const std::vector<A> &got, const std::vector<R> &ref) {
    double md = 0.0, mr = 0.0;
    for (size_t i = 0; i < ref.size(); i++) {
        double g = (double)got[i], r = (double)ref[i];
        if (!isfinite(g)) return INFINITY;
        md = fmax(md, fabs(g - r));
        mr = fmax(mr, fabs(r));
    }
    return mr > 0 ? md / mr : md;
}
static inline void check_rel(const char *name, double err, double tol) {
    printf("  %-48s rel err %.2e  (tol %.0e)\n", name, err, tol);
    CHECK(err <= tol, "%s: relative error %.3g over the tolerance %.3g", name, err, tol);
}

#endif
