// kernels_llama.cu: the CUDA kernels the Llama family adds to kernels.cu (kernels_llama.h):
// embedding, RMSNorm, rotary positions, SwiGLU, grouped-query attention packing, KV cache and
// decode attention, each followed by its host launcher. The backend that strings them together
// with kernels.cu's matmuls, attention, lm head, AdamW and sampler is llama_gpu.cu.
//
// Built by nvcc for train_gpu, and by g++ through dev/cuda_cpu.h for the tests
// (tests/test_kernels_llama.cu runs every launcher against a plain C loop in all lane orders).
//
// Choices, and why:
// - Deterministic backward, no float atomics: RMSNorm gains are chunked column sums summed in a
//   fixed order, the embedding gradient groups positions by token on the host (as kernels.cu
//   does for GPT-2), the GQA backward sums each KV head's query heads in head order.
// - RoPE angles come from a table computed on the host in double, so positions far into a long
//   context lose nothing to float angle arithmetic.
// - Grouped-query attention expands the KV heads to NH heads in kernels.h's packed (R, 3, NH, hs)
//   layout, so attention_forward_gpu / attention_backward_gpu run unchanged.
// - The KV cache holds only the KV heads (maxB, maxT, KV*hs); decode reads head h / (NH / KV).
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <algorithm>
#include <vector>

#include "kernels_llama.h"

// ---------------------------------------------------------------------------------------------
// Error checks: a failing CUDA or cuBLAS call is a bug or a broken device; report where, exit.
static void ll_cuda_check(cudaError_t e, const char *what, const char *file, int line) {
    if (e != cudaSuccess) {
        fprintf(stderr, "gpu llama backend: %s failed at %s:%d: %s\n", what, file, line,
                cudaGetErrorString(e));
        exit(1);
    }
}
#define LL_CUDA_CHECK(call) ll_cuda_check((call), #call, __FILE__, __LINE__)
#define LL_KERNEL_CHECK() ll_cuda_check(cudaGetLastError(), "kernel launch", __FILE__, __LINE__)

static inline int ll_ceil_div(size_t a, size_t b) { return (int)((a + b - 1) / b); }
static inline int ll_grid(size_t n, int block) {
    size_t g = (n + block - 1) / block;
    return (int)(g < 1 ? 1 : g > 65535 ? 65535 : g);
}
#define LL_FULL 0xffffffffu
// grid-stride loop over i in [0, n)
#define GRID_LOOP(i, n)                                                        \
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < (n); \
         i += (size_t)gridDim.x * blockDim.x)

static __device__ __forceinline__ float ll_warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(LL_FULL, v, o);
    return v;
}
static __device__ __forceinline__ float ll_warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(LL_FULL, v, o));
    return v;
}
// Every thread gets the block's sum / max (block size a multiple of 32). The leading barrier
// lets callers reuse the shared slots back to back.
static __device__ float ll_block_sum(float v) {
    __shared__ float s[32];
    int lane = threadIdx.x % 32, warp = threadIdx.x / 32, nw = blockDim.x / 32;
    v = ll_warp_sum(v);
    __syncthreads();
    if (lane == 0) s[warp] = v;
    __syncthreads();
    return ll_warp_sum(lane < nw ? s[lane] : 0.0f);
}
static __device__ float ll_block_max(float v) {
    __shared__ float s[32];
    int lane = threadIdx.x % 32, warp = threadIdx.x / 32, nw = blockDim.x / 32;
    v = ll_warp_max(v);
    __syncthreads();
    if (lane == 0) s[warp] = v;
    __syncthreads();
    return ll_warp_max(lane < nw ? s[lane] : -INFINITY);
}

// =============================================================================================
// Embedding
// =============================================================================================

static __global__ void embed_forward_kernel(float *out, const int *tokens, const float *wte, int n,
                                            int C) {
    GRID_LOOP(i, (size_t)n * C) out[i] = wte[(size_t)tokens[i / C] * C + i % C];
}
void embed_forward_gpu(float *out, const int *tokens, const float *wte, int n, int C) {
    if (n <= 0) return;
    LAUNCH(embed_forward_kernel, ll_grid((size_t)n * C, 256), 256, 0, out, tokens, wte, n, C);
    LL_KERNEL_CHECK();
}

