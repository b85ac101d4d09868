// model.c: the CPU reference transformer behind model.h (cpu_backend), plus the shared helpers
// (parameter layout, initialisation, checkpoint and training-state files).
//
// GPT-2 shaped, llm.c style: one flat allocation each for parameters, gradients, AdamW m and v,
// and activations, with named pointers into them. Matmuls go to cblas_sgemm (OpenBLAS); the rest
// is plain loops parallelised with OpenMP.
//
// Threads. Debian's libopenblas0-pthread runs its own pthread pool. Alternating that pool with
// OpenMP's (both spin-wait after a call) oversubscribes the 2 cores, so model_create() pins
// OpenBLAS to 1 thread and every sgemm here is split by us over the OpenMP threads (rows of the
// output, or columns when there are few rows). One pool, no nested parallelism.
//
// Determinism: reductions across rows (LayerNorm gains, biases, the gradient norm) are summed in
// a fixed number of chunks in a fixed order, so results do not depend on the thread count beyond
// what sgemm itself does.
//
// Build: part of every target in the Makefile; tests in tests/test_model.c.
#include "model.h"

#include <cblas.h>
#include <errno.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cpu_ops.h"
#include "llama.h"
#include "rng.h"

#define LN_EPS 1e-5f
// tanh(u) = 1 - 2 / (e^{2u} + 1): absolute error ~1e-7, saturates cleanly to +-1.
static inline float fast_tanhf(float u) { return 1.0f - 2.0f / (fast_expf(2.0f * u) + 1.0f); }

// =============================================================================================
// Parameter layout
// =============================================================================================

const char *const PARAM_TENSOR_NAMES[NUM_PARAM_TENSORS] = {
    "wte",  "wpe",  "ln1w", "ln1b", "qkvw", "qkvb",    "attprojw", "attprojb",
    "ln2w", "ln2b", "fcw",  "fcb",  "fcprojw", "fcprojb", "lnfw",     "lnfb"};

// AdamW decays the 2-D matrices (nanoGPT's rule "every tensor with dim >= 2"): wte, wpe, qkvw,
// attprojw, fcw, fcprojw. Biases and LayerNorm parameters are not decayed.
static const int PARAM_DECAY[NUM_PARAM_TENSORS] = {1, 1, 0, 0, 1, 0, 1, 0, 0, 0, 1, 0, 1, 0, 0, 0};

size_t param_sizes(const ModelConfig *cfg, size_t s[NUM_PARAM_TENSORS]) {
    size_t V = (size_t)cfg->V, T = (size_t)cfg->maxT, L = (size_t)cfg->L, C = (size_t)cfg->C;
    s[0] = V * C;          // wte
    s[1] = T * C;          // wpe
    s[2] = L * C;          // ln1w
    s[3] = L * C;          // ln1b
    s[4] = L * 3 * C * C;  // qkvw
    s[5] = L * 3 * C;      // qkvb
    s[6] = L * C * C;      // attprojw
    s[7] = L * C;          // attprojb
    s[8] = L * C;          // ln2w
    s[9] = L * C;          // ln2b
    s[10] = L * 4 * C * C; // fcw
    s[11] = L * 4 * C;     // fcb
    s[12] = L * C * 4 * C; // fcprojw
    s[13] = L * C;         // fcprojb
    s[14] = C;             // lnfw
    s[15] = C;             // lnfb
    size_t total = 0;
    for (int i = 0; i < NUM_PARAM_TENSORS; i++) total += s[i];
    return total;
}

void param_tensors_point(ParamTensors *p, float *flat, const ModelConfig *cfg) {
    size_t s[NUM_PARAM_TENSORS];
    param_sizes(cfg, s);
    float **ptrs[NUM_PARAM_TENSORS] = {&p->wte,  &p->wpe,  &p->ln1w,     &p->ln1b,
                                       &p->qkvw, &p->qkvb, &p->attprojw, &p->attprojb,
                                       &p->ln2w, &p->ln2b, &p->fcw,      &p->fcb,
                                       &p->fcprojw, &p->fcprojb, &p->lnfw, &p->lnfb};
    for (int i = 0; i < NUM_PARAM_TENSORS; i++) {
        *ptrs[i] = flat;
        flat += s[i];
    }
}

int model_config_equal(const ModelConfig *a, const ModelConfig *b) {
    return a->V == b->V && a->maxT == b->maxT && a->L == b->L && a->NH == b->NH &&
           a->C == b->C && a->arch == b->arch && a->n_kv_heads == b->n_kv_heads &&
           a->ffn == b->ffn && a->rope_dim == b->rope_dim && a->rope_base == b->rope_base &&
           a->norm_eps == b->norm_eps && a->tied == b->tied && a->qkv_bias == b->qkv_bias &&
           a->tokenizer_hash == b->tokenizer_hash;
}

size_t config_num_params(const ModelConfig *cfg) {
    if (cfg->arch == ARCH_LLAMA) {
        size_t s[LLAMA_NUM_TENSORS];
        return llama_param_sizes(cfg, s);
    }
    size_t s[NUM_PARAM_TENSORS];
    return param_sizes(cfg, s);
}

void config_params_init(float *flat, const ModelConfig *cfg, uint64_t seed) {
    if (cfg->arch == ARCH_LLAMA) llama_params_init(flat, cfg, seed);
    else params_init(flat, cfg, seed);
}

// Any architecture's config (the checkpoint code's check); GPT-2 wants its Llama fields zero.
const char *model_config_check(const ModelConfig *cfg) {
    if (!cfg) return "no config";
    if (cfg->arch == ARCH_LLAMA) return llama_config_check(cfg);
    if (cfg->arch != ARCH_GPT2) return "unknown architecture";
    if (cfg->n_kv_heads || cfg->ffn || cfg->rope_dim || cfg->rope_base != 0.0f ||
        cfg->norm_eps != 0.0f || cfg->tied || cfg->qkv_bias)
        return "GPT-2 config with Llama fields set";
    if (cfg->V < 1 || cfg->V > (1 << 24)) return "V must be in [1, 2^24]";
    if (cfg->maxT < 1 || cfg->maxT > (1 << 16)) return "maxT must be in [1, 65536]";
    if (cfg->L < 1 || cfg->L > 256) return "L must be in [1, 256]";
    if (cfg->C < 1 || cfg->C > (1 << 14)) return "C must be in [1, 16384]";
    if (cfg->NH < 1 || cfg->NH > cfg->C) return "NH must be in [1, C]";
    if (cfg->C % cfg->NH != 0) return "C must be a multiple of NH";
    return NULL;
}

void params_init(float *flat, const ModelConfig *cfg, uint64_t seed) {
    size_t s[NUM_PARAM_TENSORS];
    param_sizes(cfg, s);
    Rng r;
    rng_seed(&r, seed);
    // GPT-2: residual projections (attprojw, fcprojw) get std 0.02 / sqrt(2L) so the residual
    // stream's variance does not grow with depth.
    float resid_scale = 1.0f / sqrtf(2.0f * (float)cfg->L);
    float *p = flat;
    for (int i = 0; i < NUM_PARAM_TENSORS; i++) {
        const char *nm = PARAM_TENSOR_NAMES[i];
        int is_gain = !strcmp(nm, "ln1w") || !strcmp(nm, "ln2w") || !strcmp(nm, "lnfw");
        int is_matrix = PARAM_DECAY[i];
        float std = 0.02f * ((i == 6 || i == 12) ? resid_scale : 1.0f);
        for (size_t j = 0; j < s[i]; j++)
            p[j] = is_gain ? 1.0f : is_matrix ? std * rng_normal(&r) : 0.0f;
        p += s[i];
    }
}

// =============================================================================================
// Matmul: out (N, OC) = inp (N, IC) W^T + bias, W (OC, IC) as in PyTorch's nn.Linear
// =============================================================================================

// The readable definition the tests hold the sgemm path to.
void matmul_reference(float *out, const float *inp, const float *weight, const float *bias,
                      int N, int IC, int OC) {
    for (int i = 0; i < N; i++)
        for (int o = 0; o < OC; o++) {
            float acc = bias ? bias[o] : 0.0f;
            for (int k = 0; k < IC; k++)
                acc += inp[(size_t)i * IC + k] * weight[(size_t)o * IC + k];
            out[(size_t)i * OC + o] = acc;
        }
}

void matmul_forward(float *out, const float *inp, const float *weight, const float *bias, int N,
                    int IC, int OC) {
    int by_rows = split_rows(N);
#pragma omp parallel if ((size_t)N * IC * OC >= MATMUL_PAR_MIN)
    {
        size_t lo, hi;
        thread_range(by_rows ? (size_t)N : (size_t)OC, &lo, &hi);
        size_t r0 = by_rows ? lo : 0, r1 = by_rows ? hi : (size_t)N;
        size_t c0 = by_rows ? 0 : lo, c1 = by_rows ? (size_t)OC : hi;
        if (r1 > r0 && c1 > c0) {
            for (size_t i = r0; i < r1; i++) {
                float *o = out + i * OC;
                for (size_t c = c0; c < c1; c++) o[c] = bias ? bias[c] : 0.0f;
            }
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)(r1 - r0), (int)(c1 - c0),
                        IC, 1.0f, inp + r0 * IC, IC, weight + c0 * IC, IC, 1.0f,
                        out + r0 * OC + c0, OC);
        }
    }
}

