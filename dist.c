// dist.c: the processes of a data-parallel run (contract in dist.h, picture in docs/scaleout.md).
//
//   make train_cpu MPI=1 && mpirun -np 2 ./train_cpu ...     MPI (OpenMPI), gradients on the host
//   make train_gpu MPI=1 && mpirun -np 8 ./train_gpu ...     + NCCL all-reduce on the device
//
// Three builds of this one file: without MEMR2_MPI a single process (every collective is a
// no-op or a copy); with MEMR2_MPI the collectives are MPI's on MPI_COMM_WORLD; with MEMR2_NCCL
// as well (train_gpu) each rank uses GPU local_rank and device gradients are summed by NCCL,
// whose communicator is made from a unique id that rank 0 draws and MPI broadcasts (as llm.c).
// MPI calls keep MPI's default error handler (MPI_ERRORS_ARE_FATAL): a failed collective, or a
// peer that died, ends the job instead of returning an error nobody could act on.
#include "dist.h"

#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef MEMR2_MPI
#include <mpi.h>
#endif
#ifdef MEMR2_NCCL
#include <cuda_runtime.h>
#include <nccl.h>
#endif

// MPI counts are ints: large buffers go in pieces of this many elements.
#define DIST_CHUNK ((size_t)1 << 28)

int dist_rank(const Dist *d) { return d ? d->rank : 0; }
int dist_size(const Dist *d) { return d && d->size > 1 ? d->size : 1; }
int dist_owner(const Dist *d, int i) { return i % dist_size(d); }

int dist_pick(const Dist *d, int *items, int n) {
    int k = 0;
    for (int p = 0; p < n; p++)
        if (dist_owner(d, p) == dist_rank(d)) items[k++] = items[p];
    return k;
}

#ifdef MEMR2_MPI
static int parallel(const Dist *d) { return d && d->mpi && d->size > 1; }

// The GPU of this rank: its place among the ranks of its node (llm.c's multi_gpu_config_init).
static int select_device(Dist *d) {
#ifdef MEMR2_NCCL
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess || n < 1) return 0;  // the backend says no GPU
    if (cudaSetDevice(d->local_rank % n) != cudaSuccess) {
        fprintf(stderr, "dist: rank %d cannot select GPU %d of %d\n", d->rank, d->local_rank % n, n);
        return -1;
    }
    if (d->size > 1 && d->local_rank >= n)
        fprintf(stderr, "warning: rank %d shares GPU %d (%d ranks on this node, %d GPUs)\n",
                d->rank, d->local_rank % n, d->local_rank + 1, n);
#endif
    (void)d;
    return 0;
}
#endif

int dist_init(Dist *d, int *argc, char ***argv) {
    memset(d, 0, sizeof *d);
    d->size = 1;
#ifdef MEMR2_MPI
    if (MPI_Init(argc, argv) != MPI_SUCCESS) {
        fprintf(stderr, "dist: MPI_Init failed\n");
        return -1;
    }
    d->mpi = 1;
    MPI_Comm_rank(MPI_COMM_WORLD, &d->rank);
    MPI_Comm_size(MPI_COMM_WORLD, &d->size);
    MPI_Comm node;
    MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, d->rank, MPI_INFO_NULL, &node);
    MPI_Comm_rank(node, &d->local_rank);
    MPI_Comm_free(&node);
    if (select_device(d) != 0) return -1;
#else
    (void)argc, (void)argv;
    // Started by mpirun (OpenMPI) or srun / MPICH (PMI) with more than one process: without MPI
    // each would be a whole run of its own, all writing the same files.
    const char *n = getenv("OMPI_COMM_WORLD_SIZE") ? getenv("OMPI_COMM_WORLD_SIZE") : getenv("PMI_SIZE");
    if (n && atoi(n) > 1) {
        fprintf(stderr, "error: started as one of %s MPI processes, but this binary was built "
                        "without MPI: make train_cpu MPI=1 (or train_gpu MPI=1)\n", n);
        return -1;
    }
#endif
    return 0;
}

void dist_finalize(Dist *d) {
#ifdef MEMR2_NCCL
    if (d->nccl) ncclCommDestroy((ncclComm_t)d->nccl);
    d->nccl = NULL;
#endif
#ifdef MEMR2_MPI
    if (d->mpi) MPI_Finalize();
    d->mpi = 0;
#else
    (void)d;
#endif
}

void dist_abort(const Dist *d, int code) {
    fflush(stdout);
#ifdef MEMR2_MPI
    if (parallel(d)) {
        fprintf(stderr, "error: rank %d of %d failed (exit status %d): ending the whole job\n",
                d->rank, d->size, code);
        MPI_Abort(MPI_COMM_WORLD, code);
    }
#else
    (void)d;
#endif
    exit(code);
}

// ---- collectives -------------------------------------------------------------------------------

#ifdef MEMR2_MPI
static void sum_in_place(void *x, size_t n, MPI_Datatype type, size_t elem, MPI_Op op) {
    for (size_t i = 0; i < n; i += DIST_CHUNK) {
        size_t k = n - i < DIST_CHUNK ? n - i : DIST_CHUNK;
        MPI_Allreduce(MPI_IN_PLACE, (char *)x + i * elem, (int)k, type, op, MPI_COMM_WORLD);
    }
}
#endif

void dist_sum_float(const Dist *d, float *x, size_t n) {
#ifdef MEMR2_MPI
    if (parallel(d)) sum_in_place(x, n, MPI_FLOAT, sizeof(float), MPI_SUM);
#else
    (void)d, (void)x, (void)n;
#endif
}

