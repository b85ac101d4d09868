// kernels.cu: memr2's GPU backend (gpu_backend of model.h): the CPU reference model.c, as CUDA
// kernels, with cuBLAS for every matmul and cuRAND for sampling. train.c runs unchanged on it.
//
// Build: `make train_gpu` (nvcc, sm_80/89/90). Tests: `make test_kernels` compiles this same
// file with g++ through dev/cuda_cpu.h (CUDA threads as fibers on the CPU) and checks every
// kernel, a whole training step and decoding against model.c.
//
// Reading order: the layer kernels (each followed by its host launcher, forward then backward),
// then the Model struct, forward, backward, update, sample, and the backend table at the end.
//
// Choices, and why:
// - fp32 throughout, cuBLAS in its default math mode (no TF32), so the GPU matches model.c to
//   ~1e-6 relative and a failing comparison means a bug, not rounding.
// - Backward is deterministic: no float atomics. Column sums (bias, LayerNorm gains, wpe) are
//   per-chunk partials then a second pass in a fixed order; the token-embedding gradient groups
//   positions by token on the host so one thread owns each (token, channel).
// - Attention is llm.c's: permute q, k, v per head, strided-batched sgemms for QK^T and AV, a
//   causal softmax kernel in between, and the mirror image backward.
// - Sampling prefills all prompts in one batched pass of the layers (padded to the longest;
//   causal attention keeps the padding invisible), copies keys and values into the KV cache,
//   then decodes one position per row per step, each row at its own position. Its buffers are
//   its own: a sample() between forward and backward changes nothing, as in model.c.
// - Sampling draws one uniform per row and step from cuRAND (Philox) seeded with req->seed; the
//   nucleus is found without sorting (see sample_rows_kernel).
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <algorithm>
#include <vector>

extern "C" {
#include "model.h"
#include "rng.h"
}
#include "kernels.h"

// ---------------------------------------------------------------------------------------------
// Error checks: a failing CUDA or cuBLAS call is a bug or a broken device; report where, exit.
static void cuda_check(cudaError_t e, const char *what, const char *file, int line) {
    if (e != cudaSuccess) {
        fprintf(stderr, "gpu backend: %s failed at %s:%d: %s\n", what, file, line,
                cudaGetErrorString(e));
        exit(1);
    }
}
static void cublas_check(cublasStatus_t s, const char *what, const char *file, int line) {
    if (s != CUBLAS_STATUS_SUCCESS) {
        fprintf(stderr, "gpu backend: %s failed at %s:%d: cuBLAS status %d\n", what, file, line,
                (int)s);
        exit(1);
    }
}
#define CUDA_CHECK(call) cuda_check((call), #call, __FILE__, __LINE__)
#define CUBLAS_CHECK(call) cublas_check((call), #call, __FILE__, __LINE__)
#define KERNEL_CHECK() cuda_check(cudaGetLastError(), "kernel launch", __FILE__, __LINE__)

static inline int ceil_div(size_t a, size_t b) { return (int)((a + b - 1) / b); }
// Grid for an elementwise kernel over n items (grid-stride loops cover the rest).
static inline int grid_for(size_t n, int block) {
    size_t g = (n + block - 1) / block;
    return (int)(g < 1 ? 1 : g > 65535 ? 65535 : g);
}

#define FULL_MASK 0xffffffffu
#define GELU_K 0.7978845608028654f  // sqrt(2/pi)
#define LN_EPS 1e-5f

// ---------------------------------------------------------------------------------------------
// Reductions. Every block size used with these is a multiple of 32.
__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(FULL_MASK, v, o);
    return v;
}
__device__ __forceinline__ float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(FULL_MASK, v, o));
    return v;
}
__device__ __forceinline__ double warp_sum_d(double v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(FULL_MASK, v, o);
    return v;
}
// Every thread gets the block's sum. The leading barrier lets callers reuse it back to back.
// (MEMR2_MUTANT_BLOCK_SUM deletes it: a test build only, proving CUDA_CPU_RACE=1 of
// dev/cuda_cpu.h sees the inter-warp race that follows; see make test_kernels_race.)
__device__ float block_sum(float v) {
    __shared__ float s[32];
    int lane = threadIdx.x % 32, warp = threadIdx.x / 32, nw = blockDim.x / 32;
    v = warp_sum(v);
#ifndef MEMR2_MUTANT_BLOCK_SUM
    __syncthreads();
#endif
    if (lane == 0) s[warp] = v;
    __syncthreads();
    return warp_sum(lane < nw ? s[lane] : 0.0f);
}
__device__ float block_max(float v) {
    __shared__ float s[32];
    int lane = threadIdx.x % 32, warp = threadIdx.x / 32, nw = blockDim.x / 32;
    v = warp_max(v);
    __syncthreads();
    if (lane == 0) s[warp] = v;
    __syncthreads();
    return warp_max(lane < nw ? s[lane] : -INFINITY);
}
__device__ double block_sum_d(double v) {
    __shared__ double s[32];
    int lane = threadIdx.x % 32, warp = threadIdx.x / 32, nw = blockDim.x / 32;
    v = warp_sum_d(v);
    __syncthreads();
    if (lane == 0) s[warp] = v;
    __syncthreads();
    return warp_sum_d(lane < nw ? s[lane] : 0.0);
}

// =============================================================================================
// Embeddings
// =============================================================================================

__global__ void encoder_forward_kernel(float *out, const int *tokens, const float *wte,
                                       const float *wpe, int B, int T, int C) {
    size_t n = (size_t)B * T * C;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        size_t bt = i / C;
        int c = (int)(i % C), t = (int)(bt % T);
        out[i] = wte[(size_t)tokens[bt] * C + c] + wpe[(size_t)t * C + c];
    }
}
void encoder_forward_gpu(float *out, const int *tokens, const float *wte, const float *wpe,
                         int B, int T, int C) {
    LAUNCH(encoder_forward_kernel, grid_for((size_t)B * T * C, 256), 256, 0, out, tokens, wte,
           wpe, B, T, C);
    KERNEL_CHECK();
}

// dwpe[t, c] += sum over b (thread per (t, c), b in order).
__global__ void wpe_backward_kernel(float *dwpe, const float *dout, int B, int T, int C) {
    size_t n = (size_t)T * C;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        float acc = 0.0f;
        for (int b = 0; b < B; b++) acc += dout[(size_t)b * n + i];
        dwpe[i] += acc;
    }
}
// Block x = one distinct token (x: the grid dimension without the 65535 limit); its positions
// are list[start[x] .. start[x+1]); block y = a chunk of channels.
// bucket layout: [U+1 starts][B*T positions][U token ids].
__global__ void wte_backward_kernel(float *dwte, const float *dout, const int *bucket, int U,
                                    int BT, int C) {
    const int *start = bucket, *list = bucket + U + 1, *ids = list + BT;
    int u = blockIdx.x;
    int c = blockIdx.y * blockDim.x + threadIdx.x;
    if (c >= C) return;
    float acc = 0.0f;
    for (int k = start[u]; k < start[u + 1]; k++) acc += dout[(size_t)list[k] * C + c];
    dwte[(size_t)ids[u] * C + c] += acc;
}
void encoder_backward_gpu(float *dwte, float *dwpe, const float *dout, const int *tokens_host,
                          int B, int T, int C, int *bucket) {
    int BT = B * T;
    // Positions sorted by token (stable: positions stay in order within a token).
    std::vector<int> order(BT);
    for (int i = 0; i < BT; i++) order[i] = i;
    std::stable_sort(order.begin(), order.end(),
                     [&](int a, int b) { return tokens_host[a] < tokens_host[b]; });
    std::vector<int> starts, ids;
    for (int k = 0; k < BT; k++)
        if (k == 0 || tokens_host[order[k]] != tokens_host[order[k - 1]]) {
            starts.push_back(k);
            ids.push_back(tokens_host[order[k]]);
        }
    starts.push_back(BT);
    int U = (int)ids.size();
    std::vector<int> host(starts);
    host.insert(host.end(), order.begin(), order.end());
    host.insert(host.end(), ids.begin(), ids.end());
    CUDA_CHECK(cudaMemcpy(bucket, host.data(), host.size() * sizeof(int), cudaMemcpyHostToDevice));
    LAUNCH(wpe_backward_kernel, grid_for((size_t)T * C, 256), 256, 0, dwpe, dout, B, T, C);
    KERNEL_CHECK();
    if (U > 0) {
        LAUNCH(wte_backward_kernel, dim3(U, ceil_div(C, 64)), 64, 0, dwte, dout, bucket, U, BT, C);
        KERNEL_CHECK();
    }
}

// =============================================================================================
// LayerNorm: one warp per row; mean and variance in two passes like model.c.
// =============================================================================================

__global__ void layernorm_forward_kernel(float *out, float *mean, float *rstd, const float *inp,
                                         const float *w, const float *b, int N, int C) {
    int lane = threadIdx.x % 32;
    int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    if (row >= N) return;  // the whole warp leaves together
    const float *x = inp + (size_t)row * C;
    float s = 0.0f;
    for (int c = lane; c < C; c += 32) s += x[c];
    float m = warp_sum(s) / (float)C;
    float v = 0.0f;
    for (int c = lane; c < C; c += 32) v += (x[c] - m) * (x[c] - m);
    float r = 1.0f / sqrtf(warp_sum(v) / (float)C + LN_EPS);
    float *o = out + (size_t)row * C;
    for (int c = lane; c < C; c += 32) o[c] = (x[c] - m) * r * w[c] + b[c];
    if (lane == 0) {
        mean[row] = m;
        rstd[row] = r;
    }
}
void layernorm_forward_gpu(float *out, float *mean, float *rstd, const float *inp, const float *w,
                           const float *b, int N, int C) {
    if (N <= 0) return;
    LAUNCH(layernorm_forward_kernel, ceil_div(N, 8), 256, 0, out, mean, rstd, inp, w, b, N, C);
    KERNEL_CHECK();
}

// dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)), dxhat = dout * w. Accumulates.
__global__ void layernorm_backward_dinp_kernel(float *dinp, const float *dout, const float *inp,
                                               const float *w, const float *mean,
                                               const float *rstd, int N, int C) {
    int lane = threadIdx.x % 32;
    int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    if (row >= N) return;
    const float *d = dout + (size_t)row * C, *x = inp + (size_t)row * C;
    float m = mean[row], s = rstd[row];
    float mdn = 0.0f, mdnx = 0.0f;
    for (int c = lane; c < C; c += 32) {
        float xh = (x[c] - m) * s, dn = d[c] * w[c];
        mdn += dn;
        mdnx += dn * xh;
    }
    mdn = warp_sum(mdn) / (float)C;
    mdnx = warp_sum(mdnx) / (float)C;
    float *di = dinp + (size_t)row * C;
    for (int c = lane; c < C; c += 32) {
        float xh = (x[c] - m) * s, dn = d[c] * w[c];
        di[c] += (dn - mdn - xh * mdnx) * s;
    }
}