// dinp (N, IC) = dout (N, OC) W (beta 0: overwrite; scratch buffers need no memset), and
// accumulates dweight (OC, IC) += dout^T inp, dbias (OC) += column sums of dout.
void matmul_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                     const float *inp, const float *weight, int N, int IC, int OC) {
    int by_rows = split_rows(N);
#pragma omp parallel if ((size_t)N * IC * OC >= MATMUL_PAR_MIN)
    {
        size_t lo, hi;
        if (dinp) {
            thread_range(by_rows ? (size_t)N : (size_t)IC, &lo, &hi);
            size_t r0 = by_rows ? lo : 0, r1 = by_rows ? hi : (size_t)N;
            size_t c0 = by_rows ? 0 : lo, c1 = by_rows ? (size_t)IC : hi;
            if (r1 > r0 && c1 > c0)
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)(r1 - r0),
                            (int)(c1 - c0), OC, 1.0f, dout + r0 * OC, OC, weight + c0, IC, 0.0f,
                            dinp + r0 * IC + c0, IC);
        }
        // dweight rows [lo, hi): dout[:, lo:hi]^T inp; each thread owns its rows, no races.
        thread_range((size_t)OC, &lo, &hi);
        if (hi > lo && N > 0) {
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)(hi - lo), IC, N, 1.0f,
                        dout + lo, OC, inp, IC, 1.0f, dweight + lo * IC, IC);
            if (dbias)
                for (size_t i = 0; i < (size_t)N; i++) {
                    const float *d = dout + i * OC;
                    for (size_t o = lo; o < hi; o++) dbias[o] += d[o];
                }
        }
    }
}

// =============================================================================================
// Layers (forward / backward pairs)
// =============================================================================================

// Token + position embedding. out (B, T, C).
static void encoder_forward(float *out, const int *tokens, const float *wte, const float *wpe,
                            int B, int T, int C) {
#pragma omp parallel for schedule(static) if (B * T * C >= PAR_MIN)
    for (int bt = 0; bt < B * T; bt++) {
        const float *te = wte + (size_t)tokens[bt] * C, *pe = wpe + (size_t)(bt % T) * C;
        float *o = out + (size_t)bt * C;
        for (int c = 0; c < C; c++) o[c] = te[c] + pe[c];
    }
}

// Several positions share a token, so split the channels (not the rows) over threads.
static void encoder_backward(float *dwte, float *dwpe, const float *dout, const int *tokens,
                             int B, int T, int C) {
#pragma omp parallel
    {
        size_t c0, c1;
        thread_range((size_t)C, &c0, &c1);
        for (int bt = 0; bt < B * T; bt++) {
            const float *d = dout + (size_t)bt * C;
            float *te = dwte + (size_t)tokens[bt] * C, *pe = dwpe + (size_t)(bt % T) * C;
            for (size_t c = c0; c < c1; c++) {
                te[c] += d[c];
                pe[c] += d[c];
            }
        }
    }
}

// out, mean, rstd for N rows of C.
static void layernorm_forward(float *out, float *mean, float *rstd, const float *inp,
                              const float *w, const float *b, size_t N, int C) {
#pragma omp parallel for schedule(static) if (N * C >= PAR_MIN)
    for (size_t i = 0; i < N; i++) {
        const float *x = inp + i * C;
        float m = 0.0f, v = 0.0f;
#pragma omp simd reduction(+ : m)
        for (int c = 0; c < C; c++) m += x[c];
        m /= (float)C;
#pragma omp simd reduction(+ : v)
        for (int c = 0; c < C; c++) v += (x[c] - m) * (x[c] - m);
        v /= (float)C;
        float s = 1.0f / sqrtf(v + LN_EPS);
        float *o = out + i * C;
        for (int c = 0; c < C; c++) o[c] = (x[c] - m) * s * w[c] + b[c];
        mean[i] = m;
        rstd[i] = s;
    }
}

// dinp += ..., dw += sum dout * xhat, db += sum dout. partial: (NCHUNK, 2C) scratch.
static void layernorm_backward(float *dinp, float *dw, float *db, const float *dout,
                               const float *inp, const float *w, const float *mean,
                               const float *rstd, size_t N, int C, float *partial) {
#pragma omp parallel for schedule(static)
    for (int ch = 0; ch < NCHUNK; ch++) {
        float *pw = partial + (size_t)ch * 2 * C, *pb = pw + C;
        memset(pw, 0, sizeof(float) * 2 * (size_t)C);
        for (size_t i = N * ch / NCHUNK; i < N * (ch + 1) / NCHUNK; i++) {
            const float *d = dout + i * C, *x = inp + i * C;
            float m = mean[i], s = rstd[i];
            // d xhat = dout * w; dx = s * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)).
            float mdn = 0.0f, mdnx = 0.0f;
#pragma omp simd reduction(+ : mdn, mdnx)
            for (int c = 0; c < C; c++) {
                float xh = (x[c] - m) * s, dn = d[c] * w[c];
                mdn += dn;
                mdnx += dn * xh;
            }
            mdn /= (float)C;
            mdnx /= (float)C;
            float *di = dinp + i * C;
#pragma omp simd
            for (int c = 0; c < C; c++) {
                float xh = (x[c] - m) * s, dn = d[c] * w[c];
                pb[c] += d[c];
                pw[c] += d[c] * xh;
                di[c] += (dn - mdn - xh * mdnx) * s;
            }
        }
    }
    for (int ch = 0; ch < NCHUNK; ch++) {
        const float *pw = partial + (size_t)ch * 2 * C, *pb = pw + C;
        for (int c = 0; c < C; c++) {
            dw[c] += pw[c];
            db[c] += pb[c];
        }
    }
}

// Causal self-attention. qkv (B, T, 3C) -> out (B, T, C); att (B, NH, T, T) keeps the softmax
// for backward (entries above the diagonal are 0). Per (b, head) and block of ATT_QB queries:
// S = Q K^T / sqrt(hs) over the keys the block can see, the row softmax, then O = P V, as
// sgemms on strided views of qkv. Blocking skips most of the masked upper triangle (at T = 128,
// 62% of the full T x T work) at the price of a few more, smaller sgemm calls.
#define ATT_QB 32
static void attention_forward(float *out, float *att, const float *qkv, int B, int T, int C,
                              int NH) {
    int hs = C / NH, C3 = 3 * C;
    float scale = 1.0f / sqrtf((float)hs);
#pragma omp parallel for collapse(2) schedule(static)
    for (int b = 0; b < B; b++)
        for (int h = 0; h < NH; h++) {
            const float *q = qkv + (size_t)b * T * C3 + (size_t)h * hs;
            float *a = att + ((size_t)b * NH + h) * T * T;
            for (int q0 = 0; q0 < T; q0 += ATT_QB) {
                int nq = T - q0 < ATT_QB ? T - q0 : ATT_QB, nk = q0 + nq;
                float *ab = a + (size_t)q0 * T;
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nq, nk, hs, scale,
                            q + (size_t)q0 * C3, C3, q + C, C3, 0.0f, ab, T);
                for (int t = q0; t < nk; t++) {
                    float *row = a + (size_t)t * T;
                    softmax_causal_row(row, t, T);
                }
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, nq, hs, nk, 1.0f, ab, T,
                            q + 2 * C, C3, 0.0f, out + ((size_t)b * T + q0) * C + (size_t)h * hs,
                            C);
            }
        }
}

// dqkv (B, T, 3C) overwritten. Each (b, head) owns its slice of dqkv, so the tasks are
// independent and all cores stay busy (llm.c's version is one serial O(T^3) loop). Per block
// of queries, with P the block's softmax rows and keys 0 .. nk-1:
//   dP = dO V^T;  dS = P * (dP - rowsum(P * dP)) / sqrt(hs);  dQ = dS K;  dK += dS^T Q;
//   dV += P^T dO
// scratch: (nthreads, T, T) floats, one dS block per thread.
static void attention_backward(float *dqkv, const float *dout, const float *qkv, const float *att,
                               int B, int T, int C, int NH, float *scratch, int nthreads) {
    int hs = C / NH, C3 = 3 * C;
    float scale = 1.0f / sqrtf((float)hs);
#pragma omp parallel for collapse(2) schedule(static) num_threads(nthreads)
    for (int b = 0; b < B; b++)
        for (int h = 0; h < NH; h++) {
            const float *q = qkv + (size_t)b * T * C3 + (size_t)h * hs;
            const float *a = att + ((size_t)b * NH + h) * T * T;
            const float *d = dout + (size_t)b * T * C + (size_t)h * hs;
            float *dq = dqkv + (size_t)b * T * C3 + (size_t)h * hs;
            float *ds = scratch + (size_t)omp_get_thread_num() * T * T;
            for (int t = 0; t < T; t++) {  // dK, dV accumulate over the query blocks
                memset(dq + (size_t)t * C3 + C, 0, sizeof(float) * hs);
                memset(dq + (size_t)t * C3 + 2 * C, 0, sizeof(float) * hs);
            }
            for (int q0 = 0; q0 < T; q0 += ATT_QB) {
                int nq = T - q0 < ATT_QB ? T - q0 : ATT_QB, nk = q0 + nq;
                const float *ab = a + (size_t)q0 * T, *db = d + (size_t)q0 * C;
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nq, nk, hs, 1.0f, db, C,
                            q + 2 * C, C3, 0.0f, ds, nk);
                for (int i = 0; i < nq; i++) {
                    int t = q0 + i;
                    const float *pr = ab + (size_t)i * T;
                    float *dr = ds + (size_t)i * nk, dot = 0.0f;
#pragma omp simd reduction(+ : dot)
                    for (int t2 = 0; t2 <= t; t2++) dot += pr[t2] * dr[t2];
#pragma omp simd
                    for (int t2 = 0; t2 <= t; t2++) dr[t2] = pr[t2] * (dr[t2] - dot) * scale;
                    for (int t2 = t + 1; t2 < nk; t2++) dr[t2] = 0.0f;
                }
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, nq, hs, nk, 1.0f, ds, nk,
                            q + C, C3, 0.0f, dq + (size_t)q0 * C3, C3);
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, nk, hs, nq, 1.0f, ds, nk,
                            q + (size_t)q0 * C3, C3, 1.0f, dq + C, C3);
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, nk, hs, nq, 1.0f, ab, T, db,
                            C, 1.0f, dq + 2 * C, C3);
            }
        }
}

