// llama.h: the parameter layout of the Llama family (SmolLM2, Llama 3.2, Qwen2.5) in memr2's
// flat-array style, shared by the CPU backend (llama_cpu.c), the GPU backend (kernels_llama.cu),
// the importers (dev/import_*.py) and the tests.
//
// The block, for x (B, T, C) and hs = C / NH, KV = n_kv_heads:
//   h   = x + Wo . attention(rope(Wq rmsnorm(x) + bq), rope(Wk rmsnorm(x) + bk), Wv rmsnorm(x) + bv)
//   out = h + Wdown (silu(Wgate rmsnorm(h)) * (Wup rmsnorm(h)))
// with rmsnorm(x) = x / sqrt(mean(x^2) + eps) * g, causal attention with scale 1/sqrt(hs),
// query head j reading key/value head j / (NH / KV) (grouped-query attention). After L blocks:
// logits = rmsnorm_f(x) W_out^T, W_out = wte when tied.
//
// Rotary positions use Hugging Face's "rotate_half" convention on the first rope_dim channels
// of each head (position t, i < rope_dim / 2, theta_i = rope_base^(-2i / rope_dim)):
//   y[i]              = x[i] cos(t theta_i) - x[i + rope_dim/2] sin(t theta_i)
//   y[i + rope_dim/2] = x[i + rope_dim/2] cos(t theta_i) + x[i] sin(t theta_i)
// channels rope_dim..hs-1 pass through. GGUF files store q/k rows permuted for llama.cpp's
// adjacent-pair convention; the GGUF importer un-permutes them so checkpoints are always in
// this convention.
#ifndef MEMR2_LLAMA_H
#define MEMR2_LLAMA_H

#include <stddef.h>
#include <stdint.h>

#include "model.h"

#define LLAMA_NUM_TENSORS 15

// Pointers into the flat parameter (or gradient, or AdamW moment) array, in this order.
// Tensors that a config does not have (biases without qkv_bias, lm_head when tied) have size 0.
typedef struct {
    float *wte;       // (V, C)            token embedding (and output projection when tied)
    float *attn_norm; // (L, C)            RMSNorm gain before attention
    float *wq;        // (L, NH*hs, C)     y = x W^T + b, like nn.Linear
    float *wk;        // (L, KV*hs, C)
    float *wv;        // (L, KV*hs, C)
    float *bq;        // (L, NH*hs)        only with qkv_bias
    float *bk;        // (L, KV*hs)        only with qkv_bias
    float *bv;        // (L, KV*hs)        only with qkv_bias
    float *wo;        // (L, C, NH*hs)
    float *mlp_norm;  // (L, C)            RMSNorm gain before the MLP
    float *w_gate;    // (L, F, C)
    float *w_up;      // (L, F, C)
    float *w_down;    // (L, C, F)
    float *norm_f;    // (C)               final RMSNorm gain
    float *lm_head;   // (V, C)            only when not tied
} LlamaParams;

extern const char *const LLAMA_TENSOR_NAMES[LLAMA_NUM_TENSORS];
// 1 for the tensors AdamW decays (the matrices), 0 for norm gains and biases.
extern const int LLAMA_TENSOR_DECAY[LLAMA_NUM_TENSORS];

// Element counts in LlamaParams order; returns the total.
size_t llama_param_sizes(const ModelConfig *cfg, size_t sizes[LLAMA_NUM_TENSORS]);
void llama_params_point(LlamaParams *p, float *flat, const ModelConfig *cfg);
// NULL if cfg is a usable Llama config, else a static message saying what is wrong.
const char *llama_config_check(const ModelConfig *cfg);
// Seeded random init for tests and from-scratch runs: matrices N(0, 0.02) (wo and w_down scaled
// by 1/sqrt(2L)), norm gains 1, biases 0. Deterministic for a given seed.
void llama_params_init(float *flat, const ModelConfig *cfg, uint64_t seed);

#endif
