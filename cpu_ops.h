// cpu_ops.h: the CPU building blocks that model.c (GPT-2) and llama_cpu.c (Llama family) share.
// Internal to the CPU backends: train.c and the GPU code only ever see model.h.
//
// Defined in model.c (see the comments there): the sgemm-based matmul backward, the lm-head row
// reductions, AdamW with per-tensor decay, and the batched KV-cache sampling loop that both
// architectures drive through their own inference forward. The tiny hot helpers are inline here.
#ifndef MEMR2_CPU_OPS_H
#define MEMR2_CPU_OPS_H

#include <math.h>
#include <omp.h>
#include <stddef.h>
#include <stdint.h>

#include "model.h"
#include "rng.h"

#define NCHUNK 16  // fixed reduction chunks: results do not depend on the thread count
// Element-wise and row-wise loops smaller than this run on one thread: a decode step's
// normalisation over 16 rows is cheaper than waking the other thread for it.
#define PAR_MIN 32768
// Matmuls with fewer multiply-adds than this run on one thread: waking the other costs more
// than it saves (and tiny test models then run without any thread handoff).
#define MATMUL_PAR_MIN ((size_t)1 << 17)

// exp(x) that gcc vectorises under `omp simd` (glibc's expf/tanhf are scalar calls and were a
// third of the training step). Cephes' expf: x = n ln2 + r with |r| <= ln2/2, a degree-6
// polynomial for e^r, 2^n put into the exponent bits. Max relative error ~2 ulp. n is rounded
// with the 1.5*2^23 trick rather than floorf + int conversion: under the default
// -ftrapping-math gcc refuses to vectorise those. Inputs are clamped to [-87.3, 88], so exp of
// -inf is ~1e-38, not 0 (callers that need 0 skip the masked entries). On AVX2 targets the
// clamp's compares are if-converted only under -fno-trapping-math (the Makefile's OPT); without
// it every loop calling this stays scalar ("control flow in loop" in -fopt-info-vec-missed).
static inline float fast_expf(float x) {
    x = x < -87.3f ? -87.3f : x > 88.0f ? 88.0f : x;
    union {
        float f;
        int32_t i;
    } nb = {.f = x * 1.44269504088896341f + 12582912.0f};  // n in the low mantissa bits
    float n = nb.f - 12582912.0f;
    float r = x - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    union {
        int32_t i;
        float f;
    } sc = {.i = (nb.i - 0x4B400000 + 127) << 23};  // 2^n
    return p * sc.f;
}

// Softmax over row[0..last] (the positions a query may attend to); row[last+1..len) = 0.
// Returns the row's log-sum-exp, which lets a backward pass recompute the probabilities
// (exp(s - lse)) instead of storing them (llama_cpu.c).
static inline float softmax_causal_row(float *row, int last, int len) {
    float mx = -INFINITY, sum = 0.0f;
#pragma omp simd reduction(max : mx)
    for (int t2 = 0; t2 <= last; t2++) mx = row[t2] > mx ? row[t2] : mx;
#pragma omp simd reduction(+ : sum)
    for (int t2 = 0; t2 <= last; t2++) {
        row[t2] = fast_expf(row[t2] - mx);
        sum += row[t2];
    }
    float inv = 1.0f / sum;
    for (int t2 = 0; t2 <= last; t2++) row[t2] *= inv;
    for (int t2 = last + 1; t2 < len; t2++) row[t2] = 0.0f;
    return mx + logf(sum);
}

// This thread's share [*lo, *hi) of n items inside a parallel region.
static inline void thread_range(size_t n, size_t *lo, size_t *hi) {
    size_t nth = (size_t)omp_get_num_threads(), tid = (size_t)omp_get_thread_num();
    *lo = n * tid / nth;
    *hi = n * (tid + 1) / nth;
}

// Many rows: split them (each thread streams the whole weight matrix once, through cache).
// Few rows (decode steps): split the output columns instead, so each thread packs and reads
// only its share of the weights, which is then most of the work.
static inline int split_rows(int N) { return N >= 64 * omp_get_max_threads(); }

// dinp (N, IC) = dout (N, OC) W (overwritten; may be NULL), and accumulates
// dweight (OC, IC) += dout^T inp, dbias (OC) += column sums of dout (may be NULL).
void matmul_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                     const float *inp, const float *weight, int N, int IC, int OC);

// log-sum-exp of one row z (V), max-shifted; entropy of softmax(z) given that lse.
float row_lse(const float *z, int V);
float row_entropy(const float *z, int V, float lse);

// Global-norm clip (ac->grad_clip) and one AdamW step (PyTorch's semantics) over a flat array
// of ntensors tensors of sizes[i] floats, decaying tensor i when decay[i]. Increments *step.
// Returns the gradient norm before clipping.
float adamw_update(float *params, const float *grads, float *mom, float *vel,
                   const size_t *sizes, const int *decay, int ntensors, int64_t *step,
                   const AdamWConfig *ac, float lr);

// Picks the next token of one row from its logits z (V) under the request's temperature and
// top-p; returns the id and writes its log-prob under the sampling distribution.
// probs, keep: (V) scratch.
int sample_row(const float *z, int V, float temperature, float top_p, Rng *rng, float *probs,
               int *keep, float *logp_out);

// An architecture's inference forward with its KV cache, on packed rows: row r (of n) has the
// tokens tokens[qoff[r] .. qoff[r+1]-1] at positions start[r].., lives in cache slot slot[r];
// appends their keys and values and writes the logits of each row's last token to logits
// (n, V). Prefill is one call with every prompt (start 0); a decode step is one token per row.
typedef void (*InferForwardFn)(void *ctx, const int *tokens, int n, const int *qoff,
                               const int *slot, const int *start);

// The sampling loop both CPU backends share (the request already passed sample_request_check):
// chunks of maxB prompts, one prefill per chunk, then decode steps until every row stopped.
// logits (maxB, V) is where infer writes; probs (maxB, V) and keep (maxB, V) are scratch.
// Returns 0, or -1 when out of memory.
int sample_batched(const SampleRequest *req, SampleResult *out, int V, int maxB, int maxT,
                   InferForwardFn infer, void *ctx, const float *logits, float *probs, int *keep);

#endif
