// tests/test_kernels_llama.cu: the Llama family's GPU kernels (kernels_llama.cu) and backend
// (llama_gpu.cu) checked on the CPU through the CUDA emulation of dev/cuda_cpu.h.
//
// Compiled as C++ by g++ (`make test_kernels_llama`; CUDA_CPU_ORDER=fwd|rev|rand picks the lane,
// warp and block order, CUDA_CPU_GUARD=1 adds guard pages). Two parts:
//   1. every new kernel against a plain double-precision loop in this file, at ragged shapes
//      (rows, channels, heads not multiples of 32): embedding, RMSNorm, RoPE, SwiGLU, GQA
//      pack/unpack, KV store, GQA decode attention;
//   2. the whole gpu_llama_backend on two tiny configs (GQA with q/k/v biases and an untied head;
//      multi-query, tied, no bias) against a double-precision reference forward written here
//      from llama.h's equations: log-probs and entropies; every gradient tensor against central
//      finite differences of that reference on sampled entries; one AdamW step against the same
//      formulas on the host; greedy decoding token for token against the reference; sampled
//      decoding re-scored by forward; seeds; stop tokens; bad arguments;
//   3. the same two configs against cpu_llama_backend (llama_cpu.c): forward, every gradient
//      tensor and AdamW over two training steps, greedy decoding token for token.
// Errors are normwise (max |got - ref| / max |ref| per tensor); the measured values are printed
// beside each tolerance.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <algorithm>
#include <vector>

extern "C" {
#include "llama.h"
#include "model.h"
#include "rng.h"
}
#include "kernels_llama.h"
#include "tests/check.h"

// ---------------------------------------------------------------------------------------------
// Helpers

static Rng g_rng;
static float frand(float lo, float hi) { return lo + (hi - lo) * rng_float(&g_rng); }
static std::vector<float> rand_vec(size_t n, float lo = -1.0f, float hi = 1.0f) {
    std::vector<float> v(n);
    for (auto &x : v) x = frand(lo, hi);
    return v;
}
template <typename T>
static T *dnew(size_t n) {
    T *d = NULL;
    if (cudaMalloc(&d, (n ? n : 1) * sizeof(T)) != cudaSuccess) {
        fprintf(stderr, "cudaMalloc failed\n");
        exit(1);
    }
    return d;
}
template <typename T>
static T *up(const std::vector<T> &h) {
    T *d = dnew<T>(h.size());
    cudaMemcpy(d, h.data(), h.size() * sizeof(T), cudaMemcpyHostToDevice);
    return d;
}
template <typename T>
static std::vector<T> down(const T *d, size_t n) {
    std::vector<T> h(n);
    cudaMemcpy(h.data(), d, n * sizeof(T), cudaMemcpyDeviceToHost);
    return h;
}
// max |got - ref| / max |ref|; NaN in got gives infinity.
template <typename A, typename R>
static double rel_err(const std::vector<A> &got, const std::vector<R> &ref) {
    double md = 0.0, mr = 0.0;
    for (size_t i = 0; i < ref.size(); i++) {
        double g = (double)got[i], r = (double)ref[i];
        if (!isfinite(g)) return INFINITY;
        md = fmax(md, fabs(g - r));
        mr = fmax(mr, fabs(r));
    }
    return mr > 0 ? md / mr : md;
}
static void check_rel(const char *name, double err, double tol) {
    printf("  %-48s rel err %.2e  (tol %.0e)\n", name, err, tol);
    CHECK(err <= tol, "%s: relative error %.3g over the tolerance %.3g", name, err, tol);
}

// =============================================================================================
// Part 1: the kernels against plain loops
// =============================================================================================

