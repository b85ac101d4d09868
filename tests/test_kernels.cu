// tests/test_kernels.cu: the GPU backend (kernels.cu) checked on the CPU.
//
// Compiled as C++ by g++ through dev/cuda_cpu.h (CUDA threads as fibers; see that header), linked
// with model.c compiled as C (`make test_kernels`). The same file builds with nvcc for a real GPU
// (`make test_kernels_gpu`; the emulation-only checks drop out). Three parts:
//   1. the emulation itself: barriers, shared memory, warp shuffles (width, clamping), ballots,
//      atomics, the lane order, the cuBLAS stand-in through llm.c's row-major call, cuRAND;
//   2. every kernel forward and backward against a plain double-precision reference in this
//      file, at several shapes including ragged ones (C, T, rows not multiples of 32 or of the
//      block size);
//   3. the whole gpu_backend against model.c's cpu_backend: forward (logp, entropy), backward
//      (all 16 gradient tensors), AdamW with clipping, a second step, greedy and sampled decoding.
// Tolerances are relative to the largest reference value of each tensor ("normwise"), stated
// beside each check; measured errors are printed. Both sides are fp32, so what is left is
// rounding in a different summation order: ~1e-7 measured per kernel (tolerance 2e-6 against a
// double reference, 5e-6 for attention backward), ~5e-7 for the 16 gradient tensors after a
// whole backward (tolerance 2e-6), parameters after AdamW within 1e-5 plus what AdamW's
// normalisation makes of the gradient difference of each entry (see test_backend).
// Run in each lane order:
//   make test_kernels; CUDA_CPU_ORDER=rev make test_kernels; make test_kernels_guard
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <string>
#include <vector>

extern "C" {
#include "model.h"
#include "rng.h"
}
#include "kernels.h"
#include "tests/check.h"
#include "tests/sample_freq.h"

// ---------------------------------------------------------------------------------------------
// Helpers

static Rng g_rng;
static float frand(float lo, float hi) { return lo + (hi - lo) * rng_float(&g_rng); }
static std::vector<float> rand_vec(size_t n, float lo = -1.0f, float hi = 1.0f) {
    std::vector<float> v(n);
    for (auto &x : v) x = frand(lo, hi);
    return v;
}

template <typename T>
static T *up(const std::vector<T> &h) {
    T *d = NULL;
    if (cudaMalloc(&d, h.size() * sizeof(T)) != cudaSuccess) {
        fprintf(stderr, "cudaMalloc failed\n");
        exit(1);
    }
    cudaMemcpy(d, h.data(), h.size() * sizeof(T), cudaMemcpyHostToDevice);
    return d;
}
template <typename T>
static T *dnew(size_t n) {
    T *d = NULL;
    if (cudaMalloc(&d, (n ? n : 1) * sizeof(T)) != cudaSuccess) {
        fprintf(stderr, "cudaMalloc failed\n");
        exit(1);
    }
    return d;
}
template <typename T>
static std::vector<T> down(const T *d, size_t n) {
    std::vector<T> h(n);
    cudaMemcpy(h.data(), d, n * sizeof(T), cudaMemcpyDeviceToHost);
    return h;
}

// max |got - ref| / max |ref| (normwise relative error); NaN in got gives infinity.
template <typename R>
static double rel_err(const std::vector<float> &got, const std::vector<R> &ref) {
    double md = 0.0, mr = 0.0;
    for (size_t i = 0; i < ref.size(); i++) {
        double g = got[i], r = (double)ref[i];
        if (!isfinite(g)) return INFINITY;
        md = fmax(md, fabs(g - r));
        mr = fmax(mr, fabs(r));
    }
    return mr > 0 ? md / mr : md;
}
static void check_rel(const char *name, double err, double tol) {
    printf("  %-44s rel err %.2e  (tol %.0e)\n", name, err, tol);
    CHECK(err <= tol, "%s: relative error %.3g over the tolerance %.3g", name, err, tol);
}

// =============================================================================================
// Part 1: the emulation
// =============================================================================================

__global__ void block_sum_tree_kernel(const int *x, int *out, int n) {
    __shared__ int buf[128];
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    buf[threadIdx.x] = i < n ? x[i] : 0;
    __syncthreads();
    for (int s = blockDim.x / 2; s > 0; s >>= 1) {
        if ((int)threadIdx.x < s) buf[threadIdx.x] += buf[threadIdx.x + s];
        __syncthreads();
    }
    if (threadIdx.x == 0) out[blockIdx.x] = buf[0];
}

// Each lane writes the result of several warp operations (8 ints per thread).
__global__ void shuffle_kernel(int *out) {
    int lane = threadIdx.x % 32, v = 100 * (int)threadIdx.x;
    int *o = out + threadIdx.x * 8;
    o[0] = __shfl_sync(0xffffffffu, v, 3, 8);    // lane 3 of my 8-group
    o[1] = __shfl_sync(0xffffffffu, v, 11, 8);   // 11 mod 8 = 3 of my group
    o[2] = __shfl_up_sync(0xffffffffu, v, 3, 16);  // own value in the first 3 of each 16
    o[3] = __shfl_down_sync(0xffffffffu, v, 5);    // own value in lanes 27..31
    o[4] = __shfl_xor_sync(0xffffffffu, v, 4, 8);
    o[5] = __shfl_xor_sync(0xffffffffu, v, 8, 8);  // a later group: own value; earlier: read
    o[6] = (int)__ballot_sync(0xffffffffu, lane % 3 == 0);
    o[7] = __any_sync(0xffffffffu, lane == 31) * 2 + __all_sync(0xffffffffu, lane < 32);
}

__global__ void warp_sum_kernel(float *out, int n) {
    float v = threadIdx.x < (unsigned)n ? (float)threadIdx.x : 0.0f;
    for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
    if (threadIdx.x % 32 == 0) out[threadIdx.x / 32] = v;
}

__global__ void dyn_reverse_kernel(float *x, int n) {
    DYN_SHARED(float, buf);
    int i = threadIdx.x;
    if (i < n) buf[i] = x[blockIdx.x * n + i];
    __syncthreads();
    if (i < n) x[blockIdx.x * n + i] = buf[n - 1 - i];
}

__global__ void atomic_kernel(int *count, float *fsum, int *ticket, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    ticket[i] = atomicAdd(count, 1);
    atomicAdd(fsum, 0.5f);
}

#if CUDA_CPU_EMULATED
// ---- bugs the emulation must catch (each in a forked child; the parent checks how it died)
__global__ void divergent_sync_kernel(float *x) {
    if (threadIdx.x < 16) __syncthreads();
    else __syncthreads();
    x[threadIdx.x] = 0.0f;
}
__global__ void exited_lane_shuffle_kernel(float *x) {
    if (threadIdx.x >= 16) return;
    x[threadIdx.x] = __shfl_down_sync(0xffffffffu, 1.0f, 1);
}
__global__ void sync_vs_shuffle_kernel(float *x) {
    float v = 1.0f;
    if (threadIdx.x < 16) __syncthreads();
    else v = __shfl_xor_sync(0xffffffffu, v, 1);
    x[threadIdx.x] = v;
}
__global__ void overrun_kernel(float *x, int n) { x[n + threadIdx.x] = 1.0f; }
__global__ void noop_kernel(float *x) { (void)x; }

static void bug_divergent_sync(void) {
    float *d = dnew<float>(32);
    LAUNCH(divergent_sync_kernel, 1, 32, 0, d);
}
static void bug_exited_lane(void) {
    float *d = dnew<float>(32);
    LAUNCH(exited_lane_shuffle_kernel, 1, 32, 0, d);
}
static void bug_sync_vs_shuffle(void) {
    float *d = dnew<float>(32);
    LAUNCH(sync_vs_shuffle_kernel, 1, 32, 0, d);
}
static void bug_overrun(void) {
    float *d = dnew<float>(37);
    LAUNCH(overrun_kernel, 1, 32, 0, d, 37);
}
static void bug_big_block(void) {
    float *d = dnew<float>(1);
    LAUNCH(noop_kernel, 1, 2048, 0, d);
}
static void bug_memcpy_size(void) {
    float *d = dnew<float>(10);
    std::vector<float> h(11);
    cudaMemcpy(d, h.data(), 11 * sizeof(float), cudaMemcpyHostToDevice);
}
static void bug_memcpy_kind(void) {
    float *d = dnew<float>(10);
    std::vector<float> h(10);
    cudaMemcpy(h.data(), d, 10 * sizeof(float), cudaMemcpyHostToDevice);
}
static void bug_double_free(void) {
    float *d = dnew<float>(10);
    cudaFree(d);
    cudaFree(d);
}