void dist_sum_double(const Dist *d, double *x, size_t n) {
#ifdef MEMR2_MPI
    if (parallel(d)) sum_in_place(x, n, MPI_DOUBLE, sizeof(double), MPI_SUM);
#else
    (void)d, (void)x, (void)n;
#endif
}

void dist_max_double(const Dist *d, double *x, size_t n) {
#ifdef MEMR2_MPI
    if (parallel(d)) sum_in_place(x, n, MPI_DOUBLE, sizeof(double), MPI_MAX);
#else
    (void)d, (void)x, (void)n;
#endif
}

void dist_bcast(const Dist *d, void *buf, size_t bytes, int root) {
#ifdef MEMR2_MPI
    if (!parallel(d)) return;
    for (size_t i = 0; i < bytes; i += DIST_CHUNK) {
        size_t k = bytes - i < DIST_CHUNK ? bytes - i : DIST_CHUNK;
        MPI_Bcast((char *)buf + i, (int)k, MPI_BYTE, root, MPI_COMM_WORLD);
    }
#else
    (void)d, (void)buf, (void)bytes, (void)root;
#endif
}

int dist_allgather(const Dist *d, const void *mine, size_t bytes, void **all, size_t *counts) {
    int P = dist_size(d), me = dist_rank(d);
    uint64_t *n = calloc((size_t)P, sizeof(uint64_t));
    if (!n) goto oom;
    n[me] = bytes;
    for (int r = 0; r < P; r++) dist_bcast(d, &n[r], sizeof n[r], r);
    size_t total = 0;
    for (int r = 0; r < P; r++) total += (size_t)n[r];
    char *out = malloc(total ? total : 1);
    if (!out) goto oom;
    // One broadcast per rank: no int displacements, so no 2 GiB limit; the data is small
    // (a step's recorded turns), so the extra latency of P broadcasts does not matter.
    for (int r = 0; r < P; r++) {
        size_t at = 0;
        for (int q = 0; q < r; q++) at += (size_t)n[q];
        if (r == me && bytes) memcpy(out + at, mine, bytes);
        dist_bcast(d, out + at, (size_t)n[r], r);
        counts[r] = (size_t)n[r];
    }
    free(n);
    *all = out;
    return 0;
oom:
    fprintf(stderr, "dist: rank %d out of memory gathering %zu bytes\n", me, bytes);
    free(n);
    *all = NULL;
    dist_abort(d, 1);
    return -1;
}

void dist_barrier(const Dist *d) {
#ifdef MEMR2_MPI
    if (parallel(d)) MPI_Barrier(MPI_COMM_WORLD);
#else
    (void)d;
#endif
}

int dist_all_ok(const Dist *d, int ok) {
    double bad = !ok;
    dist_max_double(d, &bad, 1);
    return bad == 0;
}

// ---- the gradient sum --------------------------------------------------------------------------

#ifdef MEMR2_NCCL
static int nccl_comm(Dist *d, ncclComm_t *comm) {
    if (!d->nccl) {
        ncclUniqueId id;
        if (d->rank == 0 && ncclGetUniqueId(&id) != ncclSuccess) {
            fprintf(stderr, "dist: ncclGetUniqueId failed\n");
            dist_abort(d, 1);
        }
        dist_bcast(d, &id, sizeof id, 0);
        ncclComm_t c;
        ncclResult_t r = ncclCommInitRank(&c, d->size, id, d->rank);
        if (r != ncclSuccess) {
            fprintf(stderr, "dist: rank %d: ncclCommInitRank: %s\n", d->rank, ncclGetErrorString(r));
            return -1;
        }
        d->nccl = c;
    }
    *comm = (ncclComm_t)d->nccl;
    return 0;
}
#endif

// GradReduceFn (model.h): the backend hands over its gradient buffer where it lives.
static int sum_grads(void *ctx, float *grads, size_t n, int on_device) {
    Dist *d = ctx;
    if (!on_device) {
        dist_sum_float(d, grads, n);
        return 0;
    }
#ifdef MEMR2_NCCL
    ncclComm_t comm;
    if (nccl_comm(d, &comm) != 0) return -1;
    // the legacy default stream: the backends' kernels run there, so the order is kept
    ncclResult_t r = ncclAllReduce(grads, grads, n, ncclFloat, ncclSum, comm, 0);
    if (r != ncclSuccess) {
        fprintf(stderr, "dist: rank %d: ncclAllReduce of %zu floats: %s\n", d->rank, n,
                ncclGetErrorString(r));
        return -1;
    }
    if (cudaStreamSynchronize(0) != cudaSuccess) {
        fprintf(stderr, "dist: rank %d: the NCCL all-reduce failed on the device\n", d->rank);
        return -1;
    }
    return 0;
#else
    fprintf(stderr, "dist: device gradients but this build has no NCCL (make train_gpu MPI=1)\n");
    (void)grads, (void)n;
    return -1;
#endif
}

float dist_update(Dist *d, const ModelBackend *be, Model *m, const AdamWConfig *cfg, float lr) {
    if (dist_size(d) > 1) {
        if (!be->reduce_grads) {
            fprintf(stderr, "dist: the %s backend cannot share its gradients\n", be->name);
            dist_abort(d, 1);
        }
        if (be->reduce_grads(m, sum_grads, d) != 0) dist_abort(d, 1);
    }
    return be->update(m, cfg, lr);
}
