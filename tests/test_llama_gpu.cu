// tests/test_llama_gpu.cu: gpu_llama_backend (llama_gpu.cu) checked on the CPU through the CUDA
// emulation of dev/cuda_cpu.h, on two tiny configs (GQA with q/k/v biases and an untied head;
// multi-query, tied, no bias), against
//   1. a double-precision reference forward written here from llama.h's equations: log-probs and
//      entropies; every gradient tensor against central finite differences of that reference on
//      sampled entries; one AdamW step against the same formulas on the host; greedy KV-cache
//      decoding token for token; sampled decoding re-scored by forward; seeds; stop tokens; a
//      sample() between forward and backward; bad arguments;
//   2. cpu_llama_backend (llama_cpu.c): forward, every gradient tensor and AdamW over two
//      training steps, greedy decoding token for token.
// The kernels themselves are tests/test_kernels_llama.cu's concern. Compiled as C++ by g++
// (`make test_kernels_llama` runs both; CUDA_CPU_ORDER=fwd|rev|rand, CUDA_CPU_GUARD=1). Errors
// are normwise (max |got - ref| / max |ref| per tensor), printed beside each tolerance.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <algorithm>
#include <vector>

extern "C" {
#include "llama.h"
#include "model.h"
}
#include "kernels_llama.h"
#include "tests/emu_util.h"

// The reference model: llama.h's tensors as double pointers into one flat array.
struct RefModel {
    const ModelConfig &c;
    const double *wte, *an, *wq, *wk, *wv, *bq, *bk, *bv, *wo, *mn, *wg, *wu, *wd, *nf, *wout;
    int C, NH, KV, hs, KVC, F, V;
    RefModel(const ModelConfig &cfg, const double *P) : c(cfg) {
        size_t sz[LLAMA_NUM_TENSORS], off[LLAMA_NUM_TENSORS], o = 0;
        llama_param_sizes(&c, sz);
        for (int i = 0; i < LLAMA_NUM_TENSORS; i++) off[i] = o, o += sz[i];
        const double **t[LLAMA_NUM_TENSORS] = {&wte, &an, &wq, &wk, &wv, &bq, &bk, &bv,
                                               &wo,  &mn, &wg, &wu, &wd, &nf, &wout};
        for (int i = 0; i < LLAMA_NUM_TENSORS; i++) *t[i] = P + off[i];
        if (c.tied) wout = wte;
        if (!c.qkv_bias) bq = bk = bv = NULL;
        C = c.C, NH = c.NH, KV = c.n_kv_heads, hs = C / NH, KVC = KV * hs, F = c.ffn, V = c.V;
    }
    void rmsnorm(const double *x, const double *w, double *y) const {
        double ss = 0;
        for (int i = 0; i < C; i++) ss += x[i] * x[i];
        double r = 1.0 / sqrt(ss / C + (double)c.norm_eps);
        for (int i = 0; i < C; i++) y[i] = x[i] * r * w[i];
    }
    // y (out) = W (out, in) x + b
    static void linear(const double *x, const double *W, const double *b, int in, int out,
                       double *y) {
        for (int j = 0; j < out; j++) {
            double a = b ? b[j] : 0.0;
            for (int i = 0; i < in; i++) a += W[(size_t)j * in + i] * x[i];
            y[j] = a;
        }
    }
    void rope(double *x, int nh, int t) const {
        int half = c.rope_dim / 2;
        for (int h = 0; h < nh; h++)
            for (int i = 0; i < half; i++) {
                double a = t * pow((double)c.rope_base, -2.0 * i / c.rope_dim);
                double u = x[h * hs + i], v = x[h * hs + i + half];
                x[h * hs + i] = u * cos(a) - v * sin(a);
                x[h * hs + i + half] = v * cos(a) + u * sin(a);
            }
    }
    // Causal grouped-query attention of one sequence: y (T, C) from q (T, C), k, v (T, KVC).
    void attention(const double *q, const double *k, const double *v, int T, double *y) const {
        std::vector<double> s(T);
        for (int t = 0; t < T; t++)
            for (int h = 0; h < NH; h++) {
                int kh = h / (NH / KV);
                double mx = -1e300, sum = 0;
                for (int t2 = 0; t2 <= t; t2++) {
                    double a = 0;
                    for (int i = 0; i < hs; i++)
                        a += q[(size_t)t * C + h * hs + i] * k[(size_t)t2 * KVC + kh * hs + i];
                    s[t2] = a / sqrt((double)hs);
                    mx = fmax(mx, s[t2]);
                }
                for (int t2 = 0; t2 <= t; t2++) sum += (s[t2] = exp(s[t2] - mx));
                for (int i = 0; i < hs; i++) {
                    double a = 0;
                    for (int t2 = 0; t2 <= t; t2++) a += s[t2] / sum * v[(size_t)t2 * KVC + kh * hs + i];
                    y[(size_t)t * C + h * hs + i] = a;
                }
            }
    }
    // Block l on one sequence x (T, C), in place.
    void block(int l, double *x, int T) const {
        size_t lc = (size_t)l * C, lkv = (size_t)l * KVC, lf = (size_t)l * F * C;
        std::vector<double> n(C), q((size_t)T * C), k((size_t)T * KVC), v((size_t)T * KVC),
            y((size_t)T * C), o(C), g(F), u(F);
        for (int t = 0; t < T; t++) {
            rmsnorm(x + (size_t)t * C, an + lc, n.data());
            linear(n.data(), wq + lc * C, bq ? bq + lc : NULL, C, C, &q[(size_t)t * C]);
            linear(n.data(), wk + lkv * C, bk ? bk + lkv : NULL, C, KVC, &k[(size_t)t * KVC]);
            linear(n.data(), wv + lkv * C, bv ? bv + lkv : NULL, C, KVC, &v[(size_t)t * KVC]);
            rope(&q[(size_t)t * C], NH, t);
            rope(&k[(size_t)t * KVC], KV, t);
        }
        attention(q.data(), k.data(), v.data(), T, y.data());
        for (int t = 0; t < T; t++) {
            double *xt = x + (size_t)t * C;
            linear(&y[(size_t)t * C], wo + lc * C, NULL, C, C, o.data());
            for (int i = 0; i < C; i++) xt[i] += o[i];
            rmsnorm(xt, mn + lc, n.data());
            linear(n.data(), wg + lf, NULL, C, F, g.data());
            linear(n.data(), wu + lf, NULL, C, F, u.data());
            for (int j = 0; j < F; j++) g[j] = g[j] / (1.0 + exp(-g[j])) * u[j];
            linear(g.data(), wd + lf, NULL, F, C, o.data());
            for (int i = 0; i < C; i++) xt[i] += o[i];
        }
    }
};