// Runs fn in a child; passes if the child dies with a message containing want (or, want NULL,
// by SIGSEGV: a guard page; under ASan, its SEGV report).
static void expect_caught(const char *name, void (*fn)(void), const char *want, bool guard) {
    int pfd[2];
    if (pipe(pfd) != 0) {
        CHECK(0, "pipe failed");
        return;
    }
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid == 0) {
        dup2(pfd[1], 2);
        close(pfd[0]);
        cuda_cpu::init();  // reads the environment; then force the mode under test
        cuda_cpu::st.guard = guard;
        fn();
        _exit(0);
    }
    close(pfd[1]);
    std::string msg;
    char buf[512];
    ssize_t k;
    while ((k = read(pfd[0], buf, sizeof buf)) > 0) msg.append(buf, (size_t)k);
    close(pfd[0]);
    int status = 0;
    waitpid(pid, &status, 0);
    bool died = WIFSIGNALED(status) || (WIFEXITED(status) && WEXITSTATUS(status) != 0);
    bool ok = died && (want ? msg.find(want) != std::string::npos
                            : (WIFSIGNALED(status) && WTERMSIG(status) == SIGSEGV) ||
                                  msg.find("SEGV") != std::string::npos);  // ASan reports it
    std::string first = msg.substr(0, msg.find('\n'));
    printf("  caught %-22s %s\n", name,
           want ? first.c_str() : (ok ? "SIGSEGV at the guard page" : "NOT CAUGHT"));
    CHECK(ok, "%s: not caught as expected (status %d, message: %s)", name, status, msg.c_str());
}

#endif

static void test_emulation(void) {
    printf("emulation\n");
#if CUDA_CPU_EMULATED
    expect_caught("divergent sync", bug_divergent_sync, "divergent __syncthreads", true);
    expect_caught("exited lane", bug_exited_lane, "has exited", false);
    expect_caught("sync vs shuffle", bug_sync_vs_shuffle, "divergent", false);
    expect_caught("buffer overrun", bug_overrun, NULL, true);
    expect_caught("block of 2048", bug_big_block, "2048 threads", false);
    expect_caught("memcpy size", bug_memcpy_size, "not inside one device buffer", false);
    expect_caught("memcpy kind", bug_memcpy_kind, "HostToDevice of 40 bytes: destination", false);
    expect_caught("double free", bug_double_free, "double free", false);
#endif
    // Block reduction with __syncthreads, n not a multiple of the block.
    {
        int n = 1000, nb = (n + 127) / 128;
        std::vector<int> x(n);
        long want = 0;
        for (int i = 0; i < n; i++) want += (x[i] = i % 17);
        int *dx = up(x), *dout = dnew<int>(nb);
        LAUNCH(block_sum_tree_kernel, nb, 128, 0, dx, dout, n);
        std::vector<int> o = down(dout, nb);
        long got = 0;
        for (int v : o) got += v;
        CHECK(got == want, "block reduction: %ld want %ld", got, want);
        cudaFree(dx);
        cudaFree(dout);
    }
    // Shuffles with width and clamping, ballot, any/all: two warps.
    {
        int nt = 64;
        int *d = dnew<int>(nt * 8);
        LAUNCH(shuffle_kernel, 1, nt, 0, d);
        std::vector<int> o = down(d, nt * 8);
        int bad = 0;
        for (int t = 0; t < nt; t++) {
            int l = t % 32, w = t / 32, v = 100 * t;
            auto val = [&](int lane) { return 100 * (w * 32 + lane); };
            int want[8];
            want[0] = val((l & ~7) + 3);
            want[1] = val((l & ~7) + 3);
            want[2] = (l % 16) >= 3 ? val(l - 3) : v;
            want[3] = l + 5 < 32 ? val(l + 5) : v;
            want[4] = val(l ^ 4);
            want[5] = (l ^ 8) >= (l & ~7) + 8 ? v : val(l ^ 8);  // earlier groups are readable
            unsigned bal = 0;
            for (int k = 0; k < 32; k += 3) bal |= 1u << k;
            want[6] = (int)bal;
            want[7] = 3;
            for (int k = 0; k < 8; k++)
                if (o[t * 8 + k] != want[k]) {
                    if (bad++ < 5)
                        fprintf(stderr, "thread %d op %d: got %d want %d\n", t, k, o[t * 8 + k], want[k]);
                }
        }
        CHECK(bad == 0, "warp operations: %d wrong results", bad);
        float *ws = dnew<float>(3);
        LAUNCH(warp_sum_kernel, 1, 96, 0, ws, 70);
        std::vector<float> s = down(ws, 3);
        // lanes < 70: warp 0 = 0..31, warp 1 = 32..63, warp 2 = 64..69
        CHECK(s[0] == 496.0f && s[1] == 1520.0f && s[2] == 64 + 65 + 66 + 67 + 68 + 69,
              "warp sums %g %g %g", s[0], s[1], s[2]);
        cudaFree(d);
        cudaFree(ws);
    }
    // Dynamic shared memory, 3 blocks of 45 threads (ragged: not a multiple of 32).
    {
        int n = 45;
        std::vector<float> x(3 * n);
        for (int i = 0; i < 3 * n; i++) x[i] = (float)i;
        float *d = up(x);
        LAUNCH(dyn_reverse_kernel, 3, n, n * sizeof(float), d, n);
        std::vector<float> o = down(d, 3 * n);
        int bad = 0;
        for (int b = 0; b < 3; b++)
            for (int i = 0; i < n; i++) bad += o[b * n + i] != x[b * n + n - 1 - i];
        CHECK(bad == 0, "dynamic shared memory reverse: %d wrong", bad);
        cudaFree(d);
    }
    // Atomics, and the order the lanes run in (CUDA_CPU_ORDER).
    {
        int n = 300;
        int *cnt = up(std::vector<int>{0}), *tk = dnew<int>(n);
        float *fs = up(std::vector<float>{0.0f});
        LAUNCH(atomic_kernel, 3, 128, 0, cnt, fs, tk, n);
        std::vector<int> c = down(cnt, 1), t = down(tk, n);
        std::vector<float> f = down(fs, 1);
        CHECK(c[0] == n && f[0] == 0.5f * n, "atomics: count %d sum %g", c[0], f[0]);
        std::vector<int> seen(n, 0);
        int perm = 1;
        for (int i = 0; i < n; i++) {
            if (t[i] < 0 || t[i] >= n || seen[t[i]]++) perm = 0;
        }
        CHECK(perm, "atomic tickets are not a permutation");
#if CUDA_CPU_EMULATED
        const char *ord = getenv("CUDA_CPU_ORDER");
        if (!ord || !strcmp(ord, "fwd")) CHECK(t[0] == 0 && t[n - 1] == n - 1, "fwd order: tickets %d %d", t[0], t[n - 1]);
        else if (!strcmp(ord, "rev")) CHECK(t[n - 1] == 0 && t[0] == n - 1, "rev order: tickets %d %d", t[0], t[n - 1]);
        printf("  lane order %s: first ticket went to thread %d\n", ord ? ord : "fwd",
               (int)(std::find(t.begin(), t.end(), 0) - t.begin()));
#endif
        cudaFree(cnt);
        cudaFree(tk);
        cudaFree(fs);
    }
#if CUDA_CPU_EMULATED
    // Fresh device memory is NaN-poisoned.
    {
        float *d = dnew<float>(5);
        std::vector<float> o = down(d, 5);
        CHECK(isnan(o[0]) && isnan(o[4]), "cudaMalloc memory is not NaN-poisoned");
        cudaFree(d);
    }
#endif
    // cuBLAS stand-in: llm.c's row-major out = inp W^T through the column-major API, with a
    // padded ldc (padding untouched), beta = 0 over NaN, beta = 1 accumulation, bad lda.
    {
        int N = 7, IC = 13, OC = 5, ldc = OC + 3;
        std::vector<float> inp = rand_vec((size_t)N * IC), W = rand_vec((size_t)OC * IC);
        std::vector<float> out((size_t)N * ldc, NAN);
        for (int i = 0; i < N; i++)
            for (int o = OC; o < ldc; o++) out[(size_t)i * ldc + o] = 7.0f;  // padding
        float *dinp = up(inp), *dW = up(W), *dout = up(out);
        cublasHandle_t h;
        cublasCreate(&h);
        float one = 1.0f, zero = 0.0f;
        cublasStatus_t s = cublasSgemm(h, CUBLAS_OP_T, CUBLAS_OP_N, OC, N, IC, &one, dW, IC, dinp,
                                       IC, &zero, dout, ldc);
        std::vector<float> got = down(dout, out.size());
        double md = 0;
        int pad_ok = 1;
        for (int i = 0; i < N; i++) {
            for (int o = 0; o < OC; o++) {
                double r = 0;
                for (int k = 0; k < IC; k++) r += (double)inp[(size_t)i * IC + k] * W[(size_t)o * IC + k];
                double g = got[(size_t)i * ldc + o];
                md = isfinite(g) ? fmax(md, fabs(g - r)) : INFINITY;
            }
            for (int o = OC; o < ldc; o++) pad_ok &= got[(size_t)i * ldc + o] == 7.0f;
        }
        printf("  cublasSgemm row-major inp W^T vs plain loop: max abs err %.2e\n", md);
        CHECK(s == CUBLAS_STATUS_SUCCESS && md < 1e-5, "sgemm stand-in: status %d err %g", s, md);
        CHECK(pad_ok, "sgemm stand-in wrote into the padding of C");
        // beta = 1 accumulates
        cublasSgemm(h, CUBLAS_OP_T, CUBLAS_OP_N, OC, N, IC, &one, dW, IC, dinp, IC, &one, dout, ldc);
        std::vector<float> got2 = down(dout, out.size());
        double md2 = 0;
        for (int i = 0; i < N; i++)
            for (int o = 0; o < OC; o++)
                md2 = fmax(md2, fabs(got2[(size_t)i * ldc + o] - 2.0 * got[(size_t)i * ldc + o]));
        CHECK(md2 < 1e-5, "sgemm beta=1: err %g", md2);
        s = cublasSgemm(h, CUBLAS_OP_T, CUBLAS_OP_N, OC, N, IC, &one, dW, IC - 1, dinp, IC, &zero,
                        dout, ldc);
        CHECK(s == CUBLAS_STATUS_INVALID_VALUE, "sgemm with lda < k: status %d", s);
        // strided batched = a loop of sgemms
        int nb = 3;
        std::vector<float> A = rand_vec((size_t)nb * 4 * 6), Bm = rand_vec((size_t)nb * 6 * 5);
        float *dA = up(A), *dB = up(Bm), *dC = dnew<float>((size_t)nb * 4 * 5);
        cublasSgemmStridedBatched(h, CUBLAS_OP_N, CUBLAS_OP_N, 4, 5, 6, &one, dA, 4, 24, dB, 6, 30,
                                  &zero, dC, 4, 20, nb);
        std::vector<float> Cg = down(dC, (size_t)nb * 20);
        double md3 = 0;
        for (int b = 0; b < nb; b++)
            for (int j = 0; j < 5; j++)
                for (int i = 0; i < 4; i++) {
                    double r = 0;
                    for (int k = 0; k < 6; k++) r += (double)A[b * 24 + k * 4 + i] * Bm[b * 30 + j * 6 + k];
                    md3 = fmax(md3, fabs(Cg[b * 20 + j * 4 + i] - r));
                }
        CHECK(md3 < 1e-5, "strided batched sgemm: err %g", md3);
        cublasDestroy(h);
        cudaFree(dinp);
        cudaFree(dW);
        cudaFree(dout);
        cudaFree(dA);
        cudaFree(dB);
        cudaFree(dC);
    }
    // cuRAND stand-in: uniform on (0, 1].
    {
        size_t n = 100000;
        float *d = dnew<float>(n);
        curandGenerator_t g;
        curandCreateGenerator(&g, CURAND_RNG_PSEUDO_PHILOX4_32_10);
        curandSetPseudoRandomGeneratorSeed(g, 42);
        curandGenerateUniform(g, d, n);
        std::vector<float> u = down(d, n);
        double mean = 0, mn = 1, mx = 0;
        for (float x : u) {
            mean += x;
            mn = fmin(mn, x);
            mx = fmax(mx, x);
        }
        mean /= n;
        printf("  curand stand-in: mean %.4f min %.2e max %.6f\n", mean, mn, mx);
        CHECK(fabs(mean - 0.5) < 0.005 && mn > 0 && mx <= 1, "uniforms: mean %g min %g max %g", mean, mn, mx);
        curandDestroyGenerator(g);
        cudaFree(d);
    }
}

