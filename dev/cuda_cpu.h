// dev/cuda_cpu.h: run CUDA kernels on the CPU, so kernels.cu is tested in CI without a GPU.
//
// Under nvcc this header only pulls in the CUDA headers and defines two macros that standard
// C++ cannot express otherwise:
//   LAUNCH(kernel, grid, block, smem, args...)   kernel<<<grid, block, smem>>>(args...)
//   DYN_SHARED(T, name)                          T *name = the block's dynamic shared memory
// Under g++/clang (no __CUDACC__) it is a small CUDA emulation:
//   - every CUDA thread of a block is a fiber; the fibers of a block run on the calling OS thread
//     one after another, switching only at __syncthreads and warp operations, so `__shared__`
//     (static thread_local) really is shared by the block;
//   - threadIdx/blockIdx/blockDim/gridDim are thread-local values the scheduler rewrites at each
//     switch; __syncthreads is a fiber barrier (threads that already returned count as arrived,
//     matching the `if (i >= n) return;` idiom);
//   - warp shuffles/ballots: each lane posts its value and waits; when every lane named in the
//     mask has arrived the scheduler computes all results at once (PTX shfl.sync rules for
//     width and clamping); a mask naming an exited or missing lane is a fatal error;
//   - the order in which lanes, warps and blocks run is CUDA_CPU_ORDER=fwd|rev|rand
//     (CUDA_CPU_SEED seeds rand), so missing barriers show up as wrong answers;
//   - CUDA_CPU_GUARD=1: device buffers end at a PROT_NONE page (overruns fault at once), and
//     __syncthreads reached from different source lines is fatal. Always checked: launches over
//     1024 threads or 48 KiB dynamic shared memory, cudaMemcpy kind/size against the
//     allocations, double or foreign cudaFree. Fresh cudaMalloc buffers and dynamic shared
//     memory are filled with NaN bytes, so reads-before-writes fail tests;
//   - the context switch is 20 lines of x86-64 assembly (glibc swapcontext makes two system
//     calls per switch: ~20x slower); -DCUDA_CPU_UCONTEXT or a non-x86-64 target uses ucontext;
//   - CUDA_CPU_DEVICES=0 makes cudaGetDeviceCount report no device (tests the no-GPU path);
//   - CUDA_CPU_RACE=1: warps run ahead of each other. By default every lane runs to its next
//     barrier or warp operation before any lane goes further, so all warps move in step and a
//     missing __syncthreads between one warp's reads of shared memory and another warp's next
//     write (write-after-read) is invisible. In race mode the scheduler runs one warp at a time
//     (in the CUDA_CPU_ORDER order), through all its warp operations, until every lane of that
//     warp waits at __syncthreads or has exited; only then does the next warp move. The warp
//     that runs first thus overwrites shared memory the others have yet to read, and the kernel
//     tests see wrong values (make test_kernels_race shows it on block_sum without its leading
//     barrier). A legal CUDA schedule, so correct kernels pass in this mode too.
// The cuBLAS and cuRAND stand-ins are in dev/cuda_cpu_blas.h. Not emulated: grid-wide sync,
// streams running concurrently, occupancy and speed. One host thread launches at a time.
#ifndef MEMR2_CUDA_CPU_H
#define MEMR2_CUDA_CPU_H

#ifdef __CUDACC__
// ---------------------------------------------------------------------------------------------
// Real CUDA.
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <curand.h>
#define LAUNCH(kernel, grid, block, smem, ...) kernel<<<(grid), (block), (smem)>>>(__VA_ARGS__)
#define DYN_SHARED(T, name)                                  \
    extern __shared__ __align__(16) unsigned char cuda_dyn_smem_[]; \
    T *name = reinterpret_cast<T *>(cuda_dyn_smem_)
#define CUDA_CPU_EMULATED 0

#else
// ---------------------------------------------------------------------------------------------
// Emulation.
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <map>
#include <tuple>
#include <utility>
#include <vector>

#if !defined(__x86_64__) && !defined(CUDA_CPU_UCONTEXT)
#define CUDA_CPU_UCONTEXT
#endif
#ifdef CUDA_CPU_UCONTEXT
#include <ucontext.h>
#endif
#if defined(__SANITIZE_ADDRESS__)
#define CUDA_CPU_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define CUDA_CPU_ASAN 1
#endif
#endif
#ifdef CUDA_CPU_ASAN
#include <sanitizer/common_interface_defs.h>
#endif