// logp (B, T) and entropy (B, T) of the model with flat parameters P (double) on tokens (B, T);
// rows with targets < 0 get 0; zs (B, T, V), if not NULL, gets every row's logits. Written loop
// by loop from llama.h, independent of the kernels.
static void ref_forward(const ModelConfig &c, const double *P, const int *tok, const int *tgt,
                        int B, int T, double *logp, double *ent, double *zs = NULL) {
    RefModel r(c, P);
    int C = r.C, V = r.V;
    std::vector<double> x((size_t)T * C), n(C), z(V);
    for (int b = 0; b < B; b++) {
        for (int t = 0; t < T; t++)
            for (int i = 0; i < C; i++) x[(size_t)t * C + i] = r.wte[(size_t)tok[b * T + t] * C + i];
        for (int l = 0; l < c.L; l++) r.block(l, x.data(), T);
        for (int t = 0; t < T; t++) {
            size_t bt = (size_t)b * T + t;
            logp[bt] = ent[bt] = 0.0;
            if (tgt[bt] < 0 && !zs) continue;
            r.rmsnorm(&x[(size_t)t * C], r.nf, n.data());
            RefModel::linear(n.data(), r.wout, NULL, C, V, z.data());
            if (zs) std::copy(z.begin(), z.end(), zs + bt * V);
            if (tgt[bt] < 0) continue;
            double mx = -1e300, sum = 0, ez = 0;
            for (int j = 0; j < V; j++) mx = fmax(mx, z[j]);
            for (int j = 0; j < V; j++) sum += exp(z[j] - mx);
            double lse = mx + log(sum);
            for (int j = 0; j < V; j++) ez += exp(z[j] - lse) * z[j];
            logp[bt] = z[tgt[bt]] - lse;
            ent[bt] = lse - ez;
        }
    }
}

// The objective whose gradient backward computes: J = sum a logp + e entropy.
static double ref_objective(const ModelConfig &c, const double *P, const std::vector<int> &tok,
                            const std::vector<int> &tgt, const std::vector<float> &a,
                            const std::vector<float> &e, int B, int T) {
    std::vector<double> lp((size_t)B * T), en((size_t)B * T);
    ref_forward(c, P, tok.data(), tgt.data(), B, T, lp.data(), en.data());
    double J = 0;
    for (size_t i = 0; i < lp.size(); i++) J += a[i] * lp[i] + e[i] * en[i];
    return J;
}

// Parameters that make every term matter: matrices U(-0.2, 0.2), gains U(0.6, 1.4), biases
// U(-0.3, 0.3) (llama_params_init's zero biases would hide a wrong bias gradient).
static std::vector<float> test_params(const ModelConfig &c) {
    size_t sz[LLAMA_NUM_TENSORS];
    size_t np = llama_param_sizes(&c, sz), o = 0;
    std::vector<float> p(np);
    for (int t = 0; t < LLAMA_NUM_TENSORS; t++) {
        bool gain = t == 1 || t == 9 || t == 13, bias = t >= 5 && t <= 7;
        for (size_t i = 0; i < sz[t]; i++)
            p[o + i] = gain ? frand(0.6f, 1.4f) : bias ? frand(-0.3f, 0.3f) : frand(-0.2f, 0.2f);
        o += sz[t];
    }
    return p;
}