// Column sums in two passes: chunk p of the rows -> partial[p], then a fixed-order sum of the
// partials. Block (32, 8): 32 columns, 8 row lanes reduced through shared memory.
static int colsum_chunks(int N) { return std::max(1, std::min(64, N / 32)); }
size_t colsum_partial_floats(int N, int OC) { return (size_t)colsum_chunks(N) * OC; }
size_t layernorm_partial_floats(int N, int C) { return 2 * (size_t)colsum_chunks(N) * C; }

// partial_w[p, c] = sum dout * xhat and partial_b[p, c] = sum dout over chunk p's rows.
__global__ void layernorm_params_partial_kernel(float *pw, float *pb, const float *dout,
                                                const float *inp, const float *mean,
                                                const float *rstd, int N, int C, int P) {
    __shared__ float sw[8][33], sb[8][33];
    int c = blockIdx.x * 32 + threadIdx.x, p = blockIdx.y;
    int lo = (int)((size_t)N * p / P), hi = (int)((size_t)N * (p + 1) / P);
    float aw = 0.0f, ab = 0.0f;
    if (c < C)
        for (int i = lo + (int)threadIdx.y; i < hi; i += 8) {
            float d = dout[(size_t)i * C + c];
            aw += d * (inp[(size_t)i * C + c] - mean[i]) * rstd[i];
            ab += d;
        }
    sw[threadIdx.y][threadIdx.x] = aw;
    sb[threadIdx.y][threadIdx.x] = ab;
    __syncthreads();
    if (threadIdx.y == 0 && c < C) {
        float tw = 0.0f, tb = 0.0f;
        for (int k = 0; k < 8; k++) {
            tw += sw[k][threadIdx.x];
            tb += sb[k][threadIdx.x];
        }
        pw[(size_t)p * C + c] = tw;
        pb[(size_t)p * C + c] = tb;
    }
}
__global__ void colsum_final_kernel(float *out, const float *partial, int P, int C) {
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C) return;
    float acc = 0.0f;
    for (int p = 0; p < P; p++) acc += partial[(size_t)p * C + c];
    out[c] += acc;
}
void layernorm_backward_gpu(float *dinp, float *dw, float *db, const float *dout,
                            const float *inp, const float *w, const float *mean,
                            const float *rstd, int N, int C, float *partial) {
    if (N <= 0) return;
    LAUNCH(layernorm_backward_dinp_kernel, ceil_div(N, 8), 256, 0, dinp, dout, inp, w, mean, rstd,
           N, C);
    KERNEL_CHECK();
    int P = colsum_chunks(N);
    float *pw = partial, *pb = partial + (size_t)P * C;
    LAUNCH(layernorm_params_partial_kernel, dim3(ceil_div(C, 32), P), dim3(32, 8), 0, pw, pb,
           dout, inp, mean, rstd, N, C, P);
    KERNEL_CHECK();
    LAUNCH(colsum_final_kernel, ceil_div(C, 128), 128, 0, dw, pw, P, C);
    LAUNCH(colsum_final_kernel, ceil_div(C, 128), 128, 0, db, pb, P, C);
    KERNEL_CHECK();
}

// =============================================================================================
// GELU (tanh approximation) and residual
// =============================================================================================

__global__ void gelu_forward_kernel(float *out, const float *inp, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        float x = inp[i];
        out[i] = 0.5f * x * (1.0f + tanhf(GELU_K * (x + 0.044715f * x * x * x)));
    }
}
void gelu_forward_gpu(float *out, const float *inp, size_t n) {
    LAUNCH(gelu_forward_kernel, grid_for(n, 256), 256, 0, out, inp, n);
    KERNEL_CHECK();
}
__global__ void gelu_backward_kernel(float *d, const float *inp, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        float x = inp[i];
        float th = tanhf(GELU_K * (x + 0.044715f * x * x * x));
        float sech2 = 1.0f - th * th;
        d[i] *= 0.5f * (1.0f + th) + 0.5f * x * sech2 * GELU_K * (1.0f + 3.0f * 0.044715f * x * x);
    }
}
void gelu_backward_gpu(float *d, const float *inp, size_t n) {
    LAUNCH(gelu_backward_kernel, grid_for(n, 256), 256, 0, d, inp, n);
    KERNEL_CHECK();
}
__global__ void residual_forward_kernel(float *out, const float *a, const float *b, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        out[i] = a[i] + b[i];
}
void residual_forward_gpu(float *out, const float *a, const float *b, size_t n) {
    LAUNCH(residual_forward_kernel, grid_for(n, 256), 256, 0, out, a, b, n);
    KERNEL_CHECK();
}

// =============================================================================================
// Matmul through cuBLAS. cuBLAS is column-major: a row-major (R x K) array is the column-major
// (K x R) matrix, its transpose. So out = inp W^T (row-major) is out^T = W inp^T (column-major):
// sgemm(T, N, m=OC, n=N, k=IC, A=W (lda IC), B=inp (ldb IC), C=out (ldc OC)).
// =============================================================================================

__global__ void add_bias_kernel(float *out, const float *bias, int N, int OC) {
    size_t n = (size_t)N * OC;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        out[i] += bias[i % OC];
}
void matmul_forward_gpu(cublasHandle_t h, float *out, const float *inp, const float *weight,
                        const float *bias, int N, int IC, int OC) {
    if (N <= 0) return;
    const float one = 1.0f, zero = 0.0f;
    CUBLAS_CHECK(cublasSgemm(h, CUBLAS_OP_T, CUBLAS_OP_N, OC, N, IC, &one, weight, IC, inp, IC,
                             &zero, out, OC));
    if (bias) {
        LAUNCH(add_bias_kernel, grid_for((size_t)N * OC, 256), 256, 0, out, bias, N, OC);
        KERNEL_CHECK();
    }
}

__global__ void colsum_partial_kernel(float *partial, const float *in, int N, int C, int P) {
    __shared__ float s[8][33];
    int c = blockIdx.x * 32 + threadIdx.x, p = blockIdx.y;
    int lo = (int)((size_t)N * p / P), hi = (int)((size_t)N * (p + 1) / P);
    float a = 0.0f;
    if (c < C)
        for (int i = lo + (int)threadIdx.y; i < hi; i += 8) a += in[(size_t)i * C + c];
    s[threadIdx.y][threadIdx.x] = a;
    __syncthreads();
    if (threadIdx.y == 0 && c < C) {
        float t = 0.0f;
        for (int k = 0; k < 8; k++) t += s[k][threadIdx.x];
        partial[(size_t)p * C + c] = t;
    }
}
void matmul_backward_gpu(cublasHandle_t h, float *dinp, float *dweight, float *dbias,
                         const float *dout, const float *inp, const float *weight, int N, int IC,
                         int OC, float *partial) {
    if (N <= 0) return;
    const float one = 1.0f, zero = 0.0f;
    // dinp^T (IC x N) = W^T (IC x OC) dout^T (OC x N); W row-major (OC, IC) is column-major W^T.
    if (dinp)
        CUBLAS_CHECK(cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, IC, N, OC, &one, weight, IC, dout,
                                 OC, &zero, dinp, IC));
    // dW^T (IC x OC) += inp^T (IC x N) dout (N x OC)
    CUBLAS_CHECK(cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_T, IC, OC, N, &one, inp, IC, dout, OC,
                             &one, dweight, IC));
    if (dbias) {
        int P = colsum_chunks(N);
        LAUNCH(colsum_partial_kernel, dim3(ceil_div(OC, 32), P), dim3(32, 8), 0, partial, dout, N,
               OC, P);
        KERNEL_CHECK();
        LAUNCH(colsum_final_kernel, ceil_div(OC, 128), 128, 0, dbias, partial, P, OC);
        KERNEL_CHECK();
    }
}

// =============================================================================================
// Attention
// =============================================================================================

// qkv (B, T, 3, NH, hs) -> q, k, v each (B, NH, T, hs), consecutive in qkvr.
__global__ void permute_kernel(float *qkvr, const float *qkv, int B, int T, int NH, int hs) {
    size_t n = (size_t)B * NH * T * hs;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        int d = (int)(i % hs);
        int t = (int)(i / hs % T);
        int h = (int)(i / ((size_t)hs * T) % NH);
        size_t b = i / ((size_t)hs * T * NH);
        size_t src = ((b * T + t) * 3 * NH + h) * hs + d;
        qkvr[i] = qkv[src];
        qkvr[n + i] = qkv[src + (size_t)NH * hs];
        qkvr[2 * n + i] = qkv[src + 2 * (size_t)NH * hs];
    }
}
// out (B, T, NH, hs) <- in (B, NH, T, hs)
__global__ void unpermute_kernel(float *out, const float *in, int B, int T, int NH, int hs) {
    size_t n = (size_t)B * NH * T * hs;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        int d = (int)(i % hs);
        int t = (int)(i / hs % T);
        int h = (int)(i / ((size_t)hs * T) % NH);
        size_t b = i / ((size_t)hs * T * NH);
        out[((b * T + t) * NH + h) * hs + d] = in[i];
    }
}
// The reverse of permute_kernel for gradients: dqkv (B, T, 3, NH, hs) <- dq, dk, dv.
__global__ void permute_backward_kernel(float *dqkv, const float *dqkvr, int B, int T, int NH,
                                        int hs) {
    size_t n = (size_t)B * NH * T * hs;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        int d = (int)(i % hs);
        int t = (int)(i / hs % T);
        int h = (int)(i / ((size_t)hs * T) % NH);
        size_t b = i / ((size_t)hs * T * NH);
        size_t dst = ((b * T + t) * 3 * NH + h) * hs + d;
        dqkv[dst] = dqkvr[i];
        dqkv[dst + (size_t)NH * hs] = dqkvr[n + i];
        dqkv[dst + 2 * (size_t)NH * hs] = dqkvr[2 * n + i];
    }
}
// dY (B, NH, T, hs) <- dout (B, T, NH, hs)
__global__ void unpermute_backward_kernel(float *din, const float *dout, int B, int T, int NH,
                                          int hs) {
    size_t n = (size_t)B * NH * T * hs;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        int d = (int)(i % hs);
        int t = (int)(i / hs % T);
        int h = (int)(i / ((size_t)hs * T) % NH);
        size_t b = i / ((size_t)hs * T * NH);
        din[i] = dout[((b * T + t) * NH + h) * hs + d];
    }
}