#define CUDA_CPU_EMULATED 1
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static thread_local
#define __align__(n) __attribute__((aligned(n)))

// glibc declares __expf & co. without exporting them: map CUDA's fast intrinsics to the libm
// functions (the GPU versions are approximate; tests compare with tolerances).
#define __expf(x) expf(x)
#define __logf(x) logf(x)
#define __fdividef(x, y) ((x) / (y))
#define __saturatef(x) fminf(fmaxf((x), 0.0f), 1.0f)
static inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
static inline unsigned __float_as_uint(float x) {
    unsigned u;
    memcpy(&u, &x, sizeof u);
    return u;
}
static inline float __uint_as_float(unsigned u) {
    float x;
    memcpy(&x, &u, sizeof x);
    return x;
}

struct uint3 {
    unsigned x, y, z;
};
struct dim3 {
    unsigned x, y, z;
    dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
static const int warpSize = 32;

inline thread_local uint3 threadIdx;
inline thread_local uint3 blockIdx;
inline thread_local dim3 blockDim;
inline thread_local dim3 gridDim;

typedef enum {
    cudaSuccess = 0,
    cudaErrorInvalidValue = 1,
    cudaErrorMemoryAllocation = 2,
    cudaErrorNoDevice = 100,
} cudaError_t;
typedef enum {
    cudaMemcpyHostToHost = 0,
    cudaMemcpyHostToDevice = 1,
    cudaMemcpyDeviceToHost = 2,
    cudaMemcpyDeviceToDevice = 3,
} cudaMemcpyKind;

// Save the callee-saved registers on the current stack, store the stack pointer in *save_sp,
// switch to new_sp and pop the same frame there. It ends with an indirect jmp rather than ret:
// a ret after a stack swap always mispredicts (measured 2.2-2.6x slower). Weak, because every
// translation unit that includes this header emits it.
extern "C" void cuda_cpu_switch(void **save_sp, void *new_sp);
#ifndef CUDA_CPU_UCONTEXT
__asm__(".text\n"
        ".weak cuda_cpu_switch\n"
        ".type cuda_cpu_switch,@function\n"
        "cuda_cpu_switch:\n"
        "    pushq %rbp\n"
        "    pushq %rbx\n"
        "    pushq %r12\n"
        "    pushq %r13\n"
        "    pushq %r14\n"
        "    pushq %r15\n"
        "    movq %rsp, (%rdi)\n"
        "    movq %rsi, %rsp\n"
        "    popq %r15\n"
        "    popq %r14\n"
        "    popq %r13\n"
        "    popq %r12\n"
        "    popq %rbx\n"
        "    popq %rbp\n"
        "    popq %rdx\n"
        "    jmp *%rdx\n"
        ".size cuda_cpu_switch, .-cuda_cpu_switch\n");
#endif

namespace cuda_cpu {

[[noreturn]] void fatal(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

enum FiberState { F_RUN, F_BAR_BLOCK, F_BAR_WARP, F_DONE };
enum WarpOp { W_IDX, W_UP, W_DOWN, W_XOR, W_BALLOT, W_ANY, W_ALL, W_SYNC };

struct Fiber {
    void *sp;           // saved stack pointer (asm switch)
    char *stack;        // stack memory (lowest page is the guard page)
#ifdef CUDA_CPU_UCONTEXT
    ucontext_t uc;
#endif
    uint3 tid;
    int linear;
    FiberState state;
    // __syncthreads call site (guard mode checks all threads use the same one)
    const char *bar_file;
    int bar_line;
    // warp operation in flight
    WarpOp op;
    unsigned mask;
    int arg, width;
    uint64_t val, result;
};

// Everything about the launch in progress and the emulated device.
struct State {
    bool init = false;
    int order = 0;  // 0 fwd, 1 rev, 2 rand
    bool guard = false;
    bool race = false;  // CUDA_CPU_RACE: one warp at a time, each up to its next __syncthreads
    int devices = 1;
    uint64_t rng = 0x2545F4914F6CDD1DULL;
    size_t stack_bytes = 0, page = 4096;
    std::vector<Fiber> fibers;
    std::vector<int> run_order;
    std::vector<std::vector<int>> warp_lanes;  // race mode: run_order split by warp
    std::vector<int> warp_order;               // race mode: warps by their first lane in run_order
    void *sched_sp = nullptr;
#ifdef CUDA_CPU_UCONTEXT
    ucontext_t sched_uc;
#endif
#ifdef CUDA_CPU_ASAN
    const void *sched_stack_bottom = nullptr;
    size_t sched_stack_size = 0;
#endif
    int cur = -1;  // fiber running now, -1 = scheduler
    int nthreads = 0;
    dim3 grid, block;
    uint3 block_idx;
    void (*tramp)(void *) = nullptr;
    void *tramp_arg = nullptr;
    const char *kname = "", *kfile = "";
    int kline = 0;
    std::vector<unsigned char> dyn;  // dynamic shared memory of the running block
    struct Alloc {
        size_t bytes;
        void *map;
        size_t map_bytes;
    };
    std::map<uintptr_t, Alloc> allocs;  // device buffers by start address
};
inline thread_local State st;

inline uint64_t next_rand() {
    uint64_t x = st.rng;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return st.rng = x;
}

inline void init() {
    if (st.init) return;
    st.init = true;
    const char *o = getenv("CUDA_CPU_ORDER");
    if (!o || !*o || !strcmp(o, "fwd")) st.order = 0;
    else if (!strcmp(o, "rev")) st.order = 1;
    else if (!strcmp(o, "rand")) st.order = 2;
    else fatal("CUDA_CPU_ORDER=%s: expected fwd, rev or rand", o);
    const char *g = getenv("CUDA_CPU_GUARD");
    st.guard = g && *g && strcmp(g, "0") != 0;
    const char *r = getenv("CUDA_CPU_RACE");
    st.race = r && *r && strcmp(r, "0") != 0;
    const char *s = getenv("CUDA_CPU_SEED");
    if (s && *s) st.rng ^= strtoull(s, nullptr, 10) * 0x9E3779B97F4A7C15ULL;
    if (st.rng == 0) st.rng = 1;
    const char *d = getenv("CUDA_CPU_DEVICES");
    if (d && *d) st.devices = atoi(d);
    st.page = (size_t)sysconf(_SC_PAGESIZE);
    st.stack_bytes = 256 * 1024;
}

inline void fatal(const char *fmt, ...) {
    fflush(stdout);
    fprintf(stderr, "cuda_cpu: ");
    if (st.cur >= 0) {
        const Fiber &f = st.fibers[st.cur];
        fprintf(stderr, "kernel %s (launched at %s:%d) block (%u,%u,%u) thread (%u,%u,%u): ",
                st.kname, st.kfile, st.kline, st.block_idx.x, st.block_idx.y, st.block_idx.z,
                f.tid.x, f.tid.y, f.tid.z);
    } else if (st.kname[0]) {
        fprintf(stderr, "kernel %s (launched at %s:%d): ", st.kname, st.kfile, st.kline);
    }
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n");
    abort();
}

// ---- context switch ---------------------------------------------------------------------------
inline void fiber_entry();

#ifdef CUDA_CPU_ASAN
inline void asan_start(void **fake, const void *bottom, size_t size) {
    __sanitizer_start_switch_fiber(fake, bottom, size);
}
inline void asan_finish(void *fake, const void **bottom, size_t *size) {
    __sanitizer_finish_switch_fiber(fake, bottom, size);
}
#endif

// scheduler -> fiber i
inline void switch_to_fiber(int i) {
    st.cur = i;
    Fiber &f = st.fibers[i];
    threadIdx = f.tid;
#ifdef CUDA_CPU_ASAN
    void *fake = nullptr;
    asan_start(&fake, f.stack + st.page, st.stack_bytes);
#endif
#ifdef CUDA_CPU_UCONTEXT
    swapcontext(&st.sched_uc, &f.uc);
#else
    cuda_cpu_switch(&st.sched_sp, f.sp);
#endif
#ifdef CUDA_CPU_ASAN
    asan_finish(fake, nullptr, nullptr);
#endif
    st.cur = -1;
}

// fiber -> scheduler (the fiber resumes here when it is switched to again)
inline void yield_to_scheduler(bool finished) {
    Fiber &f = st.fibers[st.cur];
#ifdef CUDA_CPU_ASAN
    void *fake = nullptr;
    asan_start(finished ? nullptr : &fake, st.sched_stack_bottom, st.sched_stack_size);
#endif
#ifdef CUDA_CPU_UCONTEXT
    swapcontext(&f.uc, &st.sched_uc);
#else
    cuda_cpu_switch(&f.sp, st.sched_sp);
#endif
#ifdef CUDA_CPU_ASAN
    asan_finish(fake, &st.sched_stack_bottom, &st.sched_stack_size);
#endif
    (void)finished;
}

#ifndef CUDA_CPU_UCONTEXT
// The first switch to a fiber "returns" into this via the frame prepared in fiber_reset.
extern "C" inline void cuda_cpu_fiber_start() { fiber_entry(); }
#else
inline void cuda_cpu_fiber_start_uc() { fiber_entry(); }
#endif

inline void fiber_alloc(Fiber &f) {
    size_t bytes = st.stack_bytes + st.page;
    void *p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) fatal("mmap of a fiber stack (%zu bytes) failed", bytes);
    // the stack grows down: a frame that overflows it hits this page instead of another stack
    if (mprotect(p, st.page, PROT_NONE) != 0) fatal("mprotect of a guard page failed");
    f.stack = (char *)p;
}

inline void fiber_reset(Fiber &f) {
    char *top = f.stack + st.page + st.stack_bytes;  // 16-aligned (page aligned)
#ifdef CUDA_CPU_UCONTEXT
    getcontext(&f.uc);
    f.uc.uc_stack.ss_sp = f.stack + st.page;
    f.uc.uc_stack.ss_size = st.stack_bytes;
    f.uc.uc_link = nullptr;
    makecontext(&f.uc, (void (*)())cuda_cpu_fiber_start_uc, 0);
#else
    // Frame popped by cuda_cpu_switch: 6 callee-saved registers, then the address it jumps to.
    // After the jump rsp = top - 8, as after a call (rsp + 8 is 16-aligned at entry).
    void **sp = (void **)top;
    *--sp = nullptr;                          // fake return address of cuda_cpu_fiber_start
    *--sp = (void *)&cuda_cpu_fiber_start;    // jumped to
    for (int i = 0; i < 6; i++) *--sp = nullptr;  // rbp rbx r12 r13 r14 r15
    f.sp = sp;
#endif
    (void)top;
}

inline void fiber_entry() {
#ifdef CUDA_CPU_ASAN
    asan_finish(nullptr, &st.sched_stack_bottom, &st.sched_stack_size);
#endif
    st.tramp(st.tramp_arg);
    st.fibers[st.cur].state = F_DONE;
    yield_to_scheduler(true);
    fatal("a finished fiber was resumed");
}

// ---- barriers and warp operations -----------------------------------------------------------
inline void syncthreads(const char *file, int line) {
    if (st.cur < 0) fatal("__syncthreads outside a kernel");
    Fiber &f = st.fibers[st.cur];
    f.state = F_BAR_BLOCK;
    f.bar_file = file;
    f.bar_line = line;
    yield_to_scheduler(false);
}

inline uint64_t warp_op(WarpOp op, unsigned mask, uint64_t val, int arg, int width) {
    if (st.cur < 0) fatal("warp operation outside a kernel");
    if (width <= 0 || width > 32 || (width & (width - 1)))
        fatal("shuffle width %d is not a power of two in [1, 32]", width);
    Fiber &f = st.fibers[st.cur];
    if (!(mask >> (f.linear % 32) & 1u)) fatal("warp operation with a mask that excludes the calling lane");
    f.state = F_BAR_WARP;
    f.op = op;
    f.mask = mask;
    f.val = val;
    f.arg = arg;
    f.width = width;
    yield_to_scheduler(false);
    return st.fibers[st.cur].result;
}

// Resolve warp w if every lane its mask names has arrived. Returns true if released.
inline bool warp_release(int w) {
    int base = w * 32;
    int nlanes = st.nthreads - base < 32 ? st.nthreads - base : 32;
    int first = -1;
    for (int l = 0; l < nlanes; l++)
        if (st.fibers[base + l].state == F_BAR_WARP) { first = l; break; }
    if (first < 0) return false;
    const Fiber &f0 = st.fibers[base + first];
    unsigned mask = f0.mask;
    for (int l = 0; l < 32; l++) {
        if (!(mask >> l & 1u)) continue;
        if (l >= nlanes)
            fatal("warp %d: %s mask 0x%08x names lane %d, which does not exist (blockDim %d)", w,
                  "shuffle/ballot", mask, l, st.nthreads);
        const Fiber &f = st.fibers[base + l];
        if (f.state == F_DONE)
            fatal("warp %d: warp operation mask 0x%08x names lane %d, which has exited", w, mask, l);
        if (f.state == F_BAR_BLOCK)
            fatal("warp %d: lane %d waits at __syncthreads (%s:%d) while lane %d waits in a warp "
                  "operation (divergent)", w, l, f.bar_file, f.bar_line, first);
        if (f.state == F_RUN) return false;
        if (f.mask != mask || f.op != f0.op || f.width != f0.width)
            fatal("warp %d: lanes %d and %d reached different warp operations (mask 0x%08x vs "
                  "0x%08x)", w, first, l, f0.mask, f.mask);
    }
    for (int l = 0; l < nlanes; l++)
        if (st.fibers[base + l].state == F_BAR_WARP && !(mask >> l & 1u))
            fatal("warp %d: lane %d is in a warp operation whose mask 0x%08x excludes it", w, l, mask);
    uint64_t ballot = 0;
    for (int l = 0; l < 32; l++)
        if (mask >> l & 1u) ballot |= (uint64_t)(st.fibers[base + l].val != 0) << l;
    for (int l = 0; l < 32; l++) {
        if (!(mask >> l & 1u)) continue;
        Fiber &f = st.fibers[base + l];
        int width = f.width, seg = l & ~(width - 1), src = l;
        switch (f.op) {
        case W_IDX: src = seg + (f.arg & (width - 1)); break;
        case W_UP: src = (l - seg) - f.arg >= 0 ? l - f.arg : l; break;
        case W_DOWN: src = (l - seg) + f.arg < width ? l + f.arg : l; break;
        case W_XOR: src = l ^ f.arg; if (src >= seg + width) src = l; break;
        default: break;
        }
        if (f.op <= W_XOR) {
            if (src < 0 || src >= 32 || !(mask >> src & 1u))
                fatal("warp %d: lane %d reads lane %d, which is not in the mask 0x%08x", w, l, src, mask);
            f.result = st.fibers[base + src].val;
        } else if (f.op == W_BALLOT) {
            f.result = ballot;
        } else if (f.op == W_ANY) {
            f.result = ballot != 0;
        } else if (f.op == W_ALL) {
            f.result = ballot == (uint64_t)mask;
        } else {
            f.result = 0;
        }
    }
    for (int l = 0; l < 32; l++)
        if (mask >> l & 1u) st.fibers[base + l].state = F_RUN;
    return true;
}

inline bool block_release() {
    int waiting = 0;
    const Fiber *first = nullptr;
    for (int i = 0; i < st.nthreads; i++) {
        const Fiber &f = st.fibers[i];
        if (f.state == F_DONE) continue;
        if (f.state != F_BAR_BLOCK) return false;
        if (!first) first = &f;
        else if (st.guard && (f.bar_line != first->bar_line || strcmp(f.bar_file, first->bar_file)))
            fatal("divergent __syncthreads: thread %d at %s:%d, thread %d at %s:%d", first->linear,
                  first->bar_file, first->bar_line, f.linear, f.bar_file, f.bar_line);
        waiting++;
    }
    if (!waiting) return false;
    for (int i = 0; i < st.nthreads; i++)
        if (st.fibers[i].state == F_BAR_BLOCK) st.fibers[i].state = F_RUN;
    return true;
}

inline void make_order(std::vector<int> &v, int n) {
    v.resize(n);
    for (int i = 0; i < n; i++) v[i] = st.order == 1 ? n - 1 - i : i;
    if (st.order == 2)
        for (int i = n - 1; i > 0; i--) std::swap(v[i], v[next_rand() % (uint64_t)(i + 1)]);
}

inline void deadlock_check() {
    for (int i = 0; i < st.nthreads; i++)
        if (st.fibers[i].state != F_DONE)
            fatal("deadlock: thread %d waits (%s) and nothing can release it", i,
                  st.fibers[i].state == F_BAR_WARP ? "warp operation" : "__syncthreads");
}

// CUDA_CPU_RACE: each warp in turn runs until all its lanes wait at __syncthreads (or exited),
// its warp operations resolved as soon as its own lanes arrive; then the next warp.
inline void run_block_race(int nwarps) {
    st.warp_lanes.resize((size_t)nwarps);
    for (auto &l : st.warp_lanes) l.clear();
    st.warp_order.clear();
    for (int k = 0; k < st.nthreads; k++) {
        int i = st.run_order[k], w = i / 32;
        if (st.warp_lanes[w].empty()) st.warp_order.push_back(w);
        st.warp_lanes[w].push_back(i);
    }
    for (;;) {
        for (int w : st.warp_order) {
            do {
                for (int i : st.warp_lanes[w])
                    if (st.fibers[i].state == F_RUN) switch_to_fiber(i);
            } while (warp_release(w));
        }
        if (block_release()) continue;
        deadlock_check();
        return;
    }
}

inline void run_block() {
    for (int i = 0; i < st.nthreads; i++) {
        Fiber &f = st.fibers[i];
        f.state = F_RUN;
        fiber_reset(f);
    }
    if (!st.dyn.empty()) memset(st.dyn.data(), 0xff, st.dyn.size());
    make_order(st.run_order, st.nthreads);
    int nwarps = (st.nthreads + 31) / 32;
    if (st.race) {
        run_block_race(nwarps);
        return;
    }
    for (;;) {
        for (int k = 0; k < st.nthreads; k++) {
            int i = st.run_order[k];
            if (st.fibers[i].state == F_RUN) switch_to_fiber(i);
        }
        bool released = false;
        for (int w = 0; w < nwarps; w++) released |= warp_release(w);
        if (released) continue;
        if (block_release()) continue;
        deadlock_check();
        return;
    }
}

inline void launch_impl(const char *name, const char *file, int line, dim3 grid, dim3 block,
                        size_t smem, void (*tramp)(void *), void *arg) {
    init();
    st.kname = name;
    st.kfile = file;
    st.kline = line;
    size_t nt = (size_t)block.x * block.y * block.z;
    if (nt == 0 || nt > 1024 || block.z > 64)
        fatal("block (%u,%u,%u): %zu threads (1..1024, z <= 64)", block.x, block.y, block.z, nt);
    if (grid.x == 0 || grid.y == 0 || grid.z == 0 || grid.y > 65535 || grid.z > 65535)
        fatal("grid (%u,%u,%u) is invalid", grid.x, grid.y, grid.z);
    if (smem > 48 * 1024)
        fatal("%zu bytes of dynamic shared memory (over 48 KiB needs cudaFuncSetAttribute)", smem);
    st.nthreads = (int)nt;
    st.grid = grid;
    st.block = block;
    st.tramp = tramp;
    st.tramp_arg = arg;
    st.dyn.assign(smem, 0xff);
    size_t had = st.fibers.size();
    if (had < nt) {
        st.fibers.resize(nt);
        for (size_t i = had; i < nt; i++) fiber_alloc(st.fibers[i]);
    }
    for (int i = 0; i < st.nthreads; i++) {
        Fiber &f = st.fibers[i];
        f.linear = i;
        f.tid.x = (unsigned)i % block.x;
        f.tid.y = (unsigned)(i / block.x) % block.y;
        f.tid.z = (unsigned)(i / (block.x * block.y));
    }
    blockDim = block;
    gridDim = grid;
    size_t nb = (size_t)grid.x * grid.y * grid.z;
    std::vector<int> border;
    // block order: the same fwd/rev/rand choice as lanes (an int permutation is enough here)
    if (nb > (size_t)1 << 30) fatal("grid of %zu blocks is too large to emulate", nb);
    make_order(border, (int)nb);
    for (size_t k = 0; k < nb; k++) {
        size_t b = (size_t)border[k];
        st.block_idx.x = (unsigned)(b % grid.x);
        st.block_idx.y = (unsigned)(b / grid.x % grid.y);
        st.block_idx.z = (unsigned)(b / ((size_t)grid.x * grid.y));
        blockIdx = st.block_idx;
        run_block();
    }
    st.kname = "";
}

template <typename F, typename Tup>
struct LaunchPack {
    F f;
    Tup args;
    static void run(void *p) {
        LaunchPack *lp = (LaunchPack *)p;
        std::apply(lp->f, lp->args);
    }
};

template <typename... KArgs, typename... Args>
inline void launch(const char *name, const char *file, int line, dim3 grid, dim3 block,
                   size_t smem, void (*kernel)(KArgs...), Args &&...args) {
    static_assert(sizeof...(KArgs) == sizeof...(Args), "LAUNCH: wrong number of kernel arguments");
    typedef std::tuple<KArgs...> Tup;  // converted once, like real kernel parameters
    LaunchPack<void (*)(KArgs...), Tup> pack{kernel, Tup((KArgs)std::forward<Args>(args)...)};
    launch_impl(name, file, line, grid, block, smem, &LaunchPack<void (*)(KArgs...), Tup>::run,
                &pack);
}

inline void *dyn_smem() {
    if (st.dyn.empty()) fatal("DYN_SHARED used by a kernel launched with 0 bytes of shared memory");
    return st.dyn.data();
}

template <typename T>
inline uint64_t to_bits(T v) {
    static_assert(sizeof(T) <= 8, "shuffle of a type over 8 bytes");
    uint64_t u = 0;
    memcpy(&u, &v, sizeof(T));
    return u;
}
template <typename T>
inline T from_bits(uint64_t u) {
    T v;
    memcpy(&v, &u, sizeof(T));
    return v;
}

// ---- device memory ---------------------------------------------------------------------------
// The allocation holding [p, p + bytes), or nullptr.
inline const State::Alloc *find_alloc(const void *p, size_t bytes, uintptr_t *start) {
    uintptr_t a = (uintptr_t)p;
    auto it = st.allocs.upper_bound(a);
    if (it == st.allocs.begin()) return nullptr;
    --it;
    if (a < it->first || a + bytes > it->first + it->second.bytes) return nullptr;
    if (start) *start = it->first;
    return &it->second;
}

}  // namespace cuda_cpu

#define __syncthreads() cuda_cpu::syncthreads(__FILE__, __LINE__)
#define LAUNCH(kernel, grid, block, smem, ...) \
    cuda_cpu::launch(#kernel, __FILE__, __LINE__, dim3(grid), dim3(block), (smem), kernel, __VA_ARGS__)
#define DYN_SHARED(T, name) T *name = reinterpret_cast<T *>(cuda_cpu::dyn_smem())

template <typename T>
inline T __shfl_sync(unsigned mask, T v, int src, int width = 32) {
    return cuda_cpu::from_bits<T>(cuda_cpu::warp_op(cuda_cpu::W_IDX, mask, cuda_cpu::to_bits(v), src, width));
}
template <typename T>
inline T __shfl_up_sync(unsigned mask, T v, unsigned d, int width = 32) {
    return cuda_cpu::from_bits<T>(cuda_cpu::warp_op(cuda_cpu::W_UP, mask, cuda_cpu::to_bits(v), (int)d, width));
}
template <typename T>
inline T __shfl_down_sync(unsigned mask, T v, unsigned d, int width = 32) {
    return cuda_cpu::from_bits<T>(cuda_cpu::warp_op(cuda_cpu::W_DOWN, mask, cuda_cpu::to_bits(v), (int)d, width));
}
template <typename T>
inline T __shfl_xor_sync(unsigned mask, T v, int lm, int width = 32) {
    return cuda_cpu::from_bits<T>(cuda_cpu::warp_op(cuda_cpu::W_XOR, mask, cuda_cpu::to_bits(v), lm, width));
}
inline unsigned __ballot_sync(unsigned mask, int pred) {
    return (unsigned)cuda_cpu::warp_op(cuda_cpu::W_BALLOT, mask, pred != 0, 0, 32);
}
inline int __any_sync(unsigned mask, int pred) {
    return (int)cuda_cpu::warp_op(cuda_cpu::W_ANY, mask, pred != 0, 0, 32);
}
inline int __all_sync(unsigned mask, int pred) {
    return (int)cuda_cpu::warp_op(cuda_cpu::W_ALL, mask, pred != 0, 0, 32);
}
inline void __syncwarp(unsigned mask = 0xffffffffu) { cuda_cpu::warp_op(cuda_cpu::W_SYNC, mask, 0, 0, 32); }

// Atomics: fibers switch only at barriers, so these are atomic already; the builtins also keep
// them right if a caller ever runs blocks on several OS threads.
inline float atomicAdd(float *p, float v) {
    float old, want;
    __atomic_load(p, &old, __ATOMIC_RELAXED);
    do want = old + v;
    while (!__atomic_compare_exchange(p, &old, &want, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED));
    return old;
}
inline int atomicAdd(int *p, int v) { return __atomic_fetch_add(p, v, __ATOMIC_RELAXED); }
inline unsigned atomicAdd(unsigned *p, unsigned v) { return __atomic_fetch_add(p, v, __ATOMIC_RELAXED); }
inline int atomicMax(int *p, int v) {
    int old = __atomic_load_n(p, __ATOMIC_RELAXED);
    while (old < v && !__atomic_compare_exchange_n(p, &old, v, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
    }
    return old;
}
inline int atomicCAS(int *p, int cmp, int v) {
    __atomic_compare_exchange_n(p, &cmp, v, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED);
    return cmp;
}
inline int atomicExch(int *p, int v) { return __atomic_exchange_n(p, v, __ATOMIC_RELAXED); }

// ---- runtime API --------------------------------------------------------------------------------
inline const char *cudaGetErrorString(cudaError_t e) {
    switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorNoDevice: return "no CUDA-capable device is detected";
    }
    return "unknown error";
}
inline cudaError_t cudaGetDeviceCount(int *n) {
    cuda_cpu::init();
    *n = cuda_cpu::st.devices > 0 ? cuda_cpu::st.devices : 0;
    return cuda_cpu::st.devices > 0 ? cudaSuccess : cudaErrorNoDevice;
}
inline cudaError_t cudaSetDevice(int) { return cudaSuccess; }
inline cudaError_t cudaGetLastError() { return cudaSuccess; }
inline cudaError_t cudaDeviceSynchronize() { return cudaSuccess; }

inline cudaError_t cudaMalloc(void **p, size_t bytes) {
    using namespace cuda_cpu;
    init();
    *p = nullptr;
    if (bytes == 0) bytes = 1;
    State::Alloc a{bytes, nullptr, 0};
    char *ptr;
    if (st.guard) {
        // end the buffer (rounded to 8 bytes) at a PROT_NONE page: any overrun faults
        size_t body = (bytes + 7) & ~(size_t)7;
        size_t data_pages = (body + st.page - 1) / st.page;
        a.map_bytes = (data_pages + 1) * st.page;
        a.map = mmap(nullptr, a.map_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (a.map == MAP_FAILED) return cudaErrorMemoryAllocation;
        char *guardp = (char *)a.map + data_pages * st.page;
        if (mprotect(guardp, st.page, PROT_NONE) != 0) fatal("mprotect failed");
        ptr = guardp - body;
    } else {
        ptr = (char *)aligned_alloc(256, (bytes + 255) & ~(size_t)255);
        if (!ptr) return cudaErrorMemoryAllocation;
    }
    memset(ptr, 0xff, bytes);  // NaN in every float: a read before a write shows up
    st.allocs[(uintptr_t)ptr] = a;
    *p = ptr;
    return cudaSuccess;
}
template <typename T>
inline cudaError_t cudaMalloc(T **p, size_t bytes) {
    return cudaMalloc((void **)p, bytes);
}
inline cudaError_t cudaFree(void *p) {
    using namespace cuda_cpu;
    if (!p) return cudaSuccess;
    auto it = st.allocs.find((uintptr_t)p);
    if (it == st.allocs.end()) fatal("cudaFree(%p): not a live cudaMalloc pointer (double free?)", p);
    if (it->second.map) munmap(it->second.map, it->second.map_bytes);
    else free(p);
    st.allocs.erase(it);
    return cudaSuccess;
}
inline cudaError_t cudaMemcpy(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind) {
    using namespace cuda_cpu;
    if (bytes == 0) return cudaSuccess;
    bool dst_dev = kind == cudaMemcpyHostToDevice || kind == cudaMemcpyDeviceToDevice;
    bool src_dev = kind == cudaMemcpyDeviceToHost || kind == cudaMemcpyDeviceToDevice;
    static const char *names[] = {"HostToHost", "HostToDevice", "DeviceToHost", "DeviceToDevice"};
    if (dst_dev && !find_alloc(dst, bytes, nullptr))
        fatal("cudaMemcpy%s of %zu bytes: destination %p is not inside one device buffer",
              names[kind], bytes, dst);
    if (src_dev && !find_alloc(src, bytes, nullptr))
        fatal("cudaMemcpy%s of %zu bytes: source %p is not inside one device buffer", names[kind],
              bytes, src);
    if (!dst_dev && find_alloc(dst, 1, nullptr))
        fatal("cudaMemcpy%s: destination %p is device memory", names[kind], dst);
    if (!src_dev && find_alloc(src, 1, nullptr))
        fatal("cudaMemcpy%s: source %p is device memory", names[kind], src);
    memmove(dst, src, bytes);
    return cudaSuccess;
}
inline cudaError_t cudaMemset(void *p, int v, size_t bytes) {
    if (bytes && !cuda_cpu::find_alloc(p, bytes, nullptr))
        cuda_cpu::fatal("cudaMemset of %zu bytes at %p: not inside one device buffer", bytes, p);
    memset(p, v, bytes);
    return cudaSuccess;
}

#endif  // __CUDACC__

#include "cuda_cpu_blas.h"
#endif  // MEMR2_CUDA_CPU_H
