// kernels_llama.h: the GPU kernels the Llama family adds to kernels.h (kernels_llama.cu), as host
// launchers taking device pointers, for gpu_llama_backend and for tests/test_kernels_llama.cu,
// which runs each one under the CUDA emulation against a plain C loop. The equations are
// llama.h's. Everything else (matmuls, attention on packed q/k/v, the lm head, AdamW, sampling)
// is kernels.h's.
//
// C++ (nvcc, or g++ with dev/cuda_cpu.h). Every pointer is device memory unless its name ends in
// _host; shapes beside them; row-major throughout.
#ifndef MEMR2_KERNELS_LLAMA_H
#define MEMR2_KERNELS_LLAMA_H

#include <stddef.h>

#include "kernels.h"

// ---- embedding ------------------------------------------------------------------------------
// out (n, C) = wte[tokens[i]]; tokens (n).
void embed_forward_gpu(float *out, const int *tokens, const float *wte, int n, int C);
// dwte (V, C) += dout rows grouped by token, without atomics: the launcher sorts the positions
// by token on the host (tokens_host (n)) and uploads the lists into bucket (3n + 1 ints); one
// thread sums each (token, channel) in position order.
void embed_backward_gpu(float *dwte, const float *dout, const int *tokens_host, int n, int C,
                        int *bucket);

// ---- RMSNorm: out = x / sqrt(mean(x^2) + eps) * w --------------------------------------------
// One warp per row. out (N, C), rstd (N) kept for backward.
void rmsnorm_forward_gpu(float *out, float *rstd, const float *inp, const float *w, int N, int C,
                         float eps);
// dinp (N, C) += rstd (dn - xhat mean(dn xhat)), dn = dout w, xhat = x rstd; dw (C) += column
// sums of dout xhat in two fixed-order passes. partial: rmsnorm_partial_floats(N, C) floats.
void rmsnorm_backward_gpu(float *dinp, float *dw, const float *dout, const float *inp,
                          const float *w, const float *rstd, int N, int C, float *partial);
size_t rmsnorm_partial_floats(int N, int C);

// ---- rotary positions (llama.h: rotate_half on the first rd channels of each head) -----------
// Tables cos_host, sin_host (maxT, rd/2): angle t * base^(-2i/rd), computed in double.
void rope_table_host(float *cos_host, float *sin_host, int maxT, int rd, float base);
// In place on x (rows, nh, hs); row i sits at position pos[i], or i % T when pos is NULL.
// cosv, sinv: the tables above on the device. backward applies the transposed rotation.
void rope_forward_gpu(float *x, const int *pos, int rows, int T, int nh, int hs, int rd,
                      const float *cosv, const float *sinv);
void rope_backward_gpu(float *dx, const int *pos, int rows, int T, int nh, int hs, int rd,
                       const float *cosv, const float *sinv);

// ---- SwiGLU ----------------------------------------------------------------------------------
// out (n) = silu(gate) * up; out may alias gate or up (each element is read before it is written).
void swiglu_forward_gpu(float *out, const float *gate, const float *up, size_t n);
// dgate, dup (n) overwritten from dout (n).
void swiglu_backward_gpu(float *dgate, float *dup, const float *dout, const float *gate,
                         const float *up, size_t n);

// ---- grouped-query attention -----------------------------------------------------------------
// Expand to kernels.h's packed layout: qkv (R, 3, NH, hs) from q (R, NH*hs), k, v (R, KV*hs);
// query head h reads key/value head h / (NH / KV). attention_forward_gpu then runs unchanged.
void gqa_pack_gpu(float *qkv, const float *q, const float *k, const float *v, int R, int NH,
                  int KV, int hs);
// The reverse for gradients: dq (R, NH*hs), dk, dv (R, KV*hs) overwritten; each KV head's
// gradient is the sum over its NH / KV query heads in head order (deterministic).
void gqa_unpack_backward_gpu(float *dq, float *dk, float *dv, const float *dqkv, int R, int NH,
                             int KV, int hs);

// ---- KV cache (maxB, maxT, KV*hs) per layer --------------------------------------------------
// Store k, v (n, KVC) rows: with pos, row i goes to slot i at position pos[i] (decode); without,
// row i = (b, t) of a (B, T) batch goes to slot b at position t (prefill, T given).
void kv_store_gpu(float *kcache, float *vcache, const float *k, const float *v, const int *pos,
                  int n, int T, int KVC, int maxT);
// y (n, NH*hs): row r's query q (n, NH*hs) attends over positions 0..pos[r] of its slot, query
// head h reading cache head h / (NH / KV). scores: (n, NH, maxT) scratch.
void gqa_decode_attention_gpu(float *y, const float *kcache, const float *vcache, float *scores,
                              const float *q, const int *pos, int n, int maxT, int NH, int KV,
                              int hs);

#endif
