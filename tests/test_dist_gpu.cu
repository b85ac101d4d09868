// tests/test_dist_gpu.cu: the two things the data-parallel trainer (docs/scaleout.md) needs
// from the GPU backends (gpu_backend, gpu_llama_backend), checked on the CPU through the CUDA
// emulation of dev/cuda_cpu.h (`make test`; built by nvcc for a real GPU too):
//   - with SampleRequest.row_seeds each row of a batch samples what it samples alone with its
//     seed (the uniforms come from per-row streams), and another seed changes the samples;
//   - reduce_grads hands the device gradient buffer (num_params floats, on_device 1) to the
//     reduction in place: a reduction that doubles it doubles what get_grads returns.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <vector>

extern "C" {
#include "model.h"
}
#include "tests/emu_util.h"

enum { N = 5, STRIDE = 8, MAXNEW = 10 };

static int sample(const ModelBackend *be, Model *m, const int *prompts, const int *plen, int n,
                  const uint64_t *seeds, int *tok, float *lp, int *len) {
    SampleRequest req = {};
    req.n = n, req.prompts = prompts, req.prompt_stride = STRIDE, req.prompt_len = plen;
    req.max_new = MAXNEW, req.temperature = 1.0f, req.top_p = 1.0f, req.seed = 7;
    req.row_seeds = seeds;
    SampleResult res = {tok, lp, len};
    return be->sample(m, &req, &res);
}

static void test_row_seeds(const char *name, const ModelBackend *be, const ModelConfig &cfg) {
    Model *m = be->create(&cfg, 4, 3);  // maxB 4 < N: chunked as well
    CHECK(m != NULL, "%s: create", name);
    if (!m) return;
    int prompts[N * STRIDE], plen[N];
    uint64_t seeds[N];
    for (int i = 0; i < N; i++) {
        plen[i] = 1 + i % 4;
        seeds[i] = 500 + 11 * (uint64_t)i;
        for (int t = 0; t < STRIDE; t++) prompts[i * STRIDE + t] = (5 * i + t) % cfg.V;
    }
    int tok[N * MAXNEW], len[N], one[MAXNEW], one_len;
    float lp[N * MAXNEW], one_lp[MAXNEW];
    CHECK(sample(be, m, prompts, plen, N, seeds, tok, lp, len) == 0, "%s: batched sample", name);
    int same = 1, differs = 0;
    for (int i = 0; i < N; i++) {
        sample(be, m, prompts + i * STRIDE, plen + i, 1, seeds + i, one, one_lp, &one_len);
        same &= one_len == len[i] && !memcmp(one, tok + i * MAXNEW, sizeof(int) * (size_t)one_len);
        uint64_t other = seeds[i] ^ 0xabcdef;
        sample(be, m, prompts + i * STRIDE, plen + i, 1, &other, one, one_lp, &one_len);
        differs += one_len != len[i] || memcmp(one, tok + i * MAXNEW, sizeof(int) * (size_t)one_len);
    }
    printf("%s: row seeds, batch of %d vs each row alone: same tokens %s; another seed changes "
           "%d of %d rows\n", name, N, same ? "yes" : "no", differs, N);
    CHECK(same, "%s: each row of a batch samples what it samples alone with its seed", name);
    CHECK(differs > 0, "%s: another row seed changes the samples", name);
    be->destroy(m);
}

struct Seen {
    size_t n;
    int on_device;
};
// A reduction that doubles the buffer, reading and writing it as device memory.
static int double_grads(void *ctx, float *grads, size_t n, int on_device) {
    Seen *s = (Seen *)ctx;
    s->n = n, s->on_device = on_device;
    std::vector<float> h(n);
    if (cudaMemcpy(h.data(), grads, n * sizeof(float), cudaMemcpyDeviceToHost) != cudaSuccess) return -1;
    for (auto &x : h) x *= 2;
    return cudaMemcpy(grads, h.data(), n * sizeof(float), cudaMemcpyHostToDevice) == cudaSuccess ? 0 : -1;
}

static void test_reduce_grads(const char *name, const ModelBackend *be, const ModelConfig &cfg) {
    Model *m = be->create(&cfg, 2, 5);
    CHECK(m != NULL && be->reduce_grads != NULL, "%s: create, reduce_grads present", name);
    if (!m || !be->reduce_grads) return;
    int T = 6, tok[6] = {1, 2, 3, 4, 5, 6}, tgt[6] = {2, 3, 4, 5, 6, -1};
    float logp[6], dlogp[6];
    be->zero_grad(m);
    be->forward(m, tok, tgt, 1, T, logp, NULL);
    for (int t = 0; t < T; t++) dlogp[t] = tgt[t] >= 0 ? -0.2f : 0.0f;
    be->backward(m, dlogp, NULL);
    size_t np = be->num_params(m);
    std::vector<float> g0(np), g1(np);
    be->get_grads(m, g0.data());
    Seen s = {0, -1};
    CHECK(be->reduce_grads(m, double_grads, &s) == 0, "%s: reduce_grads runs", name);
    be->get_grads(m, g1.data());
    int ok = s.n == np && s.on_device == 1;
    double gmax = 0;
    for (size_t i = 0; i < np; i++) ok &= g1[i] == 2 * g0[i], gmax = fmax(gmax, fabs(g0[i]));
    CHECK(ok && gmax > 0, "%s: the reduction got the %zu device gradients in place (n %zu, on_device %d)",
          name, np, s.n, s.on_device);
    be->destroy(m);
}

int main(void) {
    rng_seed(&g_rng, 12);
    ModelConfig gpt = {};
    gpt.V = 29, gpt.maxT = 24, gpt.L = 1, gpt.NH = 2, gpt.C = 16;
    ModelConfig ll = {};
    ll.V = 31, ll.maxT = 24, ll.L = 1, ll.NH = 4, ll.C = 32, ll.arch = ARCH_LLAMA;
    ll.n_kv_heads = 2, ll.ffn = 40, ll.rope_dim = 8, ll.rope_base = 10000.0f, ll.norm_eps = 1e-5f;
    ll.tied = 1;
    test_row_seeds("gpu_backend", &gpu_backend, gpt);
    test_row_seeds("gpu_llama_backend", &gpu_llama_backend, ll);
    test_reduce_grads("gpu_backend", &gpu_backend, gpt);
    test_reduce_grads("gpu_llama_backend", &gpu_llama_backend, ll);
    return check_summary("test_dist_gpu");
}
