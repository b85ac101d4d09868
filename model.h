// model.h: the transformer interface shared by the CPU reference (model.c) and the GPU backend
// (kernels.cu). train.c and grpo.c only ever see this file.
//
// The model is GPT-2 shaped: token + learned position embeddings, L pre-LayerNorm blocks of
// causal multi-head attention and a GELU MLP of width 4C, a final LayerNorm, and an output
// projection tied to the token embedding. One flat float array holds every parameter, in the
// order of ParamTensors below (llm.c's layout), so a checkpoint is one fwrite and the PyTorch
// reference (dev/reference.py) can map it tensor by tensor.
//
// What the model computes is tailored to policy-gradient training: forward gives, per position,
// logp[b,t] = log softmax(logits[b,t])[targets[b,t]] and optionally the entropy of that softmax;
// backward takes the coefficients dL/dlogp[b,t] and dL/dentropy[b,t]. Supervised training puts
// -1/N on output tokens and 0 on prompts; the RL loss (grpo.c) hands in its per-token
// coefficients. Positions with targets < 0 are skipped entirely (no lm-head work).
#ifndef MEMR2_MODEL_H
#define MEMR2_MODEL_H

#include <stddef.h>
#include <stdint.h>

// Two architectures share this interface: the small GPT-2 the synthetic world trains from
// scratch (model.c) and the Llama family of pretrained models (llama.h: RMSNorm, rotary
// positions, SwiGLU, grouped-query attention). A zero-initialised config's extra fields mean
// GPT-2, so `(ModelConfig){.V = .., .maxT = .., .L = .., .NH = .., .C = ..}` stays a GPT-2.
typedef enum { ARCH_GPT2 = 0, ARCH_LLAMA = 1 } ModelArch;

typedef struct {
    int V;     // vocabulary size
    int maxT;  // maximum sequence length (positions)
    int L;     // number of transformer blocks
    int NH;    // attention (query) heads
    int C;     // channels (C % NH == 0; head size hs = C / NH)
    // ---- Llama family (arch == ARCH_LLAMA); zero for GPT-2 ----
    int arch;        // ModelArch
    int n_kv_heads;  // key/value heads, grouped-query attention: NH % n_kv_heads == 0
    int ffn;         // SwiGLU hidden width F
    int rope_dim;    // rotary dimensions at the start of each head: even, <= hs
    float rope_base; // RoPE theta
    float norm_eps;  // RMSNorm epsilon
    int tied;        // 1: the output projection is the token embedding
    int qkv_bias;    // 1: q, k, v projections have biases (Qwen2)
    // What the token ids mean: a hash of the vocabulary / tokenizer the weights were made with
    // (0 = not recorded). Carried by checkpoints so a checkpoint paired with another
    // vocabulary is refused (see the trainer's loaders).
    uint64_t tokenizer_hash;
} ModelConfig;

// Field-by-field equality (the struct has padding: never memcmp configs).
int model_config_equal(const ModelConfig *a, const ModelConfig *b);
// Number of floats in the flat parameter array of any architecture.
size_t config_num_params(const ModelConfig *cfg);
// Seeded initialisation of any architecture (params_init for GPT-2, llama_params_init for Llama).
void config_params_init(float *flat, const ModelConfig *cfg, uint64_t seed);

#define NUM_PARAM_TENSORS 16

// Pointers into the flat parameter (or gradient, or AdamW moment) array; shapes beside them.
typedef struct {
    float *wte;       // (V, C)        token embedding, also the output projection (tied)
    float *wpe;       // (maxT, C)     position embedding
    float *ln1w;      // (L, C)
    float *ln1b;      // (L, C)
    float *qkvw;      // (L, 3C, C)    rows: q (C), k (C), v (C); y = x W^T + b
    float *qkvb;      // (L, 3C)
    float *attprojw;  // (L, C, C)
    float *attprojb;  // (L, C)
    float *ln2w;      // (L, C)
    float *ln2b;      // (L, C)
    float *fcw;       // (L, 4C, C)
    float *fcb;       // (L, 4C)
    float *fcprojw;   // (L, C, 4C)
    float *fcprojb;   // (L, C)
    float *lnfw;      // (C)
    float *lnfb;      // (C)
} ParamTensors;

// Element counts of the 16 tensors in ParamTensors order; returns the total.
size_t param_sizes(const ModelConfig *cfg, size_t sizes[NUM_PARAM_TENSORS]);
// Point the 16 named pointers into a flat array of param_sizes() floats.
void param_tensors_point(ParamTensors *p, float *flat, const ModelConfig *cfg);
// Names of the tensors ("wte", "wpe", ...), for error messages and the PyTorch reference.
extern const char *const PARAM_TENSOR_NAMES[NUM_PARAM_TENSORS];
// NULL if the config is usable, otherwise a static message saying what is wrong.
const char *model_config_check(const ModelConfig *cfg);
// GPT-2 initialisation from a seed: N(0, 0.02) weights, residual projections scaled by
// 1/sqrt(2L), zero biases, LayerNorm gains 1. Deterministic for a given seed.
void params_init(float *flat, const ModelConfig *cfg, uint64_t seed);