// One warp per row (b, h, t) of att (B*NH*T, T): in place, preatt -> softmax(scale * preatt)
// over t2 <= t, zero above the diagonal (the AV sgemm reads the whole row).
__global__ void softmax_causal_kernel(float *att, int rows, int T, float scale) {
    int lane = threadIdx.x % 32;
    int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    if (row >= rows) return;
    int t = row % T;
    float *a = att + (size_t)row * T;
    float mx = -INFINITY;
    for (int j = lane; j <= t; j += 32) mx = fmaxf(mx, a[j] * scale);
    mx = warp_max(mx);
    float s = 0.0f;
    for (int j = lane; j <= t; j += 32) {
        float e = expf(a[j] * scale - mx);
        a[j] = e;
        s += e;
    }
    float inv = 1.0f / warp_sum(s);
    for (int j = lane; j < T; j += 32) a[j] = j <= t ? a[j] * inv : 0.0f;
}
// In place datt -> dpreatt = scale * att * (datt - sum_j att_j datt_j), zero above the diagonal.
__global__ void softmax_causal_backward_kernel(float *datt, const float *att, int rows, int T,
                                               float scale) {
    int lane = threadIdx.x % 32;
    int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    if (row >= rows) return;
    int t = row % T;
    float *d = datt + (size_t)row * T;
    const float *a = att + (size_t)row * T;
    float dot = 0.0f;
    for (int j = lane; j <= t; j += 32) dot += a[j] * d[j];
    dot = warp_sum(dot);
    for (int j = lane; j < T; j += 32) d[j] = j <= t ? a[j] * (d[j] - dot) * scale : 0.0f;
}

void attention_forward_gpu(cublasHandle_t h, float *out, float *qkvr, float *att,
                           const float *qkv, float *vaccum, int B, int T, int C, int NH) {
    int hs = C / NH;
    size_t n = (size_t)B * T * C;
    const float *q = qkvr, *k = qkvr + n, *v = qkvr + 2 * n;
    const float one = 1.0f, zero = 0.0f;
    float scale = 1.0f / sqrtf((float)hs);
    LAUNCH(permute_kernel, grid_for(n, 256), 256, 0, qkvr, qkv, B, T, NH, hs);
    KERNEL_CHECK();
    // preatt = q k^T (T x T per head). Row-major q, k (T, hs) are the column-major q^T, k^T
    // (hs x T), so column-major preatt^T = k q^T = op_T(k^T) q^T: sgemm(T, N) on (k, q).
    CUBLAS_CHECK(cublasSgemmStridedBatched(h, CUBLAS_OP_T, CUBLAS_OP_N, T, T, hs, &one, k, hs,
                                           (long long)T * hs, q, hs, (long long)T * hs, &zero,
                                           att, T, (long long)T * T, B * NH));
    int rows = B * NH * T;
    LAUNCH(softmax_causal_kernel, ceil_div(rows, 8), 256, 0, att, rows, T, scale);
    KERNEL_CHECK();
    // y = att v (T x hs): column-major y^T = v^T att^T, both already in column-major form.
    CUBLAS_CHECK(cublasSgemmStridedBatched(h, CUBLAS_OP_N, CUBLAS_OP_N, hs, T, T, &one, v, hs,
                                           (long long)T * hs, att, T, (long long)T * T, &zero,
                                           vaccum, hs, (long long)T * hs, B * NH));
    LAUNCH(unpermute_kernel, grid_for(n, 256), 256, 0, out, vaccum, B, T, NH, hs);
    KERNEL_CHECK();
}

size_t attention_scratch_floats(int B, int T, int C, int NH) {
    size_t n = (size_t)B * T * C;
    return n + (size_t)B * NH * T * T + 3 * n;  // dY, datt, dq dk dv
}
void attention_backward_gpu(cublasHandle_t h, float *dqkv, const float *dout, const float *qkvr,
                            const float *att, int B, int T, int C, int NH, float *scratch) {
    int hs = C / NH;
    size_t n = (size_t)B * T * C;
    const float *q = qkvr, *k = qkvr + n, *v = qkvr + 2 * n;
    float *dy = scratch, *datt = dy + n, *dq = datt + (size_t)B * NH * T * T, *dk = dq + n,
          *dv = dk + n;
    const float one = 1.0f, zero = 0.0f;
    float scale = 1.0f / sqrtf((float)hs);
    long long sT = (long long)T * hs, sTT = (long long)T * T;
    LAUNCH(unpermute_backward_kernel, grid_for(n, 256), 256, 0, dy, dout, B, T, NH, hs);
    KERNEL_CHECK();
    // datt = dy v^T: column-major datt^T = v dy^T = op_T(v^T) dy^T
    CUBLAS_CHECK(cublasSgemmStridedBatched(h, CUBLAS_OP_T, CUBLAS_OP_N, T, T, hs, &one, v, hs, sT,
                                           dy, hs, sT, &zero, datt, T, sTT, B * NH));
    // dv = att^T dy: column-major dv^T = dy^T att
    CUBLAS_CHECK(cublasSgemmStridedBatched(h, CUBLAS_OP_N, CUBLAS_OP_T, hs, T, T, &one, dy, hs, sT,
                                           att, T, sTT, &zero, dv, hs, sT, B * NH));
    int rows = B * NH * T;
    LAUNCH(softmax_causal_backward_kernel, ceil_div(rows, 8), 256, 0, datt, att, rows, T, scale);
    KERNEL_CHECK();
    // dq = dpre k: column-major dq^T = k^T dpre^T
    CUBLAS_CHECK(cublasSgemmStridedBatched(h, CUBLAS_OP_N, CUBLAS_OP_N, hs, T, T, &one, k, hs, sT,
                                           datt, T, sTT, &zero, dq, hs, sT, B * NH));
    // dk = dpre^T q: column-major dk^T = q^T dpre
    CUBLAS_CHECK(cublasSgemmStridedBatched(h, CUBLAS_OP_N, CUBLAS_OP_T, hs, T, T, &one, q, hs, sT,
                                           datt, T, sTT, &zero, dk, hs, sT, B * NH));
    LAUNCH(permute_backward_kernel, grid_for(n, 256), 256, 0, dqkv, dq, B, T, NH, hs);
    KERNEL_CHECK();
}

// =============================================================================================
// Language-model head
// =============================================================================================

__global__ void gather_rows_kernel(float *dst, const float *src, const int *rows, int n, int C) {
    size_t total = (size_t)n * C;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total;
         i += (size_t)gridDim.x * blockDim.x)
        dst[i] = src[(size_t)rows[i / C] * C + i % C];
}
__global__ void scatter_rows_kernel(float *dst, const float *src, const int *rows, int n, int C) {
    size_t total = (size_t)n * C;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total;
         i += (size_t)gridDim.x * blockDim.x)
        dst[(size_t)rows[i / C] * C + i % C] = src[i];
}
void gather_rows_gpu(float *dst, const float *src, const int *rows, int n, int C) {
    if (n <= 0) return;
    LAUNCH(gather_rows_kernel, grid_for((size_t)n * C, 256), 256, 0, dst, src, rows, n, C);
    KERNEL_CHECK();
}
void scatter_rows_gpu(float *dst, const float *src, const int *rows, int n, int C) {
    if (n <= 0) return;
    LAUNCH(scatter_rows_kernel, grid_for((size_t)n * C, 256), 256, 0, dst, src, rows, n, C);
    KERNEL_CHECK();
}

// One block per row: max, log-sum-exp, log p of the target, and the entropy on request.
__global__ void logits_forward_kernel(float *lse_out, float *logp, float *entropy,
                                      const float *logits, const int *targets, int V) {
    int row = blockIdx.x;
    const float *z = logits + (size_t)row * V;
    float mx = -INFINITY;
    for (int j = threadIdx.x; j < V; j += blockDim.x) mx = fmaxf(mx, z[j]);
    mx = block_max(mx);
    float s = 0.0f;
    for (int j = threadIdx.x; j < V; j += blockDim.x) s += expf(z[j] - mx);
    float lse = mx + logf(block_sum(s));
    if (entropy) {
        float ez = 0.0f;
        for (int j = threadIdx.x; j < V; j += blockDim.x) ez += expf(z[j] - lse) * z[j];
        ez = block_sum(ez);
        if (threadIdx.x == 0) entropy[row] = lse - ez;
    }
    if (threadIdx.x == 0) {
        lse_out[row] = lse;
        logp[row] = z[targets[row]] - lse;
    }
}
void logits_forward_gpu(float *lse, float *logp, float *entropy, const float *logits,
                        const int *targets, int N, int V) {
    if (N <= 0) return;
    LAUNCH(logits_forward_kernel, N, 256, 0, lse, logp, entropy, logits, targets, V);
    KERNEL_CHECK();
}

// Block s: selected row i = sel[s] of logits. dz_j = -a p_j - e p_j (z_j - lse + H); dz_y += a.
__global__ void logits_backward_kernel(float *dlogits, const float *logits, const float *lse_in,
                                       const int *targets, const int *sel, const float *dlogp,
                                       const float *dentropy, int V) {
    int s = blockIdx.x, i = sel[s];
    const float *z = logits + (size_t)i * V;
    float *dz = dlogits + (size_t)s * V;
    float a = dlogp[s], e = dentropy[s], lse = lse_in[i];
    float H = 0.0f;
    if (e != 0.0f) {  // uniform across the block: no divergent barrier
        float ez = 0.0f;
        for (int j = threadIdx.x; j < V; j += blockDim.x) ez += expf(z[j] - lse) * z[j];
        H = lse - block_sum(ez);
    }
    int y = targets[i];
    for (int j = threadIdx.x; j < V; j += blockDim.x) {
        float pj = expf(z[j] - lse);
        dz[j] = -a * pj - e * pj * (z[j] - lse + H) + (j == y ? a : 0.0f);
    }
}
void logits_backward_gpu(float *dlogits, const float *logits, const float *lse,
                         const int *targets, const int *sel, const float *dlogp,
                         const float *dentropy, int M, int V) {
    if (M <= 0) return;
    LAUNCH(logits_backward_kernel, M, 256, 0, dlogits, logits, lse, targets, sel, dlogp, dentropy,
           V);
    KERNEL_CHECK();
}

// =============================================================================================
// Optimizer
// =============================================================================================