#define GELU_K 0.7978845608028654f  // sqrt(2/pi)
// GELU, tanh approximation (GPT-2; PyTorch approximate='tanh').
static void gelu_forward(float *out, const float *inp, size_t n) {
#pragma omp parallel if (n >= PAR_MIN)
    {
        size_t lo, hi;
        thread_range(n, &lo, &hi);
        const float *x = inp + lo;
        float *o = out + lo;
        int cnt = (int)(hi - lo);
#pragma omp simd
        for (int i = 0; i < cnt; i++) {
            float u = GELU_K * (x[i] + 0.044715f * x[i] * x[i] * x[i]);
            o[i] = 0.5f * x[i] * (1.0f + fast_tanhf(u));
        }
    }
}

// d (in place): d = d * gelu'(inp).
static void gelu_backward(float *d, const float *inp, size_t n) {
#pragma omp parallel if (n >= PAR_MIN)
    {
        size_t lo, hi;
        thread_range(n, &lo, &hi);
        const float *x = inp + lo;
        float *dd = d + lo;
        int cnt = (int)(hi - lo);
#pragma omp simd
        for (int i = 0; i < cnt; i++) {
            float xi = x[i];
            float u = GELU_K * (xi + 0.044715f * xi * xi * xi);
            float th = fast_tanhf(u);
            float sech2 = 1.0f - th * th;
            dd[i] *= 0.5f * (1.0f + th) +
                     0.5f * xi * sech2 * GELU_K * (1.0f + 3.0f * 0.044715f * xi * xi);
        }
    }
}

static void residual_forward(float *out, const float *a, const float *b, size_t n) {
#pragma omp parallel for simd schedule(static) if (n >= PAR_MIN)
    for (size_t i = 0; i < n; i++) out[i] = a[i] + b[i];
}

// log-sum-exp of one row, max-shifted.
float row_lse(const float *z, int V) {
    float mx = -INFINITY;
#pragma omp simd reduction(max : mx)
    for (int j = 0; j < V; j++) mx = z[j] > mx ? z[j] : mx;
    float s = 0.0f;
#pragma omp simd reduction(+ : s)
    for (int j = 0; j < V; j++) s += fast_expf(z[j] - mx);
    return mx + logf(s);
}

// Entropy of softmax(z) given its lse: H = -sum_j p_j log p_j = -sum_j p_j (z_j - lse)
// (no cancellation between two large terms, unlike lse - sum p z).
float row_entropy(const float *z, int V, float lse) {
    float h = 0.0f;
#pragma omp simd reduction(+ : h)
    for (int j = 0; j < V; j++) {
        float lp = z[j] - lse;
        h += fast_expf(lp) * lp;
    }
    return -h;
}

// =============================================================================================
// The model
// =============================================================================================

struct Model {
    ModelConfig cfg;
    int maxB;
    size_t sizes[NUM_PARAM_TENSORS];
    size_t nparams;
    float *params, *grads, *mom, *vel;  // (nparams) each
    ParamTensors p, g;
    int64_t step;

    // Activations of the last forward, for backward (one allocation, maxB*maxT rows).
    float *act_mem;
    float *encoded;    // (B, T, C)
    float *ln1;        // (L, B, T, C)
    float *ln1_mean;   // (L, B, T)
    float *ln1_rstd;   // (L, B, T)
    float *qkv;        // (L, B, T, 3C)
    float *atty;       // (L, B, T, C)
    float *att;        // (L, B, NH, T, T)
    float *residual2;  // (L, B, T, C)
    float *ln2;        // (L, B, T, C)
    float *ln2_mean;   // (L, B, T)
    float *ln2_rstd;   // (L, B, T)
    float *fch;        // (L, B, T, 4C)
    float *fch_gelu;   // (L, B, T, 4C)
    float *residual3;  // (L, B, T, C)
    float *head_x;     // (N, C)  final residual rows that have a target (N <= B*T)
    float *head_in;    // (N, C)  their final LayerNorm
    float *lnf_mean;   // (N)
    float *lnf_rstd;   // (N)
    float *logits;     // (N, V)
    float *lse;        // (N)
    // Backward scratch.
    float *dres;       // (B, T, C)  gradient of the residual stream
    float *dbuf;       // (B, T, C)
    float *dbuf4;      // (B, T, 4C)
    float *dqkv;       // (B, T, 3C)
    float *dlogits;    // (M, V) rows with a nonzero coefficient (M <= N)
    float *dhead;      // (N, C)
    float *hsel;       // (M, C)
    float *att_scratch;  // (nthreads, maxT, maxT) one attention matrix per thread
    int nthreads;        // OpenMP threads at create (sizes att_scratch)
    float *ln_partial;   // (NCHUNK, 2C)
    int *tokens, *targets;  // (B, T) of the last forward
    int *head_rows;    // (N) flat row b*T+t of each lm-head row
    int *sel;          // (M) index into the N head rows
    int B, T, N;       // of the last forward; B = 0: no forward to differentiate

    // Sampling (allocated on the first sample() call).
    float *kv_mem;
    float *kcache;   // (L, maxB, NH, maxT, hs)
    float *vcache;   // (L, maxB, NH, maxT, hs)
    float *ix;       // (maxB*maxT, C)   residual stream
    float *iln;      // (maxB*maxT, C)
    float *iqkv;     // (maxB*maxT, 3C)
    float *iatty;    // (maxB*maxT, C)
    float *itmp;     // (maxB*maxT, C)
    float *ifch;     // (maxB*maxT, 4C)
    float *ilast;    // (maxB, C)
    float *ilogits;  // (maxB, V)
    float *iprobs;   // (maxB, V)
    float *imean, *irstd;  // (maxB*maxT)
    int *ikeep;      // (maxB, V)
    int *iidx;       // (2, maxB*maxT) row and position of each packed token
};

static void *xcalloc(size_t n, size_t size, const char *what) {
    void *p = (n && size) ? calloc(n, size) : NULL;
    if (!p && n && size)
        fprintf(stderr, "model: out of memory allocating %s (%zu x %zu bytes)\n", what, n, size);
    return p;
}

// Carve the next count floats out of one allocation.
static float *carve(float **cur, size_t count) {
    float *p = *cur;
    *cur += count;
    return p;
}

static void model_destroy(Model *m) {
    if (!m) return;
    free(m->params);
    free(m->grads);
    free(m->mom);
    free(m->vel);
    free(m->act_mem);
    free(m->tokens);
    free(m->targets);
    free(m->head_rows);
    free(m->sel);
    free(m->kv_mem);
    free(m->ikeep);
    free(m->iidx);
    free(m);
}

static int alloc_activations(Model *m) {
    size_t L = m->cfg.L, C = m->cfg.C, NH = m->cfg.NH, V = m->cfg.V;
    size_t R = (size_t)m->maxB * m->cfg.maxT;  // rows
    size_t T = m->cfg.maxT;
    size_t total = R * C + L * R * (C + 2 + 3 * C + C + NH * T + C + C + 2 + 4 * C + 4 * C + C) +
                   2 * R * C + 2 * R + 2 * R * V + R +  // head
                   R * C + R * C + R * 4 * C + R * 3 * C + R * C + R * C +  // dres..hsel
                   (size_t)m->nthreads * T * T + NCHUNK * 2 * C;
    // att is (L, B, NH, T, T) with B*T = R rows: R*NH*T per layer (counted above).
    m->act_mem = xcalloc(total, sizeof(float), "activations");
    m->tokens = xcalloc(R, sizeof(int), "tokens");
    m->targets = xcalloc(R, sizeof(int), "targets");
    m->head_rows = xcalloc(R, sizeof(int), "head rows");
    m->sel = xcalloc(R, sizeof(int), "head rows");
    if (!m->act_mem || !m->tokens || !m->targets || !m->head_rows || !m->sel) return -1;
    float *c = m->act_mem;
    m->encoded = carve(&c, R * C);
    m->ln1 = carve(&c, L * R * C);
    m->ln1_mean = carve(&c, L * R);
    m->ln1_rstd = carve(&c, L * R);
    m->qkv = carve(&c, L * R * 3 * C);
    m->atty = carve(&c, L * R * C);
    m->att = carve(&c, L * R * NH * T);
    m->residual2 = carve(&c, L * R * C);
    m->ln2 = carve(&c, L * R * C);
    m->ln2_mean = carve(&c, L * R);
    m->ln2_rstd = carve(&c, L * R);
    m->fch = carve(&c, L * R * 4 * C);
    m->fch_gelu = carve(&c, L * R * 4 * C);
    m->residual3 = carve(&c, L * R * C);
    m->head_x = carve(&c, R * C);
    m->head_in = carve(&c, R * C);
    m->lnf_mean = carve(&c, R);
    m->lnf_rstd = carve(&c, R);
    m->logits = carve(&c, R * V);
    m->dlogits = carve(&c, R * V);
    m->lse = carve(&c, R);
    m->dres = carve(&c, R * C);
    m->dbuf = carve(&c, R * C);
    m->dbuf4 = carve(&c, R * 4 * C);
    m->dqkv = carve(&c, R * 3 * C);
    m->dhead = carve(&c, R * C);
    m->hsel = carve(&c, R * C);
    m->att_scratch = carve(&c, (size_t)m->nthreads * T * T);
    m->ln_partial = carve(&c, NCHUNK * 2 * C);
    if ((size_t)(c - m->act_mem) != total) {
        fprintf(stderr, "model: internal error: activation layout %zu != %zu\n",
                (size_t)(c - m->act_mem), total);
        return -1;
    }
    return 0;
}