// =============================================================================================
// Part 2: kernels against plain references
// =============================================================================================

struct Shape {
    int B, T, C, NH, V;
};

static void test_layers(const Shape &s) {
    int B = s.B, T = s.T, C = s.C, NH = s.NH, V = s.V, hs = C / NH;
    size_t R = (size_t)B * T;
    printf("kernels at B=%d T=%d C=%d NH=%d V=%d\n", B, T, C, NH, V);
    cublasHandle_t h;
    cublasCreate(&h);

    // ---- encoder
    {
        int maxT = T + 3;
        std::vector<int> tok(R);
        for (auto &t : tok) t = (int)rng_below(&g_rng, (uint32_t)std::min(V, 7));  // many repeats
        std::vector<float> wte = rand_vec((size_t)V * C), wpe = rand_vec((size_t)maxT * C);
        int *dt = up(tok);
        float *dwte = up(wte), *dwpe = up(wpe), *dout = dnew<float>(R * C);
        encoder_forward_gpu(dout, dt, dwte, dwpe, B, T, C);
        std::vector<double> ref(R * C);
        for (size_t bt = 0; bt < R; bt++)
            for (int c = 0; c < C; c++)
                ref[bt * C + c] = (double)wte[(size_t)tok[bt] * C + c] + wpe[(bt % T) * C + c];
        check_rel("encoder forward", rel_err(down(dout, R * C), ref), 1e-7);
        std::vector<float> g = rand_vec(R * C), gwte0 = rand_vec((size_t)V * C),
                           gwpe0 = rand_vec((size_t)maxT * C);
        float *dg = up(g), *dgwte = up(gwte0), *dgwpe = up(gwpe0);
        int *bucket = dnew<int>(3 * R + 1);
        encoder_backward_gpu(dgwte, dgwpe, dg, tok.data(), B, T, C, bucket);
        std::vector<double> rwte(gwte0.begin(), gwte0.end()), rwpe(gwpe0.begin(), gwpe0.end());
        for (size_t bt = 0; bt < R; bt++)
            for (int c = 0; c < C; c++) {
                rwte[(size_t)tok[bt] * C + c] += g[bt * C + c];
                rwpe[(bt % T) * C + c] += g[bt * C + c];
            }
        check_rel("encoder backward dwte (+=)", rel_err(down(dgwte, rwte.size()), rwte), 1e-6);
        check_rel("encoder backward dwpe (+=)", rel_err(down(dgwpe, rwpe.size()), rwpe), 1e-6);
        cudaFree(dt);
        cudaFree(dwte);
        cudaFree(dwpe);
        cudaFree(dout);
        cudaFree(dg);
        cudaFree(dgwte);
        cudaFree(dgwpe);
        cudaFree(bucket);
    }

    // ---- layernorm
    {
        int N = (int)R;
        std::vector<float> x = rand_vec(R * C, -2, 3), w = rand_vec(C, 0.5, 1.5), b = rand_vec(C);
        float *dx = up(x), *dw = up(w), *db = up(b), *dout = dnew<float>(R * C);
        float *dm = dnew<float>(R), *dr = dnew<float>(R);
        layernorm_forward_gpu(dout, dm, dr, dx, dw, db, N, C);
        std::vector<double> ref(R * C), rm(R), rr(R);
        for (size_t i = 0; i < R; i++) {
            double m = 0, v = 0;
            for (int c = 0; c < C; c++) m += x[i * C + c];
            m /= C;
            for (int c = 0; c < C; c++) v += (x[i * C + c] - m) * (x[i * C + c] - m);
            v /= C;
            double r = 1.0 / sqrt(v + 1e-5);
            for (int c = 0; c < C; c++) ref[i * C + c] = (x[i * C + c] - m) * r * w[c] + b[c];
            rm[i] = m;
            rr[i] = r;
        }
        check_rel("layernorm forward out", rel_err(down(dout, R * C), ref), 2e-6);
        check_rel("layernorm forward mean", rel_err(down(dm, R), rm), 2e-6);
        check_rel("layernorm forward rstd", rel_err(down(dr, R), rr), 2e-6);
        std::vector<float> dy = rand_vec(R * C), dx0 = rand_vec(R * C), dw0 = rand_vec(C), db0 = rand_vec(C);
        std::vector<float> mean = down(dm, R), rstd = down(dr, R);
        float *ddy = up(dy), *ddx = up(dx0), *ddw = up(dw0), *ddb = up(db0);
        float *part = dnew<float>(layernorm_partial_floats(N, C));
        layernorm_backward_gpu(ddx, ddw, ddb, ddy, dx, dw, dm, dr, N, C, part);
        std::vector<double> rdx(dx0.begin(), dx0.end()), rdw(dw0.begin(), dw0.end()), rdb(db0.begin(), db0.end());
        for (size_t i = 0; i < R; i++) {
            double mdn = 0, mdnx = 0;
            for (int c = 0; c < C; c++) {
                double xh = (x[i * C + c] - (double)mean[i]) * rstd[i], dn = (double)dy[i * C + c] * w[c];
                mdn += dn;
                mdnx += dn * xh;
                rdw[c] += dy[i * C + c] * xh;
                rdb[c] += dy[i * C + c];
            }
            mdn /= C;
            mdnx /= C;
            for (int c = 0; c < C; c++) {
                double xh = (x[i * C + c] - (double)mean[i]) * rstd[i], dn = (double)dy[i * C + c] * w[c];
                rdx[i * C + c] += (dn - mdn - xh * mdnx) * rstd[i];
            }
        }
        check_rel("layernorm backward dinp (+=)", rel_err(down(ddx, R * C), rdx), 2e-6);
        check_rel("layernorm backward dw (+=)", rel_err(down(ddw, C), rdw), 2e-6);
        check_rel("layernorm backward db (+=)", rel_err(down(ddb, C), rdb), 2e-6);
        for (float *p : {dx, dw, db, dout, dm, dr, ddy, ddx, ddw, ddb, part}) cudaFree(p);
    }

    // ---- matmul (N, IC) x (OC, IC)^T, two shapes per model shape
    for (int which = 0; which < 2; which++) {
        int N = (int)R, IC = which ? 4 * C : C, OC = which ? C : 3 * C;
        std::vector<float> x = rand_vec((size_t)N * IC), W = rand_vec((size_t)OC * IC), bias = rand_vec(OC);
        float *dx = up(x), *dW = up(W), *db = up(bias), *dout = dnew<float>((size_t)N * OC);
        matmul_forward_gpu(h, dout, dx, dW, db, N, IC, OC);
        std::vector<double> ref((size_t)N * OC);
        for (int i = 0; i < N; i++)
            for (int o = 0; o < OC; o++) {
                double a = bias[o];
                for (int k = 0; k < IC; k++) a += (double)x[(size_t)i * IC + k] * W[(size_t)o * IC + k];
                ref[(size_t)i * OC + o] = a;
            }
        char nm[64];
        snprintf(nm, sizeof nm, "matmul forward (%d,%d)x(%d,%d)^T", N, IC, OC, IC);
        check_rel(nm, rel_err(down(dout, ref.size()), ref), 2e-6);
        std::vector<float> dy = rand_vec((size_t)N * OC), dW0 = rand_vec((size_t)OC * IC), db0 = rand_vec(OC);
        float *ddy = up(dy), *ddW = up(dW0), *ddb = up(db0), *ddx = dnew<float>((size_t)N * IC);
        float *part = dnew<float>(colsum_partial_floats(N, OC));
        matmul_backward_gpu(h, ddx, ddW, ddb, ddy, dx, dW, N, IC, OC, part);
        std::vector<double> rdx((size_t)N * IC, 0.0), rdW(dW0.begin(), dW0.end()), rdb(db0.begin(), db0.end());
        for (int i = 0; i < N; i++)
            for (int o = 0; o < OC; o++) {
                double d = dy[(size_t)i * OC + o];
                rdb[o] += d;
                for (int k = 0; k < IC; k++) {
                    rdx[(size_t)i * IC + k] += d * W[(size_t)o * IC + k];
                    rdW[(size_t)o * IC + k] += d * x[(size_t)i * IC + k];
                }
            }
        check_rel("matmul backward dinp", rel_err(down(ddx, rdx.size()), rdx), 2e-6);
        check_rel("matmul backward dweight (+=)", rel_err(down(ddW, rdW.size()), rdW), 2e-6);
        check_rel("matmul backward dbias (+=)", rel_err(down(ddb, rdb.size()), rdb), 2e-6);
        for (float *p : {dx, dW, db, dout, ddy, ddW, ddb, ddx, part}) cudaFree(p);
    }

    // ---- attention
    {
        std::vector<float> qkv = rand_vec(R * 3 * C, -2, 2);
        float *dqkv_in = up(qkv), *dout = dnew<float>(R * C), *qkvr = dnew<float>(R * 3 * C);
        float *att = dnew<float>((size_t)B * NH * T * T), *vacc = dnew<float>(R * C);
        attention_forward_gpu(h, dout, qkvr, att, dqkv_in, vacc, B, T, C, NH);
        std::vector<double> ry(R * C), ratt((size_t)B * NH * T * T, 0.0);
        double scale = 1.0 / sqrt((double)hs);
        auto Q = [&](int b, int t, int hh, int d) { return (double)qkv[((size_t)b * T + t) * 3 * C + hh * hs + d]; };
        auto K = [&](int b, int t, int hh, int d) { return (double)qkv[((size_t)b * T + t) * 3 * C + C + hh * hs + d]; };
        auto Vv = [&](int b, int t, int hh, int d) { return (double)qkv[((size_t)b * T + t) * 3 * C + 2 * C + hh * hs + d]; };
        for (int b = 0; b < B; b++)
            for (int hh = 0; hh < NH; hh++)
                for (int t = 0; t < T; t++) {
                    double *a = &ratt[(((size_t)b * NH + hh) * T + t) * T];
                    double mx = -INFINITY, sum = 0;
                    for (int t2 = 0; t2 <= t; t2++) {
                        double sc = 0;
                        for (int d = 0; d < hs; d++) sc += Q(b, t, hh, d) * K(b, t2, hh, d);
                        a[t2] = sc * scale;
                        mx = fmax(mx, a[t2]);
                    }
                    for (int t2 = 0; t2 <= t; t2++) sum += (a[t2] = exp(a[t2] - mx));
                    for (int t2 = 0; t2 <= t; t2++) a[t2] /= sum;
                    for (int d = 0; d < hs; d++) {
                        double y = 0;
                        for (int t2 = 0; t2 <= t; t2++) y += a[t2] * Vv(b, t2, hh, d);
                        ry[((size_t)b * T + t) * C + hh * hs + d] = y;
                    }
                }
        check_rel("attention forward out", rel_err(down(dout, R * C), ry), 2e-6);
        check_rel("attention forward att (zero above diagonal)", rel_err(down(att, ratt.size()), ratt), 2e-6);
        std::vector<float> dy = rand_vec(R * C);
        float *ddy = up(dy), *ddqkv = dnew<float>(R * 3 * C);
        float *scr = dnew<float>(attention_scratch_floats(B, T, C, NH));
        attention_backward_gpu(h, ddqkv, ddy, qkvr, att, B, T, C, NH, scr);
        std::vector<double> rd(R * 3 * C, 0.0);
        for (int b = 0; b < B; b++)
            for (int hh = 0; hh < NH; hh++)
                for (int t = 0; t < T; t++) {
                    const double *a = &ratt[(((size_t)b * NH + hh) * T + t) * T];
                    const float *g = &dy[((size_t)b * T + t) * C + hh * hs];
                    std::vector<double> da(t + 1);
                    double dot = 0;
                    for (int t2 = 0; t2 <= t; t2++) {
                        double s2 = 0;
                        for (int d = 0; d < hs; d++) {
                            s2 += g[d] * Vv(b, t2, hh, d);
                            rd[((size_t)b * T + t2) * 3 * C + 2 * C + hh * hs + d] += a[t2] * g[d];
                        }
                        da[t2] = s2;
                        dot += a[t2] * s2;
                    }
                    for (int t2 = 0; t2 <= t; t2++) {
                        double dp = a[t2] * (da[t2] - dot) * scale;
                        for (int d = 0; d < hs; d++) {
                            rd[((size_t)b * T + t) * 3 * C + hh * hs + d] += dp * K(b, t2, hh, d);
                            rd[((size_t)b * T + t2) * 3 * C + C + hh * hs + d] += dp * Q(b, t, hh, d);
                        }
                    }
                }
        check_rel("attention backward dqkv", rel_err(down(ddqkv, rd.size()), rd), 5e-6);
        for (float *p : {dqkv_in, dout, qkvr, att, vacc, ddy, ddqkv, scr}) cudaFree(p);
    }

    // ---- GELU and residual
    {
        size_t n = R * 4 * C;
        std::vector<float> x = rand_vec(n, -4, 4), d = rand_vec(n);
        float *dx = up(x), *dout = dnew<float>(n), *dd = up(d);
        gelu_forward_gpu(dout, dx, n);
        gelu_backward_gpu(dd, dx, n);
        std::vector<double> rf(n), rb(n);
        for (size_t i = 0; i < n; i++) {
            double xx = x[i], u = 0.7978845608028654 * (xx + 0.044715 * xx * xx * xx), th = tanh(u);
            rf[i] = 0.5 * xx * (1 + th);
            rb[i] = d[i] * (0.5 * (1 + th) + 0.5 * xx * (1 - th * th) * 0.7978845608028654 * (1 + 3 * 0.044715 * xx * xx));
        }
        check_rel("gelu forward", rel_err(down(dout, n), rf), 1e-6);
        check_rel("gelu backward", rel_err(down(dd, n), rb), 1e-6);
        std::vector<float> a = rand_vec(n), b2 = rand_vec(n);
        float *da = up(a), *db = up(b2);
        residual_forward_gpu(dout, da, db, n);
        std::vector<double> rr(n);
        for (size_t i = 0; i < n; i++) rr[i] = (double)a[i] + b2[i];
        check_rel("residual forward", rel_err(down(dout, n), rr), 1e-7);
        for (float *p : {dx, dout, dd, da, db}) cudaFree(p);
    }

    // ---- LM head: logits forward/backward on N rows, M of them selected
    {
        int N = (int)R;
        std::vector<float> z = rand_vec((size_t)N * V, -4, 4);
        std::vector<int> tg(N);
        for (auto &t : tg) t = (int)rng_below(&g_rng, V);
        float *dz = up(z), *dl = dnew<float>(N), *dlp = dnew<float>(N), *de = dnew<float>(N);
        int *dtg = up(tg);
        logits_forward_gpu(dl, dlp, de, dz, dtg, N, V);
        std::vector<double> rl(N), rlp(N), re(N);
        for (int i = 0; i < N; i++) {
            const float *zz = &z[(size_t)i * V];
            double mx = -INFINITY, s2 = 0, ez = 0;
            for (int j = 0; j < V; j++) mx = fmax(mx, zz[j]);
            for (int j = 0; j < V; j++) s2 += exp(zz[j] - mx);
            rl[i] = mx + log(s2);
            rlp[i] = zz[tg[i]] - rl[i];
            for (int j = 0; j < V; j++) ez += exp(zz[j] - rl[i]) * zz[j];
            re[i] = rl[i] - ez;
        }
        check_rel("logits forward lse", rel_err(down(dl, N), rl), 1e-6);
        check_rel("logits forward logp", rel_err(down(dlp, N), rlp), 2e-6);
        check_rel("logits forward entropy", rel_err(down(de, N), re), 2e-6);
        std::vector<int> sel;
        std::vector<float> ca, ce;
        for (int i = 0; i < N; i++)
            if (i % 3 != 1) {
                sel.push_back(i);
                ca.push_back(i % 4 == 0 ? 0.0f : frand(-1, 1));
                ce.push_back(i % 5 == 0 ? 0.0f : frand(-1, 1));
            }
        int M = (int)sel.size();
        int *dsel = up(sel);
        float *dca = up(ca), *dce = up(ce), *ddz = dnew<float>((size_t)M * V);
        logits_backward_gpu(ddz, dz, dl, dtg, dsel, dca, dce, M, V);
        std::vector<double> rdz((size_t)M * V);
        for (int s2 = 0; s2 < M; s2++) {
            int i = sel[s2];
            for (int j = 0; j < V; j++) {
                double zz = z[(size_t)i * V + j], lp = zz - rl[i], p = exp(lp);
                rdz[(size_t)s2 * V + j] = ca[s2] * ((j == tg[i]) - p) - ce[s2] * p * (lp + re[i]);
            }
        }
        check_rel("logits backward dlogits", rel_err(down(ddz, rdz.size()), rdz), 2e-6);
        for (float *p : {dz, dl, dlp, de, dca, dce, ddz}) cudaFree(p);
        cudaFree(dtg);
        cudaFree(dsel);
        // gather / scatter rows
        std::vector<float> src = rand_vec(R * C);
        std::vector<int> rows;
        for (int i = (int)R - 1; i >= 0; i -= 2) rows.push_back(i);
        int n = (int)rows.size();
        float *dsrc = up(src), *dg = dnew<float>((size_t)n * C), *ds = up(std::vector<float>(R * C, 0.0f));
        int *drows = up(rows);
        gather_rows_gpu(dg, dsrc, drows, n, C);
        scatter_rows_gpu(ds, dg, drows, n, C);
        std::vector<float> gg = down(dg, (size_t)n * C), sc = down(ds, R * C);
        int bad = 0;
        for (int k = 0; k < n; k++)
            for (int c = 0; c < C; c++) bad += gg[(size_t)k * C + c] != src[(size_t)rows[k] * C + c];
        for (size_t i = 0; i < R; i++)
            for (int c = 0; c < C; c++)
                bad += sc[i * C + c] != ((R - 1 - i) % 2 == 0 ? src[i * C + c] : 0.0f);
        CHECK(bad == 0, "gather/scatter rows: %d wrong", bad);
        cudaFree(dsrc);
        cudaFree(dg);
        cudaFree(ds);
        cudaFree(drows);
    }

    // ---- decode attention against the same reference, each row at its own position
    {
        int n = B, maxT = T + 2;
        std::vector<int> pos(n);
        for (int r = 0; r < n; r++) pos[r] = T - 1 - r;
        std::vector<float> kc = rand_vec((size_t)n * maxT * C), vc = rand_vec((size_t)n * maxT * C);
        std::vector<float> qkv = rand_vec((size_t)n * 3 * C, -2, 2);
        float *dk = up(kc), *dv = up(vc), *dq = up(qkv), *dy = dnew<float>((size_t)n * C);
        float *sc = dnew<float>((size_t)n * NH * maxT);
        int *dpos = up(pos);
        decode_attention_gpu(dy, dk, dv, sc, dq, dpos, n, maxT, C, NH);
        for (int r = 0; r < n; r++)
            for (int c = 0; c < C; c++) {
                kc[((size_t)r * maxT + pos[r]) * C + c] = qkv[(size_t)r * 3 * C + C + c];
                vc[((size_t)r * maxT + pos[r]) * C + c] = qkv[(size_t)r * 3 * C + 2 * C + c];
            }
        std::vector<double> ry((size_t)n * C);
        double scale = 1.0 / sqrt((double)hs);
        for (int r = 0; r < n; r++)
            for (int hh = 0; hh < NH; hh++) {
                int P = pos[r];
                std::vector<double> a(P + 1);
                double mx = -INFINITY, sum = 0;
                for (int t = 0; t <= P; t++) {
                    double s2 = 0;
                    for (int d = 0; d < hs; d++)
                        s2 += (double)qkv[(size_t)r * 3 * C + hh * hs + d] * kc[((size_t)r * maxT + t) * C + hh * hs + d];
                    a[t] = s2 * scale;
                    mx = fmax(mx, a[t]);
                }
                for (int t = 0; t <= P; t++) sum += (a[t] = exp(a[t] - mx));
                for (int d = 0; d < hs; d++) {
                    double y = 0;
                    for (int t = 0; t <= P; t++) y += a[t] / sum * vc[((size_t)r * maxT + t) * C + hh * hs + d];
                    ry[(size_t)r * C + hh * hs + d] = y;
                }
            }
        check_rel("decode attention (KV cache) out", rel_err(down(dy, ry.size()), ry), 2e-6);
        check_rel("decode attention K cache store", rel_err(down(dk, kc.size()), kc), 0.0);
        check_rel("decode attention V cache store", rel_err(down(dv, vc.size()), vc), 0.0);
        // prefill: keys and values of a (B, T) attention_forward's qkvr into the caches
        std::vector<float> qkvr = rand_vec(R * 3 * C);
        std::vector<float> kc2((size_t)B * maxT * C, 0.0f), vc2((size_t)B * maxT * C, 0.0f);
        float *dqkvr = up(qkvr), *dk2 = up(kc2), *dv2 = up(vc2);
        kv_from_qkvr_gpu(dk2, dv2, dqkvr, B, T, NH, hs, maxT);
        int bad = 0;
        std::vector<float> gk = down(dk2, kc2.size()), gv = down(dv2, vc2.size());
        for (int b = 0; b < B; b++)
            for (int t = 0; t < maxT; t++)
                for (int hh = 0; hh < NH; hh++)
                    for (int d = 0; d < hs; d++) {
                        size_t at = ((size_t)b * maxT + t) * C + hh * hs + d;
                        size_t src = (((size_t)b * NH + hh) * T + t) * hs + d;
                        bad += gk[at] != (t < T ? qkvr[R * C + src] : 0.0f);
                        bad += gv[at] != (t < T ? qkvr[2 * R * C + src] : 0.0f);
                    }
        CHECK(bad == 0, "kv_from_qkvr: %d wrong entries", bad);
        for (float *p : {dk, dv, dq, dy, sc, dqkvr, dk2, dv2}) cudaFree(p);
        cudaFree(dpos);
    }
    cublasDestroy(h);
}

