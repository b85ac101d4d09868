// dev/cuda_cpu_blas.h: CPU stand-ins for the cuBLAS and cuRAND calls kernels.cu makes, for the
// CUDA emulation of dev/cuda_cpu.h (included by it; nothing here under nvcc).
//
// cuBLAS is column-major. The stand-in follows its semantics exactly where they matter to
// callers: op(A) is m x k, op(B) is k x n, C is m x n with leading dimensions checked
// (CUBLAS_STATUS_INVALID_VALUE, as cuBLAS returns); beta == 0 never reads C (NaN there must not
// propagate); rows m..ldc-1 of C are never touched. The product itself goes to OpenBLAS's
// column-major cblas_sgemm (fp32 throughout, like cuBLAS's default math mode: no TF32).
//
// cuRAND: the host generator API (curandGenerateUniform into device memory). The stand-in has
// the same distribution (uniform on (0, 1]) but not Philox's bit stream: tests must not depend
// on exact random values.
#ifndef MEMR2_CUDA_CPU_BLAS_H
#define MEMR2_CUDA_CPU_BLAS_H
#ifndef __CUDACC__

#include <cblas.h>
#include <stddef.h>
#include <stdint.h>

typedef struct cublasContext {
    int magic;
} *cublasHandle_t;
typedef enum {
    CUBLAS_STATUS_SUCCESS = 0,
    CUBLAS_STATUS_NOT_INITIALIZED = 1,
    CUBLAS_STATUS_ALLOC_FAILED = 3,
    CUBLAS_STATUS_INVALID_VALUE = 7,
} cublasStatus_t;
typedef enum { CUBLAS_OP_N = 0, CUBLAS_OP_T = 1, CUBLAS_OP_C = 2 } cublasOperation_t;

#define CUDA_CPU_CUBLAS_MAGIC 0x6375626c
inline cublasStatus_t cublasCreate(cublasHandle_t *h) {
    *h = new cublasContext{CUDA_CPU_CUBLAS_MAGIC};
    return CUBLAS_STATUS_SUCCESS;
}
inline cublasStatus_t cublasDestroy(cublasHandle_t h) {
    if (!h || h->magic != CUDA_CPU_CUBLAS_MAGIC) return CUBLAS_STATUS_NOT_INITIALIZED;
    h->magic = 0;
    delete h;
    return CUBLAS_STATUS_SUCCESS;
}
inline const char *cublasGetStatusString(cublasStatus_t s) {
    switch (s) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    }
    return "CUBLAS_STATUS_UNKNOWN";
}

namespace cuda_cpu {
// The element span a column-major (rows x cols, ld) matrix touches, for the bounds check.
inline size_t blas_span(int rows, int cols, int ld) {
    return rows == 0 || cols == 0 ? 0 : ((size_t)(cols - 1) * ld + rows) * sizeof(float);
}
inline cublasStatus_t sgemm_one(cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                                float alpha, const float *A, int lda, const float *B, int ldb,
                                float beta, float *C, int ldc) {
    if (m == 0 || n == 0) return CUBLAS_STATUS_SUCCESS;
    int arows = ta == CUBLAS_OP_N ? m : k, acols = ta == CUBLAS_OP_N ? k : m;
    int brows = tb == CUBLAS_OP_N ? k : n, bcols = tb == CUBLAS_OP_N ? n : k;
    if (k > 0) {
        if (!find_alloc(A, blas_span(arows, acols, lda), nullptr))
            fatal("cublasSgemm: A (%d x %d, lda %d) is not inside one device buffer", arows, acols, lda);
        if (!find_alloc(B, blas_span(brows, bcols, ldb), nullptr))
            fatal("cublasSgemm: B (%d x %d, ldb %d) is not inside one device buffer", brows, bcols, ldb);
    }
    if (!find_alloc(C, blas_span(m, n, ldc), nullptr))
        fatal("cublasSgemm: C (%d x %d, ldc %d) is not inside one device buffer", m, n, ldc);
    if (beta == 0.0f)  // cuBLAS: C need not be initialised when beta == 0
        for (int j = 0; j < n; j++)
            for (int i = 0; i < m; i++) C[(size_t)j * ldc + i] = 0.0f;
    if (k == 0 || alpha == 0.0f) {
        if (beta != 0.0f && beta != 1.0f)
            for (int j = 0; j < n; j++)
                for (int i = 0; i < m; i++) C[(size_t)j * ldc + i] *= beta;
        return CUBLAS_STATUS_SUCCESS;
    }
    cblas_sgemm(CblasColMajor, ta == CUBLAS_OP_N ? CblasNoTrans : CblasTrans,
                tb == CUBLAS_OP_N ? CblasNoTrans : CblasTrans, m, n, k, alpha, A, lda, B, ldb,
                beta == 0.0f ? 0.0f : beta, C, ldc);
    return CUBLAS_STATUS_SUCCESS;
}
inline cublasStatus_t sgemm_check(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb,
                                  int m, int n, int k, int lda, int ldb, int ldc) {
    if (!h || h->magic != CUDA_CPU_CUBLAS_MAGIC) return CUBLAS_STATUS_NOT_INITIALIZED;
    if (ta > CUBLAS_OP_C || tb > CUBLAS_OP_C || m < 0 || n < 0 || k < 0)
        return CUBLAS_STATUS_INVALID_VALUE;
    int arows = ta == CUBLAS_OP_N ? m : k, brows = tb == CUBLAS_OP_N ? k : n;
    if (lda < (arows > 1 ? arows : 1) || ldb < (brows > 1 ? brows : 1) || ldc < (m > 1 ? m : 1))
        return CUBLAS_STATUS_INVALID_VALUE;
    return CUBLAS_STATUS_SUCCESS;
}
}  // namespace cuda_cpu