static Model *model_create(const ModelConfig *cfg, int maxB, uint64_t seed) {
    const char *why = cfg && cfg->arch != ARCH_GPT2 ? "not a GPT-2 config (use cpu_backend_for)"
                                                    : model_config_check(cfg);
    if (why) {
        fprintf(stderr, "model: bad config: %s\n", why);
        return NULL;
    }
    if (maxB < 1) {
        fprintf(stderr, "model: maxB must be >= 1 (got %d)\n", maxB);
        return NULL;
    }
    // One thread pool: OpenMP's. See the top of this file.
    openblas_set_num_threads(1);
    Model *m = xcalloc(1, sizeof(Model), "model");
    if (!m) return NULL;
    m->cfg = *cfg;
    m->maxB = maxB;
    m->nthreads = omp_get_max_threads();
    m->nparams = param_sizes(cfg, m->sizes);
    m->params = xcalloc(m->nparams, sizeof(float), "parameters");
    m->grads = xcalloc(m->nparams, sizeof(float), "gradients");
    m->mom = xcalloc(m->nparams, sizeof(float), "AdamW m");
    m->vel = xcalloc(m->nparams, sizeof(float), "AdamW v");
    if (!m->params || !m->grads || !m->mom || !m->vel || alloc_activations(m) != 0) {
        model_destroy(m);
        return NULL;
    }
    param_tensors_point(&m->p, m->params, cfg);
    param_tensors_point(&m->g, m->grads, cfg);
    params_init(m->params, cfg, seed);
    return m;
}

static const ModelConfig *model_config(const Model *m) { return &m->cfg; }
static size_t model_num_params(const Model *m) { return m->nparams; }
static void model_get_params(const Model *m, float *dst) {
    memcpy(dst, m->params, m->nparams * sizeof(float));
}
static void model_set_params(Model *m, const float *src) {
    memcpy(m->params, src, m->nparams * sizeof(float));
}
static void model_get_grads(const Model *m, float *dst) {
    memcpy(dst, m->grads, m->nparams * sizeof(float));
}
static int model_reduce_grads(Model *m, GradReduceFn fn, void *ctx) {
    return fn(ctx, m->grads, m->nparams, 0);
}
static void model_get_opt_state(const Model *m, float *mom, float *vel, int64_t *step) {
    if (mom) memcpy(mom, m->mom, m->nparams * sizeof(float));
    if (vel) memcpy(vel, m->vel, m->nparams * sizeof(float));
    if (step) *step = m->step;
}
static void model_set_opt_state(Model *m, const float *mom, const float *vel, int64_t step) {
    if (mom) memcpy(m->mom, mom, m->nparams * sizeof(float));
    if (vel) memcpy(m->vel, vel, m->nparams * sizeof(float));
    m->step = step;
}
static void model_zero_grad(Model *m) { memset(m->grads, 0, m->nparams * sizeof(float)); }

// ---------------------------------------------------------------------------------------------
// Forward
// ---------------------------------------------------------------------------------------------

static int model_forward(Model *m, const int *tokens, const int *targets, int B, int T,
                         float *logp, float *entropy) {
    const ModelConfig *cfg = &m->cfg;
    int C = cfg->C, NH = cfg->NH, V = cfg->V, L = cfg->L;
    m->B = 0;
    if (B < 1 || B > m->maxB || T < 1 || T > cfg->maxT || !tokens || !targets || !logp) {
        fprintf(stderr, "model forward: bad arguments B=%d (maxB %d) T=%d (maxT %d)\n", B,
                m->maxB, T, cfg->maxT);
        return -1;
    }
    size_t R = (size_t)B * T;
    for (size_t i = 0; i < R; i++)
        if (tokens[i] < 0 || tokens[i] >= V || targets[i] >= V) {
            fprintf(stderr, "model forward: token %d / target %d at %zu outside [0, %d)\n",
                    tokens[i], targets[i], i, V);
            return -1;
        }
    memcpy(m->tokens, tokens, R * sizeof(int));
    memcpy(m->targets, targets, R * sizeof(int));
    const ParamTensors *p = &m->p;
    size_t RC = R * C;

    encoder_forward(m->encoded, tokens, p->wte, p->wpe, B, T, C);
    for (int l = 0; l < L; l++) {
        const float *in = l == 0 ? m->encoded : m->residual3 + (l - 1) * RC;
        float *ln1 = m->ln1 + l * RC, *qkv = m->qkv + l * RC * 3, *atty = m->atty + l * RC;
        float *att = m->att + (size_t)l * B * NH * T * T, *res2 = m->residual2 + l * RC;
        float *ln2 = m->ln2 + l * RC, *fch = m->fch + l * RC * 4;
        float *fchg = m->fch_gelu + l * RC * 4, *res3 = m->residual3 + l * RC;
        size_t lc = (size_t)l * C;
        layernorm_forward(ln1, m->ln1_mean + l * R, m->ln1_rstd + l * R, in, p->ln1w + lc,
                          p->ln1b + lc, R, C);
        matmul_forward(qkv, ln1, p->qkvw + lc * 3 * C, p->qkvb + lc * 3, (int)R, C, 3 * C);
        attention_forward(atty, att, qkv, B, T, C, NH);
        matmul_forward(m->dbuf, atty, p->attprojw + lc * C, p->attprojb + lc, (int)R, C, C);
        residual_forward(res2, in, m->dbuf, RC);
        layernorm_forward(ln2, m->ln2_mean + l * R, m->ln2_rstd + l * R, res2, p->ln2w + lc,
                          p->ln2b + lc, R, C);
        matmul_forward(fch, ln2, p->fcw + lc * 4 * C, p->fcb + lc * 4, (int)R, C, 4 * C);
        gelu_forward(fchg, fch, RC * 4);
        matmul_forward(m->dbuf, fchg, p->fcprojw + lc * 4 * C, p->fcprojb + lc, (int)R, 4 * C, C);
        residual_forward(res3, res2, m->dbuf, RC);
    }

    // LM head only on rows with a target: gather them into a compact (N, C) matrix.
    const float *xL = m->residual3 + (L - 1) * RC;
    int N = 0;
    for (size_t i = 0; i < R; i++)
        if (targets[i] >= 0) m->head_rows[N++] = (int)i;
    m->N = N;
#pragma omp parallel for schedule(static)
    for (int i = 0; i < N; i++)
        memcpy(m->head_x + (size_t)i * C, xL + (size_t)m->head_rows[i] * C, sizeof(float) * C);
    layernorm_forward(m->head_in, m->lnf_mean, m->lnf_rstd, m->head_x, p->lnfw, p->lnfb,
                      (size_t)N, C);
    if (N > 0) matmul_forward(m->logits, m->head_in, p->wte, NULL, N, C, V);
    memset(logp, 0, R * sizeof(float));
    if (entropy) memset(entropy, 0, R * sizeof(float));
#pragma omp parallel for schedule(static)
    for (int i = 0; i < N; i++) {
        const float *z = m->logits + (size_t)i * V;
        int row = m->head_rows[i];
        float lse = row_lse(z, V);
        m->lse[i] = lse;
        logp[row] = z[targets[row]] - lse;
        if (entropy) entropy[row] = row_entropy(z, V, lse);
    }
    m->B = B;
    m->T = T;
    return 0;
}

// ---------------------------------------------------------------------------------------------
// Backward
// ---------------------------------------------------------------------------------------------