struct Batch {
    int B, T;
    std::vector<int> tok, tgt;
    std::vector<float> a, e;  // dL/dlogp, dL/dentropy
};
static Batch make_batch(const ModelConfig &c, int B, int T) {
    Batch b{B, T, {}, {}, {}, {}};
    size_t R = (size_t)B * T;
    for (size_t i = 0; i < R; i++) {
        b.tok.push_back((int)rng_below(&g_rng, c.V));
        b.tgt.push_back(i % 5 == 2 ? -1 : (int)rng_below(&g_rng, c.V));
        b.a.push_back(i % 7 == 3 ? 0.0f : frand(-0.3f, 0.2f));
        b.e.push_back(i % 4 == 1 ? 0.0f : frand(-0.1f, 0.1f));
    }
    return b;
}

// Forward of the backend against the reference, at parameters p.
static void check_forward(Model *m, const ModelConfig &c, const std::vector<float> &p,
                          const Batch &b, const char *what) {
    const ModelBackend *be = &gpu_llama_backend;
    size_t R = (size_t)b.B * b.T;
    std::vector<float> lp(R), en(R);
    CHECK(be->forward(m, b.tok.data(), b.tgt.data(), b.B, b.T, lp.data(), en.data()) == 0,
          "forward failed");
    std::vector<double> P(p.begin(), p.end()), rl(R), re(R);
    ref_forward(c, P.data(), b.tok.data(), b.tgt.data(), b.B, b.T, rl.data(), re.data());
    char nm[96];
    snprintf(nm, sizeof nm, "%s logp (B=%d T=%d)", what, b.B, b.T);
    check_rel(nm, rel_err(lp, rl), 1e-6);
    snprintf(nm, sizeof nm, "%s entropy", what);
    check_rel(nm, rel_err(en, re), 1e-6);
    bool zero_ok = true;
    for (size_t i = 0; i < R; i++)
        if (b.tgt[i] < 0) zero_ok &= lp[i] == 0.0f && en[i] == 0.0f;
    CHECK(zero_ok, "rows without a target must give logp = entropy = 0");
}

// Every gradient tensor against central differences of the reference objective at sampled
// entries (8 random ones, plus the embedding rows of tokens in the batch), normwise per tensor.
static void check_grads(const ModelConfig &c, const std::vector<float> &p,
                        const std::vector<float> &grad, const Batch &b) {
    size_t sz[LLAMA_NUM_TENSORS], off = 0;
    llama_param_sizes(&c, sz);
    std::vector<double> P(p.begin(), p.end());
    const double h = 1e-4;
    double worst = 0;
    for (int t = 0; t < LLAMA_NUM_TENSORS; t++) {
        if (sz[t] == 0) continue;
        std::vector<size_t> idx;
        for (int k = 0; k < 8; k++) idx.push_back(off + rng_below(&g_rng, sz[t]));
        if (t == 0)  // wte rows of the batch's first tokens (untied: only the embedding path)
            for (int k = 0; k < 3; k++)
                idx.push_back(off + (size_t)b.tok[k] * c.C + rng_below(&g_rng, c.C));
        double gmax = 0, dmax = 0;
        for (size_t i = off; i < off + sz[t]; i++) gmax = fmax(gmax, fabs(grad[i]));
        for (size_t i : idx) {
            double p0 = P[i];
            P[i] = p0 + h;
            double jp = ref_objective(c, P.data(), b.tok, b.tgt, b.a, b.e, b.B, b.T);
            P[i] = p0 - h;
            double jm = ref_objective(c, P.data(), b.tok, b.tgt, b.a, b.e, b.B, b.T);
            P[i] = p0;
            dmax = fmax(dmax, fabs(grad[i] - (jp - jm) / (2 * h)));
        }
        double err = gmax > 0 ? dmax / gmax : INFINITY;
        worst = fmax(worst, err);
        char nm[96];
        snprintf(nm, sizeof nm, "grad %s vs finite differences (max|g| %.2g)", LLAMA_TENSOR_NAMES[t], gmax);
        check_rel(nm, err, 1e-5);
        off += sz[t];
    }
    printf("  worst gradient error over the tensors: %.2e\n", worst);
}