static void test_embedding(int n, int V, int C) {
    std::vector<int> tok(n);
    for (auto &t : tok) t = (int)rng_below(&g_rng, V);  // V < n: tokens repeat
    std::vector<float> wte = rand_vec((size_t)V * C), dout = rand_vec((size_t)n * C);
    std::vector<float> dwte0 = rand_vec((size_t)V * C);
    int *dtok = up(tok), *bucket = dnew<int>(3 * (size_t)n + 1);
    float *dw = up(wte), *dout_d = up(dout), *out = dnew<float>((size_t)n * C), *dg = up(dwte0);
    embed_forward_gpu(out, dtok, dw, n, C);
    std::vector<float> got = down(out, (size_t)n * C);
    bool same = true;
    for (int i = 0; i < n; i++)
        for (int c = 0; c < C; c++) same &= got[(size_t)i * C + c] == wte[(size_t)tok[i] * C + c];
    CHECK(same, "embedding forward is not an exact row copy");
    embed_backward_gpu(dg, dout_d, tok.data(), n, C, bucket);
    std::vector<double> ref(dwte0.begin(), dwte0.end());
    for (int i = 0; i < n; i++)
        for (int c = 0; c < C; c++) ref[(size_t)tok[i] * C + c] += dout[(size_t)i * C + c];
    check_rel("embedding backward (dwte +=)", rel_err(down(dg, (size_t)V * C), ref), 1e-6);
    cudaFree(dtok), cudaFree(bucket), cudaFree(dw), cudaFree(dout_d), cudaFree(out), cudaFree(dg);
}

static void test_rmsnorm(int N, int C) {
    float eps = 1e-5f;
    std::vector<float> x = rand_vec((size_t)N * C, -2, 2), w = rand_vec(C, 0.5f, 1.5f);
    std::vector<float> dout = rand_vec((size_t)N * C), dinp0 = rand_vec((size_t)N * C),
                       dw0 = rand_vec(C);
    float *dx = up(x), *dww = up(w), *out = dnew<float>((size_t)N * C), *rstd = dnew<float>(N);
    float *dd = up(dout), *di = up(dinp0), *dg = up(dw0);
    float *partial = dnew<float>(rmsnorm_partial_floats(N, C));
    rmsnorm_forward_gpu(out, rstd, dx, dww, N, C, eps);
    rmsnorm_backward_gpu(di, dg, dd, dx, dww, rstd, N, C, partial);
    std::vector<double> ro((size_t)N * C), rr(N), rdi(dinp0.begin(), dinp0.end()),
        rdw(dw0.begin(), dw0.end());
    for (int i = 0; i < N; i++) {
        const float *xi = &x[(size_t)i * C], *di_ = &dout[(size_t)i * C];
        double ss = 0;
        for (int c = 0; c < C; c++) ss += (double)xi[c] * xi[c];
        double r = 1.0 / sqrt(ss / C + eps), m = 0;
        rr[i] = r;
        for (int c = 0; c < C; c++) {
            ro[(size_t)i * C + c] = xi[c] * r * w[c];
            m += di_[c] * w[c] * xi[c] * r;
            rdw[c] += di_[c] * xi[c] * r;
        }
        m /= C;
        for (int c = 0; c < C; c++) rdi[(size_t)i * C + c] += (di_[c] * w[c] - xi[c] * r * m) * r;
    }
    char nm[80];
    snprintf(nm, sizeof nm, "rmsnorm N=%d C=%d forward", N, C);
    check_rel(nm, rel_err(down(out, (size_t)N * C), ro), 1e-6);
    check_rel("  rstd", rel_err(down(rstd, N), rr), 1e-6);
    check_rel("  backward dinp (+=)", rel_err(down(di, (size_t)N * C), rdi), 1e-6);
    check_rel("  backward dw (+=, chunked column sums)", rel_err(down(dg, C), rdw), 2e-6);
    cudaFree(dx), cudaFree(dww), cudaFree(out), cudaFree(rstd), cudaFree(dd), cudaFree(di);
    cudaFree(dg), cudaFree(partial);
}