static void model_backward(Model *m, const float *dlogp, const float *dentropy) {
    const ModelConfig *cfg = &m->cfg;
    int C = cfg->C, NH = cfg->NH, V = cfg->V, L = cfg->L, B = m->B, T = m->T, N = m->N;
    if (B == 0) {
        fprintf(stderr, "model backward: no forward to differentiate (ignored)\n");
        return;
    }
    const ParamTensors *p = &m->p;
    const ParamTensors *g = &m->g;
    size_t R = (size_t)B * T, RC = R * C;

    // Rows whose coefficients are both zero contribute nothing: leave them out of the lm head.
    int M = 0;
    for (int i = 0; i < N; i++) {
        int row = m->head_rows[i];
        if ((dlogp && dlogp[row] != 0.0f) || (dentropy && dentropy[row] != 0.0f)) m->sel[M++] = i;
    }
    if (M == 0) return;

    // dlogits for the selected rows. With p = softmax(z), y the target:
    //   d logp_y / dz_j = [j == y] - p_j;   dH / dz_j = -p_j (log p_j + H).
#pragma omp parallel for schedule(static)
    for (int s = 0; s < M; s++) {
        int i = m->sel[s], row = m->head_rows[i];
        const float *z = m->logits + (size_t)i * V;
        float *dz = m->dlogits + (size_t)s * V;
        float a = dlogp ? dlogp[row] : 0.0f, e = dentropy ? dentropy[row] : 0.0f;
        float lse = m->lse[i];
        float H = e != 0.0f ? row_entropy(z, V, lse) : 0.0f;
#pragma omp simd
        for (int j = 0; j < V; j++) {
            float pj = fast_expf(z[j] - lse);
            dz[j] = -a * pj - e * pj * (z[j] - lse + H);
        }
        dz[m->targets[row]] += a;
        memcpy(m->hsel + (size_t)s * C, m->head_in + (size_t)i * C, sizeof(float) * C);
    }
    // dhead rows for the unselected lm-head rows stay zero; the selected are filled below.
    memset(m->dhead, 0, sizeof(float) * (size_t)N * C);
    matmul_backward(m->dbuf, g->wte, NULL, m->dlogits, m->hsel, p->wte, M, C, V);
#pragma omp parallel for schedule(static)
    for (int s = 0; s < M; s++)
        memcpy(m->dhead + (size_t)m->sel[s] * C, m->dbuf + (size_t)s * C, sizeof(float) * C);
    // Final LayerNorm backward on the N head rows, then scatter into the residual gradient.
    memset(m->dbuf, 0, sizeof(float) * (size_t)N * C);
    layernorm_backward(m->dbuf, g->lnfw, g->lnfb, m->dhead, m->head_x, p->lnfw, m->lnf_mean,
                       m->lnf_rstd, (size_t)N, C, m->ln_partial);
    memset(m->dres, 0, sizeof(float) * RC);
#pragma omp parallel for schedule(static)
    for (int i = 0; i < N; i++)
        memcpy(m->dres + (size_t)m->head_rows[i] * C, m->dbuf + (size_t)i * C, sizeof(float) * C);

    for (int l = L - 1; l >= 0; l--) {
        const float *in = l == 0 ? m->encoded : m->residual3 + (l - 1) * RC;
        const float *ln1 = m->ln1 + l * RC, *qkv = m->qkv + l * RC * 3, *atty = m->atty + l * RC;
        const float *att = m->att + (size_t)l * B * NH * T * T, *res2 = m->residual2 + l * RC;
        const float *ln2 = m->ln2 + l * RC, *fch = m->fch + l * RC * 4;
        const float *fchg = m->fch_gelu + l * RC * 4;
        size_t lc = (size_t)l * C;
        // residual3 = residual2 + fcproj(gelu(fc(ln2(residual2))))
        matmul_backward(m->dbuf4, g->fcprojw + lc * 4 * C, g->fcprojb + lc, m->dres, fchg,
                        p->fcprojw + lc * 4 * C, (int)R, 4 * C, C);
        gelu_backward(m->dbuf4, fch, RC * 4);
        matmul_backward(m->dbuf, g->fcw + lc * 4 * C, g->fcb + lc * 4, m->dbuf4, ln2,
                        p->fcw + lc * 4 * C, (int)R, C, 4 * C);
        layernorm_backward(m->dres, g->ln2w + lc, g->ln2b + lc, m->dbuf, res2, p->ln2w + lc,
                           m->ln2_mean + l * R, m->ln2_rstd + l * R, R, C, m->ln_partial);
        // residual2 = in + attproj(attention(qkv(ln1(in))))
        matmul_backward(m->dbuf, g->attprojw + lc * C, g->attprojb + lc, m->dres, atty,
                        p->attprojw + lc * C, (int)R, C, C);
        attention_backward(m->dqkv, m->dbuf, qkv, att, B, T, C, NH, m->att_scratch,
                           m->nthreads);
        matmul_backward(m->dbuf, g->qkvw + lc * 3 * C, g->qkvb + lc * 3, m->dqkv, ln1,
                        p->qkvw + lc * 3 * C, (int)R, C, 3 * C);
        layernorm_backward(m->dres, g->ln1w + lc, g->ln1b + lc, m->dbuf, in, p->ln1w + lc,
                           m->ln1_mean + l * R, m->ln1_rstd + l * R, R, C, m->ln_partial);
    }
    encoder_backward(g->wte, g->wpe, m->dres, m->tokens, B, T, C);
}

// ---------------------------------------------------------------------------------------------
// AdamW
// ---------------------------------------------------------------------------------------------

float adamw_update(float *params, const float *grads, float *mom, float *vel,
                   const size_t *sizes, const int *decay, int ntensors, int64_t *step,
                   const AdamWConfig *ac, float lr) {
    size_t n = 0;
    for (int t = 0; t < ntensors; t++) n += sizes[t];
    double partial[NCHUNK];
#pragma omp parallel for schedule(static)
    for (int ch = 0; ch < NCHUNK; ch++) {
        double s = 0.0;
        for (size_t i = n * ch / NCHUNK; i < n * (ch + 1) / NCHUNK; i++)
            s += (double)grads[i] * grads[i];
        partial[ch] = s;
    }
    double sq = 0.0;
    for (int ch = 0; ch < NCHUNK; ch++) sq += partial[ch];
    double norm = sqrt(sq);
    // torch.nn.utils.clip_grad_norm_: coef = max_norm / (norm + 1e-6), applied when < 1.
    float gscale = 1.0f;
    if (ac->grad_clip > 0.0f) {
        double coef = ac->grad_clip / (norm + 1e-6);
        if (coef < 1.0) gscale = (float)coef;
    }
    (*step)++;
    double bc1 = 1.0 - pow(ac->beta1, (double)*step), bc2 = 1.0 - pow(ac->beta2, (double)*step);
    // PyTorch's AdamW: p *= 1 - lr*wd; m, v moments; p -= lr/bc1 * m / (sqrt(v)/sqrt(bc2) + eps)
    float step_size = (float)(lr / bc1), bc2_sqrt = (float)sqrt(bc2);
    float b1 = ac->beta1, b2 = ac->beta2, eps = ac->eps;
    size_t off = 0;
    for (int t = 0; t < ntensors; t++) {
        float dk = decay[t] ? 1.0f - lr * ac->weight_decay : 1.0f;
        float *pp = params + off, *mm = mom + off, *vv = vel + off;
        const float *gg = grads + off;
        size_t cnt = sizes[t];
#pragma omp parallel for simd schedule(static)
        for (size_t i = 0; i < cnt; i++) {
            float gi = gg[i] * gscale;
            float mi = b1 * mm[i] + (1.0f - b1) * gi;
            float vi = b2 * vv[i] + (1.0f - b2) * gi * gi;
            mm[i] = mi;
            vv[i] = vi;
            pp[i] = pp[i] * dk - step_size * mi / (sqrtf(vi) / bc2_sqrt + eps);
        }
        off += cnt;
    }
    return (float)norm;
}

static float model_update(Model *m, const AdamWConfig *ac, float lr) {
    return adamw_update(m->params, m->grads, m->mom, m->vel, m->sizes, PARAM_DECAY,
                        NUM_PARAM_TENSORS, &m->step, ac, lr);
}

// ---------------------------------------------------------------------------------------------
// Sampling
// ---------------------------------------------------------------------------------------------

// Orders ids by probability, descending; equal probabilities by lower id first.
static inline int prob_before(const float *p, int a, int b) {
    return p[a] > p[b] || (p[a] == p[b] && a < b);
}

static void sift_down(int *h, int start, int end, const float *p) {
    // Max-heap under prob_before's order: the root is the token that sorts last (least
    // probable, highest id), so popping roots to the back leaves the array most probable first.
    int root = start;
    for (;;) {
        int child = 2 * root + 1;
        if (child > end) return;
        if (child + 1 <= end && prob_before(p, h[child], h[child + 1])) child++;
        if (!prob_before(p, h[root], h[child])) return;
        int t = h[root];
        h[root] = h[child];
        h[child] = t;
        root = child;
    }
}

int sample_top_p(const float *probs, int V, float top_p, int *keep) {
    if (top_p >= 1.0f) {
        for (int i = 0; i < V; i++) keep[i] = i;
        return V;
    }
    // The nucleus is a prefix of the order "most probable first", so it lies inside any set
    // {p >= thr} whose mass already reaches top_p. Gather such a set (thresholds max/64,
    // max/64^2, ... until the mass is enough) and sort only it: a large vocabulary (49,152
    // tokens) then sorts tens of candidates, not every id. Same result as sorting all V.
    float mx = 0.0f;
    for (int i = 0; i < V; i++) mx = probs[i] > mx ? probs[i] : mx;
    int n = 0;
    for (float thr = mx / 64.0f;; thr /= 64.0f) {
        double mass = 0.0;
        n = 0;
        for (int i = 0; i < V; i++)
            if (probs[i] >= thr) {
                keep[n++] = i;
                mass += probs[i];
            }
        // The margin covers the rounding of summing in id order rather than sorted order.
        if (mass >= (double)top_p + 1e-9 || n == V || thr == 0.0f) break;
    }
    // Heapsort: in place, O(n log n), no allocation, no comparator context needed.
    for (int s = n / 2 - 1; s >= 0; s--) sift_down(keep, s, n - 1, probs);
    for (int end = n - 1; end > 0; end--) {
        int t = keep[0];
        keep[0] = keep[end];
        keep[end] = t;
        sift_down(keep, 0, end - 1, probs);
    }
    double mass = 0.0, target = (double)top_p * (1.0 - TOP_P_SLACK);  // model.h: the slack
    for (int k = 0; k < n; k++) {
        mass += probs[keep[k]];
        if (mass >= target) return k + 1;
    }
    return n;
}