// One AdamW step against the same formulas in double on the host (model.c / kernels.cu's:
// PyTorch's AdamW, global-norm clip, decay on llama.h's matrices only).
static void check_adamw(Model *m, const ModelConfig &c, const std::vector<float> &p,
                        const std::vector<float> &grad) {
    const ModelBackend *be = &gpu_llama_backend;
    AdamWConfig ac = {1e-2f, 0.9f, 0.95f, 1e-8f, 0.1f, 0.5f};  // clip 0.5: clipping active
    size_t sz[LLAMA_NUM_TENSORS], np = p.size(), off = 0;
    llama_param_sizes(&c, sz);
    std::vector<float> m0(np), v0(np);
    for (size_t i = 0; i < np; i++) m0[i] = frand(-0.01f, 0.01f), v0[i] = frand(0.0f, 1e-4f);
    be->set_opt_state(m, m0.data(), v0.data(), 4);  // resume at step 4
    double sq = 0;
    for (float g : grad) sq += (double)g * g;
    double norm = sqrt(sq), gs = fmin(1.0, ac.grad_clip / (norm + 1e-6));
    float got_norm = be->update(m, &ac, ac.lr);
    printf("  grad norm %.7g (reference %.7g)\n", got_norm, norm);
    CHECK(fabs(got_norm - norm) <= 1e-5 * norm && norm > ac.grad_clip, "grad norm %g vs %g",
          got_norm, norm);
    double bc1 = 1 - pow(0.9, 5), bc2 = 1 - pow(0.95, 5);
    std::vector<double> rp(np), rm(np), rv(np);
    for (int t = 0; t < LLAMA_NUM_TENSORS; t++) {
        double decay = LLAMA_TENSOR_DECAY[t] ? 1 - (double)ac.lr * ac.weight_decay : 1;
        for (size_t i = off; i < off + sz[t]; i++) {
            double g = grad[i] * gs;
            rm[i] = 0.9 * m0[i] + 0.1 * g;
            rv[i] = 0.95 * v0[i] + 0.05 * g * g;
            rp[i] = p[i] * decay - ac.lr / bc1 * rm[i] / (sqrt(rv[i] / bc2) + ac.eps);
        }
        off += sz[t];
    }
    std::vector<float> gp(np), gm(np), gv(np);
    int64_t step = 0;
    be->get_params(m, gp.data());
    be->get_opt_state(m, gm.data(), gv.data(), &step);
    CHECK(step == 5, "step counter %lld after one update from 4", (long long)step);
    check_rel("AdamW params", rel_err(gp, rp), 1e-6);
    check_rel("AdamW m", rel_err(gm, rm), 1e-6);
    check_rel("AdamW v", rel_err(gv, rv), 1e-6);
}

// Prompts of a decoding check: n > maxB (chunks), lengths 1..stride, max_new to reach maxT.
struct Prompts {
    int n, stride, max_new;
    std::vector<int> tok, len;
    Prompts(const ModelConfig &c, int maxB, int stride_) : n(maxB + 2), stride(stride_) {
        max_new = c.maxT - stride;
        tok.resize((size_t)n * stride);
        for (auto &t : tok) t = (int)rng_below(&g_rng, c.V);
        for (int i = 0; i < n; i++) len.push_back(1 + (i * 5) % stride);
    }
    SampleRequest request(float temperature, float top_p, uint64_t seed) const {
        SampleRequest rq = {};
        rq.n = n, rq.prompts = tok.data(), rq.prompt_stride = stride, rq.prompt_len = len.data();
        rq.max_new = max_new, rq.temperature = temperature, rq.top_p = top_p, rq.seed = seed;
        return rq;
    }
};
// What sample() returned.
struct Decoded {
    std::vector<int> tok, len;
    std::vector<float> lp;
    explicit Decoded(const Prompts &pr)
        : tok((size_t)pr.n * pr.max_new), len(pr.n), lp((size_t)pr.n * pr.max_new) {}
    SampleResult result() { return SampleResult{tok.data(), lp.data(), len.data()}; }
};

// Greedy continuation of one prompt by the reference: tokens and their log-probs.
static void ref_greedy(const ModelConfig &c, const std::vector<double> &P, std::vector<int> seq,
                       int max_new, std::vector<int> &tok, std::vector<double> &lp) {
    tok.clear(), lp.clear();
    for (int k = 0; k < max_new; k++) {
        int T = (int)seq.size();
        std::vector<int> tg(T, -1);
        std::vector<double> l(T), e(T), z((size_t)T * c.V);
        ref_forward(c, P.data(), seq.data(), tg.data(), 1, T, l.data(), e.data(), z.data());
        const double *zl = &z[(size_t)(T - 1) * c.V];
        int best = 0;
        double mx = zl[0], sum = 0;
        for (int j = 1; j < c.V; j++)
            if (zl[j] > zl[best]) best = j;
        for (int j = 0; j < c.V; j++) mx = fmax(mx, zl[j]);
        for (int j = 0; j < c.V; j++) sum += exp(zl[j] - mx);
        tok.push_back(best);
        lp.push_back(zl[best] - mx - log(sum));
        seq.push_back(best);
    }
}

// Greedy KV-cache decoding against the reference, token for token.
static Decoded check_greedy(Model *m, const ModelConfig &c, const std::vector<float> &p,
                            const Prompts &pr) {
    SampleRequest rq = pr.request(0.0f, 1.0f, 7);
    Decoded d(pr);
    SampleResult res = d.result();
    CHECK(gpu_llama_backend.sample(m, &rq, &res) == 0, "greedy sample failed");
    std::vector<double> P(p.begin(), p.end());
    bool same = true;
    double maxd = 0;
    for (int i = 0; i < pr.n; i++) {
        std::vector<int> seq(pr.tok.begin() + (size_t)i * pr.stride,
                             pr.tok.begin() + (size_t)i * pr.stride + pr.len[i]), rt;
        std::vector<double> rl;
        ref_greedy(c, P, seq, pr.max_new, rt, rl);
        same &= d.len[i] == pr.max_new;
        for (int k = 0; k < pr.max_new; k++) {
            same &= d.tok[(size_t)i * pr.max_new + k] == rt[k];
            maxd = fmax(maxd, fabs(d.lp[(size_t)i * pr.max_new + k] - rl[k]));
        }
    }
    printf("  greedy decode (KV cache) vs reference: tokens %s, max |logp diff| %.2e\n",
           same ? "identical" : "DIFFER", maxd);
    CHECK(same, "greedy decode tokens differ from the reference");
    CHECK(maxd <= 1e-5, "greedy decode logp differs by %g", maxd);
    return d;
}