// Block x = one distinct token, its positions list[start[x] .. start[x+1]); block y = channels.
// bucket layout: [U+1 starts][n positions][U token ids].
static __global__ void embed_backward_kernel(float *dwte, const float *dout, const int *bucket,
                                             int U, int n, int C) {
    const int *start = bucket, *list = bucket + U + 1, *ids = list + n;
    int u = blockIdx.x, c = blockIdx.y * blockDim.x + threadIdx.x;
    if (c >= C) return;
    float acc = 0.0f;
    for (int k = start[u]; k < start[u + 1]; k++) acc += dout[(size_t)list[k] * C + c];
    dwte[(size_t)ids[u] * C + c] += acc;
}
void embed_backward_gpu(float *dwte, const float *dout, const int *tokens_host, int n, int C,
                        int *bucket) {
    if (n <= 0) return;
    std::vector<int> order(n);
    for (int i = 0; i < n; i++) order[i] = i;
    std::stable_sort(order.begin(), order.end(),
                     [&](int a, int b) { return tokens_host[a] < tokens_host[b]; });
    std::vector<int> host, ids;
    for (int k = 0; k < n; k++)
        if (k == 0 || tokens_host[order[k]] != tokens_host[order[k - 1]]) {
            host.push_back(k);
            ids.push_back(tokens_host[order[k]]);
        }
    host.push_back(n);
    int U = (int)ids.size();
    host.insert(host.end(), order.begin(), order.end());
    host.insert(host.end(), ids.begin(), ids.end());
    LL_CUDA_CHECK(cudaMemcpy(bucket, host.data(), host.size() * sizeof(int), cudaMemcpyHostToDevice));
    LAUNCH(embed_backward_kernel, dim3(U, ll_ceil_div(C, 64)), 64, 0, dwte, dout,
           (const int *)bucket, U, n, C);
    LL_KERNEL_CHECK();
}

// =============================================================================================
// RMSNorm: one warp per row
// =============================================================================================

static __global__ void rmsnorm_forward_kernel(float *out, float *rstd, const float *inp,
                                              const float *w, int N, int C, float eps) {
    int lane = threadIdx.x % 32, row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    if (row >= N) return;  // the whole warp leaves together
    const float *x = inp + (size_t)row * C;
    float ss = 0.0f;
    for (int c = lane; c < C; c += 32) ss += x[c] * x[c];
    float r = 1.0f / sqrtf(ll_warp_sum(ss) / (float)C + eps);
    float *o = out + (size_t)row * C;
    for (int c = lane; c < C; c += 32) o[c] = x[c] * r * w[c];
    if (lane == 0) rstd[row] = r;
}
void rmsnorm_forward_gpu(float *out, float *rstd, const float *inp, const float *w, int N, int C,
                         float eps) {
    if (N <= 0) return;
    LAUNCH(rmsnorm_forward_kernel, ll_ceil_div(N, 8), 256, 0, out, rstd, inp, w, N, C, eps);
    LL_KERNEL_CHECK();
}