static int alloc_sampling(Model *m) {
    size_t L = m->cfg.L, C = m->cfg.C, V = m->cfg.V, T = m->cfg.maxT;
    size_t B = m->maxB, R = B * T;
    size_t total = 2 * L * R * C + R * C * 4 + R * 3 * C + R * 4 * C + B * C +
                   2 * B * V + 2 * R;
    m->kv_mem = xcalloc(total, sizeof(float), "KV cache");
    m->ikeep = xcalloc(B * V, sizeof(int), "sampling ids");
    m->iidx = xcalloc(2 * R, sizeof(int), "sampling rows");
    if (!m->kv_mem || !m->ikeep || !m->iidx) {
        free(m->kv_mem);
        free(m->ikeep);
        free(m->iidx);
        m->kv_mem = NULL;
        m->ikeep = NULL;
        m->iidx = NULL;
        return -1;
    }
    float *c = m->kv_mem;
    m->kcache = carve(&c, L * R * C);
    m->vcache = carve(&c, L * R * C);
    m->ix = carve(&c, R * C);
    m->iln = carve(&c, R * C);
    m->iatty = carve(&c, R * C);
    m->itmp = carve(&c, R * C);
    m->iqkv = carve(&c, R * 3 * C);
    m->ifch = carve(&c, R * 4 * C);
    m->ilast = carve(&c, B * C);
    m->ilogits = carve(&c, B * V);
    m->iprobs = carve(&c, B * V);
    m->imean = carve(&c, R);
    m->irstd = carve(&c, R);
    return 0;
}

// Inference forward with the KV cache, on packed rows (no padding): row r (of n) has the
// tokens tokens[qoff[r] .. qoff[r+1]-1] (qoff has n+1 entries), at positions start[r] ..
// start[r] + its length - 1, and lives in KV-cache slot slot[r]. Appends their keys and values
// to the cache and writes the logits of each row's last token to m->ilogits (n, V). Prefill is
// one call with every prompt (start 0); a decode step is one token per row.
static void infer_forward(Model *m, const int *tokens, int n, const int *qoff, const int *slot,
                          const int *start) {
    const ModelConfig *cfg = &m->cfg;
    int C = cfg->C, NH = cfg->NH, V = cfg->V, L = cfg->L, hs = C / NH, maxT = cfg->maxT;
    const ParamTensors *p = &m->p;
    size_t R = (size_t)qoff[n], C3 = 3 * (size_t)C;
    float scale = 1.0f / sqrtf((float)hs);
    int *irow = m->iidx, *ipos = m->iidx + (size_t)m->maxB * maxT;  // (R) row, position
    for (int r = 0; r < n; r++)
        for (int i = qoff[r]; i < qoff[r + 1]; i++) {
            irow[i] = r;
            ipos[i] = start[r] + (i - qoff[r]);
        }
#pragma omp parallel for schedule(static) if (R * C >= PAR_MIN)
    for (size_t i = 0; i < R; i++) {
        const float *te = p->wte + (size_t)tokens[i] * C, *pe = p->wpe + (size_t)ipos[i] * C;
        for (int c = 0; c < C; c++) m->ix[i * C + c] = te[c] + pe[c];
    }
    for (int l = 0; l < L; l++) {
        size_t lc = (size_t)l * C;
        float *kc = m->kcache + (size_t)l * m->maxB * maxT * C;
        float *vc = m->vcache + (size_t)l * m->maxB * maxT * C;
        layernorm_forward(m->iln, m->imean, m->irstd, m->ix, p->ln1w + lc, p->ln1b + lc, R, C);
        matmul_forward(m->iqkv, m->iln, p->qkvw + lc * 3 * C, p->qkvb + lc * 3, (int)R, C, 3 * C);
        // Cache layout per (slot, head): (maxT, hs), so a head's keys and values are one
        // contiguous block: appending is a copy, reading is a stream.
#pragma omp parallel for schedule(static) if (R * C >= PAR_MIN)
        for (size_t i = 0; i < R; i++) {
            size_t pos = (size_t)ipos[i];
            for (int h = 0; h < NH; h++) {
                size_t at = (((size_t)slot[irow[i]] * NH + h) * maxT + pos) * hs;
                const float *k = m->iqkv + i * C3 + C + (size_t)h * hs;
                memcpy(kc + at, k, sizeof(float) * hs);
                memcpy(vc + at, k + C, sizeof(float) * hs);
            }
        }
        // Attention of each row's Tq queries over its keys 0 .. start+Tq-1, masked beyond each
        // query: two sgemms per (row, head) for prefill, two sgemvs for decode (Tq = 1). Rows
        // differ in length: dynamic schedule.
#pragma omp parallel for collapse(2) schedule(dynamic) num_threads(m->nthreads)
        for (int r = 0; r < n; r++)
            for (int h = 0; h < NH; h++) {
                int Tq = qoff[r + 1] - qoff[r], P = start[r] + Tq;
                float *sc = m->att_scratch + (size_t)omp_get_thread_num() * maxT * maxT;
                const float *q = m->iqkv + (size_t)qoff[r] * C3 + (size_t)h * hs;
                const float *kb = kc + ((size_t)slot[r] * NH + h) * maxT * hs;  // (maxT, hs)
                const float *vb = vc + ((size_t)slot[r] * NH + h) * maxT * hs;  // (maxT, hs)
                float *o = m->iatty + (size_t)qoff[r] * C + (size_t)h * hs;
                if (Tq == 1)  // decode: a matrix-vector product
                    cblas_sgemv(CblasRowMajor, CblasNoTrans, P, hs, scale, kb, hs, q, 1, 0.0f,
                                sc, 1);
                else
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Tq, P, hs, scale, q,
                                (int)C3, kb, hs, 0.0f, sc, P);
                for (int t = 0; t < Tq; t++) {
                    float *row = sc + (size_t)t * P;
                    int pos = start[r] + t;
                    softmax_causal_row(row, pos, P);
                }
                if (Tq == 1)
                    cblas_sgemv(CblasRowMajor, CblasTrans, P, hs, 1.0f, vb, hs, sc, 1, 0.0f, o, 1);
                else
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Tq, hs, P, 1.0f, sc, P,
                                vb, hs, 0.0f, o, C);
            }
        matmul_forward(m->itmp, m->iatty, p->attprojw + lc * C, p->attprojb + lc, (int)R, C, C);
        residual_forward(m->ix, m->ix, m->itmp, R * C);
        layernorm_forward(m->iln, m->imean, m->irstd, m->ix, p->ln2w + lc, p->ln2b + lc, R, C);
        matmul_forward(m->ifch, m->iln, p->fcw + lc * 4 * C, p->fcb + lc * 4, (int)R, C, 4 * C);
        gelu_forward(m->ifch, m->ifch, R * 4 * C);
        matmul_forward(m->itmp, m->ifch, p->fcprojw + lc * 4 * C, p->fcprojb + lc, (int)R, 4 * C, C);
        residual_forward(m->ix, m->ix, m->itmp, R * C);
    }
    for (int r = 0; r < n; r++)
        memcpy(m->iatty + (size_t)r * C, m->ix + ((size_t)qoff[r + 1] - 1) * C, sizeof(float) * C);
    layernorm_forward(m->ilast, m->imean, m->irstd, m->iatty, p->lnfw, p->lnfb, (size_t)n, C);
    matmul_forward(m->ilogits, m->ilast, p->wte, NULL, n, C, V);
}

// Picks the next token of one row from its logits z (V); returns the id, writes its log-prob.
int sample_row(const float *z, int V, float temperature, float top_p, Rng *rng, float *probs,
               int *keep, float *logp_out) {
    if (temperature <= 0.0f) {
        int best = 0;
        for (int j = 1; j < V; j++)
            if (z[j] > z[best]) best = j;
        *logp_out = z[best] - row_lse(z, V);
        return best;
    }
    // Sampling distribution: softmax(z / temperature), restricted to the nucleus.
    float lse;
    if (temperature == 1.0f) {
        lse = row_lse(z, V);
        for (int j = 0; j < V; j++) probs[j] = fast_expf(z[j] - lse);
    } else {
        float inv = 1.0f / temperature;
        for (int j = 0; j < V; j++) probs[j] = z[j] * inv;
        lse = row_lse(probs, V);
        for (int j = 0; j < V; j++) probs[j] = fast_expf(probs[j] - lse);
    }
    int k = sample_top_p(probs, V, top_p, keep);
    double mass = 0.0;
    for (int i = 0; i < k; i++) mass += probs[keep[i]];
    double u = rng_double(rng) * mass, cum = 0.0;
    int tok = keep[k - 1];
    for (int i = 0; i < k; i++) {
        cum += probs[keep[i]];
        if (u < cum) {
            tok = keep[i];
            break;
        }
    }
    float zt = temperature == 1.0f ? z[tok] : z[tok] / temperature;
    *logp_out = (zt - lse) - (k == V ? 0.0f : (float)log(mass));
    return tok;
}

int sample_request_check(const SampleRequest *req, const SampleResult *out,
                         const ModelConfig *cfg, const char *who) {
    int V = cfg->V;
    if (!req || !out || req->n < 0 || req->max_new < 0 || !(req->top_p > 0.0f) ||
        req->n_stop < 0 || (req->n_stop > 0 && !req->stop) ||
        (req->n > 0 && (!req->prompts || !req->prompt_len || !out->tokens || !out->logp ||
                        !out->len))) {
        fprintf(stderr, "%s: bad arguments\n", who);
        return -1;
    }
    for (int i = 0; i < req->n; i++) {
        int pl = req->prompt_len[i];
        if (pl < 1 || pl > req->prompt_stride || pl + req->max_new > cfg->maxT) {
            fprintf(stderr, "%s: prompt %d has length %d (stride %d, max_new %d, maxT %d)\n",
                    who, i, pl, req->prompt_stride, req->max_new, cfg->maxT);
            return -1;
        }
        for (int t = 0; t < pl; t++) {
            int tok = req->prompts[(size_t)i * req->prompt_stride + t];
            if (tok < 0 || tok >= V) {
                fprintf(stderr, "%s: prompt %d token %d outside [0, %d)\n", who, i, tok, V);
                return -1;
            }
        }
    }
    size_t nm = (size_t)req->n * req->max_new;
    for (size_t i = 0; i < nm; i++) {
        out->tokens[i] = -1;
        out->logp[i] = 0.0f;
    }
    for (int i = 0; i < req->n; i++) out->len[i] = 0;
    return 0;
}

