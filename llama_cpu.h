// llama_cpu.h: internals of the Llama-family CPU backend, shared by its two files:
// llama_cpu.c (layers, forward, backward, AdamW) and llama_sample.c (KV-cache decoding).
// Not an interface: everything outside uses cpu_llama_backend through model.h.
#ifndef MEMR2_LLAMA_CPU_H
#define MEMR2_LLAMA_CPU_H

#include <stddef.h>
#include <stdint.h>

#include "llama.h"
#include "model.h"

// The model state. Shapes use R = B*T rows of the last forward (capacity act_rows),
// hs = C / NH, KVd = n_kv_heads * hs, F = ffn, h2 = rope_dim / 2.
struct Model {
    ModelConfig cfg;
    int maxB;
    int nthreads;  // OpenMP threads at create (sizes the per-thread scratch)
    size_t sizes[LLAMA_NUM_TENSORS];
    size_t nparams;
    float *params, *grads, *mom, *vel;  // (nparams) each
    LlamaParams p, g;
    int64_t step;
    float *rope_cos, *rope_sin;  // (maxT, h2) cos/sin(t theta_i), llama.h's convention

    // Activations of the last forward, kept for backward. One allocation, made on the first
    // forward and grown when a larger B*T comes, so a sampling-only model never pays for it.
    size_t act_rows;   // capacity in rows (B*T)
    float *act_mem;
    float *resid;      // (L, R, C)   input of each block
    float *an;         // (L, R, C)   attention RMSNorm output
    float *arstd;      // (L, R)
    float *q;          // (L, R, C)   queries after RoPE
    float *k;          // (L, R, KVd) keys after RoPE
    float *v;          // (L, R, KVd)
    float *att_lse;    // (L, B, NH, T) log-sum-exp of each attention row: backward recomputes
                       //               the probabilities instead of storing (B, NH, T, T)
    float *atty;       // (L, R, C)   attention output before Wo
    float *res2;       // (L, R, C)   residual after attention
    float *mn;         // (L, R, C)   MLP RMSNorm output
    float *mrstd;      // (L, R)
    float *gate;       // (L, R, F)   pre-activation of silu
    float *up;         // (L, R, F)
    float *xL;         // (R, C)      output of the last block
    float *head_x;     // (R, C)      rows of xL with a target (N of them)
    float *head_in;    // (R, C)      their final RMSNorm
    float *hrstd;      // (R)
    float *lse;        // (R)
    // Backward scratch.
    float *dres;       // (R, C)      gradient of the residual stream
    float *dbuf;       // (R, C)
    float *dbuf2;      // (R, C)
    float *dq;         // (R, C)
    float *dk, *dv;    // (R, KVd)
    float *dF, *hF;    // (R, F)
    int *pos;          // (R)         position of each row (t)
    int *tokens, *targets;  // (R)
    int *head_rows;    // (R)         flat row b*T+t of each lm-head row
    int *sel;          // (R)         head rows with a nonzero coefficient
    size_t logit_rows; // capacity of logits in rows
    float *logits;     // (N, V)
    int B, T, N;       // of the last forward; B = 0: no forward to differentiate

    // Fixed-size scratch (made at create).
    float *att_scratch;  // (nthreads, 2*ATT_QB*maxT) per-thread blocks of attention rows
    float *norm_partial; // (NCHUNK, C)
    float *dlogits;      // (HEAD_CHUNK, V) lm-head backward, a chunk of rows at a time
    float *hsel, *dhsel; // (HEAD_CHUNK, C)

    // Sampling (allocated on the first sample() call; llama_sample.c).
    float *kv_mem;
    float *kcache;   // (L, maxB, KVd/hs, maxT, hs)
    float *vcache;   // (L, maxB, KVd/hs, maxT, hs)
    float *ix;       // (maxB*maxT, C)   residual stream
    float *iln;      // (maxB*maxT, C)
    float *iq;       // (maxB*maxT, C)
    float *ik, *iv;  // (maxB*maxT, KVd)
    float *iatty;    // (maxB*maxT, C)
    float *igate;    // (maxB*maxT, F)
    float *iup;      // (maxB*maxT, F)
    float *irstd;    // (maxB*maxT)
    float *ilast;    // (maxB, C)
    float *ilogits;  // (maxB, V)
    float *iprobs;   // (maxB, V)
    int *ikeep;      // (maxB, V)
    int *ipos;       // (2, maxB*maxT) position and packed row of each token
};

#define ATT_QB 32      // queries per attention block (training forward/backward)
#define HEAD_CHUNK 64  // lm-head rows per backward chunk (bounds dlogits to HEAD_CHUNK x V)

void *llama_xcalloc(size_t n, size_t size, const char *what);

// out (N, C) = inp / sqrt(mean(inp^2) + eps) * w; rstd (N) kept for backward (may be NULL).
void rmsnorm_forward(float *out, float *rstd, const float *inp, const float *w, size_t N, int C,
                     float eps);
// Rotates the first rope_dim channels of each of nh heads (row stride nh*hs) of N rows, row i
// at position pos[i]; in place. llama.h's rotate_half convention.
void rope_forward(float *x, const int *pos, size_t N, int nh, int hs, int rope_dim,
                  const float *cos_t, const float *sin_t);
// out (n) = silu(gate) * up.
void swiglu_forward(float *out, const float *gate, const float *up, size_t n);
// The output projection: lm_head, or wte when tied.
const float *llama_out_weight(const struct Model *m);

int llama_sample(struct Model *m, const SampleRequest *req, SampleResult *out);
void llama_free_sampling(struct Model *m);

#endif