__global__ void sumsq_partial_kernel(double *partial, const float *g, size_t n) {
    double acc = 0.0;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        acc += (double)g[i] * g[i];
    acc = block_sum_d(acc);
    if (threadIdx.x == 0) partial[blockIdx.x] = acc;
}
__global__ void sumsq_final_kernel(double *out, const double *partial, int P) {
    double acc = 0.0;
    for (int i = threadIdx.x; i < P; i += blockDim.x) acc += partial[i];
    acc = block_sum_d(acc);
    if (threadIdx.x == 0) *out = acc;
}
void sumsq_gpu(double *out, const float *g, size_t n, double *partial) {
    // A fixed grid (not one sized by n) keeps the summation order, hence the result, fixed.
    LAUNCH(sumsq_partial_kernel, NORM_BLOCKS, 256, 0, partial, g, n);
    KERNEL_CHECK();
    LAUNCH(sumsq_final_kernel, 1, 256, 0, out, (const double *)partial, NORM_BLOCKS);
    KERNEL_CHECK();
}

__global__ void adamw_kernel(float *p, const float *g, float *m, float *v, size_t n, float b1,
                             float b2, float eps, float decay, float step_size, float bc2_sqrt,
                             float gscale) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        float gi = g[i] * gscale;
        float mi = b1 * m[i] + (1.0f - b1) * gi;
        float vi = b2 * v[i] + (1.0f - b2) * gi * gi;
        m[i] = mi;
        v[i] = vi;
        p[i] = p[i] * decay - step_size * mi / (sqrtf(vi) / bc2_sqrt + eps);
    }
}
void adamw_gpu(float *p, const float *g, float *m, float *v, size_t n, float b1, float b2,
               float eps, float decay, float step_size, float bc2_sqrt, float gscale) {
    if (n == 0) return;
    LAUNCH(adamw_kernel, grid_for(n, 256), 256, 0, p, g, m, v, n, b1, b2, eps, decay, step_size,
           bc2_sqrt, gscale);
    KERNEL_CHECK();
}

// =============================================================================================
// Decoding
// =============================================================================================

// Row r of a decode step sits at its own position pos[r] (prompts differ in length).
__global__ void decode_embed_kernel(float *x, const int *tokens, const int *pos, const float *wte,
                                    const float *wpe, int n, int C) {
    size_t total = (size_t)n * C;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total;
         i += (size_t)gridDim.x * blockDim.x) {
        size_t r = i / C;
        int c = (int)(i % C);
        x[i] = wte[(size_t)tokens[r] * C + c] + wpe[(size_t)pos[r] * C + c];
    }
}
void decode_embed_gpu(float *x, const int *tokens, const int *pos, const float *wte,
                      const float *wpe, int n, int C) {
    LAUNCH(decode_embed_kernel, grid_for((size_t)n * C, 256), 256, 0, x, tokens, pos, wte, wpe, n,
           C);
    KERNEL_CHECK();
}

__global__ void kv_store_kernel(float *kcache, float *vcache, const float *qkv, const int *pos,
                                int n, int maxT, int C) {
    size_t total = (size_t)n * C;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total;
         i += (size_t)gridDim.x * blockDim.x) {
        size_t r = i / C, c = i % C;
        size_t at = (r * maxT + pos[r]) * C + c;
        kcache[at] = qkv[r * 3 * C + C + c];
        vcache[at] = qkv[r * 3 * C + 2 * C + c];
    }
}
// Block (r, h): scores over positions 0..pos[r] in global scratch (no limit on maxT), softmax,
// then y[r, h*hs + d] = sum_t a_t v_t[d] with one thread per d, t in order.
__global__ void decode_attention_kernel(float *y, const float *kcache, const float *vcache,
                                        float *scores, const float *qkv, const int *pos_in,
                                        int maxT, int C, int NH) {
    int r = blockIdx.x, h = blockIdx.y, hs = C / NH, pos = pos_in[r];
    float scale = 1.0f / sqrtf((float)hs);
    const float *q = qkv + (size_t)r * 3 * C + (size_t)h * hs;
    const float *kb = kcache + (size_t)r * maxT * C + (size_t)h * hs;
    const float *vb = vcache + (size_t)r * maxT * C + (size_t)h * hs;
    float *sc = scores + ((size_t)r * NH + h) * maxT;
    float mx = -INFINITY;
    for (int t = threadIdx.x; t <= pos; t += blockDim.x) {
        const float *k = kb + (size_t)t * C;
        float s = 0.0f;
        for (int i = 0; i < hs; i++) s += q[i] * k[i];
        s *= scale;
        sc[t] = s;
        mx = fmaxf(mx, s);
    }
    mx = block_max(mx);
    float sum = 0.0f;
    for (int t = threadIdx.x; t <= pos; t += blockDim.x) {
        float e = expf(sc[t] - mx);
        sc[t] = e;
        sum += e;
    }
    float inv = 1.0f / block_sum(sum);  // its barriers also publish sc[] to the whole block
    for (int d = threadIdx.x; d < hs; d += blockDim.x) {
        float acc = 0.0f;
        for (int t = 0; t <= pos; t++) acc += sc[t] * inv * vb[(size_t)t * C + d];
        y[(size_t)r * C + (size_t)h * hs + d] = acc;
    }
}
void decode_attention_gpu(float *y, float *kcache, float *vcache, float *scores,
                          const float *qkv, const int *pos, int n, int maxT, int C, int NH) {
    LAUNCH(kv_store_kernel, grid_for((size_t)n * C, 256), 256, 0, kcache, vcache, qkv, pos, n,
           maxT, C);
    KERNEL_CHECK();
    LAUNCH(decode_attention_kernel, dim3(n, NH), 128, 0, y, (const float *)kcache,
           (const float *)vcache, scores, qkv, pos, maxT, C, NH);
    KERNEL_CHECK();
}

// After a batched prefill: copy the keys and values of positions 0..T-1 from one layer's qkvr
// (3, B, NH, T, hs) into that layer's caches (maxB, maxT, C).
__global__ void kv_from_qkvr_kernel(float *kcache, float *vcache, const float *qkvr, int B, int T,
                                    int NH, int hs, int maxT) {
    size_t n = (size_t)B * NH * T * hs;
    int C = NH * hs;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        int d = (int)(i % hs);
        int t = (int)(i / hs % T);
        int h = (int)(i / ((size_t)hs * T) % NH);
        size_t b = i / ((size_t)hs * T * NH);
        size_t at = (b * maxT + t) * C + (size_t)h * hs + d;
        kcache[at] = qkvr[n + i];
        vcache[at] = qkvr[2 * n + i];
    }
}
void kv_from_qkvr_gpu(float *kcache, float *vcache, const float *qkvr, int B, int T, int NH,
                      int hs, int maxT) {
    LAUNCH(kv_from_qkvr_kernel, grid_for((size_t)B * NH * T * hs, 256), 256, 0, kcache, vcache,
           qkvr, B, T, NH, hs, maxT);
    KERNEL_CHECK();
}

// One block per row. Greedy: argmax. Sampling: p = softmax(z / temperature), restricted with
// top_p < 1 to the nucleus: the smallest set of most probable tokens (equal probabilities by
// lower id) whose mass reaches top_p, as model.c's sorted-prefix rule, found by bisection
// instead of a sort. Then one thread walks the kept tokens in id order to invert the cumulative
// distribution at u * mass.
__global__ void sample_rows_kernel(int *tokens, float *logp, const float *logits, const float *u,
                                   int V, float temperature, float top_p, float *probs,
                                   int *keep) {
    __shared__ float s_best_v[32];
    __shared__ int s_best_i[32];
    int r = blockIdx.x;
    const float *z = logits + (size_t)r * V;
    float *p = probs + (size_t)r * V;
    int *kp = keep + (size_t)r * V;
    if (temperature <= 0.0f) {
        float bv = -INFINITY;
        int bi = V;  // argmax, lowest id on ties
        for (int j = threadIdx.x; j < V; j += blockDim.x)
            if (z[j] > bv || (z[j] == bv && j < bi)) {
                bv = z[j];
                bi = j;
            }
        for (int o = 16; o > 0; o >>= 1) {
            float ov = __shfl_xor_sync(FULL_MASK, bv, o);
            int oi = __shfl_xor_sync(FULL_MASK, bi, o);
            if (ov > bv || (ov == bv && oi < bi)) {
                bv = ov;
                bi = oi;
            }
        }
        int lane = threadIdx.x % 32, warp = threadIdx.x / 32, nw = blockDim.x / 32;
        if (lane == 0) {
            s_best_v[warp] = bv;
            s_best_i[warp] = bi;
        }
        __syncthreads();
        if (warp == 0) {
            bv = lane < nw ? s_best_v[lane] : -INFINITY;
            bi = lane < nw ? s_best_i[lane] : V;
            for (int o = 16; o > 0; o >>= 1) {
                float ov = __shfl_xor_sync(FULL_MASK, bv, o);
                int oi = __shfl_xor_sync(FULL_MASK, bi, o);
                if (ov > bv || (ov == bv && oi < bi)) {
                    bv = ov;
                    bi = oi;
                }
            }
            if (lane == 0) s_best_i[0] = bi;
        }
        __syncthreads();
        int best = s_best_i[0] < V ? s_best_i[0] : 0;  // all -inf/NaN: token 0
        float mx = -INFINITY;
        for (int j = threadIdx.x; j < V; j += blockDim.x) mx = fmaxf(mx, z[j]);
        mx = block_max(mx);
        float s = 0.0f;
        for (int j = threadIdx.x; j < V; j += blockDim.x) s += expf(z[j] - mx);
        float lse = mx + logf(block_sum(s));
        if (threadIdx.x == 0) {
            tokens[r] = best;
            logp[r] = z[best] - lse;
        }
        return;
    }
    float inv = temperature == 1.0f ? 1.0f : 1.0f / temperature;
    float mx = -INFINITY;
    for (int j = threadIdx.x; j < V; j += blockDim.x) mx = fmaxf(mx, z[j] * inv);
    mx = block_max(mx);
    float s = 0.0f;
    for (int j = threadIdx.x; j < V; j += blockDim.x) s += expf(z[j] * inv - mx);
    float lse = mx + logf(block_sum(s));
    for (int j = threadIdx.x; j < V; j += blockDim.x) p[j] = expf(z[j] * inv - lse);
    __syncthreads();
    bool all = top_p >= 1.0f;
    // The nucleus, sorted-prefix rule without a sort. f(v) = mass of the tokens with p >= v falls
    // as v grows and only jumps at probability values, so the largest v with f(v) >= top_p is
    // the probability p_last of the token where the sorted cumulative mass reaches top_p. Find
    // it by bisection on the float's bits (non-negative floats order like their bits): 31
    // block reductions, O(V) each.
    float plast = 0.0f;
    double s_gt = 0.0;  // mass of the tokens with p > plast
    // "reaches top_p", with model.h's slack for float rounding (as sample_top_p in model.c)
    double reach = (double)top_p * (1.0 - TOP_P_SLACK);
    if (!all) {
        __syncthreads();  // p[] complete
        float pmax = 0.0f;
        for (int j = threadIdx.x; j < V; j += blockDim.x) pmax = fmaxf(pmax, p[j]);
        pmax = block_max(pmax);
        unsigned lo = 0, hi = __float_as_uint(pmax);
        double f_hi = 0.0;
        for (int j = threadIdx.x; j < V; j += blockDim.x) f_hi += p[j] >= pmax ? p[j] : 0.0;
        if (block_sum_d(f_hi) >= reach) lo = hi;
        while (hi - lo > 1) {  // invariant: f(lo) >= reach > f(hi)
            unsigned mid = lo + (hi - lo) / 2;
            float v = __uint_as_float(mid);
            double f = 0.0;
            for (int j = threadIdx.x; j < V; j += blockDim.x) f += p[j] >= v ? p[j] : 0.0;
            if (block_sum_d(f) >= reach) lo = mid;
            else hi = mid;
        }
        plast = __uint_as_float(lo);
        double g = 0.0;
        for (int j = threadIdx.x; j < V; j += blockDim.x) g += p[j] > plast ? p[j] : 0.0;
        s_gt = block_sum_d(g);
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        // Keep every p > plast; ties at plast by lower id while the mass before them < top_p.
        double tie_acc = s_gt;
        for (int j = 0; j < V; j++) {
            int k = all || p[j] > plast;
            if (!k && p[j] == plast && tie_acc < reach) {
                k = 1;
                tie_acc += p[j];
            }
            kp[j] = k;
        }
        double mass = 0.0;
        int nkeep = 0, last = 0;
        for (int j = 0; j < V; j++)
            if (kp[j]) {
                mass += p[j];
                nkeep++;
                last = j;
            }
        double target = (double)u[r] * mass, cum = 0.0;
        int tok = last;
        for (int j = 0; j < V; j++)
            if (kp[j]) {
                cum += p[j];
                if (target <= cum) {
                    tok = j;
                    break;
                }
            }
        tokens[r] = tok;
        logp[r] = (z[tok] * inv - lse) - (nkeep == V ? 0.0f : (float)log(mass));
    }
}
void sample_rows_gpu(int *tokens, float *logp, const float *logits, const float *u, int n, int V,
                     float temperature, float top_p, float *probs, int *keep) {
    if (n <= 0) return;
    LAUNCH(sample_rows_kernel, n, 256, 0, tokens, logp, logits, u, V, temperature, top_p, probs,
           keep);
    KERNEL_CHECK();
}