// A sample() between forward and backward changes nothing: bit-identical gradients.
static void check_sample_keeps_activations(Model *m, size_t np, const Batch &b,
                                           const Prompts &pr) {
    const ModelBackend *be = &gpu_llama_backend;
    SampleRequest rq = pr.request(1.0f, 0.9f, 5);
    Decoded d(pr);
    SampleResult res = d.result();
    std::vector<float> g1(np), g2(np), lpa((size_t)b.B * b.T);
    be->forward(m, b.tok.data(), b.tgt.data(), b.B, b.T, lpa.data(), NULL);
    be->zero_grad(m);
    be->backward(m, b.a.data(), b.e.data());
    be->get_grads(m, g1.data());
    be->forward(m, b.tok.data(), b.tgt.data(), b.B, b.T, lpa.data(), NULL);
    be->sample(m, &rq, &res);
    be->zero_grad(m);
    be->backward(m, b.a.data(), b.e.data());
    be->get_grads(m, g2.data());
    CHECK(g1 == g2, "sample() between forward and backward changed the gradients");
}

// Stop tokens: row 0's third greedy token ends every row at its first occurrence.
static void check_stop(Model *m, const Prompts &pr, const Decoded &greedy) {
    int stop = greedy.tok[2], M = pr.max_new;
    SampleRequest rq = pr.request(0.0f, 1.0f, 7);
    rq.stop = &stop, rq.n_stop = 1;
    Decoded d(pr);
    SampleResult res = d.result();
    gpu_llama_backend.sample(m, &rq, &res);
    bool ok = true;
    for (int i = 0; i < pr.n; i++) {
        int want = M;
        for (int k = 0; k < M; k++)
            if (greedy.tok[(size_t)i * M + k] == stop) {
                want = k + 1;
                break;
            }
        ok &= d.len[i] == want;
        for (int k = 0; k < M; k++)
            ok &= d.tok[(size_t)i * M + k] == (k < want ? greedy.tok[(size_t)i * M + k] : -1);
    }
    CHECK(ok, "stop tokens did not end the rows as expected");
}

// Sampled at temperature 1: re-scoring the samples with forward gives the same logp; seeds;
// temperature + nucleus give valid samples; a too long request is refused.
static void check_sampled(Model *m, const ModelConfig &c, int maxB, const Prompts &pr) {
    const ModelBackend *be = &gpu_llama_backend;
    int M = pr.max_new;
    SampleRequest rq = pr.request(1.0f, 1.0f, 99);
    Decoded d(pr);
    SampleResult res = d.result();
    be->sample(m, &rq, &res);
    double rescore = 0;
    for (int i0 = 0; i0 < pr.n; i0 += maxB) {
        int nb = std::min(maxB, pr.n - i0), Tq = 0;
        for (int i = i0; i < i0 + nb; i++) Tq = std::max(Tq, pr.len[i] + d.len[i]);
        std::vector<int> tk((size_t)nb * Tq, 0), tt((size_t)nb * Tq, -1);
        for (int r = 0; r < nb; r++) {
            int i = i0 + r, L0 = pr.len[i];
            for (int t = 0; t < L0; t++) tk[(size_t)r * Tq + t] = pr.tok[(size_t)i * pr.stride + t];
            for (int k = 0; k < d.len[i]; k++) {
                if (L0 + k < Tq) tk[(size_t)r * Tq + L0 + k] = d.tok[(size_t)i * M + k];
                tt[(size_t)r * Tq + L0 - 1 + k] = d.tok[(size_t)i * M + k];
            }
        }
        std::vector<float> flp((size_t)nb * Tq);
        be->forward(m, tk.data(), tt.data(), nb, Tq, flp.data(), NULL);
        for (int r = 0; r < nb; r++)
            for (int k = 0; k < d.len[i0 + r]; k++)
                rescore = fmax(rescore, fabs(flp[(size_t)r * Tq + pr.len[i0 + r] - 1 + k] -
                                             d.lp[(size_t)(i0 + r) * M + k]));
    }
    printf("  sampled decode re-scored by forward: max |logp diff| %.2e\n", rescore);
    CHECK(rescore <= 1e-5, "sampled logp vs forward: %g", rescore);
    Decoded first = d;
    be->sample(m, &rq, &res);
    CHECK(d.tok == first.tok && d.len == first.len, "same seed gave different samples");
    rq.seed = 100;
    be->sample(m, &rq, &res);
    CHECK(d.tok != first.tok, "another seed gave the same samples");
    rq.temperature = 0.7f, rq.top_p = 0.9f;
    bool valid = be->sample(m, &rq, &res) == 0;
    for (int i = 0; i < pr.n; i++)
        for (int k = 0; k < d.len[i]; k++) {
            int t = d.tok[(size_t)i * M + k];
            float l = d.lp[(size_t)i * M + k];
            valid &= t >= 0 && t < c.V && l <= 0.0f && isfinite(l);
        }
    CHECK(valid, "temperature 0.7 top_p 0.9 samples are not valid");
    rq.max_new = c.maxT;  // prompt_len + max_new > maxT
    CHECK(be->sample(m, &rq, &res) == -1, "prompt_len + max_new > maxT must be rejected");
}