int sample_batched(const SampleRequest *req, SampleResult *out, int V, int maxB, int maxT,
                   InferForwardFn infer, void *ctx, const float *logits, float *probs, int *keep) {
    // One independent stream per row, derived from the seed and the row index only: a row's
    // samples do not depend on how the rows are chunked or threaded.
    int *ibuf = xcalloc((size_t)maxB * maxT + 4 * (size_t)maxB + 1, sizeof(int), "sampling rows");
    Rng *rngs = xcalloc((size_t)maxB, sizeof(Rng), "sampling rngs");
    if (!ibuf || !rngs) {
        free(ibuf);
        free(rngs);
        return -1;
    }
    int *toks = ibuf, *slot = toks + (size_t)maxB * maxT, *start = slot + maxB,
        *active = start + maxB, *qoff = active + maxB;  // qoff: maxB + 1
    for (int c0 = 0; c0 < req->n; c0 += maxB) {
        int nb = req->n - c0 < maxB ? req->n - c0 : maxB;
        // Prefill: every prompt of the chunk packed into one batch (no padding).
        qoff[0] = 0;
        for (int r = 0; r < nb; r++) {
            int pl = req->prompt_len[c0 + r];
            memcpy(toks + qoff[r], req->prompts + (size_t)(c0 + r) * req->prompt_stride,
                   sizeof(int) * pl);
            qoff[r + 1] = qoff[r] + pl;
            slot[r] = r;
            start[r] = 0;
            uint64_t s = req->row_seeds ? req->row_seeds[c0 + r]
                                        : req->seed ^ (0x9e3779b97f4a7c15ULL * (uint64_t)(c0 + r + 1));
            rng_seed(&rngs[r], s);
        }
        infer(ctx, toks, nb, qoff, slot, start);
        int na = nb;
        for (int r = 0; r < nb; r++) active[r] = r;
        for (int k = 0; k < req->max_new && na > 0; k++) {
            // Sample the k-th new token of every active row (logits row a belongs to active[a]).
#pragma omp parallel for schedule(static) if (na * V >= PAR_MIN || req->top_p < 1.0f)
            for (int a = 0; a < na; a++) {
                int r = active[a], gi = c0 + r;
                float lp;
                int tok = sample_row(logits + (size_t)a * V, V, req->temperature, req->top_p,
                                     &rngs[r], probs + (size_t)a * V, keep + (size_t)a * V, &lp);
                out->tokens[(size_t)gi * req->max_new + k] = tok;
                out->logp[(size_t)gi * req->max_new + k] = lp;
                out->len[gi] = k + 1;
            }
            // Rows that emitted a stop token (or reached max_new) leave the batch.
            int na2 = 0;
            for (int a = 0; a < na; a++) {
                int r = active[a], gi = c0 + r;
                int tok = out->tokens[(size_t)gi * req->max_new + k], stop = 0;
                for (int s = 0; s < req->n_stop; s++) stop |= tok == req->stop[s];
                if (stop || k + 1 == req->max_new) continue;
                active[na2] = r;
                toks[na2] = tok;
                start[na2] = req->prompt_len[gi] + k;
                qoff[na2] = na2;
                na2++;
            }
            na = na2;
            qoff[na] = na;
            if (na > 0) infer(ctx, toks, na, qoff, active, start);
        }
    }
    free(ibuf);
    free(rngs);
    return 0;
}

static void model_infer(void *ctx, const int *tokens, int n, const int *qoff, const int *slot,
                        const int *start) {
    infer_forward((Model *)ctx, tokens, n, qoff, slot, start);
}

static int model_sample(Model *m, const SampleRequest *req, SampleResult *out) {
    if (sample_request_check(req, out, &m->cfg, "model sample") != 0) return -1;
    if (req->n == 0 || req->max_new == 0) return 0;
    if (!m->kv_mem && alloc_sampling(m) != 0) return -1;
    return sample_batched(req, out, m->cfg.V, m->maxB, m->cfg.maxT, model_infer, m, m->ilogits,
                          m->iprobs, m->ikeep);
}

const ModelBackend cpu_backend = {
    .name = "cpu",
    .create = model_create,
    .destroy = model_destroy,
    .config = model_config,
    .num_params = model_num_params,
    .get_params = model_get_params,
    .set_params = model_set_params,
    .get_grads = model_get_grads,
    .get_opt_state = model_get_opt_state,
    .set_opt_state = model_set_opt_state,
    .forward = model_forward,
    .zero_grad = model_zero_grad,
    .backward = model_backward,
    .update = model_update,
    .sample = model_sample,
    .reduce_grads = model_reduce_grads,
};

// =============================================================================================
// Checkpoint and training-state files
// =============================================================================================

#define HEADER_INTS 256

static int write_file_atomic(const char *path, const int32_t *header, const void *const *parts,
                             const size_t *bytes, int nparts, char *err, size_t errlen) {
    size_t plen = strlen(path);
    char *tmp = malloc(plen + 5);
    if (!tmp) {
        snprintf(err, errlen, "%s: out of memory", path);
        return -1;
    }
    memcpy(tmp, path, plen);
    memcpy(tmp + plen, ".tmp", 5);
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        snprintf(err, errlen, "%s: cannot create: %s", tmp, strerror(errno));
        free(tmp);
        return -1;
    }
    int ok = fwrite(header, sizeof(int32_t), HEADER_INTS, f) == HEADER_INTS;
    for (int i = 0; ok && i < nparts; i++)
        if (bytes[i]) ok = fwrite(parts[i], 1, bytes[i], f) == bytes[i];
    if (fclose(f) != 0) ok = 0;
    if (!ok) {
        snprintf(err, errlen, "%s: write failed: %s", tmp, strerror(errno));
        remove(tmp);
        free(tmp);
        return -1;
    }
    if (rename(tmp, path) != 0) {
        snprintf(err, errlen, "%s: cannot rename %s into place: %s", path, tmp, strerror(errno));
        remove(tmp);
        free(tmp);
        return -1;
    }
    free(tmp);
    return 0;
}

static int32_t float_bits(float x) {
    int32_t b;
    memcpy(&b, &x, sizeof b);
    return b;
}
static float bits_float(int32_t b) {
    float x;
    memcpy(&x, &b, sizeof x);
    return x;
}

// Header slots of the config (model.h, "Checkpoints"); the same in model and state files.
static void header_put_config(int32_t *h, const ModelConfig *cfg) {
    h[2] = cfg->V;
    h[3] = cfg->maxT;
    h[4] = cfg->L;
    h[5] = cfg->NH;
    h[6] = cfg->C;
    h[16] = cfg->arch;
    h[17] = cfg->n_kv_heads;
    h[18] = cfg->ffn;
    h[19] = cfg->rope_dim;
    h[20] = float_bits(cfg->rope_base);
    h[21] = float_bits(cfg->norm_eps);
    h[22] = cfg->tied;
    h[23] = cfg->qkv_bias;
    h[32] = (int32_t)(uint32_t)(cfg->tokenizer_hash & 0xffffffffu);
    h[33] = (int32_t)(uint32_t)(cfg->tokenizer_hash >> 32);
}

static ModelConfig header_get_config(const int32_t *h) {
    ModelConfig c = {.V = h[2], .maxT = h[3], .L = h[4], .NH = h[5], .C = h[6]};
    if (h[1] >= 2) {
        c.arch = h[16];
        c.n_kv_heads = h[17];
        c.ffn = h[18];
        c.rope_dim = h[19];
        c.rope_base = bits_float(h[20]);
        c.norm_eps = bits_float(h[21]);
        c.tied = h[22];
        c.qkv_bias = h[23];
        c.tokenizer_hash = (uint64_t)(uint32_t)h[32] | ((uint64_t)(uint32_t)h[33] << 32);
    }
    return c;
}

int checkpoint_save(const char *path, const ModelConfig *cfg, const float *params, char *err,
                    size_t errlen) {
    const char *why = model_config_check(cfg);
    if (why) {
        snprintf(err, errlen, "%s: refusing to save: bad config: %s", path, why);
        return -1;
    }
    int32_t h[HEADER_INTS] = {0};
    h[0] = CHECKPOINT_MAGIC;
    h[1] = CHECKPOINT_VERSION;
    header_put_config(h, cfg);
    size_t bytes = config_num_params(cfg) * sizeof(float);
    const void *parts[1] = {params};
    return write_file_atomic(path, h, parts, &bytes, 1, err, errlen);
}

// Opens path and reads the header; checks the magic and version. NULL on failure (err set).
static FILE *open_with_header(const char *path, int32_t *h, int32_t magic, const char *kind,
                              char *err, size_t errlen) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    if (fread(h, sizeof(int32_t), HEADER_INTS, f) != HEADER_INTS) {
        snprintf(err, errlen, "%s: truncated header (not a memr2 %s)", path, kind);
        fclose(f);
        return NULL;
    }
    if (h[0] != magic) {
        snprintf(err, errlen, "%s: bad magic %d (not a memr2 %s, expected %d)", path, h[0], kind,
                 magic);
        fclose(f);
        return NULL;
    }
    if (h[1] < 1 || h[1] > CHECKPOINT_VERSION) {
        snprintf(err, errlen, "%s: %s version %d, this build reads versions 1 to %d", path, kind,
                 h[1], CHECKPOINT_VERSION);
        fclose(f);
        return NULL;
    }
    return f;
}