// x (rows, nh, hs) rotated in double; dir -1 is the transpose (backward).
static std::vector<double> rope_ref(const std::vector<float> &x, const int *pos, int rows, int T,
                                    int nh, int hs, int rd, double base, double dir) {
    std::vector<double> y(x.begin(), x.end());
    int half = rd / 2;
    for (int r = 0; r < rows; r++) {
        int t = pos ? pos[r] : r % T;
        for (int h = 0; h < nh; h++)
            for (int i = 0; i < half; i++) {
                double a = t * pow(base, -2.0 * i / rd), c = cos(a), s = dir * sin(a);
                size_t o = ((size_t)r * nh + h) * hs;
                double u = x[o + i], v = x[o + i + half];
                y[o + i] = u * c - v * s;
                y[o + i + half] = v * c + u * s;
            }
    }
    return y;
}
static void test_rope(int rows, int T, int nh, int hs, int rd, bool with_pos) {
    int maxT = 48, half = rd / 2;
    float base = 10000.0f;
    std::vector<float> ch((size_t)maxT * half), sh((size_t)maxT * half);
    rope_table_host(ch.data(), sh.data(), maxT, rd, base);
    float *dc = up(ch), *ds = up(sh);
    std::vector<int> pos(rows);
    for (auto &p : pos) p = (int)rng_below(&g_rng, maxT);
    int *dpos = up(pos);
    const int *pp = with_pos ? pos.data() : NULL;
    std::vector<float> x = rand_vec((size_t)rows * nh * hs);
    float *dx = up(x);
    rope_forward_gpu(dx, with_pos ? dpos : NULL, rows, T, nh, hs, rd, dc, ds);
    std::vector<float> fwd = down(dx, x.size());
    char nm[96];
    snprintf(nm, sizeof nm, "rope rows=%d nh=%d hs=%d rd=%d%s forward", rows, nh, hs, rd,
             with_pos ? " (positions)" : "");
    check_rel(nm, rel_err(fwd, rope_ref(x, pp, rows, T, nh, hs, rd, base, 1)), 1e-6);
    bool pass = true;  // channels rd..hs-1 pass through bit for bit
    for (size_t o = 0; o < x.size(); o += hs)
        for (int i = rd; i < hs; i++) pass &= fwd[o + i] == x[o + i];
    CHECK(pass, "rope changed channels beyond rope_dim");
    rope_backward_gpu(dx, with_pos ? dpos : NULL, rows, T, nh, hs, rd, dc, ds);
    check_rel("  backward (transpose; applied to forward gives x back)", rel_err(down(dx, x.size()), x), 1e-6);
    std::vector<float> g = rand_vec(x.size());
    cudaMemcpy(dx, g.data(), g.size() * sizeof(float), cudaMemcpyHostToDevice);
    rope_backward_gpu(dx, with_pos ? dpos : NULL, rows, T, nh, hs, rd, dc, ds);
    check_rel("  backward vs loop", rel_err(down(dx, g.size()), rope_ref(g, pp, rows, T, nh, hs, rd, base, -1)), 1e-6);
    cudaFree(dc), cudaFree(ds), cudaFree(dpos), cudaFree(dx);
}

static void test_swiglu(size_t n) {
    std::vector<float> g = rand_vec(n, -6, 6), u = rand_vec(n, -2, 2), d = rand_vec(n);
    float *dg = up(g), *du = up(u), *dd = up(d), *out = dnew<float>(n), *dgo = dnew<float>(n),
          *duo = dnew<float>(n);
    swiglu_forward_gpu(out, dg, du, n);
    swiglu_backward_gpu(dgo, duo, dd, dg, du, n);
    std::vector<double> ro(n), rg(n), ru(n);
    for (size_t i = 0; i < n; i++) {
        double s = 1.0 / (1.0 + exp(-(double)g[i]));
        ro[i] = g[i] * s * u[i];
        ru[i] = d[i] * g[i] * s;
        rg[i] = d[i] * u[i] * s * (1 + g[i] * (1 - s));
    }
    check_rel("swiglu forward", rel_err(down(out, n), ro), 1e-6);
    check_rel("swiglu backward dgate", rel_err(down(dgo, n), rg), 1e-6);
    check_rel("swiglu backward dup", rel_err(down(duo, n), ru), 1e-6);
    swiglu_backward_gpu(dd, duo, dd, dg, du, n);  // dgate aliasing dout (as llama_gpu.cu does)
    check_rel("swiglu backward dgate in place", rel_err(down(dd, n), rg), 1e-6);
    swiglu_forward_gpu(dg, dg, du, n);  // out aliasing gate (decode does this)
    check_rel("swiglu forward in place", rel_err(down(dg, n), ro), 1e-6);
    cudaFree(dg), cudaFree(du), cudaFree(dd), cudaFree(out), cudaFree(dgo), cudaFree(duo);
}

