// kernels.h: the GPU kernels of memr2's GPU backend (kernels.cu), as host launchers taking
// device pointers. train.c never sees this file: it uses gpu_backend through model.h. The
// launchers are here for tests/test_kernels.cu, which runs each one (under the CUDA emulation of
// dev/cuda_cpu.h) against a plain C reference, and for anyone reading the kernels in order.
//
// C++ (compiled by nvcc, or by g++ with dev/cuda_cpu.h). Every pointer is device memory unless
// the name ends in _host; shapes beside them. Row-major throughout, like model.c.
#ifndef MEMR2_KERNELS_H
#define MEMR2_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#include "dev/cuda_cpu.h"

// ---- elementwise and row-wise layers --------------------------------------------------------
// out (B, T, C) = wte[tokens] + wpe[t]
void encoder_forward_gpu(float *out, const int *tokens, const float *wte, const float *wpe,
                         int B, int T, int C);
// dwpe (maxT, C) += sum_b dout[b, t]; dwte (V, C) += dout rows grouped by token, without atomics:
// the launcher buckets positions by token on the host (tokens_host (B, T)) and uploads the lists
// into bucket (3*B*T + 1 ints). Each (token, channel) is summed by one thread in a fixed order.
void encoder_backward_gpu(float *dwte, float *dwpe, const float *dout, const int *tokens_host,
                          int B, int T, int C, int *bucket);
// One warp per row. out (N, C), mean (N), rstd (N).
void layernorm_forward_gpu(float *out, float *mean, float *rstd, const float *inp, const float *w,
                           const float *b, int N, int C);
// dinp (N, C) += ...; dw, db (C) += ... (two-pass column sums, deterministic).
// partial: layernorm_partial_floats(N, C) floats.
void layernorm_backward_gpu(float *dinp, float *dw, float *db, const float *dout,
                            const float *inp, const float *w, const float *mean,
                            const float *rstd, int N, int C, float *partial);
size_t layernorm_partial_floats(int N, int C);
void gelu_forward_gpu(float *out, const float *inp, size_t n);
// d (n) *= gelu'(inp), in place
void gelu_backward_gpu(float *d, const float *inp, size_t n);
void residual_forward_gpu(float *out, const float *a, const float *b, size_t n);

// ---- matmuls (cuBLAS) -----------------------------------------------------------------------
// out (N, OC) = inp (N, IC) W^T + bias; W (OC, IC); bias may be NULL.
void matmul_forward_gpu(cublasHandle_t h, float *out, const float *inp, const float *weight,
                        const float *bias, int N, int IC, int OC);
// dinp (N, IC) = dout W (overwritten; may be NULL); dweight (OC, IC) += dout^T inp;
// dbias (OC) += column sums of dout (may be NULL). partial: colsum_partial_floats(N, OC).
void matmul_backward_gpu(cublasHandle_t h, float *dinp, float *dweight, float *dbias,
                         const float *dout, const float *inp, const float *weight, int N, int IC,
                         int OC, float *partial);
size_t colsum_partial_floats(int N, int OC);

// ---- attention ------------------------------------------------------------------------------
// out (B, T, C) from qkv (B, T, 3C). Keeps qkvr (3, B, NH, T, hs) (q, k, v per head) and
// att (B, NH, T, T) (softmax, zero above the diagonal) for backward. vaccum: (B, T, C) scratch.
void attention_forward_gpu(cublasHandle_t h, float *out, float *qkvr, float *att,
                           const float *qkv, float *vaccum, int B, int T, int C, int NH);
// dqkv (B, T, 3C) overwritten. scratch: attention_scratch_floats(B, T, C, NH) floats.
void attention_backward_gpu(cublasHandle_t h, float *dqkv, const float *dout, const float *qkvr,
                            const float *att, int B, int T, int C, int NH, float *scratch);
size_t attention_scratch_floats(int B, int T, int C, int NH);

// ---- language-model head --------------------------------------------------------------------
// dst (n, C) = src[rows[i]] ; and the reverse scatter dst[rows[i]] = src (n, C).
void gather_rows_gpu(float *dst, const float *src, const int *rows, int n, int C);
void scatter_rows_gpu(float *dst, const float *src, const int *rows, int n, int C);
// Per row of logits (N, V): lse (N), logp (N) = z[target] - lse, entropy (N, may be NULL)
// = lse - sum_j p_j z_j. targets (N) all >= 0.
void logits_forward_gpu(float *lse, float *logp, float *entropy, const float *logits,
                        const int *targets, int N, int V);
// dlogits (M, V) for the M selected rows sel (M) of logits (N, V): with p = softmax(z),
// dz_j = a ([j == y] - p_j) - e p_j (log p_j + H); a = dlogp (M), e = dentropy (M).
void logits_backward_gpu(float *dlogits, const float *logits, const float *lse,
                         const int *targets, const int *sel, const float *dlogp,
                         const float *dentropy, int M, int V);

// ---- optimizer ------------------------------------------------------------------------------
// Sum of squares of g (n) in double, in a fixed order (fixed grid, tree reductions).
// partial: NORM_BLOCKS doubles; out: 1 double (device).
#define NORM_BLOCKS 256
void sumsq_gpu(double *out, const float *g, size_t n, double *partial);
// PyTorch's AdamW on n elements (see model.c): decay = 1 - lr*wd (1 for undecayed tensors),
// step_size = lr / (1 - b1^t), bc2_sqrt = sqrt(1 - b2^t), gscale = clip factor.
void adamw_gpu(float *p, const float *g, float *m, float *v, size_t n, float b1, float b2,
               float eps, float decay, float step_size, float bc2_sqrt, float gscale);

// ---- sampling -------------------------------------------------------------------------------
// One decode step's input: x (n, C) = wte[tokens[r]] + wpe[pos[r]]; tokens, pos (n).
void decode_embed_gpu(float *x, const int *tokens, const int *pos, const float *wte,
                      const float *wpe, int n, int C);
// Store row r's key and value (from qkv (n, 3C)) at position pos[r] of kcache, vcache
// (maxB, maxT, C), then y (n, C) = attention of q over positions 0..pos[r]. scores (n, NH, maxT).
void decode_attention_gpu(float *y, float *kcache, float *vcache, float *scores,
                          const float *qkv, const int *pos, int n, int maxT, int C, int NH);
// After a batched prefill: keys and values of positions 0..T-1 from one layer's qkvr
// (3, B, NH, T, hs) (attention_forward_gpu) into that layer's kcache, vcache (maxB, maxT, C).
void kv_from_qkvr_gpu(float *kcache, float *vcache, const float *qkvr, int B, int T, int NH,
                      int hs, int maxT);
// Picks one token per row of logits (n, V). temperature <= 0: argmax (lowest id on ties), logp
// at temperature 1. Otherwise softmax(z / temperature) restricted to the nucleus (smallest set
// of most probable tokens, ties by lower id, with mass >= top_p), sampled with u (n) uniform in
// (0, 1]; logp under that distribution. probs: (n, V) scratch; keep: (n, V) ints scratch.
void sample_rows_gpu(int *tokens, float *logp, const float *logits, const float *u, int n, int V,
                     float temperature, float top_p, float *probs, int *keep);

#endif