inline cublasStatus_t cublasSgemm(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb,
                                  int m, int n, int k, const float *alpha, const float *A, int lda,
                                  const float *B, int ldb, const float *beta, float *C, int ldc) {
    cublasStatus_t s = cuda_cpu::sgemm_check(h, ta, tb, m, n, k, lda, ldb, ldc);
    if (s != CUBLAS_STATUS_SUCCESS) return s;
    return cuda_cpu::sgemm_one(ta, tb, m, n, k, *alpha, A, lda, B, ldb, *beta, C, ldc);
}
inline cublasStatus_t cublasSgemmStridedBatched(cublasHandle_t h, cublasOperation_t ta,
                                                cublasOperation_t tb, int m, int n, int k,
                                                const float *alpha, const float *A, int lda,
                                                long long sA, const float *B, int ldb, long long sB,
                                                const float *beta, float *C, int ldc, long long sC,
                                                int batch) {
    cublasStatus_t s = cuda_cpu::sgemm_check(h, ta, tb, m, n, k, lda, ldb, ldc);
    if (s != CUBLAS_STATUS_SUCCESS) return s;
    if (batch < 0) return CUBLAS_STATUS_INVALID_VALUE;
    for (int i = 0; i < batch; i++)
        cuda_cpu::sgemm_one(ta, tb, m, n, k, *alpha, A + i * sA, lda, B + i * sB, ldb, *beta,
                            C + i * sC, ldc);
    return CUBLAS_STATUS_SUCCESS;
}

// ---- cuRAND (host generator API) -------------------------------------------------------------
typedef struct curandGenerator_st {
    uint64_t seed, offset;  // the value at position i depends on (seed, i) only, like Philox
} *curandGenerator_t;
typedef enum {
    CURAND_STATUS_SUCCESS = 0,
    CURAND_STATUS_NOT_INITIALIZED = 101,
    CURAND_STATUS_TYPE_ERROR = 103,
} curandStatus_t;
typedef enum { CURAND_RNG_PSEUDO_PHILOX4_32_10 = 141 } curandRngType_t;

inline curandStatus_t curandCreateGenerator(curandGenerator_t *g, curandRngType_t type) {
    if (type != CURAND_RNG_PSEUDO_PHILOX4_32_10) return CURAND_STATUS_TYPE_ERROR;
    *g = new curandGenerator_st{0, 0};
    return CURAND_STATUS_SUCCESS;
}
inline curandStatus_t curandDestroyGenerator(curandGenerator_t g) {
    delete g;
    return CURAND_STATUS_SUCCESS;
}
inline curandStatus_t curandSetPseudoRandomGeneratorSeed(curandGenerator_t g, unsigned long long seed) {
    if (!g) return CURAND_STATUS_NOT_INITIALIZED;
    g->seed = seed;
    return CURAND_STATUS_SUCCESS;
}
inline curandStatus_t curandSetGeneratorOffset(curandGenerator_t g, unsigned long long offset) {
    if (!g) return CURAND_STATUS_NOT_INITIALIZED;
    g->offset = offset;
    return CURAND_STATUS_SUCCESS;
}
// Uniform on (0, 1], like curand: 24 random bits, never 0 (so log(u) is finite).
inline curandStatus_t curandGenerateUniform(curandGenerator_t g, float *out, size_t n) {
    if (!g) return CURAND_STATUS_NOT_INITIALIZED;
    if (n && !cuda_cpu::find_alloc(out, n * sizeof(float), nullptr))
        cuda_cpu::fatal("curandGenerateUniform: %zu floats at %p are not inside one device buffer", n,
                        (void *)out);
    for (size_t i = 0; i < n; i++) {
        uint64_t z = g->seed * 0xd1342543de82ef95ULL + (++g->offset) * 0x9e3779b97f4a7c15ULL;  // splitmix64
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
        z ^= z >> 31;
        out[i] = (float)((z >> 40) + 1) * (1.0f / 16777216.0f);
    }
    return CURAND_STATUS_SUCCESS;
}

#endif  // __CUDACC__
#endif  // MEMR2_CUDA_CPU_BLAS_H
