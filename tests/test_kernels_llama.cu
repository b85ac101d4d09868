// tests/test_kernels_llama.cu: the kernels the Llama family adds (kernels_llama.cu) checked on
// the CPU through the CUDA emulation of dev/cuda_cpu.h, each against a plain double-precision
// loop in this file, at ragged shapes (rows, channels, heads not multiples of 32): embedding,
// RMSNorm, RoPE, SwiGLU, GQA pack/unpack, KV store, GQA decode attention. The backend that
// strings them together is tests/test_llama_gpu.cu's concern.
//
// Compiled as C++ by g++ (`make test_kernels_llama`; CUDA_CPU_ORDER=fwd|rev|rand picks the lane,
// warp and block order, CUDA_CPU_GUARD=1 adds guard pages). Errors are normwise (max |got - ref|
// / max |ref|); the measured values are printed beside each tolerance.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <vector>

#include "kernels_llama.h"
#include "tests/emu_util.h"

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

int main(void) {
    rng_seed(&g_rng, 20261202);
    setvbuf(stdout, NULL, _IOLBF, 0);
    test_kernels();
    return check_summary("test_kernels_llama");
}