static void test_optimizer(void) {
    printf("optimizer\n");
    size_t n = 100003;  // not a multiple of any block or grid size
    std::vector<float> g = rand_vec(n), p = rand_vec(n), m = rand_vec(n), v = rand_vec(n, 0, 1);
    float *dg = up(g), *dp = up(p), *dm = up(m), *dv = up(v);
    double *part = dnew<double>(NORM_BLOCKS), *out = dnew<double>(1);
    sumsq_gpu(out, dg, n, part);
    double ref = 0;
    for (float x : g) ref += (double)x * x;
    double got = down(out, 1)[0];
    printf("  sum of squares: rel err %.2e\n", fabs(got - ref) / ref);
    CHECK(fabs(got - ref) <= 1e-12 * ref, "sumsq %.17g want %.17g", got, ref);
    float b1 = 0.9f, b2 = 0.95f, eps = 1e-8f, decay = 1.0f - 1e-3f * 0.1f, ss = 1e-3f / 0.1f,
          bc2s = sqrtf(0.05f), gs = 0.7f;
    adamw_gpu(dp, dg, dm, dv, n, b1, b2, eps, decay, ss, bc2s, gs);
    std::vector<double> rp(n), rm(n), rv(n);
    for (size_t i = 0; i < n; i++) {
        double gi = (double)g[i] * gs;
        rm[i] = b1 * (double)m[i] + (1 - (double)b1) * gi;
        rv[i] = b2 * (double)v[i] + (1 - (double)b2) * gi * gi;
        rp[i] = p[i] * (double)decay - ss * rm[i] / (sqrt(rv[i]) / bc2s + eps);
    }
    check_rel("adamw params", rel_err(down(dp, n), rp), 1e-6);
    check_rel("adamw m", rel_err(down(dm, n), rm), 1e-6);
    check_rel("adamw v", rel_err(down(dv, n), rv), 1e-6);
    for (float *q : {dg, dp, dm, dv}) cudaFree(q);
    cudaFree(part);
    cudaFree(out);
}

