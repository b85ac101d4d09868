// dist.h: the processes of a data-parallel run (docs/scaleout.md). Built with MPI=1, dist.c is
// MPI (OpenMPI: `mpirun -np N ./train_cpu ...`) plus, in train_gpu, NCCL for the gradient sum on
// the device; otherwise it is one process and every call below is a no-op, so a build without MPI
// runs exactly as before. A NULL Dist means the same single process.
//
// What the trainer splits (rollout.c, train.c): the model's rollout lanes (global index i runs
// on rank dist_owner(i); each lane's sampling stream comes from its global index, so the same
// step gives the same rollouts on any number of ranks), the rows of every optimiser update (the
// gradients are summed, not averaged: each rank's loss already carries the 1 / (global count)
// scale), and evaluation (its lanes are rollouts too). Rank 0 alone writes files.
//
// Errors: MPI's default handler aborts the job on a failed call, and a rank that exits with an
// error calls dist_abort, so a dead or failing rank never leaves the others waiting.
#ifndef MEMR2_DIST_H
#define MEMR2_DIST_H

#include <stddef.h>

#include "model.h"

typedef struct {
    int rank, size;   // this process and how many there are (0 and 1 without MPI)
    int local_rank;   // among the processes on this node: the GPU it uses
    int mpi;          // 1 when MPI was initialised (and must be finalised)
    void *nccl;       // ncclComm_t of train_gpu, made at the first device reduction
} Dist;

// Starts MPI when built with it (also when not launched by mpirun: one rank). In a GPU build
// each rank selects device local_rank (modulo the devices present). Returns 0 or -1.
int dist_init(Dist *d, int *argc, char ***argv);
void dist_finalize(Dist *d);
// Ends the whole job at once with exit status code (MPI_Abort), after a message on stderr.
void dist_abort(const Dist *d, int code);

int dist_rank(const Dist *d);
int dist_size(const Dist *d);
// The rank that runs item i of a split list: round robin, so neighbouring (similar) items spread.
int dist_owner(const Dist *d, int i);

// Keeps, at the front of items (in order), the entries at positions p < n this rank owns
// (dist_owner(p) == rank) and returns how many: a rank's share of a batch of rows.
int dist_pick(const Dist *d, int *items, int n);

// In-place sums (and a max) over all ranks; every rank gets the result.
void dist_sum_float(const Dist *d, float *x, size_t n);
void dist_sum_double(const Dist *d, double *x, size_t n);
void dist_max_double(const Dist *d, double *x, size_t n);
void dist_bcast(const Dist *d, void *buf, size_t bytes, int root);
// Every rank's `bytes` bytes at `mine`, concatenated in rank order into a new buffer (*all, the
// caller frees) with each rank's byte count in counts (dist_size entries, caller-owned).
// Returns 0, or -1 when out of memory (the job is then aborted: the others would wait).
int dist_allgather(const Dist *d, const void *mine, size_t bytes, void **all, size_t *counts);
void dist_barrier(const Dist *d);
// 1 on every rank when ok is 1 on every rank (a collective: decisions that must agree).
int dist_all_ok(const Dist *d, int ok);

// The optimiser step of a data-parallel run: sums the gradient buffer across ranks (MPI on the
// host, NCCL on the device) and calls be->update, which every rank then takes with identical
// gradients, so the weights stay identical. One rank: be->update alone. A failure aborts the
// job (the other ranks would wait in the sum).
float dist_update(Dist *d, const ModelBackend *be, Model *m, const AdamWConfig *cfg,
                  float lr);

#endif