// =============================================================================================
// The model
// =============================================================================================

// AdamW decays the same tensors as model.c (the 2-D matrices).
static const int PARAM_DECAY_GPU[NUM_PARAM_TENSORS] = {1, 1, 0, 0, 1, 0, 1, 0,
                                                       0, 0, 1, 0, 1, 0, 0, 0};

struct Model {
    ModelConfig cfg;
    int maxB;
    size_t sizes[NUM_PARAM_TENSORS];
    size_t nparams;
    cublasHandle_t blas;
    float *params, *grads, *mom, *vel;  // device (nparams) each
    ParamTensors p, g;                  // device pointers into params, grads
    int64_t step;

    // Activations of the last forward (R = maxB * maxT rows at most).
    float *encoded;              // (B, T, C)
    float *ln1, *ln1_mean, *ln1_rstd;  // (L, B, T, C), (L, B, T) x2
    float *qkvr;                 // (L, 3, B, NH, T, hs)
    float *atty;                 // (L, B, T, C)
    float *att;                  // (L, B, NH, T, T)
    float *residual2;            // (L, B, T, C)
    float *ln2, *ln2_mean, *ln2_rstd;
    float *fch, *fch_gelu;       // (L, B, T, 4C)
    float *residual3;            // (L, B, T, C)
    float *head_x, *head_in;     // (N, C)
    float *lnf_mean, *lnf_rstd;  // (N)
    float *logits;               // (N, V)
    float *lse, *hlogp, *hent;   // (N)
    // Scratch.
    float *qkv;                  // (B, T, 3C)
    float *dres, *dbuf;          // (B, T, C)
    float *dbuf4;                // (B, T, 4C)
    float *dqkv;                 // (B, T, 3C)
    float *att_scratch;          // attention_scratch_floats
    float *partial;              // column-sum partials
    float *dlogits;              // (M, V)
    float *hsel, *dhead;         // (N, C)
    float *coef_a, *coef_e;      // (M)
    double *norm_partial, *norm_out;
    int *d_tokens, *d_head_rows, *d_head_targets, *d_sel, *d_bucket;
    // Host copies of the last forward's inputs.
    int *tokens, *targets, *head_rows;  // (B, T)
    int B, T, N;  // B = 0: no forward to differentiate

    // Sampling (allocated on the first sample() call).
    bool have_decode;
    float *kcache, *vcache;      // (L, maxB, maxT, C)
    float *x, *ln, *dq_qkv, *dy, *tmp, *fc;  // (maxB, C) ... (maxB, 3C), (maxB, 4C)
    float *dmean, *drstd;        // (maxB)
    float *scores;               // (maxB, NH, maxT)
    float *dlog, *probs;         // (maxB, V)
    int *keep;                   // (maxB, V)
    float *u, *out_logp;         // (maxB)
    // Prefill (inference trunk, one layer's worth of activations reused by every layer).
    float *px, *pln, *pqkv, *pqkvr, *patt, *patty, *pfch, *ptmp, *pmean, *prstd;
    int *ptok;                   // (maxB, maxT)
    int *in_tok;                 // (2, maxB) tokens, then positions
    int *out_tok;                // (maxB)
    curandGenerator_t gen;
    bool have_gen;
};

// Every device buffer of the model, so create/destroy stay in one place.
#define MODEL_FLOAT_BUFFERS(X)                                                                   \
    X(params) X(grads) X(mom) X(vel) X(encoded) X(ln1) X(ln1_mean) X(ln1_rstd) X(qkvr) X(atty)   \
    X(att) X(residual2) X(ln2) X(ln2_mean) X(ln2_rstd) X(fch) X(fch_gelu) X(residual3)           \
    X(head_x) X(head_in) X(lnf_mean) X(lnf_rstd) X(logits) X(lse) X(hlogp) X(hent) X(qkv) X(dres) \
    X(dbuf) X(dbuf4) X(dqkv) X(att_scratch) X(partial) X(dlogits) X(hsel) X(dhead) X(coef_a)      \
    X(coef_e) X(kcache) X(vcache) X(x) X(ln) X(dq_qkv) X(dy) X(tmp) X(fc) X(dmean) X(drstd)      \
    X(scores) X(dlog) X(probs) X(u) X(out_logp) X(px) X(pln) X(pqkv) X(pqkvr) X(patt) X(patty)   \
    X(pfch) X(ptmp) X(pmean) X(prstd)
#define MODEL_INT_BUFFERS(X)                                                                   \
    X(d_tokens) X(d_head_rows) X(d_head_targets) X(d_sel) X(d_bucket) X(keep) X(in_tok) X(out_tok) \
    X(ptok)

template <typename T>
static bool dalloc(T **p, size_t count, const char *what) {
    if (cudaMalloc((void **)p, (count ? count : 1) * sizeof(T)) != cudaSuccess) {
        fprintf(stderr, "gpu backend: out of device memory allocating %s (%zu x %zu bytes)\n",
                what, count, sizeof(T));
        *p = NULL;
        return false;
    }
    return true;
}

static void gpu_destroy(Model *m) {
    if (!m) return;
#define FREE_BUF(name) cudaFree(m->name);
    MODEL_FLOAT_BUFFERS(FREE_BUF)
    MODEL_INT_BUFFERS(FREE_BUF)
#undef FREE_BUF
    cudaFree(m->norm_partial);
    cudaFree(m->norm_out);
    if (m->blas) cublasDestroy(m->blas);
    if (m->have_gen) curandDestroyGenerator(m->gen);
    free(m->tokens);
    free(m->targets);
    free(m->head_rows);
    free(m);
}