static void test_sampler(void) {
    printf("sampler\n");
    int V = 5, n = 2000;
    std::vector<float> u(n);
    for (int i = 0; i < n; i++) u[i] = (i + 0.5f) / n;  // a deterministic grid: exact frequencies
    float *du = up(u), *dlp = dnew<float>(n), *probs = dnew<float>((size_t)n * V);
    int *dtok = dnew<int>(n), *keep = dnew<int>((size_t)n * V);
    auto run = [&](const std::vector<float> &p, float temp, float top_p, std::vector<int> &tok,
                   std::vector<float> &lp) {
        std::vector<float> z((size_t)n * V);
        for (int i = 0; i < n; i++)
            for (int j = 0; j < V; j++) z[(size_t)i * V + j] = logf(p[j]) + 0.25f;
        float *dz = up(z);
        sample_rows_gpu(dtok, dlp, dz, du, n, V, temp, top_p, probs, keep);
        tok = down(dtok, n);
        lp = down(dlp, n);
        cudaFree(dz);
    };
    std::vector<int> tok;
    std::vector<float> lp;
    // nucleus: sorted 0.3 (id 1), 0.3 (id 3), 0.25, 0.1, 0.05; top_p 0.55 keeps exactly {1, 3}
    std::vector<float> p = {0.1f, 0.3f, 0.05f, 0.3f, 0.25f};
    run(p, 1.0f, 0.55f, tok, lp);
    int cnt[5] = {0};
    double lperr = 0;
    for (int i = 0; i < n; i++) {
        cnt[tok[i]]++;
        lperr = fmax(lperr, fabs(lp[i] - log(0.5)));
    }
    printf("  top_p 0.55: counts %d %d %d %d %d, logp err %.2e\n", cnt[0], cnt[1], cnt[2], cnt[3], cnt[4], lperr);
    CHECK(cnt[0] == 0 && cnt[2] == 0 && cnt[4] == 0 && abs(cnt[1] - n / 2) <= 1, "top-p keep set wrong");
    CHECK(lperr < 1e-5, "top-p logp err %g", lperr);
    // ties broken by lower id: five equal tokens, top_p 0.3 keeps ids 0 and 1
    run(std::vector<float>(5, 0.2f), 1.0f, 0.3f, tok, lp);
    int c01 = 0;
    for (int t : tok) c01 += t <= 1;
    CHECK(c01 == n, "top-p ties: %d of %d in {0, 1}", c01, n);
    // Exact-mass boundary with a tie at the cut: sorted 0.3 (id 1), 0.3 (id 3), 0.2 (id 0),
    // 0.2 (id 2); the mass reaches 0.8 exactly with id 0, so id 2 (same probability) stays out.
    // On the u grid the frequencies are exact: 0.25, 0.375, 0, 0.375 (within 1).
    run(std::vector<float>{0.2f, 0.3f, 0.2f, 0.3f, 1e-9f}, 1.0f, 0.8f, tok, lp);
    {
        int cb[5] = {0};
        for (int t : tok) cb[t]++;
        printf("  boundary tie, top_p 0.8 = 0.3+0.3+0.2: counts %d %d %d %d %d (want %g %g 0 %g 0)\n",
               cb[0], cb[1], cb[2], cb[3], cb[4], 0.25 * n, 0.375 * n, 0.375 * n);
        CHECK(cb[2] == 0 && cb[4] == 0 && abs(cb[0] - n / 4) <= 1 && abs(cb[1] - 3 * n / 8) <= 1 &&
                  abs(cb[3] - 3 * n / 8) <= 1,
              "top-p exact-mass boundary with a tie: counts %d %d %d %d %d", cb[0], cb[1], cb[2],
              cb[3], cb[4]);
    }
    // full distribution at temperature 0.5: p^2 renormalised, frequencies within 1 of n * q
    run(p, 0.5f, 1.0f, tok, lp);
    double q[5], qs = 0;
    for (int j = 0; j < 5; j++) qs += (q[j] = (double)p[j] * p[j]);
    int c2[5] = {0}, badf = 0;
    double lpe = 0;
    for (int i = 0; i < n; i++) {
        c2[tok[i]]++;
        lpe = fmax(lpe, fabs(lp[i] - log(q[tok[i]] / qs)));
    }
    for (int j = 0; j < 5; j++) badf += fabs(c2[j] - n * q[j] / qs) > 1.01;
    printf("  temperature 0.5: counts %d %d %d %d %d (want %.1f %.1f ...), logp err %.2e\n", c2[0],
           c2[1], c2[2], c2[3], c2[4], n * q[0] / qs, n * q[1] / qs, lpe);
    CHECK(badf == 0 && lpe < 1e-5, "temperature sampling: %d bad frequencies, logp err %g", badf, lpe);
    // The nucleus against model.c's sort-based sample_top_p on the very probabilities the
    // kernel computed: random rows with ties, V not a multiple of the block, several top_p.
    {
        int Vr = 301, nr = 24;
        std::vector<float> z((size_t)nr * Vr), ur(nr, 0.5f);
        for (auto &x : z) x = (float)(int)frand(-6, 6) * 0.5f;  // few distinct values: many ties
        float *dz = up(z), *dur = up(ur), *dp = dnew<float>(z.size()), *dl = dnew<float>(nr);
        int *dk = dnew<int>(z.size()), *dt = dnew<int>(nr);
        int mism = 0, sizes = 0;
        for (float tp : {0.05f, 0.3f, 0.5f, 0.9f, 0.999f}) {
            sample_rows_gpu(dt, dl, dz, dur, nr, Vr, 0.8f, tp, dp, dk);
            std::vector<float> pr = down(dp, z.size());
            std::vector<int> kp = down(dk, z.size()), tk = down(dt, nr), ref(Vr);
            for (int r = 0; r < nr; r++) {
                int nk = sample_top_p(&pr[(size_t)r * Vr], Vr, tp, ref.data());
                std::vector<int> want(Vr, 0);
                for (int i = 0; i < nk; i++) want[ref[i]] = 1;
                for (int j = 0; j < Vr; j++) mism += kp[(size_t)r * Vr + j] != want[j];
                mism += !want[tk[r]];  // the sampled token is in the nucleus
                sizes += nk;
            }
        }
        printf("  nucleus vs model.c sample_top_p: %d mismatches over %d rows (mean size %.1f)\n",
               mism, 5 * nr, sizes / (5.0 * nr));
        CHECK(mism == 0, "nucleus differs from sample_top_p in %d places", mism);
        for (float *q : {dz, dur, dp, dl}) cudaFree(q);
        cudaFree(dk);
        cudaFree(dt);
    }
    // greedy: argmax with the lowest id on ties, logp at temperature 1
    run(std::vector<float>{0.1f, 0.35f, 0.1f, 0.35f, 0.1f}, 0.0f, 0.5f, tok, lp);
    CHECK(tok[0] == 1 && tok[n - 1] == 1 && fabs(lp[0] - logf(0.35f)) < 1e-6, "greedy: %d %g", tok[0], lp[0]);
    cudaFree(du);
    cudaFree(dlp);
    cudaFree(probs);
    cudaFree(dtok);
    cudaFree(keep);
}