static void test_backend(const char *name, const ModelConfig &c, int maxB, int B, int T) {
    printf("gpu_llama_backend, %s: V=%d maxT=%d L=%d NH=%d KV=%d C=%d F=%d rope_dim=%d tied=%d "
           "qkv_bias=%d\n", name, c.V, c.maxT, c.L, c.NH, c.n_kv_heads, c.C, c.ffn, c.rope_dim,
           c.tied, c.qkv_bias);
    const ModelBackend *be = gpu_backend_for(&c);
    CHECK(be == &gpu_llama_backend, "gpu_backend_for(a Llama config) is not gpu_llama_backend");
    Model *m = be->create(&c, maxB, 1234);
    CHECK(m != NULL, "create failed");
    if (!m) return;
    size_t sz[LLAMA_NUM_TENSORS], np = llama_param_sizes(&c, sz);
    CHECK(be->num_params(m) == np, "num_params %zu want %zu", be->num_params(m), np);
    CHECK(model_config_equal(be->config(m), &c), "config() differs from the one created with");
    std::vector<float> init(np), want(np);
    be->get_params(m, init.data());
    llama_params_init(want.data(), &c, 1234);
    CHECK(init == want, "create() does not initialise with llama_params_init(seed)");

    std::vector<float> p = test_params(c);
    be->set_params(m, p.data());
    Batch b = make_batch(c, B, T);
    check_forward(m, c, p, b, "forward");
    be->zero_grad(m);
    be->backward(m, b.a.data(), b.e.data());
    std::vector<float> grad(np);
    be->get_grads(m, grad.data());
    check_grads(c, p, grad, b);
    // backward accumulates: a second backward doubles the gradients
    be->backward(m, b.a.data(), b.e.data());
    std::vector<float> grad2(np), twice(np);
    be->get_grads(m, grad2.data());
    for (size_t i = 0; i < np; i++) twice[i] = 2 * grad[i];
    check_rel("backward twice = 2 x gradients (+=)", rel_err(grad2, twice), 1e-6);
    be->zero_grad(m);
    be->backward(m, b.a.data(), b.e.data());
    check_adamw(m, c, p, grad);
    // after the step, a batch of another shape at the full maxT
    be->get_params(m, p.data());
    Batch b2 = make_batch(c, maxB, c.maxT);
    check_forward(m, c, p, b2, "after AdamW: forward");
    // zero coefficients: backward leaves the gradients at zero
    std::vector<float> zeros((size_t)B * T, 0.0f), g0(np);
    check_forward(m, c, p, b, "forward");
    be->zero_grad(m);
    be->backward(m, zeros.data(), NULL);
    be->get_grads(m, g0.data());
    CHECK(std::all_of(g0.begin(), g0.end(), [](float x) { return x == 0.0f; }),
          "zero coefficients must give zero gradients");
    // bad arguments
    std::vector<float> lp((size_t)B * T);
    std::vector<int> bad = b.tok;
    bad[1] = c.V;
    CHECK(be->forward(m, bad.data(), b.tgt.data(), B, T, lp.data(), NULL) == -1,
          "a token out of range must be rejected");
    CHECK(be->forward(m, b.tok.data(), b.tgt.data(), maxB + 1, T, lp.data(), NULL) == -1,
          "B > maxB must be rejected");
    Prompts pr(c, maxB, 8);
    Decoded greedy = check_greedy(m, c, p, pr);
    check_sample_keeps_activations(m, np, b, pr);
    check_stop(m, pr, greedy);
    check_sampled(m, c, maxB, pr);
    be->destroy(m);
}

// ---------------------------------------------------------------------------------------------
// gpu_llama_backend against cpu_llama_backend (llama_cpu.c): two training steps and greedy
// decoding from the same parameters. Both are fp32 with different summation orders.

static void compare_tensors(const char *what, const std::vector<float> &g, const std::vector<float> &c,
                            const ModelConfig &cfg, double tol) {
    size_t sz[LLAMA_NUM_TENSORS], off = 0;
    llama_param_sizes(&cfg, sz);
    double worst = 0;
    for (int t = 0; t < LLAMA_NUM_TENSORS; t++) {
        if (sz[t] == 0) continue;
        std::vector<float> gt(g.begin() + off, g.begin() + off + sz[t]);
        std::vector<float> ct(c.begin() + off, c.begin() + off + sz[t]);
        char nm[96];
        snprintf(nm, sizeof nm, "%s %s", what, LLAMA_TENSOR_NAMES[t]);
        double e = rel_err(gt, ct);
        worst = fmax(worst, e);
        check_rel(nm, e, tol);
        off += sz[t];
    }
    printf("  worst %s error over the tensors: %.2e\n", what, worst);
}