static Model *gpu_create(const ModelConfig *cfg, int maxB, uint64_t seed) {
    int ndev = 0;
    cudaError_t e = cudaGetDeviceCount(&ndev);
    if (e != cudaSuccess || ndev == 0) {
        fprintf(stderr, "gpu backend: no CUDA device (%s); ./train_cpu runs the same on the CPU\n",
                e != cudaSuccess ? cudaGetErrorString(e) : "0 devices");
        return NULL;
    }
    const char *why = cfg && cfg->arch != ARCH_GPT2 ? "not a GPT-2 config"
                                                    : model_config_check(cfg);
    if (why) {
        fprintf(stderr, "gpu backend: bad config: %s\n", why);
        return NULL;
    }
    if (maxB < 1) {
        fprintf(stderr, "gpu backend: maxB must be >= 1 (got %d)\n", maxB);
        return NULL;
    }
    Model *m = (Model *)calloc(1, sizeof(Model));
    if (!m) {
        fprintf(stderr, "gpu backend: out of memory\n");
        return NULL;
    }
    m->cfg = *cfg;
    m->maxB = maxB;
    m->nparams = param_sizes(cfg, m->sizes);
    if (cublasCreate(&m->blas) != CUBLAS_STATUS_SUCCESS) {
        fprintf(stderr, "gpu backend: cublasCreate failed\n");
        m->blas = NULL;
        gpu_destroy(m);
        return NULL;
    }
    size_t L = cfg->L, C = cfg->C, NH = cfg->NH, V = cfg->V, T = cfg->maxT;
    size_t R = (size_t)maxB * T, np = m->nparams;
    bool ok = dalloc(&m->params, np, "parameters") && dalloc(&m->grads, np, "gradients") &&
              dalloc(&m->mom, np, "AdamW m") && dalloc(&m->vel, np, "AdamW v") &&
              dalloc(&m->encoded, R * C, "encoded") && dalloc(&m->ln1, L * R * C, "ln1") &&
              dalloc(&m->ln1_mean, L * R, "ln1 mean") && dalloc(&m->ln1_rstd, L * R, "ln1 rstd") &&
              dalloc(&m->qkvr, L * R * 3 * C, "qkvr") && dalloc(&m->atty, L * R * C, "atty") &&
              dalloc(&m->att, L * R * NH * T, "att") &&
              dalloc(&m->residual2, L * R * C, "residual2") && dalloc(&m->ln2, L * R * C, "ln2") &&
              dalloc(&m->ln2_mean, L * R, "ln2 mean") && dalloc(&m->ln2_rstd, L * R, "ln2 rstd") &&
              dalloc(&m->fch, L * R * 4 * C, "fch") &&
              dalloc(&m->fch_gelu, L * R * 4 * C, "fch_gelu") &&
              dalloc(&m->residual3, L * R * C, "residual3") &&
              dalloc(&m->head_x, R * C, "head_x") && dalloc(&m->head_in, R * C, "head_in") &&
              dalloc(&m->lnf_mean, R, "lnf mean") && dalloc(&m->lnf_rstd, R, "lnf rstd") &&
              dalloc(&m->logits, R * V, "logits") && dalloc(&m->lse, R, "lse") &&
              dalloc(&m->hlogp, R, "logp") && dalloc(&m->hent, R, "entropy") &&
              dalloc(&m->qkv, R * 3 * C, "qkv") && dalloc(&m->dres, R * C, "dres") &&
              dalloc(&m->dbuf, R * C, "dbuf") && dalloc(&m->dbuf4, R * 4 * C, "dbuf4") &&
              dalloc(&m->dqkv, R * 3 * C, "dqkv") &&
              dalloc(&m->att_scratch, attention_scratch_floats(maxB, (int)T, (int)C, (int)NH),
                     "attention scratch") &&
              dalloc(&m->partial,
                     std::max(colsum_partial_floats((int)R, 4 * (int)C),
                              layernorm_partial_floats((int)R, (int)C)),
                     "partials") &&
              dalloc(&m->dlogits, R * V, "dlogits") && dalloc(&m->hsel, R * C, "hsel") &&
              dalloc(&m->dhead, R * C, "dhead") && dalloc(&m->coef_a, R, "coefficients") &&
              dalloc(&m->coef_e, R, "coefficients") &&
              dalloc(&m->norm_partial, NORM_BLOCKS, "norm partials") &&
              dalloc(&m->norm_out, 1, "norm") && dalloc(&m->d_tokens, R, "tokens") &&
              dalloc(&m->d_head_rows, R, "head rows") &&
              dalloc(&m->d_head_targets, R, "head targets") && dalloc(&m->d_sel, R, "sel") &&
              dalloc(&m->d_bucket, 3 * R + 1, "token buckets");
    m->tokens = (int *)calloc(R, sizeof(int));
    m->targets = (int *)calloc(R, sizeof(int));
    m->head_rows = (int *)calloc(R, sizeof(int));
    if (!ok || !m->tokens || !m->targets || !m->head_rows) {
        if (ok) fprintf(stderr, "gpu backend: out of host memory\n");
        gpu_destroy(m);
        return NULL;
    }
    param_tensors_point(&m->p, m->params, cfg);
    param_tensors_point(&m->g, m->grads, cfg);
    float *host = (float *)malloc(np * sizeof(float));
    if (!host) {
        fprintf(stderr, "gpu backend: out of host memory\n");
        gpu_destroy(m);
        return NULL;
    }
    params_init(host, cfg, seed);
    CUDA_CHECK(cudaMemcpy(m->params, host, np * sizeof(float), cudaMemcpyHostToDevice));
    free(host);
    CUDA_CHECK(cudaMemset(m->grads, 0, np * sizeof(float)));
    CUDA_CHECK(cudaMemset(m->mom, 0, np * sizeof(float)));
    CUDA_CHECK(cudaMemset(m->vel, 0, np * sizeof(float)));
    return m;
}

static const ModelConfig *gpu_config(const Model *m) { return &m->cfg; }
static size_t gpu_num_params(const Model *m) { return m->nparams; }
static void gpu_get_params(const Model *m, float *dst) {
    CUDA_CHECK(cudaMemcpy(dst, m->params, m->nparams * sizeof(float), cudaMemcpyDeviceToHost));
}
static void gpu_set_params(Model *m, const float *src) {
    CUDA_CHECK(cudaMemcpy(m->params, src, m->nparams * sizeof(float), cudaMemcpyHostToDevice));
}
static void gpu_get_grads(const Model *m, float *dst) {
    CUDA_CHECK(cudaMemcpy(dst, m->grads, m->nparams * sizeof(float), cudaMemcpyDeviceToHost));
}
static int gpu_reduce_grads(Model *m, GradReduceFn fn, void *ctx) {
    CUDA_CHECK(cudaDeviceSynchronize());  // the backward's kernels have written the buffer
    return fn(ctx, m->grads, m->nparams, 1);
}
static void gpu_get_opt_state(const Model *m, float *mom, float *vel, int64_t *step) {
    if (mom) CUDA_CHECK(cudaMemcpy(mom, m->mom, m->nparams * sizeof(float), cudaMemcpyDeviceToHost));
    if (vel) CUDA_CHECK(cudaMemcpy(vel, m->vel, m->nparams * sizeof(float), cudaMemcpyDeviceToHost));
    if (step) *step = m->step;
}
static void gpu_set_opt_state(Model *m, const float *mom, const float *vel, int64_t step) {
    if (mom) CUDA_CHECK(cudaMemcpy(m->mom, mom, m->nparams * sizeof(float), cudaMemcpyHostToDevice));
    if (vel) CUDA_CHECK(cudaMemcpy(m->vel, vel, m->nparams * sizeof(float), cudaMemcpyHostToDevice));
    m->step = step;
}
static void gpu_zero_grad(Model *m) {
    CUDA_CHECK(cudaMemset(m->grads, 0, m->nparams * sizeof(float)));
}

// ---------------------------------------------------------------------------------------------
// Forward
// ---------------------------------------------------------------------------------------------

// The transformer trunk on the tokens already in m->d_tokens (B, T): embeddings and the L
// blocks, keeping every activation backward needs; the last block's output is residual3[L-1].
static void forward_trunk(Model *m, int B, int T) {
    const ModelConfig *cfg = &m->cfg;
    int C = cfg->C, NH = cfg->NH, L = cfg->L;
    size_t R = (size_t)B * T, RC = R * C;
    const ParamTensors *p = &m->p;
    int Ri = (int)R;
    encoder_forward_gpu(m->encoded, m->d_tokens, p->wte, p->wpe, B, T, C);
    for (int l = 0; l < L; l++) {
        const float *in = l == 0 ? m->encoded : m->residual3 + (l - 1) * RC;
        float *ln1 = m->ln1 + l * RC, *qkvr = m->qkvr + l * RC * 3, *atty = m->atty + l * RC;
        float *att = m->att + (size_t)l * R * NH * T, *res2 = m->residual2 + l * RC;
        float *ln2 = m->ln2 + l * RC, *fch = m->fch + l * RC * 4;
        float *fchg = m->fch_gelu + l * RC * 4, *res3 = m->residual3 + l * RC;
        size_t lc = (size_t)l * C;
        layernorm_forward_gpu(ln1, m->ln1_mean + l * R, m->ln1_rstd + l * R, in, p->ln1w + lc,
                              p->ln1b + lc, Ri, C);
        matmul_forward_gpu(m->blas, m->qkv, ln1, p->qkvw + lc * 3 * C, p->qkvb + lc * 3, Ri, C,
                           3 * C);
        attention_forward_gpu(m->blas, atty, qkvr, att, m->qkv, m->dbuf, B, T, C, NH);
        matmul_forward_gpu(m->blas, m->dbuf, atty, p->attprojw + lc * C, p->attprojb + lc, Ri, C,
                           C);
        residual_forward_gpu(res2, in, m->dbuf, RC);
        layernorm_forward_gpu(ln2, m->ln2_mean + l * R, m->ln2_rstd + l * R, res2, p->ln2w + lc,
                              p->ln2b + lc, Ri, C);
        matmul_forward_gpu(m->blas, fch, ln2, p->fcw + lc * 4 * C, p->fcb + lc * 4, Ri, C, 4 * C);
        gelu_forward_gpu(fchg, fch, RC * 4);
        matmul_forward_gpu(m->blas, m->dbuf, fchg, p->fcprojw + lc * 4 * C, p->fcprojb + lc, Ri,
                           4 * C, C);
        residual_forward_gpu(res3, res2, m->dbuf, RC);
    }
}

static int gpu_forward(Model *m, const int *tokens, const int *targets, int B, int T, float *logp,
                       float *entropy) {
    const ModelConfig *cfg = &m->cfg;
    int C = cfg->C, V = cfg->V, L = cfg->L;
    m->B = 0;
    if (B < 1 || B > m->maxB || T < 1 || T > cfg->maxT || !tokens || !targets || !logp) {
        fprintf(stderr, "gpu forward: bad arguments B=%d (maxB %d) T=%d (maxT %d)\n", B, m->maxB,
                T, cfg->maxT);
        return -1;
    }
    size_t R = (size_t)B * T, RC = R * C;
    for (size_t i = 0; i < R; i++)
        if (tokens[i] < 0 || tokens[i] >= V || targets[i] >= V) {
            fprintf(stderr, "gpu forward: token %d / target %d at %zu outside [0, %d)\n",
                    tokens[i], targets[i], i, V);
            return -1;
        }
    memcpy(m->tokens, tokens, R * sizeof(int));
    memcpy(m->targets, targets, R * sizeof(int));
    CUDA_CHECK(cudaMemcpy(m->d_tokens, tokens, R * sizeof(int), cudaMemcpyHostToDevice));
    const ParamTensors *p = &m->p;
    forward_trunk(m, B, T);

    // LM head only on rows with a target, gathered into a compact (N, C) matrix.
    int N = 0;
    std::vector<int> head_targets;
    for (size_t i = 0; i < R; i++)
        if (targets[i] >= 0) {
            m->head_rows[N++] = (int)i;
            head_targets.push_back(targets[i]);
        }
    m->N = N;
    memset(logp, 0, R * sizeof(float));
    if (entropy) memset(entropy, 0, R * sizeof(float));
    if (N > 0) {
        CUDA_CHECK(cudaMemcpy(m->d_head_rows, m->head_rows, N * sizeof(int), cudaMemcpyHostToDevice));
        CUDA_CHECK(cudaMemcpy(m->d_head_targets, head_targets.data(), N * sizeof(int),
                              cudaMemcpyHostToDevice));
        gather_rows_gpu(m->head_x, m->residual3 + (L - 1) * RC, m->d_head_rows, N, C);
        layernorm_forward_gpu(m->head_in, m->lnf_mean, m->lnf_rstd, m->head_x, p->lnfw, p->lnfb,
                              N, C);
        matmul_forward_gpu(m->blas, m->logits, m->head_in, p->wte, NULL, N, C, V);
        logits_forward_gpu(m->lse, m->hlogp, entropy ? m->hent : NULL, m->logits,
                           m->d_head_targets, N, V);
        std::vector<float> hl(N), he(entropy ? N : 0);
        CUDA_CHECK(cudaMemcpy(hl.data(), m->hlogp, N * sizeof(float), cudaMemcpyDeviceToHost));
        if (entropy)
            CUDA_CHECK(cudaMemcpy(he.data(), m->hent, N * sizeof(float), cudaMemcpyDeviceToHost));
        for (int i = 0; i < N; i++) {
            logp[m->head_rows[i]] = hl[i];
            if (entropy) entropy[m->head_rows[i]] = he[i];
        }
    }
    m->B = B;
    m->T = T;
    return 0;
}