static __global__ void rmsnorm_backward_dinp_kernel(float *dinp, const float *dout,
                                                    const float *inp, const float *w,
                                                    const float *rstd, int N, int C) {
    int lane = threadIdx.x % 32, row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    if (row >= N) return;
    const float *d = dout + (size_t)row * C, *x = inp + (size_t)row * C;
    float r = rstd[row], m = 0.0f;
    for (int c = lane; c < C; c += 32) m += d[c] * w[c] * x[c] * r;
    m = ll_warp_sum(m) / (float)C;
    float *di = dinp + (size_t)row * C;
    for (int c = lane; c < C; c += 32) di[c] += (d[c] * w[c] - x[c] * r * m) * r;
}
// Column sums in two passes (as kernels.cu): chunk p of the rows -> partial[p], then a
// fixed-order sum over the chunks. Block (32, 8): 32 columns, 8 row lanes.
static int ll_chunks(int N) { return std::max(1, std::min(64, N / 32)); }
size_t rmsnorm_partial_floats(int N, int C) { return (size_t)ll_chunks(N) * C; }
static __global__ void rmsnorm_gain_partial_kernel(float *pw, const float *dout, const float *inp,
                                                   const float *rstd, int N, int C, int P) {
    __shared__ float s[8][33];
    int c = blockIdx.x * 32 + threadIdx.x, p = blockIdx.y;
    int lo = (int)((size_t)N * p / P), hi = (int)((size_t)N * (p + 1) / P);
    float a = 0.0f;
    if (c < C)
        for (int i = lo + (int)threadIdx.y; i < hi; i += 8)
            a += dout[(size_t)i * C + c] * inp[(size_t)i * C + c] * rstd[i];
    s[threadIdx.y][threadIdx.x] = a;
    __syncthreads();
    if (threadIdx.y == 0 && c < C) {
        float t = 0.0f;
        for (int k = 0; k < 8; k++) t += s[k][threadIdx.x];
        pw[(size_t)p * C + c] = t;
    }
}
static __global__ void ll_colsum_final_kernel(float *out, const float *partial, int P, int C) {
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C) return;
    float acc = 0.0f;
    for (int p = 0; p < P; p++) acc += partial[(size_t)p * C + c];
    out[c] += acc;
}
void rmsnorm_backward_gpu(float *dinp, float *dw, const float *dout, const float *inp,
                          const float *w, const float *rstd, int N, int C, float *partial) {
    if (N <= 0) return;
    LAUNCH(rmsnorm_backward_dinp_kernel, ll_ceil_div(N, 8), 256, 0, dinp, dout, inp, w, rstd, N, C);
    LL_KERNEL_CHECK();
    int P = ll_chunks(N);
    LAUNCH(rmsnorm_gain_partial_kernel, dim3(ll_ceil_div(C, 32), P), dim3(32, 8), 0, partial, dout,
           inp, rstd, N, C, P);
    LL_KERNEL_CHECK();
    LAUNCH(ll_colsum_final_kernel, ll_ceil_div(C, 128), 128, 0, dw, (const float *)partial, P, C);
    LL_KERNEL_CHECK();
}

// =============================================================================================
// Rotary positions
// =============================================================================================

void rope_table_host(float *cos_host, float *sin_host, int maxT, int rd, float base) {
    int half = rd / 2;
    for (int t = 0; t < maxT; t++)
        for (int i = 0; i < half; i++) {
            double a = (double)t * pow((double)base, -2.0 * i / (double)rd);
            cos_host[(size_t)t * half + i] = (float)cos(a);
            sin_host[(size_t)t * half + i] = (float)sin(a);
        }
}
// Thread per (row, head, i < rd/2): rotate the pair (i, i + rd/2); dir -1 is the transpose.
static __global__ void rope_kernel(float *x, const int *pos, int rows, int T, int nh, int hs,
                                   int half, const float *cosv, const float *sinv, float dir) {
    GRID_LOOP(j, (size_t)rows * nh * half) {
        int i = (int)(j % half);
        size_t rh = j / half;  // row * nh + head
        int row = (int)(rh / nh);
        int t = pos ? pos[row] : row % T;
        float c = cosv[(size_t)t * half + i], s = dir * sinv[(size_t)t * half + i];
        float *p = x + rh * hs;
        float a = p[i], b = p[i + half];
        p[i] = a * c - b * s;
        p[i + half] = b * c + a * s;
    }
}
static void rope_launch(float *x, const int *pos, int rows, int T, int nh, int hs, int rd,
                        const float *cosv, const float *sinv, float dir) {
    if (rows <= 0 || rd <= 0) return;
    LAUNCH(rope_kernel, ll_grid((size_t)rows * nh * (rd / 2), 256), 256, 0, x, pos, rows, T, nh,
           hs, rd / 2, cosv, sinv, dir);
    LL_KERNEL_CHECK();
}
void rope_forward_gpu(float *x, const int *pos, int rows, int T, int nh, int hs, int rd,
                      const float *cosv, const float *sinv) {
    rope_launch(x, pos, rows, T, nh, hs, rd, cosv, sinv, 1.0f);
}
void rope_backward_gpu(float *dx, const int *pos, int rows, int T, int nh, int hs, int rd,
                       const float *cosv, const float *sinv) {
    rope_launch(dx, pos, rows, T, nh, hs, rd, cosv, sinv, -1.0f);
}

