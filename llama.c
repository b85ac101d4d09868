// llama.c: the Llama family's parameter layout, config checks and initialisation (llama.h).
// Shared by the CPU and GPU builds and by checkpoint I/O; the computation lives in llama_cpu.c
// (CPU) and kernels_llama.cu (GPU).
#include "llama.h"

#include <math.h>

#include "rng.h"

const char *const LLAMA_TENSOR_NAMES[LLAMA_NUM_TENSORS] = {
    "wte", "attn_norm", "wq",     "wk",   "wv",     "bq",     "bk",     "bv",
    "wo",  "mlp_norm",  "w_gate", "w_up", "w_down", "norm_f", "lm_head"};

const int LLAMA_TENSOR_DECAY[LLAMA_NUM_TENSORS] = {1, 0, 1, 1, 1, 0, 0, 0,
                                                   1, 0, 1, 1, 1, 0, 1};

size_t llama_param_sizes(const ModelConfig *cfg, size_t s[LLAMA_NUM_TENSORS]) {
    size_t V = (size_t)cfg->V, L = (size_t)cfg->L, C = (size_t)cfg->C, F = (size_t)cfg->ffn;
    size_t hs = C / (size_t)cfg->NH, Q = (size_t)cfg->NH * hs, KV = (size_t)cfg->n_kv_heads * hs;
    size_t bias = cfg->qkv_bias ? 1 : 0;
    s[0] = V * C;                       // wte
    s[1] = L * C;                       // attn_norm
    s[2] = L * Q * C;                   // wq
    s[3] = L * KV * C;                  // wk
    s[4] = L * KV * C;                  // wv
    s[5] = bias * L * Q;                // bq
    s[6] = bias * L * KV;               // bk
    s[7] = bias * L * KV;               // bv
    s[8] = L * C * Q;                   // wo
    s[9] = L * C;                       // mlp_norm
    s[10] = L * F * C;                  // w_gate
    s[11] = L * F * C;                  // w_up
    s[12] = L * C * F;                  // w_down
    s[13] = C;                          // norm_f
    s[14] = cfg->tied ? 0 : V * C;      // lm_head
    size_t total = 0;
    for (int i = 0; i < LLAMA_NUM_TENSORS; i++) total += s[i];
    return total;
}

void llama_params_point(LlamaParams *p, float *flat, const ModelConfig *cfg) {
    size_t s[LLAMA_NUM_TENSORS];
    llama_param_sizes(cfg, s);
    float **ptrs[LLAMA_NUM_TENSORS] = {&p->wte,    &p->attn_norm, &p->wq,     &p->wk,
                                       &p->wv,     &p->bq,        &p->bk,     &p->bv,
                                       &p->wo,     &p->mlp_norm,  &p->w_gate, &p->w_up,
                                       &p->w_down, &p->norm_f,    &p->lm_head};
    for (int i = 0; i < LLAMA_NUM_TENSORS; i++) {
        *ptrs[i] = flat;
        flat += s[i];
    }
}

const char *llama_config_check(const ModelConfig *cfg) {
    if (!cfg) return "no config";
    if (cfg->arch != ARCH_LLAMA) return "not a Llama config (arch != ARCH_LLAMA)";
    if (cfg->V < 1 || cfg->V > (1 << 24)) return "V must be in [1, 2^24]";
    if (cfg->maxT < 1 || cfg->maxT > (1 << 17)) return "maxT must be in [1, 131072]";
    if (cfg->L < 1 || cfg->L > 256) return "L must be in [1, 256]";
    if (cfg->C < 1 || cfg->C > (1 << 14)) return "C must be in [1, 16384]";
    if (cfg->NH < 1 || cfg->NH > cfg->C || cfg->C % cfg->NH != 0)
        return "NH must be in [1, C] and divide C";
    if (cfg->n_kv_heads < 1 || cfg->n_kv_heads > cfg->NH || cfg->NH % cfg->n_kv_heads != 0)
        return "n_kv_heads must be in [1, NH] and divide NH";
    if (cfg->ffn < 1 || cfg->ffn > (1 << 16)) return "ffn must be in [1, 65536]";
    int hs = cfg->C / cfg->NH;
    if (cfg->rope_dim < 0 || cfg->rope_dim > hs || cfg->rope_dim % 2 != 0)
        return "rope_dim must be even and in [0, C/NH]";
    if (!(cfg->rope_base > 1.0f) || !isfinite(cfg->rope_base)) return "rope_base must be > 1";
    if (!(cfg->norm_eps > 0.0f) || !(cfg->norm_eps < 1.0f)) return "norm_eps must be in (0, 1)";
    if (cfg->tied != 0 && cfg->tied != 1) return "tied must be 0 or 1";
    if (cfg->qkv_bias != 0 && cfg->qkv_bias != 1) return "qkv_bias must be 0 or 1";
    return NULL;
}

void llama_params_init(float *flat, const ModelConfig *cfg, uint64_t seed) {
    size_t s[LLAMA_NUM_TENSORS];
    llama_param_sizes(cfg, s);
    Rng r;
    rng_seed(&r, seed);
    float resid_scale = 1.0f / sqrtf(2.0f * (float)cfg->L);
    float *p = flat;
    for (int i = 0; i < LLAMA_NUM_TENSORS; i++) {
        int is_gain = i == 1 || i == 9 || i == 13;
        float std = 0.02f * ((i == 8 || i == 12) ? resid_scale : 1.0f);
        for (size_t j = 0; j < s[i]; j++)
            p[j] = is_gain ? 1.0f : LLAMA_TENSOR_DECAY[i] ? std * rng_normal(&r) : 0.0f;
        p += s[i];
    }
}