// The whole GPU sampling path (cuRAND uniforms, the sampler kernel, the decode loop) against the
// renormalised nucleus by chi-square, as tests/test_sampling.c does for the CPU (see
// tests/sample_freq.h); fewer draws, since every decode step is emulated.
static void test_sample_frequencies(void) {
    enum { FV = 8, FT = 64, FB = 32, FCALLS = 1 };  // 32 x 63 = 2016 draws per case
    printf("gpu_backend sampling frequencies, %d draws per case, false-alarm rate 1e-6 per case\n",
           FCALLS * FB * (FT - 1));
    ModelConfig cfg = {FV, FT, 1, 1, 32};
    Model *m = gpu_backend.create(&cfg, FB, 1);
    CHECK(m != NULL, "gpu_backend.create");
    if (!m) return;
    std::vector<float> w(config_num_params(&cfg));
    const double skew[FV] = {0.30, 0.20, 0.15, 0.12, 0.10, 0.07, 0.04, 0.02};
    const double tie[FV] = {0.2, 0.3, 0.2, 0.3, 1e-9, 1e-9, 1e-9, 1e-9};
    const double pow2[FV] = {0.5, 0.25, 0.125, 0.0625, 0.03125, 0.015625, 0.0078125, 0.0078125};
    struct {
        const char *name;
        const double *p;
        float temperature;
        double top_p;
    } cases[] = {{"top_p 0.8, T=1 (5 kept, mass .87)", skew, 1.0f, 0.8},
                 {"top_p 0.6, T=0.7", skew, 0.7f, 0.6},
                 {"boundary tie: top_p 0.8 = 0.3+0.3+0.2", tie, 1.0f, 0.8},
                 {"boundary: top_p 0.75 = 0.5+0.25", pow2, 1.0f, 0.75}};
    for (const auto &c : cases) {
        double pt[FV], q[FV];
        sf_tempered(c.p, FV, c.temperature, pt);
        int k = sf_nucleus(pt, FV, c.top_p, q);
        sf_fixed_logits(w.data(), &cfg, c.p);
        gpu_backend.set_params(m, w.data());
        SfResult r = sf_sample(&gpu_backend, m, FV, FB, FT, FCALLS, c.temperature, (float)c.top_p, q);
        double crit = k > 1 ? sf_chi2_crit(k - 1) : 0.0;
        printf("  %-38s nucleus %d, chi2 %7.2f (crit %.1f), outside %ld, counts", c.name, k, r.chi2,
               crit, r.outside);
        for (int v = 0; v < FV; v++) printf(" %ld", r.counts[v]);
        printf(" of %ld\n", r.total);
        CHECK(r.failed_calls == 0 && r.total == (long)FCALLS * FB * (FT - 1), "%s: %ld draws",
              c.name, r.total);
        CHECK(r.outside == 0, "%s: %ld draws outside the nucleus", c.name, r.outside);
        CHECK(r.chi2 <= crit, "%s: chi-square %.2f over the 1e-6 critical value %.2f", c.name,
              r.chi2, crit);
    }
    gpu_backend.destroy(m);
}