// ---------------------------------------------------------------------------------------------
// Backward
// ---------------------------------------------------------------------------------------------

static void gpu_backward(Model *m, const float *dlogp, const float *dentropy) {
    const ModelConfig *cfg = &m->cfg;
    int C = cfg->C, NH = cfg->NH, V = cfg->V, L = cfg->L, B = m->B, T = m->T, N = m->N;
    if (B == 0) {
        fprintf(stderr, "gpu backward: no forward to differentiate (ignored)\n");
        return;
    }
    const ParamTensors *p = &m->p, *g = &m->g;
    size_t R = (size_t)B * T, RC = R * C;
    int Ri = (int)R;

    // Rows whose coefficients are both zero contribute nothing: leave them out of the lm head.
    std::vector<int> sel;
    std::vector<float> ca, ce;
    for (int i = 0; i < N; i++) {
        int row = m->head_rows[i];
        float a = dlogp ? dlogp[row] : 0.0f, e = dentropy ? dentropy[row] : 0.0f;
        if (a != 0.0f || e != 0.0f) {
            sel.push_back(i);
            ca.push_back(a);
            ce.push_back(e);
        }
    }
    int M = (int)sel.size();
    if (M == 0) return;
    CUDA_CHECK(cudaMemcpy(m->d_sel, sel.data(), M * sizeof(int), cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMemcpy(m->coef_a, ca.data(), M * sizeof(float), cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMemcpy(m->coef_e, ce.data(), M * sizeof(float), cudaMemcpyHostToDevice));

    logits_backward_gpu(m->dlogits, m->logits, m->lse, m->d_head_targets, m->d_sel, m->coef_a,
                        m->coef_e, M, V);
    gather_rows_gpu(m->hsel, m->head_in, m->d_sel, M, C);
    // dhsel (M, C) = dlogits wte; dwte += dlogits^T hsel (the tied output projection)
    matmul_backward_gpu(m->blas, m->dbuf, g->wte, NULL, m->dlogits, m->hsel, p->wte, M, C, V,
                        m->partial);
    CUDA_CHECK(cudaMemset(m->dhead, 0, sizeof(float) * (size_t)N * C));
    scatter_rows_gpu(m->dhead, m->dbuf, m->d_sel, M, C);
    // Final LayerNorm backward on the N head rows, then scatter into the residual gradient.
    CUDA_CHECK(cudaMemset(m->dbuf, 0, sizeof(float) * (size_t)N * C));
    layernorm_backward_gpu(m->dbuf, g->lnfw, g->lnfb, m->dhead, m->head_x, p->lnfw, m->lnf_mean,
                           m->lnf_rstd, N, C, m->partial);
    CUDA_CHECK(cudaMemset(m->dres, 0, sizeof(float) * RC));
    scatter_rows_gpu(m->dres, m->dbuf, m->d_head_rows, N, C);

    for (int l = L - 1; l >= 0; l--) {
        const float *in = l == 0 ? m->encoded : m->residual3 + (l - 1) * RC;
        const float *ln1 = m->ln1 + l * RC, *qkvr = m->qkvr + l * RC * 3, *atty = m->atty + l * RC;
        const float *att = m->att + (size_t)l * R * NH * T, *res2 = m->residual2 + l * RC;
        const float *ln2 = m->ln2 + l * RC, *fch = m->fch + l * RC * 4;
        const float *fchg = m->fch_gelu + l * RC * 4;
        size_t lc = (size_t)l * C;
        // residual3 = residual2 + fcproj(gelu(fc(ln2(residual2))))
        matmul_backward_gpu(m->blas, m->dbuf4, g->fcprojw + lc * 4 * C, g->fcprojb + lc, m->dres,
                            fchg, p->fcprojw + lc * 4 * C, Ri, 4 * C, C, m->partial);
        gelu_backward_gpu(m->dbuf4, fch, RC * 4);
        matmul_backward_gpu(m->blas, m->dbuf, g->fcw + lc * 4 * C, g->fcb + lc * 4, m->dbuf4, ln2,
                            p->fcw + lc * 4 * C, Ri, C, 4 * C, m->partial);
        layernorm_backward_gpu(m->dres, g->ln2w + lc, g->ln2b + lc, m->dbuf, res2, p->ln2w + lc,
                               m->ln2_mean + l * R, m->ln2_rstd + l * R, Ri, C, m->partial);
        // residual2 = in + attproj(attention(qkv(ln1(in))))
        matmul_backward_gpu(m->blas, m->dbuf, g->attprojw + lc * C, g->attprojb + lc, m->dres,
                            atty, p->attprojw + lc * C, Ri, C, C, m->partial);
        attention_backward_gpu(m->blas, m->dqkv, m->dbuf, qkvr, att, B, T, C, NH, m->att_scratch);
        matmul_backward_gpu(m->blas, m->dbuf, g->qkvw + lc * 3 * C, g->qkvb + lc * 3, m->dqkv, ln1,
                            p->qkvw + lc * 3 * C, Ri, C, 3 * C, m->partial);
        layernorm_backward_gpu(m->dres, g->ln1w + lc, g->ln1b + lc, m->dbuf, in, p->ln1w + lc,
                               m->ln1_mean + l * R, m->ln1_rstd + l * R, Ri, C, m->partial);
    }
    encoder_backward_gpu(g->wte, g->wpe, m->dres, m->tokens, B, T, C, m->d_bucket);
}

// ---------------------------------------------------------------------------------------------
// AdamW with global-norm clipping (same formulas as model.c, PyTorch's conventions)
// ---------------------------------------------------------------------------------------------

static float gpu_update(Model *m, const AdamWConfig *ac, float lr) {
    sumsq_gpu(m->norm_out, m->grads, m->nparams, m->norm_partial);
    double sq = 0.0;
    CUDA_CHECK(cudaMemcpy(&sq, m->norm_out, sizeof(double), cudaMemcpyDeviceToHost));
    double norm = sqrt(sq);
    // torch.nn.utils.clip_grad_norm_: coef = max_norm / (norm + 1e-6), applied when < 1.
    float gscale = 1.0f;
    if (ac->grad_clip > 0.0f) {
        double coef = ac->grad_clip / (norm + 1e-6);
        if (coef < 1.0) gscale = (float)coef;
    }
    m->step++;
    double bc1 = 1.0 - pow(ac->beta1, (double)m->step), bc2 = 1.0 - pow(ac->beta2, (double)m->step);
    float step_size = (float)(lr / bc1), bc2_sqrt = (float)sqrt(bc2);
    size_t off = 0;
    for (int t = 0; t < NUM_PARAM_TENSORS; t++) {
        float decay = PARAM_DECAY_GPU[t] ? 1.0f - lr * ac->weight_decay : 1.0f;
        adamw_gpu(m->params + off, m->grads + off, m->mom + off, m->vel + off, m->sizes[t],
                  ac->beta1, ac->beta2, ac->eps, decay, step_size, bc2_sqrt, gscale);
        off += m->sizes[t];
    }
    return (float)norm;
}

// ---------------------------------------------------------------------------------------------
// Sampling. Prefill: the prompts, padded to the longest, go through the layers in one batch
// (causal attention never lets a real position see the padding), and their keys and values are
// copied into the KV cache. Decode: one position per row per step, each row at its own position
// (rows stop at different times; a finished row repeats a harmless step until the batch ends).
// ---------------------------------------------------------------------------------------------

static bool alloc_decode(Model *m) {
    size_t L = m->cfg.L, C = m->cfg.C, V = m->cfg.V, NH = m->cfg.NH, T = m->cfg.maxT;
    size_t B = m->maxB;
    bool ok = dalloc(&m->kcache, L * B * T * C, "K cache") &&
              dalloc(&m->vcache, L * B * T * C, "V cache") && dalloc(&m->x, B * C, "decode x") &&
              dalloc(&m->ln, B * C, "decode ln") && dalloc(&m->dq_qkv, B * 3 * C, "decode qkv") &&
              dalloc(&m->dy, B * C, "decode y") && dalloc(&m->tmp, B * C, "decode tmp") &&
              dalloc(&m->fc, B * 4 * C, "decode fc") && dalloc(&m->dmean, B, "decode mean") &&
              dalloc(&m->drstd, B, "decode rstd") && dalloc(&m->scores, B * NH * T, "scores") &&
              dalloc(&m->dlog, B * V, "decode logits") && dalloc(&m->probs, B * V, "probs") &&
              dalloc(&m->keep, B * V, "nucleus") && dalloc(&m->u, B, "uniforms") &&
              dalloc(&m->out_logp, B, "sampled logp") && dalloc(&m->in_tok, 2 * B, "input tokens and positions") &&
              dalloc(&m->out_tok, B, "sampled tokens") && dalloc(&m->ptok, B * T, "prompts") &&
              dalloc(&m->px, B * T * C, "prefill x") && dalloc(&m->pln, B * T * C, "prefill ln") &&
              dalloc(&m->pqkv, B * T * 3 * C, "prefill qkv") &&
              dalloc(&m->pqkvr, B * T * 3 * C, "prefill qkvr") &&
              dalloc(&m->patt, B * NH * T * T, "prefill att") &&
              dalloc(&m->patty, B * T * C, "prefill atty") &&
              dalloc(&m->pfch, B * T * 4 * C, "prefill fch") &&
              dalloc(&m->ptmp, B * T * C, "prefill tmp") && dalloc(&m->pmean, B * T, "prefill mean") &&
              dalloc(&m->prstd, B * T, "prefill rstd");
    if (!ok) return false;
    if (curandCreateGenerator(&m->gen, CURAND_RNG_PSEUDO_PHILOX4_32_10) != CURAND_STATUS_SUCCESS) {
        fprintf(stderr, "gpu backend: curandCreateGenerator failed\n");
        return false;
    }
    m->have_gen = true;
    m->have_decode = true;
    return true;
}

// One decode step for n rows: tokens and positions in m->in_tok (2, n); KV cache updated; the
// residual stream ends in m->x (n, C).
static void decode_step(Model *m, int n) {
    const ModelConfig *cfg = &m->cfg;
    int C = cfg->C, NH = cfg->NH, L = cfg->L, maxT = cfg->maxT;
    const ParamTensors *p = &m->p;
    const int *tok = m->in_tok, *pos = m->in_tok + m->maxB;
    decode_embed_gpu(m->x, tok, pos, p->wte, p->wpe, n, C);
    for (int l = 0; l < L; l++) {
        size_t lc = (size_t)l * C;
        float *kc = m->kcache + (size_t)l * m->maxB * maxT * C;
        float *vc = m->vcache + (size_t)l * m->maxB * maxT * C;
        layernorm_forward_gpu(m->ln, m->dmean, m->drstd, m->x, p->ln1w + lc, p->ln1b + lc, n, C);
        matmul_forward_gpu(m->blas, m->dq_qkv, m->ln, p->qkvw + lc * 3 * C, p->qkvb + lc * 3, n, C,
                           3 * C);
        decode_attention_gpu(m->dy, kc, vc, m->scores, m->dq_qkv, pos, n, maxT, C, NH);
        matmul_forward_gpu(m->blas, m->tmp, m->dy, p->attprojw + lc * C, p->attprojb + lc, n, C, C);
        residual_forward_gpu(m->x, m->x, m->tmp, (size_t)n * C);
        layernorm_forward_gpu(m->ln, m->dmean, m->drstd, m->x, p->ln2w + lc, p->ln2b + lc, n, C);
        matmul_forward_gpu(m->blas, m->fc, m->ln, p->fcw + lc * 4 * C, p->fcb + lc * 4, n, C, 4 * C);
        gelu_forward_gpu(m->fc, m->fc, (size_t)n * 4 * C);
        matmul_forward_gpu(m->blas, m->tmp, m->fc, p->fcprojw + lc * 4 * C, p->fcprojb + lc, n,
                           4 * C, C);
        residual_forward_gpu(m->x, m->x, m->tmp, (size_t)n * C);
    }
}

// Prefill nb prompts (host (nb, Tp), padded): KV cache positions 0..Tp-1 of rows 0..nb-1, and
// m->x (nb, C) = the last block's output at each row's last prompt position. Same layers as
// forward_trunk, on buffers of its own (one layer's worth, reused), so the training
// activations of the last forward survive a sample() as they do in model.c.
static void prefill(Model *m, const int *toks, const int *plen, int nb, int Tp) {
    const ModelConfig *cfg = &m->cfg;
    int C = cfg->C, NH = cfg->NH, L = cfg->L, maxT = cfg->maxT;
    const ParamTensors *p = &m->p;
    size_t R = (size_t)nb * Tp, RC = R * C;
    int Ri = (int)R;
    CUDA_CHECK(cudaMemcpy(m->ptok, toks, R * sizeof(int), cudaMemcpyHostToDevice));
    encoder_forward_gpu(m->px, m->ptok, p->wte, p->wpe, nb, Tp, C);
    for (int l = 0; l < L; l++) {
        size_t lc = (size_t)l * C;
        layernorm_forward_gpu(m->pln, m->pmean, m->prstd, m->px, p->ln1w + lc, p->ln1b + lc, Ri, C);
        matmul_forward_gpu(m->blas, m->pqkv, m->pln, p->qkvw + lc * 3 * C, p->qkvb + lc * 3, Ri, C,
                           3 * C);
        attention_forward_gpu(m->blas, m->patty, m->pqkvr, m->patt, m->pqkv, m->ptmp, nb, Tp, C, NH);
        kv_from_qkvr_gpu(m->kcache + (size_t)l * m->maxB * maxT * C,
                         m->vcache + (size_t)l * m->maxB * maxT * C, m->pqkvr, nb, Tp, NH, C / NH,
                         maxT);
        matmul_forward_gpu(m->blas, m->ptmp, m->patty, p->attprojw + lc * C, p->attprojb + lc, Ri, C,
                           C);
        residual_forward_gpu(m->px, m->px, m->ptmp, RC);
        layernorm_forward_gpu(m->pln, m->pmean, m->prstd, m->px, p->ln2w + lc, p->ln2b + lc, Ri, C);
        matmul_forward_gpu(m->blas, m->pfch, m->pln, p->fcw + lc * 4 * C, p->fcb + lc * 4, Ri, C,
                           4 * C);
        gelu_forward_gpu(m->pfch, m->pfch, RC * 4);
        matmul_forward_gpu(m->blas, m->ptmp, m->pfch, p->fcprojw + lc * 4 * C, p->fcprojb + lc, Ri,
                           4 * C, C);
        residual_forward_gpu(m->px, m->px, m->ptmp, RC);
    }
    std::vector<int> last(nb);
    for (int r = 0; r < nb; r++) last[r] = r * Tp + plen[r] - 1;
    CUDA_CHECK(cudaMemcpy(m->ptok, last.data(), nb * sizeof(int), cudaMemcpyHostToDevice));
    gather_rows_gpu(m->x, m->px, m->ptok, nb, C);
}

static int gpu_sample(Model *m, const SampleRequest *req, SampleResult *out) {
    const ModelConfig *cfg = &m->cfg;
    int V = cfg->V, C = cfg->C;
    if (sample_request_check(req, out, cfg, "gpu sample") != 0) return -1;
    if (req->n == 0 || req->max_new == 0) return 0;
    if (!m->have_decode && !alloc_decode(m)) return -1;
    // Seed and rewind: the same seed gives the same samples whatever ran before.
    if (curandSetPseudoRandomGeneratorSeed(m->gen, req->seed) != CURAND_STATUS_SUCCESS ||
        curandSetGeneratorOffset(m->gen, 0) != CURAND_STATUS_SUCCESS) {
        fprintf(stderr, "gpu sample: seeding cuRAND failed\n");
        return -1;
    }
    bool greedy = req->temperature <= 0.0f;
    int maxB = m->maxB;
    std::vector<int> toks((size_t)maxB * cfg->maxT), in(2 * (size_t)maxB), got(maxB);
    std::vector<float> lp(maxB);
    std::vector<char> done(maxB);
    // req->row_seeds: each row's uniforms come from its own stream (drawn here, one per row and
    // step, like the CPU sampler), so a row's samples do not depend on the rows beside it.
    std::vector<Rng> row_rng(maxB);
    std::vector<float> host_u(maxB);
    for (int c0 = 0; c0 < req->n; c0 += maxB) {
        int nb = std::min(req->n - c0, maxB), Tp = 0;
        const int *plen = req->prompt_len + c0;
        for (int r = 0; r < nb; r++) Tp = std::max(Tp, plen[r]);
        for (int r = 0; r < nb; r++) {
            const int *src = req->prompts + (size_t)(c0 + r) * req->prompt_stride;
            for (int t = 0; t < Tp; t++) toks[(size_t)r * Tp + t] = t < plen[r] ? src[t] : 0;
            done[r] = 0;
            if (req->row_seeds) rng_seed(&row_rng[r], req->row_seeds[c0 + r]);
        }
        prefill(m, toks.data(), plen, nb, Tp);
        int left = nb;
        for (int k = 0; k < req->max_new && left > 0; k++) {
            // m->x holds every row's state after its last token: sample new token k.
            if (k > 0) decode_step(m, nb);
            layernorm_forward_gpu(m->ln, m->dmean, m->drstd, m->x, m->p.lnfw, m->p.lnfb, nb, C);
            matmul_forward_gpu(m->blas, m->dlog, m->ln, m->p.wte, NULL, nb, C, V);
            if (!greedy && req->row_seeds) {
                for (int r = 0; r < nb; r++) host_u[r] = rng_float(&row_rng[r]);
                CUDA_CHECK(cudaMemcpy(m->u, host_u.data(), nb * sizeof(float), cudaMemcpyHostToDevice));
            } else if (!greedy && curandGenerateUniform(m->gen, m->u, nb) != CURAND_STATUS_SUCCESS) {
                fprintf(stderr, "gpu sample: curandGenerateUniform failed\n");
                return -1;
            }
            sample_rows_gpu(m->out_tok, m->out_logp, m->dlog, greedy ? NULL : m->u, nb, V,
                            req->temperature, req->top_p, m->probs, m->keep);
            CUDA_CHECK(cudaMemcpy(got.data(), m->out_tok, nb * sizeof(int), cudaMemcpyDeviceToHost));
            CUDA_CHECK(cudaMemcpy(lp.data(), m->out_logp, nb * sizeof(float), cudaMemcpyDeviceToHost));
            for (int r = 0; r < nb; r++) {
                int gi = c0 + r;
                in[r] = 0;
                in[maxB + r] = plen[r];  // finished rows: a harmless position in their own slot
                if (done[r]) continue;
                out->tokens[(size_t)gi * req->max_new + k] = got[r];
                out->logp[(size_t)gi * req->max_new + k] = lp[r];
                out->len[gi] = k + 1;
                bool stop = k + 1 == req->max_new;
                for (int s = 0; s < req->n_stop; s++) stop |= got[r] == req->stop[s];
                if (stop) {
                    done[r] = 1;
                    left--;
                    continue;
                }
                in[r] = got[r];
                in[maxB + r] = plen[r] + k;  // the new token's position (< maxT)
            }
            if (left > 0 && k + 1 < req->max_new)
                CUDA_CHECK(cudaMemcpy(m->in_tok, in.data(), 2 * (size_t)maxB * sizeof(int),
                                      cudaMemcpyHostToDevice));
        }
    }
    return 0;
}

extern "C" const ModelBackend gpu_backend = {
    "gpu",            gpu_create,        gpu_destroy,       gpu_config,    gpu_num_params,
    gpu_get_params,   gpu_set_params,    gpu_get_grads,     gpu_get_opt_state,
    gpu_set_opt_state, gpu_forward,      gpu_zero_grad,     gpu_backward,  gpu_update,
    gpu_sample,       gpu_reduce_grads,
};