// ---------------------------------------------------------------------------------------------
// AdamW with decoupled weight decay (applied to matrices, not to biases or LayerNorm params).
typedef struct {
    float lr, beta1, beta2, eps, weight_decay;
    float grad_clip;  // global-norm clip; <= 0 disables
} AdamWConfig;

// ---------------------------------------------------------------------------------------------
// Sampling: prefill a batch of prompts of different lengths, then decode with a KV cache.
typedef struct {
    int n;                 // number of prompts
    const int *prompts;    // (n, prompt_stride) token ids, row i uses prompt_len[i] of them
    int prompt_stride;
    const int *prompt_len; // (n), each >= 1
    int max_new;           // new tokens per prompt; prompt_len[i] + max_new <= maxT
    float temperature;     // <= 0: greedy (argmax), logp is then under temperature 1
    float top_p;           // nucleus mass in (0, 1]; 1 disables
    const int *stop;       // stop tokens (the stop token is emitted and ends the row)
    int n_stop;
    uint64_t seed;         // drives all randomness of this call; same seed, same samples
    // Optional (NULL: row i's stream is derived from seed and i): one seed per row, so a row's
    // samples depend on its own seed only, not on which other rows share the call (rollout.c
    // seeds each lane's rows from the lane's global index: same rollouts on any number of ranks).
    const uint64_t *row_seeds;
} SampleRequest;

typedef struct {
    int *tokens;   // (n, max_new) generated ids, caller-owned
    float *logp;   // (n, max_new) log-prob of each token under the sampling distribution
                   // (temperature and top-p applied): these are pi_old for the PPO ratio
    int *len;      // (n) number of generated tokens (includes the stop token if one came)
} SampleResult;

// Validates a sample request against cfg (message prefixed by who on stderr) and clears the
// outputs (tokens -1, logp 0, len 0). Both backends start sample() with it. 0 or -1.
int sample_request_check(const SampleRequest *req, const SampleResult *out,
                         const ModelConfig *cfg, const char *who);

// Nucleus (top-p) selection on a probability vector probs (V): the smallest set of most probable
// tokens whose total mass is >= top_p, ties in probability broken by the lower id. Writes their
// ids to keep (room for V ints), most probable first, and returns how many. top_p >= 1 keeps
// all V (in id order). The sampler uses exactly this function (model.c); the GPU kernel the
// same rule. "Reaches top_p" means mass >= top_p * (1 - TOP_P_SLACK): float probabilities carry
// rounding of ~1e-7, and an exact-mass boundary (0.3 + 0.3 + 0.2 with top_p 0.8) must not keep
// or drop a token on the last bit, or on which backend computed them (tests/test_sampling.c).
#define TOP_P_SLACK 1e-5
int sample_top_p(const float *probs, int V, float top_p, int *keep);

// ---------------------------------------------------------------------------------------------
// A backend: the CPU reference (model.c, cpu_backend) or the GPU (kernels.cu, gpu_backend).
// Every array argument is host memory; the backend copies to and from the device as needed.
typedef struct Model Model;

// A reduction over the gradient buffer in place (dist.c sums it across processes): grads holds
// n floats, in host memory, or in device memory when on_device is 1. Returns 0 or -1.
typedef int (*GradReduceFn)(void *ctx, float *grads, size_t n, int on_device);