// =============================================================================================
// Part 3: gpu_backend against cpu_backend
// =============================================================================================

static void compare_params(const char *what, const std::vector<float> &g, const std::vector<float> &c,
                           const ModelConfig *cfg, double tol) {
    size_t sz[NUM_PARAM_TENSORS];
    param_sizes(cfg, sz);
    size_t off = 0;
    for (int t = 0; t < NUM_PARAM_TENSORS; t++) {
        std::vector<float> gt(g.begin() + off, g.begin() + off + sz[t]);
        std::vector<float> ct(c.begin() + off, c.begin() + off + sz[t]);
        char nm[96];
        snprintf(nm, sizeof nm, "%s %s", what, PARAM_TENSOR_NAMES[t]);
        check_rel(nm, rel_err(gt, ct), tol);
        off += sz[t];
    }
}

static void test_backend(void) {
    printf("gpu_backend vs cpu_backend\n");
    ModelConfig cfg = {61, 24, 2, 3, 36};  // V maxT L NH C: hs 12, nothing a multiple of 32
    int maxB = 3;
    Model *gm = gpu_backend.create(&cfg, maxB, 1234), *cm = cpu_backend.create(&cfg, maxB, 1234);
    CHECK(gm && cm, "create failed");
    if (!gm || !cm) return;
    size_t np = gpu_backend.num_params(gm);
    CHECK(np == cpu_backend.num_params(cm), "num_params differ");
    std::vector<float> gp(np), cp(np);
    gpu_backend.get_params(gm, gp.data());
    cpu_backend.get_params(cm, cp.data());
    CHECK(gp == cp, "initial parameters differ");

    int B = 3, T = 19;
    size_t R = (size_t)B * T;
    std::vector<int> tok(R), tg(R);
    std::vector<float> dlp(R), dent(R);
    for (size_t i = 0; i < R; i++) {
        tok[i] = (int)rng_below(&g_rng, cfg.V);
        tg[i] = i % 5 == 2 ? -1 : (int)rng_below(&g_rng, cfg.V);
        dlp[i] = i % 7 == 3 ? 0.0f : frand(-0.2f, 0.1f);
        dent[i] = i % 4 == 1 ? 0.0f : frand(-0.05f, 0.05f);
    }
    AdamWConfig ac = {1e-3f, 0.9f, 0.95f, 1e-8f, 0.1f, 2.0f};  // clip 2: clipping active
    for (int step = 0; step < 2; step++) {
        int Bs = step ? 2 : B, Ts = step ? cfg.maxT : T;  // second step: other shapes, full maxT
        size_t Rs = (size_t)Bs * Ts;
        std::vector<int> tk(Rs), tt(Rs);
        std::vector<float> a(Rs), e(Rs);
        for (size_t i = 0; i < Rs; i++) {
            tk[i] = step ? (int)rng_below(&g_rng, cfg.V) : tok[i];
            tt[i] = step ? (i % 3 == 0 ? -1 : (int)rng_below(&g_rng, cfg.V)) : tg[i];
            a[i] = step ? frand(-0.1f, 0.1f) : dlp[i];
            e[i] = step ? frand(-0.05f, 0.05f) : dent[i];
        }
        std::vector<float> glp(Rs), gen(Rs), clp(Rs), cen(Rs);
        int rg = gpu_backend.forward(gm, tk.data(), tt.data(), Bs, Ts, glp.data(), gen.data());
        int rc = cpu_backend.forward(cm, tk.data(), tt.data(), Bs, Ts, clp.data(), cen.data());
        CHECK(rg == 0 && rc == 0, "forward returned %d / %d", rg, rc);
        printf(" step %d (B=%d T=%d)\n", step, Bs, Ts);
        check_rel("forward logp", rel_err(glp, clp), 1e-6);
        check_rel("forward entropy", rel_err(gen, cen), 2e-6);
        int zero_ok = 1;
        for (size_t i = 0; i < Rs; i++)
            if (tt[i] < 0) zero_ok &= glp[i] == 0.0f && gen[i] == 0.0f;
        CHECK(zero_ok, "rows without a target must give logp = entropy = 0");
        gpu_backend.zero_grad(gm);
        cpu_backend.zero_grad(cm);
        gpu_backend.backward(gm, a.data(), e.data());
        cpu_backend.backward(cm, a.data(), e.data());
        std::vector<float> gg(np), cg(np);
        gpu_backend.get_grads(gm, gg.data());
        cpu_backend.get_grads(cm, cg.data());
        compare_params("grad", gg, cg, &cfg, 2e-6);
        float gn = gpu_backend.update(gm, &ac, ac.lr), cn = cpu_backend.update(cm, &ac, ac.lr);
        printf("  grad norm gpu %.7g cpu %.7g\n", gn, cn);
        CHECK(fabs(gn - cn) <= 1e-5 * cn && gn > ac.grad_clip, "grad norm %g vs %g", gn, cn);
        gpu_backend.get_params(gm, gp.data());
        cpu_backend.get_params(cm, cp.data());
        // AdamW moves a weight by about lr * m / (sqrt(v) + eps); on the first step that is
        // lr * g / (|g| + eps), whose sensitivity to g is up to lr / max(|g|, eps). So the
        // gradient difference dg between the backends (checked above) allows a parameter
        // difference of about lr |dg| / max(|g|, eps): large exactly for tiny gradients (results
        // of cancellation; the key bias's gradient is 0 in exact arithmetic, softmax ignoring a
        // shift shared by all scores). Each entry must agree within 1e-5 of its tensor's largest
        // weight plus twice that allowance (g after clipping).
        {
            size_t sz[NUM_PARAM_TENSORS], off = 0;
            param_sizes(&cfg, sz);
            double gscale = fmin(1.0, ac.grad_clip / (cn + 1e-6));  // the clip AdamW applied
            double worst = 0, worst_plain = 0;
            int needed = 0;
            for (int t = 0; t < NUM_PARAM_TENSORS; t++) {
                double pmax = 1e-30;
                for (size_t i = off; i < off + sz[t]; i++) pmax = fmax(pmax, fabs(cp[i]));
                for (size_t i = off; i < off + sz[t]; i++) {
                    double g = fabs(cg[i]) * gscale, dg = fabs(gg[i] - cg[i]) * gscale;
                    double plain = 1e-5 * pmax;
                    double allow = plain + 2 * ac.lr * fmin(2.0, dg / fmax(g, ac.eps));
                    double diff = fabs(gp[i] - cp[i]);
                    if (!(diff <= allow)) worst = INFINITY;
                    worst = fmax(worst, diff / allow);
                    worst_plain = fmax(worst_plain, diff / pmax);
                    needed += diff > plain;
                }
                off += sz[t];
            }
            printf("  params after AdamW: max |diff| / max|p| %.2e; max |diff| / allowance %.2f; "
                   "%d of %zu entries needed the gradient allowance\n",
                   worst_plain, worst, needed, np);
            CHECK(worst <= 1.0, "parameters after AdamW differ beyond the allowance (%.3g)", worst);
        }
        std::vector<float> gmo(np), gve(np), cmo(np), cve(np);
        int64_t gs, cs;
        gpu_backend.get_opt_state(gm, gmo.data(), gve.data(), &gs);
        cpu_backend.get_opt_state(cm, cmo.data(), cve.data(), &cs);
        CHECK(gs == cs && gs == step + 1, "step counters %lld %lld", (long long)gs, (long long)cs);
        check_rel("AdamW m (all tensors)", rel_err(gmo, cmo), 2e-6);
        check_rel("AdamW v (all tensors)", rel_err(gve, cve), 2e-6);
        // keep the two models identical for the next step: differences must not compound
        gpu_backend.set_params(gm, cp.data());
        gpu_backend.set_opt_state(gm, cmo.data(), cve.data(), cs);
    }

    // Error handling.
    std::vector<float> lp1(R);
    std::vector<int> badtok(tok);
    badtok[5] = cfg.V;
    CHECK(gpu_backend.forward(gm, badtok.data(), tg.data(), B, T, lp1.data(), NULL) == -1,
          "a token out of range must be rejected");
    CHECK(gpu_backend.forward(gm, tok.data(), tg.data(), maxB + 1, T, lp1.data(), NULL) == -1,
          "B > maxB must be rejected");

    // ---- decoding: n > maxB (chunks), prompts of different lengths
    int n = 5, stride = 9, max_new = 7;
    std::vector<int> prompts((size_t)n * stride), plen = {3, 9, 1, 6, 4};
    for (auto &t : prompts) t = (int)rng_below(&g_rng, cfg.V);
    SampleRequest rq = {};
    rq.n = n;
    rq.prompts = prompts.data();
    rq.prompt_stride = stride;
    rq.prompt_len = plen.data();
    rq.max_new = max_new;
    rq.temperature = 0.0f;
    rq.top_p = 1.0f;
    rq.seed = 7;
    std::vector<int> gt((size_t)n * max_new), ct((size_t)n * max_new), gl(n), cl(n);
    std::vector<float> glp((size_t)n * max_new), clp((size_t)n * max_new);
    SampleResult gr = {gt.data(), glp.data(), gl.data()}, cr = {ct.data(), clp.data(), cl.data()};
    CHECK(gpu_backend.sample(gm, &rq, &gr) == 0 && cpu_backend.sample(cm, &rq, &cr) == 0, "sample failed");
    double maxd = 0;
    int same = gt == ct && gl == cl;
    for (size_t i = 0; i < glp.size(); i++) maxd = fmax(maxd, fabs(glp[i] - clp[i]));
    printf("  greedy decode: tokens %s, max |logp diff| %.2e\n", same ? "identical" : "DIFFER", maxd);
    CHECK(same, "greedy decode tokens differ from cpu_backend");
    CHECK(maxd <= 1e-5, "greedy decode logp differs by %g", maxd);
    // a sample() between forward and backward changes nothing (the backward is deterministic,
    // so the gradients must be bit-identical)
    {
        std::vector<float> g1(np), g2(np), lpa(R);
        gpu_backend.forward(gm, tok.data(), tg.data(), B, T, lpa.data(), NULL);
        gpu_backend.zero_grad(gm);
        gpu_backend.backward(gm, dlp.data(), dent.data());
        gpu_backend.get_grads(gm, g1.data());
        gpu_backend.forward(gm, tok.data(), tg.data(), B, T, lpa.data(), NULL);
        gpu_backend.sample(gm, &rq, &gr);
        gpu_backend.zero_grad(gm);
        gpu_backend.backward(gm, dlp.data(), dent.data());
        gpu_backend.get_grads(gm, g2.data());
        CHECK(g1 == g2, "sample() between forward and backward changed the gradients");
    }
    // stop tokens: row 0's third greedy token stops it (or an earlier occurrence does)
    int stop = gt[2];
    rq.stop = &stop;
    rq.n_stop = 1;
    std::vector<int> st((size_t)n * max_new), sl(n);
    std::vector<float> slp((size_t)n * max_new);
    SampleResult sr = {st.data(), slp.data(), sl.data()};
    gpu_backend.sample(gm, &rq, &sr);
    int stop_ok = 1;
    for (int i = 0; i < n; i++) {
        int want = max_new;
        for (int k = 0; k < max_new; k++)
            if (gt[(size_t)i * max_new + k] == stop) {
                want = k + 1;
                break;
            }
        stop_ok &= sl[i] == want;
        for (int k = 0; k < max_new; k++)
            stop_ok &= st[(size_t)i * max_new + k] == (k < want ? gt[(size_t)i * max_new + k] : -1);
    }
    CHECK(stop_ok, "stop tokens did not end the rows as expected");
    rq.stop = NULL;
    rq.n_stop = 0;
    // top_p tiny: only the most probable token survives: greedy tokens with logp 0
    rq.temperature = 1.0f;
    rq.top_p = 1e-6f;
    gpu_backend.sample(gm, &rq, &sr);
    double lpmax = 0;
    for (float x : slp) lpmax = fmax(lpmax, fabs(x));
    CHECK(st == gt && lpmax < 1e-6, "top_p -> 0 must give the greedy tokens with logp 0 (%g)", lpmax);
    // sampled at temperature 1: re-scoring the samples with forward gives the same logp
    rq.top_p = 1.0f;
    rq.seed = 99;
    gpu_backend.sample(gm, &rq, &sr);
    double rescore = 0;
    for (int i0 = 0; i0 < n; i0 += maxB) {
        int nb = std::min(maxB, n - i0), Tq = 0;
        for (int i = i0; i < i0 + nb; i++) Tq = std::max(Tq, plen[i] + sl[i]);
        std::vector<int> tk((size_t)nb * Tq, 0), tt((size_t)nb * Tq, -1);
        for (int r = 0; r < nb; r++) {
            int i = i0 + r;
            std::vector<int> seq(prompts.begin() + (size_t)i * stride, prompts.begin() + (size_t)i * stride + plen[i]);
            for (int k = 0; k < sl[i]; k++) seq.push_back(st[(size_t)i * max_new + k]);
            for (size_t t = 0; t < seq.size(); t++) tk[(size_t)r * Tq + t] = seq[t];
            for (int k = 0; k < sl[i]; k++) tt[(size_t)r * Tq + plen[i] - 1 + k] = st[(size_t)i * max_new + k];
        }
        std::vector<float> flp((size_t)nb * Tq);
        gpu_backend.forward(gm, tk.data(), tt.data(), nb, Tq, flp.data(), NULL);
        for (int r = 0; r < nb; r++) {
            int i = i0 + r;
            for (int k = 0; k < sl[i]; k++)
                rescore = fmax(rescore, fabs(flp[(size_t)r * Tq + plen[i] - 1 + k] - slp[(size_t)i * max_new + k]));
        }
    }
    printf("  sampled decode re-scored by forward: max |logp diff| %.2e\n", rescore);
    CHECK(rescore <= 1e-5, "sampled logp vs forward: %g", rescore);
    // same seed -> same samples; another seed -> different samples; nucleus + temperature valid
    std::vector<int> st2 = st, sl2 = sl;
    gpu_backend.sample(gm, &rq, &sr);
    CHECK(st == st2 && sl == sl2, "same seed gave different samples");
    rq.seed = 100;
    gpu_backend.sample(gm, &rq, &sr);
    CHECK(st != st2, "another seed gave the same samples");
    rq.temperature = 0.7f;
    rq.top_p = 0.9f;
    gpu_backend.sample(gm, &rq, &sr);
    int valid = 1;
    for (int i = 0; i < n; i++) {
        valid &= sl[i] == max_new;
        for (int k = 0; k < max_new; k++) {
            int t = st[(size_t)i * max_new + k];
            float l = slp[(size_t)i * max_new + k];
            valid &= t >= 0 && t < cfg.V && l <= 0.0f && isfinite(l);
        }
    }
    CHECK(valid, "temperature 0.7 top_p 0.9 samples are not valid");
    SampleRequest bad = rq;
    std::vector<int> long_len = {cfg.maxT, 1, 1, 1, 1};
    bad.prompt_len = long_len.data();
    bad.prompt_stride = cfg.maxT;
    std::vector<int> bigp((size_t)n * cfg.maxT, 0);
    bad.prompts = bigp.data();
    CHECK(gpu_backend.sample(gm, &bad, &sr) == -1, "prompt_len + max_new > maxT must be rejected");

    gpu_backend.destroy(gm);
    cpu_backend.destroy(cm);

#if CUDA_CPU_EMULATED
    // No device: create fails with a message naming ./train_cpu.
    cuda_cpu::st.devices = 0;
    fprintf(stderr, "(expected message follows)\n");
    Model *none = gpu_backend.create(&cfg, 1, 1);
    CHECK(none == NULL, "create must fail without a device");
    cuda_cpu::st.devices = 1;
#endif
}

int main(void) {
    rng_seed(&g_rng, 20260523);
    setvbuf(stdout, NULL, _IOLBF, 0);
#if !CUDA_CPU_EMULATED
    int ndev = 0;
    if (cudaGetDeviceCount(&ndev) != cudaSuccess || ndev == 0) {
        CHECK(0, "no CUDA device: build/gpu/test_kernels needs a GPU (make test_kernels runs the "
                 "same checks on the CPU)");
        return check_summary("test_kernels");
    }
#endif
    test_emulation();
    const Shape shapes[] = {
        {2, 5, 32, 2, 50},    // hs 16, tiny T
        {3, 37, 40, 5, 97},   // ragged T, C; hs 8
        {1, 67, 36, 3, 300},  // T > 64, hs 12, V > block size
    };
    for (const Shape &s : shapes) test_layers(s);
    test_optimizer();
    test_sampler();
    test_sample_frequencies();
    test_backend();
    return check_summary("test_kernels");
}