static void test_gqa_pack(int R, int NH, int KV, int hs) {
    int C = NH * hs, KVC = KV * hs, G = NH / KV;
    std::vector<float> q = rand_vec((size_t)R * C), k = rand_vec((size_t)R * KVC),
                       v = rand_vec((size_t)R * KVC), d = rand_vec((size_t)R * 3 * C);
    float *dq = up(q), *dk = up(k), *dv = up(v), *qkv = dnew<float>((size_t)R * 3 * C);
    float *dd = up(d), *gq = dnew<float>((size_t)R * C), *gk = dnew<float>((size_t)R * KVC),
          *gv = dnew<float>((size_t)R * KVC);
    gqa_pack_gpu(qkv, dq, dk, dv, R, NH, KV, hs);
    gqa_unpack_backward_gpu(gq, gk, gv, dd, R, NH, KV, hs);
    std::vector<float> got = down(qkv, (size_t)R * 3 * C);
    int bad = 0;
    std::vector<double> rq((size_t)R * C), rk((size_t)R * KVC, 0.0), rv((size_t)R * KVC, 0.0);
    for (int r = 0; r < R; r++)
        for (int h = 0; h < NH; h++)
            for (int e = 0; e < hs; e++) {
                size_t o = (size_t)r * 3 * C + (size_t)h * hs + e;
                size_t kv = (size_t)r * KVC + (size_t)(h / G) * hs + e;
                bad += got[o] != q[(size_t)r * C + h * hs + e];
                bad += got[o + C] != k[kv] || got[o + 2 * C] != v[kv];
                rq[(size_t)r * C + h * hs + e] = d[o];
                rk[kv] += d[o + C];
                rv[kv] += d[o + 2 * C];
            }
    CHECK(bad == 0, "gqa pack R=%d NH=%d KV=%d: %d wrong entries", R, NH, KV, bad);
    char nm[80];
    snprintf(nm, sizeof nm, "gqa unpack backward NH=%d KV=%d dq", NH, KV);
    check_rel(nm, rel_err(down(gq, (size_t)R * C), rq), 0.0);
    check_rel("  dk (sum over the group)", rel_err(down(gk, (size_t)R * KVC), rk), 1e-6);
    check_rel("  dv (sum over the group)", rel_err(down(gv, (size_t)R * KVC), rv), 1e-6);
    cudaFree(dq), cudaFree(dk), cudaFree(dv), cudaFree(qkv), cudaFree(dd), cudaFree(gq);
    cudaFree(gk), cudaFree(gv);
}

static void test_kv_and_decode(int NH, int KV, int hs) {
    int maxB = 3, maxT = 21, KVC = KV * hs, C = NH * hs;
    size_t csz = (size_t)maxB * maxT * KVC;
    std::vector<float> zero(csz, 0.0f);
    float *kc = up(zero), *vc = up(zero);
    // prefill: a (2, 5) batch into slots 0..1, positions 0..4
    int B = 2, T = 5;
    std::vector<float> k = rand_vec((size_t)B * T * KVC), v = rand_vec((size_t)B * T * KVC);
    float *dk = up(k), *dv = up(v);
    kv_store_gpu(kc, vc, dk, dv, NULL, B * T, T, KVC, maxT);
    std::vector<float> K(zero), Vv(zero);
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++)
            for (int c = 0; c < KVC; c++) {
                K[((size_t)b * maxT + t) * KVC + c] = k[((size_t)b * T + t) * KVC + c];
                Vv[((size_t)b * maxT + t) * KVC + c] = v[((size_t)b * T + t) * KVC + c];
            }
    // decode: 3 rows at their own positions
    std::vector<int> pos = {5, 0, maxT - 1};
    int n = 3;
    std::vector<float> k1 = rand_vec((size_t)n * KVC), v1 = rand_vec((size_t)n * KVC);
    int *dpos = up(pos);
    cudaMemcpy(dk, k1.data(), k1.size() * sizeof(float), cudaMemcpyHostToDevice);
    cudaMemcpy(dv, v1.data(), v1.size() * sizeof(float), cudaMemcpyHostToDevice);
    kv_store_gpu(kc, vc, dk, dv, dpos, n, 1, KVC, maxT);
    for (int r = 0; r < n; r++)
        for (int c = 0; c < KVC; c++) {
            K[((size_t)r * maxT + pos[r]) * KVC + c] = k1[(size_t)r * KVC + c];
            Vv[((size_t)r * maxT + pos[r]) * KVC + c] = v1[(size_t)r * KVC + c];
        }
    CHECK(down(kc, csz) == K && down(vc, csz) == Vv,
          "kv_store: the caches differ from the loop (wrong slot, position or a stray write)");
    // fill the rest of the caches so decode attention reads real values everywhere
    K = rand_vec(csz), Vv = rand_vec(csz);
    cudaMemcpy(kc, K.data(), csz * sizeof(float), cudaMemcpyHostToDevice);
    cudaMemcpy(vc, Vv.data(), csz * sizeof(float), cudaMemcpyHostToDevice);
    std::vector<float> q = rand_vec((size_t)n * C, -2, 2);
    float *dq = up(q), *y = dnew<float>((size_t)n * C), *sc = dnew<float>((size_t)n * NH * maxT);
    gqa_decode_attention_gpu(y, kc, vc, sc, dq, dpos, n, maxT, NH, KV, hs);
    std::vector<double> ry((size_t)n * C, 0.0);
    for (int r = 0; r < n; r++)
        for (int h = 0; h < NH; h++) {
            int kh = h / (NH / KV);
            std::vector<double> s(pos[r] + 1);
            double mx = -1e300, sum = 0;
            for (int t = 0; t <= pos[r]; t++) {
                double a = 0;
                for (int i = 0; i < hs; i++)
                    a += (double)q[(size_t)r * C + h * hs + i] *
                         K[((size_t)r * maxT + t) * KVC + kh * hs + i];
                s[t] = a / sqrt((double)hs);
                mx = fmax(mx, s[t]);
            }
            for (auto &e : s) sum += (e = exp(e - mx));
            for (int t = 0; t <= pos[r]; t++)
                for (int i = 0; i < hs; i++)
                    ry[(size_t)r * C + h * hs + i] +=
                        s[t] / sum * Vv[((size_t)r * maxT + t) * KVC + kh * hs + i];
        }
    char nm[80];
    snprintf(nm, sizeof nm, "gqa decode attention NH=%d KV=%d hs=%d", NH, KV, hs);
    check_rel(nm, rel_err(down(y, (size_t)n * C), ry), 2e-6);
    cudaFree(kc), cudaFree(vc), cudaFree(dk), cudaFree(dv), cudaFree(dpos), cudaFree(dq);
    cudaFree(y), cudaFree(sc);
}