// AdamW moves a weight by about lr m / (sqrt(v) + eps), on the first step lr g / (|g| +
// eps), whose sensitivity to g is lr / max(|g|, eps): a gradient difference dg between
// the backends allows a parameter difference of about lr |dg| / max(|g|, eps), large
// exactly where g is rounding noise (the pass-through channels of the key bias have a
// zero gradient in exact arithmetic: softmax ignores a shift shared by all scores). Each
// entry must agree within 1e-5 of its tensor's largest weight plus twice that allowance.
static void check_adamw_vs_cpu(const ModelConfig &c, const AdamWConfig &ac, float cn,
                               const std::vector<float> &gg, const std::vector<float> &cg,
                               const std::vector<float> &gp, const std::vector<float> &cp) {
    size_t np = gp.size();
    size_t sz[LLAMA_NUM_TENSORS], off = 0;
    llama_param_sizes(&c, sz);
    double gsc = fmin(1.0, ac.grad_clip / (cn + 1e-6)), worst = 0, worst_plain = 0;
    int needed = 0;
    for (int t = 0; t < LLAMA_NUM_TENSORS; t++) {
        double pmax = 1e-30;
        for (size_t i = off; i < off + sz[t]; i++) pmax = fmax(pmax, fabs(cp[i]));
        for (size_t i = off; i < off + sz[t]; i++) {
            double g = fabs(cg[i]) * gsc, dg = fabs(gg[i] - cg[i]) * gsc;
            double plain = 1e-5 * pmax;
            double allow = plain + 2 * ac.lr * fmin(2.0, dg / fmax(g, ac.eps));
            double diff = fabs(gp[i] - cp[i]);
            worst = diff <= allow ? fmax(worst, diff / allow) : INFINITY;
            worst_plain = fmax(worst_plain, diff / pmax);
            needed += diff > plain;
        }
        off += sz[t];
    }
    printf("  params after AdamW: max |diff| / max|p| %.2e; max |diff| / allowance %.2f; "
           "%d of %zu entries needed the gradient allowance\n", worst_plain, worst,
           needed, np);
    CHECK(worst <= 1.0, "parameters after AdamW differ beyond the allowance (%.3g)", worst);
}

// One training step on both backends from the same parameters p and AdamW state (step count
// `step` before it); afterwards both continue from the CPU's state (p = its parameters) so
// differences do not compound.
static void compare_step(Model *gm, Model *cm, const ModelConfig &c, const Batch &b, int step,
                         std::vector<float> &p) {
    const ModelBackend *gb = &gpu_llama_backend, *cb = &cpu_llama_backend;
    AdamWConfig ac = {1e-3f, 0.9f, 0.95f, 1e-8f, 0.1f, 1.0f};  // clip 1: clipping active
    size_t np = p.size();
    std::vector<float> gp(np), cp(np);
    size_t R = (size_t)b.B * b.T;
    std::vector<float> glp(R), gen(R), clp(R), cen(R);
    int rg = gb->forward(gm, b.tok.data(), b.tgt.data(), b.B, b.T, glp.data(), gen.data());
    int rc = cb->forward(cm, b.tok.data(), b.tgt.data(), b.B, b.T, clp.data(), cen.data());
    CHECK(rg == 0 && rc == 0, "forward returned %d / %d", rg, rc);
    printf(" step %d (B=%d T=%d)\n", step, b.B, b.T);
    check_rel("forward logp", rel_err(glp, clp), 1e-6);
    check_rel("forward entropy", rel_err(gen, cen), 1e-6);
    gb->zero_grad(gm);
    cb->zero_grad(cm);
    gb->backward(gm, b.a.data(), b.e.data());
    cb->backward(cm, b.a.data(), b.e.data());
    std::vector<float> gg(np), cg(np);
    gb->get_grads(gm, gg.data());
    cb->get_grads(cm, cg.data());
    compare_tensors("grad", gg, cg, c, 2e-6);
    float gn = gb->update(gm, &ac, ac.lr), cn = cb->update(cm, &ac, ac.lr);
    printf("  grad norm gpu %.7g cpu %.7g\n", gn, cn);
    CHECK(fabs(gn - cn) <= 1e-5 * cn && gn > ac.grad_clip, "grad norm %g vs %g", gn, cn);
    std::vector<float> gmo(np), gve(np), cmo(np), cve(np);
    int64_t gs, cs;
    gb->get_params(gm, gp.data());
    cb->get_params(cm, cp.data());
    gb->get_opt_state(gm, gmo.data(), gve.data(), &gs);
    cb->get_opt_state(cm, cmo.data(), cve.data(), &cs);
    CHECK(gs == cs && gs == step + 1, "step counters %lld %lld", (long long)gs, (long long)cs);
    check_adamw_vs_cpu(c, ac, cn, gg, cg, gp, cp);
    check_rel("AdamW m", rel_err(gmo, cmo), 2e-6);
    check_rel("AdamW v", rel_err(gve, cve), 2e-6);
    // continue both from the CPU's state so differences do not compound
    p = cp;
    gb->set_params(gm, cp.data());
    gb->set_opt_state(gm, cmo.data(), cve.data(), cs);
}