// Bytes from the current position to the end of the file, or -1.
static long long bytes_left(FILE *f) {
    long here = ftell(f);
    if (here < 0 || fseek(f, 0, SEEK_END) != 0) return -1;
    long end = ftell(f);
    if (end < 0 || fseek(f, here, SEEK_SET) != 0) return -1;
    return (long long)end - here;
}

// Reads exactly bytes into dst, then (if last) requires end of file.
static int read_exact(FILE *f, void *dst, size_t bytes, int last, const char *path,
                      const char *what, char *err, size_t errlen) {
    if (bytes && fread(dst, 1, bytes, f) != bytes) {
        snprintf(err, errlen, "%s: truncated while reading %s", path, what);
        return -1;
    }
    if (last && fgetc(f) != EOF) {
        snprintf(err, errlen, "%s: unexpected trailing bytes after %s", path, what);
        return -1;
    }
    return 0;
}

// Rejects NaN and infinities in a loaded array of config_num_params(cfg) floats: naming the
// first bad one by tensor and index (a NaN weight would otherwise load and reach fast_expf).
// `what` names the array ("parameters", "AdamW m"). 0 if all finite, else -1 with err set.
static int check_finite(const float *x, const ModelConfig *cfg, const char *path,
                        const char *what, char *err, size_t errlen) {
    size_t n = config_num_params(cfg), bad = n;
    for (size_t i = 0; i < n; i++)
        if (!isfinite(x[i])) {
            bad = i;
            break;
        }
    if (bad == n) return 0;
    size_t sizes[NUM_PARAM_TENSORS > LLAMA_NUM_TENSORS ? NUM_PARAM_TENSORS : LLAMA_NUM_TENSORS];
    const char *const *names = PARAM_TENSOR_NAMES;
    int nt = NUM_PARAM_TENSORS;
    if (cfg->arch == ARCH_LLAMA) {
        llama_param_sizes(cfg, sizes);
        names = LLAMA_TENSOR_NAMES, nt = LLAMA_NUM_TENSORS;
    } else {
        param_sizes(cfg, sizes);
    }
    size_t off = bad;
    int t = 0;
    while (t < nt - 1 && off >= sizes[t]) off -= sizes[t++];
    snprintf(err, errlen, "%s: non-finite value (%g) in %s: tensor %s, index %zu (flat index %zu)",
             path, (double)x[bad], what, names[t], off, bad);
    return -1;
}

int checkpoint_load(const char *path, ModelConfig *cfg, float **params, char *err,
                    size_t errlen) {
    *params = NULL;
    int32_t h[HEADER_INTS];
    FILE *f = open_with_header(path, h, CHECKPOINT_MAGIC, "checkpoint", err, errlen);
    if (!f) return -1;
    ModelConfig c = header_get_config(h);
    const char *why = model_config_check(&c);
    if (why) {
        snprintf(err, errlen, "%s: bad config in header: %s", path, why);
        fclose(f);
        return -1;
    }
    size_t n = config_num_params(&c);
    // Check the size before allocating: a corrupt header must not ask for terabytes.
    long long left = bytes_left(f);
    if (left != (long long)(n * sizeof(float))) {
        snprintf(err, errlen, "%s: %lld bytes of parameters, the header's config needs %zu (%s)",
                 path, left, n * sizeof(float),
                 left < (long long)(n * sizeof(float)) ? "truncated" : "trailing garbage");
        fclose(f);
        return -1;
    }
    float *p = malloc(n * sizeof(float));
    if (!p) {
        snprintf(err, errlen, "%s: out of memory for %zu parameters", path, n);
        fclose(f);
        return -1;
    }
    if (read_exact(f, p, n * sizeof(float), 1, path, "parameters", err, errlen) != 0 ||
        check_finite(p, &c, path, "parameters", err, errlen) != 0) {
        free(p);
        fclose(f);
        return -1;
    }
    fclose(f);
    *cfg = c;
    *params = p;
    return 0;
}

// State file: header {STATE_MAGIC, VERSION, V, maxT, L, NH, C, blob_bytes low 32, high 32, 0...},
// int64 step, uint64 rng[4], float m[nparams], float v[nparams], blob.
int train_state_save(const char *path, const ModelConfig *cfg, const TrainState *st, char *err,
                     size_t errlen) {
    const char *why = model_config_check(cfg);
    if (why) {
        snprintf(err, errlen, "%s: refusing to save: bad config: %s", path, why);
        return -1;
    }
    int32_t h[HEADER_INTS] = {0};
    h[0] = CHECKPOINT_STATE_MAGIC;
    h[1] = CHECKPOINT_VERSION;
    header_put_config(h, cfg);
    enum { MAX_PIECES = 16 };
    if (st->n_blob_pieces < 0 || st->n_blob_pieces > MAX_PIECES) {
        snprintf(err, errlen, "%s: refusing to save: %d blob pieces", path, st->n_blob_pieces);
        return -1;
    }
    size_t n = config_num_params(cfg);
    const void *parts[4 + MAX_PIECES] = {&st->step, st->rng, st->mom, st->vel};
    size_t bytes[4 + MAX_PIECES] = {sizeof(int64_t), 4 * sizeof(uint64_t), n * sizeof(float),
                                    n * sizeof(float)};
    int n_parts = 4;
    uint64_t bb = 0;
    if (st->blob) {
        parts[n_parts] = st->blob, bytes[n_parts++] = st->blob_bytes;
        bb = st->blob_bytes;
    } else {
        for (int i = 0; i < st->n_blob_pieces; i++) {
            parts[n_parts] = st->blob_piece[i], bytes[n_parts++] = st->blob_piece_bytes[i];
            bb += st->blob_piece_bytes[i];
        }
    }
    h[7] = (int32_t)(uint32_t)(bb & 0xffffffffu);
    h[8] = (int32_t)(uint32_t)(bb >> 32);
    return write_file_atomic(path, h, parts, bytes, n_parts, err, errlen);
}

// AdamW's v is a running mean of squares: a negative entry would reach sqrtf in the update.
static int check_nonneg(const float *v, size_t n, const char *path, char *err, size_t errlen) {
    for (size_t i = 0; i < n; i++)
        if (v[i] < 0.0f) {
            snprintf(err, errlen, "%s: negative AdamW v (%g) at flat index %zu", path,
                     (double)v[i], i);
            return -1;
        }
    return 0;
}

int train_state_load(const char *path, const ModelConfig *cfg, TrainState *st, char *err,
                     size_t errlen) {
    st->mom = st->vel = NULL;
    st->blob = NULL;
    st->blob_bytes = 0;
    int32_t h[HEADER_INTS];
    FILE *f = open_with_header(path, h, CHECKPOINT_STATE_MAGIC, "training-state file", err, errlen);
    if (!f) return -1;
    ModelConfig hc = header_get_config(h);
    if (!model_config_equal(&hc, cfg)) {
        snprintf(err, errlen, "%s: state is for arch=%d V=%d T=%d L=%d NH=%d C=%d, model is "
                 "arch=%d V=%d T=%d L=%d NH=%d C=%d (or other fields differ)", path, hc.arch,
                 h[2], h[3], h[4], h[5], h[6], cfg->arch, cfg->V, cfg->maxT, cfg->L, cfg->NH,
                 cfg->C);
        fclose(f);
        return -1;
    }
    uint64_t bb = (uint64_t)(uint32_t)h[7] | ((uint64_t)(uint32_t)h[8] << 32);
    size_t n = config_num_params(cfg);
    // The exact size is known from the header: check it before allocating anything.
    long long left = bytes_left(f);
    unsigned long long want = sizeof(int64_t) + 4 * sizeof(uint64_t) + 2 * n * sizeof(float) + bb;
    if (left < 0 || bb > (1ULL << 40) || (unsigned long long)left != want) {
        snprintf(err, errlen, "%s: %lld bytes after the header, expected %llu (%s)", path, left,
                 want, left < 0 ? "unreadable" : (unsigned long long)left < want ? "truncated" : "trailing garbage");
        fclose(f);
        return -1;
    }
    st->mom = malloc(n * sizeof(float));
    st->vel = malloc(n * sizeof(float));
    st->blob = bb ? malloc((size_t)bb) : NULL;
    int rc = -1;
    if (!st->mom || !st->vel || (bb && !st->blob))
        snprintf(err, errlen, "%s: out of memory", path);
    else if (read_exact(f, &st->step, sizeof(int64_t), 0, path, "step", err, errlen) == 0 &&
             read_exact(f, st->rng, 4 * sizeof(uint64_t), 0, path, "rng state", err, errlen) == 0 &&
             read_exact(f, st->mom, n * sizeof(float), 0, path, "AdamW m", err, errlen) == 0 &&
             read_exact(f, st->vel, n * sizeof(float), 0, path, "AdamW v", err, errlen) == 0 &&
             read_exact(f, st->blob, (size_t)bb, 1, path, "trainer blob", err, errlen) == 0 &&
             check_finite(st->mom, cfg, path, "AdamW m", err, errlen) == 0 &&
             check_finite(st->vel, cfg, path, "AdamW v", err, errlen) == 0 &&
             check_nonneg(st->vel, n, path, err, errlen) == 0)
        rc = 0;
    if (rc == 0 && st->step < 0) {
        snprintf(err, errlen, "%s: negative step count %lld", path, (long long)st->step);
        rc = -1;
    }
    fclose(f);
    if (rc != 0) {
        free(st->mom);
        free(st->vel);
        free(st->blob);
        st->mom = st->vel = NULL;
        st->blob = NULL;
        return -1;
    }
    st->blob_bytes = (size_t)bb;
    return 0;
}