// =============================================================================================
// SwiGLU
// =============================================================================================

static __global__ void swiglu_forward_kernel(float *out, const float *gate, const float *up,
                                             size_t n) {
    GRID_LOOP(i, n) {
        float g = gate[i];
        out[i] = g / (1.0f + expf(-g)) * up[i];
    }
}
void swiglu_forward_gpu(float *out, const float *gate, const float *up, size_t n) {
    if (n == 0) return;
    LAUNCH(swiglu_forward_kernel, ll_grid(n, 256), 256, 0, out, gate, up, n);
    LL_KERNEL_CHECK();
}
// d silu(g)/dg = sig(g) (1 + g (1 - sig(g))). Reads all inputs before writing, so dgate may
// alias dout.
static __global__ void swiglu_backward_kernel(float *dgate, float *dup, const float *dout,
                                              const float *gate, const float *up, size_t n) {
    GRID_LOOP(i, n) {
        float d = dout[i], g = gate[i], u = up[i];
        float sg = 1.0f / (1.0f + expf(-g));
        dup[i] = d * g * sg;
        dgate[i] = d * u * sg * (1.0f + g * (1.0f - sg));
    }
}
void swiglu_backward_gpu(float *dgate, float *dup, const float *dout, const float *gate,
                         const float *up, size_t n) {
    if (n == 0) return;
    LAUNCH(swiglu_backward_kernel, ll_grid(n, 256), 256, 0, dgate, dup, dout, gate, up, n);
    LL_KERNEL_CHECK();
}

// =============================================================================================
// Grouped-query attention: expand to NH heads, and sum back
// =============================================================================================

static __global__ void gqa_pack_kernel(float *qkv, const float *q, const float *k, const float *v,
                                       int R, int NH, int KV, int hs) {
    int C = NH * hs, KVC = KV * hs, G = NH / KV;
    GRID_LOOP(i, (size_t)R * C) {
        size_t r = i / C;
        int hd = (int)(i % C), h = hd / hs, d = hd % hs;
        size_t kv = r * KVC + (size_t)(h / G) * hs + d;
        float *o = qkv + r * 3 * C + hd;
        o[0] = q[i];
        o[C] = k[kv];
        o[2 * C] = v[kv];
    }
}
void gqa_pack_gpu(float *qkv, const float *q, const float *k, const float *v, int R, int NH,
                  int KV, int hs) {
    if (R <= 0) return;
    LAUNCH(gqa_pack_kernel, ll_grid((size_t)R * NH * hs, 256), 256, 0, qkv, q, k, v, R, NH, KV, hs);
    LL_KERNEL_CHECK();
}
static __global__ void gqa_unpack_backward_kernel(float *dq, float *dk, float *dv,
                                                  const float *dqkv, int R, int NH, int KV,
                                                  int hs) {
    int C = NH * hs, KVC = KV * hs, G = NH / KV;
    GRID_LOOP(i, (size_t)R * C) dq[i] = dqkv[i / C * 3 * C + i % C];
    GRID_LOOP(i, (size_t)R * KVC) {
        size_t r = i / KVC;
        int hd = (int)(i % KVC), kh = hd / hs, d = hd % hs;
        const float *src = dqkv + r * 3 * C + (size_t)kh * G * hs + d;
        float ak = 0.0f, av = 0.0f;
        for (int g = 0; g < G; g++) {
            ak += src[C + (size_t)g * hs];
            av += src[2 * C + (size_t)g * hs];
        }
        dk[i] = ak;
        dv[i] = av;
    }
}
void gqa_unpack_backward_gpu(float *dq, float *dk, float *dv, const float *dqkv, int R, int NH,
                             int KV, int hs) {
    if (R <= 0) return;
    LAUNCH(gqa_unpack_backward_kernel, ll_grid((size_t)R * NH * hs, 256), 256, 0, dq, dk, dv, dqkv,
           R, NH, KV, hs);
    LL_KERNEL_CHECK();
}