// Greedy decoding on both backends: identical tokens, n > maxB (chunks), ragged prompts.
static void compare_greedy(Model *gm, Model *cm, const ModelConfig &c, int maxB) {
    Prompts pr(c, maxB, 6);
    SampleRequest rq = pr.request(0.0f, 1.0f, 3);
    Decoded g(pr), cc(pr);
    SampleResult gr = g.result(), cr = cc.result();
    CHECK(gpu_llama_backend.sample(gm, &rq, &gr) == 0 && cpu_llama_backend.sample(cm, &rq, &cr) == 0,
          "sample failed");
    double maxd = 0;
    for (size_t i = 0; i < g.lp.size(); i++) maxd = fmax(maxd, fabs(g.lp[i] - cc.lp[i]));
    bool same = g.tok == cc.tok && g.len == cc.len;
    printf("  greedy decode: tokens %s, max |logp diff| %.2e\n", same ? "identical" : "DIFFER", maxd);
    CHECK(same, "greedy decode tokens differ from cpu_llama_backend");
    CHECK(maxd <= 1e-5, "greedy decode logp differs by %g", maxd);
}

static void compare_with_cpu(const char *name, const ModelConfig &c, int maxB, int B, int T) {
    printf("gpu_llama_backend vs cpu_llama_backend, %s\n", name);
    const ModelBackend *gb = &gpu_llama_backend, *cb = cpu_backend_for(&c);
    CHECK(cb == &cpu_llama_backend, "cpu_backend_for(a Llama config) is not cpu_llama_backend");
    Model *gm = gb->create(&c, maxB, 99), *cm = cb->create(&c, maxB, 99);
    CHECK(gm && cm, "create failed");
    if (!gm || !cm) {
        if (gm) gb->destroy(gm);
        if (cm) cb->destroy(cm);
        return;
    }
    size_t np = gb->num_params(gm);
    CHECK(np == cb->num_params(cm), "num_params differ");
    std::vector<float> gp(np), cp(np);
    gb->get_params(gm, gp.data());
    cb->get_params(cm, cp.data());
    CHECK(gp == cp, "initial parameters differ");
    std::vector<float> p = test_params(c);
    gb->set_params(gm, p.data());
    cb->set_params(cm, p.data());
    for (int step = 0; step < 2; step++)
        compare_step(gm, cm, c, make_batch(c, step ? maxB : B, step ? c.maxT : T), step, p);
    compare_greedy(gm, cm, c, maxB);
    gb->destroy(gm);
    cb->destroy(cm);
}

static ModelConfig llama_cfg(int V, int maxT, int L, int NH, int KV, int C, int F, int rd,
                             int tied, int bias) {
    ModelConfig c = {};
    c.V = V, c.maxT = maxT, c.L = L, c.NH = NH, c.C = C, c.arch = ARCH_LLAMA;
    c.n_kv_heads = KV, c.ffn = F, c.rope_dim = rd, c.rope_base = 10000.0f, c.norm_eps = 1e-5f;
    c.tied = tied, c.qkv_bias = bias;
    return c;
}

int main(void) {
    rng_seed(&g_rng, 20261202);
    setvbuf(stdout, NULL, _IOLBF, 0);
    // GQA (4 query heads on 2 KV heads), q/k/v biases, untied head, partial rotary dims
    test_backend("GQA + bias + untied", llama_cfg(53, 14, 2, 4, 2, 32, 40, 6, 0, 1), 3, 3, 11);
    // multi-query (3 heads on 1), tied, no bias, full rotary dims, hs 12
    test_backend("MQA tied, no bias", llama_cfg(41, 13, 1, 3, 1, 36, 50, 12, 1, 0), 2, 2, 9);
    compare_with_cpu("GQA + bias + untied", llama_cfg(53, 14, 2, 4, 2, 32, 40, 6, 0, 1), 3, 3, 11);
    compare_with_cpu("MQA tied, no bias", llama_cfg(41, 13, 1, 3, 1, 36, 50, 12, 1, 0), 2, 2, 9);
    // Not a Llama config: refused; gpu_backend_for picks GPT-2's backend for a GPT-2 config.
    ModelConfig gpt = {};
    gpt.V = 61, gpt.maxT = 24, gpt.L = 2, gpt.NH = 3, gpt.C = 36;
    CHECK(gpu_llama_backend.create(&gpt, 1, 1) == NULL, "a GPT-2 config must be refused");
    CHECK(gpu_backend_for(&gpt) == &gpu_backend, "gpu_backend_for(GPT-2) is not gpu_backend");
#if CUDA_CPU_EMULATED
    cuda_cpu::st.devices = 0;
    fprintf(stderr, "(expected message follows)\n");
    ModelConfig c = llama_cfg(41, 13, 1, 3, 1, 36, 50, 12, 1, 0);
    CHECK(gpu_llama_backend.create(&c, 1, 1) == NULL, "create must fail without a device");
    cuda_cpu::st.devices = 1;
#endif
    return check_summary("test_llama_gpu");
}