static void test_kernels(void) {
    printf("kernels vs plain loops\n");
    test_embedding(37, 11, 40);
    test_embedding(300, 7, 67);
    const int norm_shapes[][2] = {{5, 32}, {37, 40}, {300, 36}, {65, 67}};
    for (auto &s : norm_shapes) test_rmsnorm(s[0], s[1]);
    test_rope(10, 5, 4, 8, 6, false);   // rope_dim < hs: the tail passes through
    test_rope(37, 37, 3, 12, 12, false);
    test_rope(7, 1, 2, 10, 4, true);    // decode: explicit positions
    test_swiglu(1000);
    test_gqa_pack(13, 6, 2, 5);
    test_gqa_pack(9, 3, 3, 4);          // KV = NH: plain multi-head
    test_gqa_pack(11, 4, 1, 6);         // multi-query
    test_kv_and_decode(4, 2, 8);
    test_kv_and_decode(3, 1, 12);
}

// =============================================================================================
// Part 2: the whole backend against a double-precision reference of llama.h's equations
// =============================================================================================

// logp (B, T) and entropy (B, T) of the model with flat parameters P (double) on tokens (B, T);
// rows with targets < 0 get 0; zs (B, T, V), if not NULL, gets every row's logits. Written loop
// by loop from llama.h, independent of the kernels.
static void ref_forward(const ModelConfig &c, const double *P, const int *tok, const int *tgt,
                        int B, int T, double *logp, double *ent, double *zs = NULL) {
    size_t sz[LLAMA_NUM_TENSORS], off[LLAMA_NUM_TENSORS], o = 0;
    llama_param_sizes(&c, sz);
    for (int i = 0; i < LLAMA_NUM_TENSORS; i++) off[i] = o, o += sz[i];
    const double *wte = P + off[0], *an = P + off[1], *wq = P + off[2], *wk = P + off[3],
                 *wv = P + off[4], *bq = P + off[5], *bk = P + off[6], *bv = P + off[7],
                 *wo = P + off[8], *mn = P + off[9], *wg = P + off[10], *wu = P + off[11],
                 *wd = P + off[12], *nf = P + off[13], *wout = c.tied ? wte : P + off[14];
    int C = c.C, NH = c.NH, KV = c.n_kv_heads, hs = C / NH, KVC = KV * hs, F = c.ffn, V = c.V;
    int half = c.rope_dim / 2;
    auto rmsnorm = [&](const double *x, const double *w, double *y) {
        double ss = 0;
        for (int i = 0; i < C; i++) ss += x[i] * x[i];
        double r = 1.0 / sqrt(ss / C + (double)c.norm_eps);
        for (int i = 0; i < C; i++) y[i] = x[i] * r * w[i];
    };
    auto linear = [&](const double *x, const double *W, const double *b, int in, int out,
                      double *y) {
        for (int j = 0; j < out; j++) {
            double a = b ? b[j] : 0.0;
            for (int i = 0; i < in; i++) a += W[(size_t)j * in + i] * x[i];
            y[j] = a;
        }
    };
    auto rope = [&](double *x, int nh, int t) {
        for (int h = 0; h < nh; h++)
            for (int i = 0; i < half; i++) {
                double a = t * pow((double)c.rope_base, -2.0 * i / c.rope_dim);
                double u = x[h * hs + i], v = x[h * hs + i + half];
                x[h * hs + i] = u * cos(a) - v * sin(a);
                x[h * hs + i + half] = v * cos(a) + u * sin(a);
            }
    };
    std::vector<double> x((size_t)T * C), n((size_t)T * C), q((size_t)T * C), k((size_t)T * KVC),
        v((size_t)T * KVC), y(C), o2(C), g(F), u(F), z(V), s(T);
    for (int b = 0; b < B; b++) {
        for (int t = 0; t < T; t++)
            for (int i = 0; i < C; i++) x[(size_t)t * C + i] = wte[(size_t)tok[b * T + t] * C + i];
        for (int l = 0; l < c.L; l++) {
            size_t lc = (size_t)l * C, lkv = (size_t)l * KVC, lf = (size_t)l * F * C;
            bool bias = c.qkv_bias != 0;
            for (int t = 0; t < T; t++) {
                double *nt = &n[(size_t)t * C];
                rmsnorm(&x[(size_t)t * C], an + lc, nt);
                linear(nt, wq + lc * C, bias ? bq + lc : NULL, C, C, &q[(size_t)t * C]);
                linear(nt, wk + lkv * C, bias ? bk + lkv : NULL, C, KVC, &k[(size_t)t * KVC]);
                linear(nt, wv + lkv * C, bias ? bv + lkv : NULL, C, KVC, &v[(size_t)t * KVC]);
                rope(&q[(size_t)t * C], NH, t);
                rope(&k[(size_t)t * KVC], KV, t);
            }
            for (int t = 0; t < T; t++) {
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
                        y[h * hs + i] = a;
                    }
                }
                // q/k/v of every position were computed first, so updating x row t is safe
                linear(y.data(), wo + lc * C, NULL, C, C, o2.data());
                for (int i = 0; i < C; i++) x[(size_t)t * C + i] += o2[i];
            }
            for (int t = 0; t < T; t++) {
                double *xt = &x[(size_t)t * C];
                rmsnorm(xt, mn + lc, n.data());
                linear(n.data(), wg + lf, NULL, C, F, g.data());
                linear(n.data(), wu + lf, NULL, C, F, u.data());
                for (int j = 0; j < F; j++) g[j] = g[j] / (1.0 + exp(-g[j])) * u[j];
                linear(g.data(), wd + lf, NULL, F, C, o2.data());
                for (int i = 0; i < C; i++) xt[i] += o2[i];
            }
        }
        for (int t = 0; t < T; t++) {
            size_t bt = (size_t)b * T + t;
            logp[bt] = ent[bt] = 0.0;
            if (tgt[bt] < 0 && !zs) continue;
            rmsnorm(&x[(size_t)t * C], nf, n.data());
            linear(n.data(), wout, NULL, C, V, z.data());
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

static void check_decode(Model *m, const ModelConfig &c, const std::vector<float> &p, int maxB,
                         const Batch &b) {
    const ModelBackend *be = &gpu_llama_backend;
    // n > maxB (chunks), prompts of different lengths
    int n = maxB + 2, stride = 8, max_new = c.maxT - stride;
    std::vector<int> prompts((size_t)n * stride), plen(n);
    for (auto &t : prompts) t = (int)rng_below(&g_rng, c.V);
    for (int i = 0; i < n; i++) plen[i] = 1 + (i * 5) % stride;
    SampleRequest rq = {};
    rq.n = n, rq.prompts = prompts.data(), rq.prompt_stride = stride, rq.prompt_len = plen.data();
    rq.max_new = max_new, rq.temperature = 0.0f, rq.top_p = 1.0f, rq.seed = 7;
    std::vector<int> gt((size_t)n * max_new), gl(n);
    std::vector<float> glp((size_t)n * max_new);
    SampleResult gr = {gt.data(), glp.data(), gl.data()};
    CHECK(be->sample(m, &rq, &gr) == 0, "greedy sample failed");
    std::vector<double> P(p.begin(), p.end());
    bool same = true;
    double maxd = 0;
    for (int i = 0; i < n; i++) {
        std::vector<int> seq(prompts.begin() + (size_t)i * stride,
                             prompts.begin() + (size_t)i * stride + plen[i]), rt;
        std::vector<double> rl;
        ref_greedy(c, P, seq, max_new, rt, rl);
        same &= gl[i] == max_new;
        for (int k = 0; k < max_new; k++) {
            same &= gt[(size_t)i * max_new + k] == rt[k];
            maxd = fmax(maxd, fabs(glp[(size_t)i * max_new + k] - rl[k]));
        }
    }
    printf("  greedy decode (KV cache) vs reference: tokens %s, max |logp diff| %.2e\n",
           same ? "identical" : "DIFFER", maxd);
    CHECK(same, "greedy decode tokens differ from the reference");
    CHECK(maxd <= 1e-5, "greedy decode logp differs by %g", maxd);

    // a sample() between forward and backward changes nothing: bit-identical gradients
    size_t np = p.size();
    std::vector<float> g1(np), g2(np), lpa((size_t)b.B * b.T);
    be->forward(m, b.tok.data(), b.tgt.data(), b.B, b.T, lpa.data(), NULL);
    be->zero_grad(m);
    be->backward(m, b.a.data(), b.e.data());
    be->get_grads(m, g1.data());
    be->forward(m, b.tok.data(), b.tgt.data(), b.B, b.T, lpa.data(), NULL);
    be->sample(m, &rq, &gr);
    be->zero_grad(m);
    be->backward(m, b.a.data(), b.e.data());
    be->get_grads(m, g2.data());
    CHECK(g1 == g2, "sample() between forward and backward changed the gradients");

    // stop tokens: row 0's third greedy token stops every row where it first appears
    int stop = gt[2];
    rq.stop = &stop, rq.n_stop = 1;
    std::vector<int> st((size_t)n * max_new), sl(n);
    std::vector<float> slp((size_t)n * max_new);
    SampleResult sr = {st.data(), slp.data(), sl.data()};
    be->sample(m, &rq, &sr);
    bool stop_ok = true;
    for (int i = 0; i < n; i++) {
        int want = max_new;
        for (int k = 0; k < max_new; k++)
            if (gt[(size_t)i * max_new + k] == stop) {
                want = k + 1;
                break;
            }
        stop_ok &= sl[i] == want;
        for (int k = 0; k < max_new; k++)
            stop_ok &= st[(size_t)i * max_new + k] == (k < want ? gt[(size_t)i * max_new + k] : -1);
    }
    CHECK(stop_ok, "stop tokens did not end the rows as expected");
    rq.stop = NULL, rq.n_stop = 0;

    // sampled at temperature 1: re-scoring the samples with forward gives the same logp
    rq.temperature = 1.0f, rq.seed = 99;
    be->sample(m, &rq, &sr);
    double rescore = 0;
    for (int i0 = 0; i0 < n; i0 += maxB) {
        int nb = std::min(maxB, n - i0), Tq = 0;
        for (int i = i0; i < i0 + nb; i++) Tq = std::max(Tq, plen[i] + sl[i]);
        std::vector<int> tk((size_t)nb * Tq, 0), tt((size_t)nb * Tq, -1);
        for (int r = 0; r < nb; r++) {
            int i = i0 + r;
            for (int t = 0; t < plen[i]; t++) tk[(size_t)r * Tq + t] = prompts[(size_t)i * stride + t];
            for (int k = 0; k < sl[i]; k++) {
                if (plen[i] + k < Tq) tk[(size_t)r * Tq + plen[i] + k] = st[(size_t)i * max_new + k];
                tt[(size_t)r * Tq + plen[i] - 1 + k] = st[(size_t)i * max_new + k];
            }
        }
        std::vector<float> flp((size_t)nb * Tq);
        be->forward(m, tk.data(), tt.data(), nb, Tq, flp.data(), NULL);
        for (int r = 0; r < nb; r++)
            for (int k = 0; k < sl[i0 + r]; k++)
                rescore = fmax(rescore, fabs(flp[(size_t)r * Tq + plen[i0 + r] - 1 + k] -
                                             slp[(size_t)(i0 + r) * max_new + k]));
    }
    printf("  sampled decode re-scored by forward: max |logp diff| %.2e\n", rescore);
    CHECK(rescore <= 1e-5, "sampled logp vs forward: %g", rescore);
    std::vector<int> st2 = st, sl2 = sl;
    be->sample(m, &rq, &sr);
    CHECK(st == st2 && sl == sl2, "same seed gave different samples");
    rq.seed = 100;
    be->sample(m, &rq, &sr);
    CHECK(st != st2, "another seed gave the same samples");
    rq.temperature = 0.7f, rq.top_p = 0.9f;
    bool valid = be->sample(m, &rq, &sr) == 0;
    for (int i = 0; i < n; i++)
        for (int k = 0; k < sl[i]; k++) {
            int t = st[(size_t)i * max_new + k];
            float l = slp[(size_t)i * max_new + k];
            valid &= t >= 0 && t < c.V && l <= 0.0f && isfinite(l);
        }
    CHECK(valid, "temperature 0.7 top_p 0.9 samples are not valid");
    rq.max_new = c.maxT;  // prompt_len + max_new > maxT
    CHECK(be->sample(m, &rq, &sr) == -1, "prompt_len + max_new > maxT must be rejected");
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
    check_decode(m, c, p, maxB, b);
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
    AdamWConfig ac = {1e-3f, 0.9f, 0.95f, 1e-8f, 0.1f, 1.0f};  // clip 1: clipping active
    for (int step = 0; step < 2; step++) {
        Batch b = make_batch(c, step ? maxB : B, step ? c.maxT : T);
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
        // AdamW moves a weight by about lr m / (sqrt(v) + eps), on the first step lr g / (|g| +
        // eps), whose sensitivity to g is lr / max(|g|, eps): a gradient difference dg between
        // the backends allows a parameter difference of about lr |dg| / max(|g|, eps), large
        // exactly where g is rounding noise (the pass-through channels of the key bias have a
        // zero gradient in exact arithmetic: softmax ignores a shift shared by all scores). Each
        // entry must agree within 1e-5 of its tensor's largest weight plus twice that allowance.
        {
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
        check_rel("AdamW m", rel_err(gmo, cmo), 2e-6);
        check_rel("AdamW v", rel_err(gve, cve), 2e-6);
        // continue both from the CPU's state so differences do not compound
        p = cp;
        gb->set_params(gm, cp.data());
        gb->set_opt_state(gm, cmo.data(), cve.data(), cs);
    }
    // greedy decoding: identical tokens, n > maxB (chunks), ragged prompts
    int n = maxB + 2, stride = 6, max_new = c.maxT - stride;
    std::vector<int> prompts((size_t)n * stride), plen(n);
    for (auto &t : prompts) t = (int)rng_below(&g_rng, c.V);
    for (int i = 0; i < n; i++) plen[i] = 1 + (i * 4) % stride;
    SampleRequest rq = {};
    rq.n = n, rq.prompts = prompts.data(), rq.prompt_stride = stride, rq.prompt_len = plen.data();
    rq.max_new = max_new, rq.temperature = 0.0f, rq.top_p = 1.0f, rq.seed = 3;
    std::vector<int> gt((size_t)n * max_new), ct((size_t)n * max_new), gl(n), cl(n);
    std::vector<float> glp((size_t)n * max_new), clp((size_t)n * max_new);
    SampleResult gr = {gt.data(), glp.data(), gl.data()}, cr = {ct.data(), clp.data(), cl.data()};
    CHECK(gb->sample(gm, &rq, &gr) == 0 && cb->sample(cm, &rq, &cr) == 0, "sample failed");
    double maxd = 0;
    for (size_t i = 0; i < glp.size(); i++) maxd = fmax(maxd, fabs(glp[i] - clp[i]));
    bool same = gt == ct && gl == cl;
    printf("  greedy decode: tokens %s, max |logp diff| %.2e\n", same ? "identical" : "DIFFER", maxd);
    CHECK(same, "greedy decode tokens differ from cpu_llama_backend");
    CHECK(maxd <= 1e-5, "greedy decode logp differs by %g", maxd);
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
    test_kernels();
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
    return check_summary("test_kernels_llama");
}