// =============================================================================================
// KV cache and decode attention
// =============================================================================================

static __global__ void kv_store_kernel_ll(float *kcache, float *vcache, const float *k,
                                          const float *v, const int *pos, int n, int T, int KVC,
                                          int maxT) {
    GRID_LOOP(i, (size_t)n * KVC) {
        size_t row = i / KVC;
        size_t slot = pos ? row : row / T, t = pos ? (size_t)pos[row] : row % T;
        size_t at = (slot * maxT + t) * KVC + i % KVC;
        kcache[at] = k[i];
        vcache[at] = v[i];
    }
}
void kv_store_gpu(float *kcache, float *vcache, const float *k, const float *v, const int *pos,
                  int n, int T, int KVC, int maxT) {
    if (n <= 0) return;
    LAUNCH(kv_store_kernel_ll, ll_grid((size_t)n * KVC, 256), 256, 0, kcache, vcache, k, v, pos, n,
           T, KVC, maxT);
    LL_KERNEL_CHECK();
}

// Block (r, h): scores over positions 0..pos[r] in global scratch, softmax, then one thread per
// output channel d sums a_t v_t[d] in position order.
static __global__ void gqa_decode_attention_kernel(float *y, const float *kcache,
                                                   const float *vcache, float *scores,
                                                   const float *q_in, const int *pos_in, int maxT,
                                                   int NH, int KV, int hs) {
    int r = blockIdx.x, h = blockIdx.y, pos = pos_in[r], C = NH * hs, KVC = KV * hs;
    float scale = 1.0f / sqrtf((float)hs);
    const float *q = q_in + (size_t)r * C + (size_t)h * hs;
    size_t base = (size_t)r * maxT * KVC + (size_t)(h / (NH / KV)) * hs;
    const float *kb = kcache + base, *vb = vcache + base;
    float *sc = scores + ((size_t)r * NH + h) * maxT;
    float mx = -INFINITY;
    for (int t = threadIdx.x; t <= pos; t += blockDim.x) {
        const float *k = kb + (size_t)t * KVC;
        float s = 0.0f;
        for (int i = 0; i < hs; i++) s += q[i] * k[i];
        s *= scale;
        sc[t] = s;
        mx = fmaxf(mx, s);
    }
    mx = ll_block_max(mx);
    float sum = 0.0f;
    for (int t = threadIdx.x; t <= pos; t += blockDim.x) {
        float e = expf(sc[t] - mx);
        sc[t] = e;
        sum += e;
    }
    float inv = 1.0f / ll_block_sum(sum);  // its barriers also publish sc[] to the block
    for (int d = threadIdx.x; d < hs; d += blockDim.x) {
        float acc = 0.0f;
        for (int t = 0; t <= pos; t++) acc += sc[t] * inv * vb[(size_t)t * KVC + d];
        y[(size_t)r * C + (size_t)h * hs + d] = acc;
    }
}
void gqa_decode_attention_gpu(float *y, const float *kcache, const float *vcache, float *scores,
                              const float *q, const int *pos, int n, int maxT, int NH, int KV,
                              int hs) {
    if (n <= 0) return;
    LAUNCH(gqa_decode_attention_kernel, dim3(n, NH), 128, 0, y, kcache, vcache, scores, q, pos,
           maxT, NH, KV, hs);
    LL_KERNEL_CHECK();
}