typedef struct {
    const char *name;
    // maxB bounds the batch of forward/backward and of sampling (sample splits larger n).
    // Parameters are initialised with params_init(seed). NULL on failure (message on stderr).
    Model *(*create)(const ModelConfig *cfg, int maxB, uint64_t seed);
    void (*destroy)(Model *m);
    const ModelConfig *(*config)(const Model *m);
    size_t (*num_params)(const Model *m);
    // Flat parameter / gradient access (host arrays of num_params floats).
    void (*get_params)(const Model *m, float *dst);
    void (*set_params)(Model *m, const float *src);
    void (*get_grads)(const Model *m, float *dst);
    // AdamW state (m, v: num_params floats each) and step count, for exact resume.
    void (*get_opt_state)(const Model *m, float *mom, float *vel, int64_t *step);
    void (*set_opt_state)(Model *m, const float *mom, const float *vel, int64_t step);

    // tokens, targets: (B, T); targets[b,t] < 0 means "no target here". Writes logp (B, T)
    // (0 where no target) and, if entropy != NULL, entropy (B, T). Keeps the activations for
    // backward. Returns 0, or -1 on bad arguments (B > maxB, T > maxT, token out of range).
    int (*forward)(Model *m, const int *tokens, const int *targets, int B, int T,
                   float *logp, float *entropy);
    void (*zero_grad)(Model *m);
    // dlogp, dentropy: (B, T) coefficients for the last forward; either may be NULL (= zeros).
    // Accumulates into the gradients (+=), like llm.c.
    void (*backward)(Model *m, const float *dlogp, const float *dentropy);
    // Clip by global norm (cfg->grad_clip) and take one AdamW step at learning rate lr.
    // Returns the gradient norm before clipping.
    float (*update)(Model *m, const AdamWConfig *cfg, float lr);

    // Returns 0, or -1 on bad arguments.
    int (*sample)(Model *m, const SampleRequest *req, SampleResult *out);

    // Data-parallel training (docs/scaleout.md): runs fn on the gradient buffer itself, where it
    // lives (the host for CPU backends, the device for GPU ones), between the last backward and
    // update, so the processes can sum their gradients without a copy. Returns fn's result.
    int (*reduce_grads)(Model *m, GradReduceFn fn, void *ctx);
} ModelBackend;

extern const ModelBackend cpu_backend;        // model.c: GPT-2 on the CPU
extern const ModelBackend gpu_backend;        // kernels.cu: GPT-2 on a GPU (train_gpu only)
extern const ModelBackend cpu_llama_backend;  // llama_cpu.c: Llama family on the CPU
extern const ModelBackend gpu_llama_backend;  // llama_gpu.cu: Llama family on a GPU (train_gpu only)

// The CPU backend for a config's architecture (cpu_backend or cpu_llama_backend).
const ModelBackend *cpu_backend_for(const ModelConfig *cfg);
// The GPU backend for a config's architecture (gpu_backend or gpu_llama_backend; llama_gpu.cu,
// linked into train_gpu and the emulated kernel tests only).
const ModelBackend *gpu_backend_for(const ModelConfig *cfg);

// ---------------------------------------------------------------------------------------------
// Checkpoints (backend independent: they move host arrays).
//   model file:  int32 header[256] = {MAGIC, VERSION, V, maxT, L, NH, C, ...}, then the flat
//                float parameters. Version 2 adds, in both files: [16] arch, [17] n_kv_heads,
//                [18] ffn, [19] rope_dim, [20] rope_base (float bits), [21] norm_eps (float
//                bits), [22] tied, [23] qkv_bias, [32..33] tokenizer_hash (low, high word).
//                Version 1 files (GPT-2, no hash) still load.
//   state file:  int32 header[256] = {STATE_MAGIC, VERSION, ...}, int64 step, uint64 rng state
//                words, then AdamW m and v, then an opaque trainer blob (curriculum stage etc.).
// Both are written to "<path>.tmp" and renamed, so a crash never leaves half a file.
#define CHECKPOINT_MAGIC 20260523
#define CHECKPOINT_STATE_MAGIC 20260524
#define CHECKPOINT_VERSION 2

// Return 0 on success; on failure -1 with a message naming the file in err (errlen bytes).
int checkpoint_save(const char *path, const ModelConfig *cfg, const float *params,
                    char *err, size_t errlen);
// Reads the header into *cfg and allocates *params (caller frees).
int checkpoint_load(const char *path, ModelConfig *cfg, float **params, char *err,
                    size_t errlen);

typedef struct {
    int64_t step;
    uint64_t rng[4];
    float *mom, *vel;   // num_params each
    void *blob;         // trainer's own state
    size_t blob_bytes;
    // Saving only: the blob given as pieces written back to back (blob NULL), so the trainer
    // need not copy its parameter copies into one buffer; it loads as one blob.
    const void *const *blob_piece;
    const size_t *blob_piece_bytes;
    int n_blob_pieces;
} TrainState;

int train_state_save(const char *path, const ModelConfig *cfg, const TrainState *st,
                     char *err, size_t errlen);
// Allocates st->mom, st->vel, st->blob (caller frees); the config must match cfg.
int train_state_load(const char *path, const ModelConfig *cfg, TrainState *st, char *err,
                     size_t errlen);

// ---------------------------------------------------------------------------------------------
// CPU matmul, exposed for the tests and the GPU kernels' comparison:
// out (N, OC) = inp (N, IC) W^T + bias, W (OC, IC); bias may be NULL.
// matmul_forward is the production path (cblas_sgemm, split over the OpenMP threads);
// matmul_reference is the plain-loop definition it is tested against.
void matmul_forward(float *out, const float *inp, const float *weight, const float *bias, int N,
                    int IC, int OC);
void matmul_reference(float *out, const float *inp, const float *weight, const float *bias,
                      int N, int IC, int OC);

#endif
