# memr2 build. `make help` lists the targets.
#
# The same sources build three ways:
#   release   -O3 -march=native -fopenmp, OpenBLAS       (train_cpu, gen_episodes, tests, bench)
#   sanitize  -O1 -g -fsanitize=address,undefined        (make test_asan: the whole suite again)
#   gpu       nvcc for kernels.cu + the same C objects   (train_gpu)
# Objects go to build/<flavour>/ so the flavours never mix.

CC      := gcc
CXX     := g++
NVCC    ?= $(shell command -v nvcc 2>/dev/null || ls /usr/local/cuda/bin/nvcc 2>/dev/null)
PYTHON  := /usr/bin/python3

WARN    := -Wall -Wextra -Wno-unused-parameter
CSTD    := -std=c11 -D_POSIX_C_SOURCE=200809L
OPT     := -O3 -march=native -fopenmp
SAN     := -O1 -g -fopenmp -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
LIBS    := -lcjson -lopenblas -lm

# GPU architectures built by train_gpu (sm_90 = H100/H200; sm_80 = A100; sm_89 = L4/4090).
GPU_ARCHS ?= 80 89 90
NVCC_GENCODE := $(foreach a,$(GPU_ARCHS),-gencode arch=compute_$(a),code=sm_$(a))

# ---- sources -------------------------------------------------------------------------------
CORE_SRC   := model.c memory.c env.c grpo.c rollout.c
TRAIN_SRC  := train.c
GEN_SRC    := data/gen_episodes.c
TESTS      := test_model test_memory test_env test_gen test_grpo test_train

.PHONY: all help deps test test_asan test_kernels bench clean
all: train_cpu gen_episodes

help:
	@echo "make train_cpu      trainer on the CPU backend (OpenBLAS + OpenMP)"
	@echo "make train_gpu      trainer on the GPU backend (nvcc, cuBLAS, cuRAND; archs: $(GPU_ARCHS))"
	@echo "make gen_episodes   synthetic LoCoMo-format episode generator"
	@echo "make test           the whole test suite (ends with 'N passed, N failed')"
	@echo "make test_asan      the suite under AddressSanitizer + UBSan"
	@echo "make test_kernels   CUDA kernels on the CPU through dev/cuda_cpu.h vs model.c"
	@echo "make bench          speed: train_tok_s, decode_tok_s, snapshot_gb_s, vs PyTorch"
	@echo "make deps           install the Debian packages (needs root)"

deps:
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq build-essential libcjson-dev \
	    libopenblas-dev libstb-dev python3-torch gnuplot-nox

# ---- release flavour ------------------------------------------------------------------------
REL := build/rel
$(REL)/%.o: %.c $(wildcard *.h) | $(REL)/data $(REL)/tests $(REL)/dev
	$(CC) $(CSTD) $(WARN) $(OPT) -I. -c $< -o $@
$(REL)/data $(REL)/tests $(REL)/dev build/san/data build/san/tests build/san/dev build/emu:
	mkdir -p $@

train_cpu: $(addprefix $(REL)/,$(TRAIN_SRC:.c=.o) $(CORE_SRC:.c=.o))
	$(CC) $(OPT) $^ $(LIBS) -o $@
gen_episodes: $(REL)/data/gen_episodes.o
	$(CC) $(OPT) $^ $(LIBS) -o $@

$(REL)/tests/%: $(REL)/tests/%.o $(addprefix $(REL)/,$(CORE_SRC:.c=.o))
	$(CC) $(OPT) $^ $(LIBS) -o $@

test: $(addprefix $(REL)/tests/,$(TESTS)) gen_episodes train_cpu
	tests/run.sh $(addprefix $(REL)/tests/,$(TESTS))

# ---- sanitizer flavour ----------------------------------------------------------------------
SANB := build/san
$(SANB)/%.o: %.c $(wildcard *.h) | $(SANB)/data $(SANB)/tests $(SANB)/dev
	$(CC) $(CSTD) $(WARN) $(SAN) -I. -c $< -o $@
$(SANB)/tests/%: $(SANB)/tests/%.o $(addprefix $(SANB)/,$(CORE_SRC:.c=.o))
	$(CC) $(SAN) $^ $(LIBS) -o $@
$(SANB)/gen_episodes: $(SANB)/data/gen_episodes.o
	$(CC) $(SAN) $^ $(LIBS) -o $@

test_asan: $(addprefix $(SANB)/tests/,$(TESTS)) $(SANB)/gen_episodes
	MEMR2_SANITIZE=1 MEMR2_GEN=$(SANB)/gen_episodes tests/run.sh $(addprefix $(SANB)/tests/,$(TESTS))

# ---- GPU flavour ----------------------------------------------------------------------------
GPUB := build/gpu
$(GPUB)/%.o: %.c $(wildcard *.h) | $(GPUB)
	$(CC) $(CSTD) $(WARN) $(OPT) -DMEMR2_GPU -I. -c $< -o $@
$(GPUB)/kernels.o: kernels.cu kernels.h model.h dev/cuda_cpu.h | $(GPUB)
	$(NVCC) -O3 -std=c++17 $(NVCC_GENCODE) -I. -c $< -o $@
$(GPUB):
	mkdir -p $@
train_gpu: $(addprefix $(GPUB)/,$(TRAIN_SRC:.c=.o) $(CORE_SRC:.c=.o)) $(GPUB)/kernels.o
	@test -n "$(NVCC)" || { echo "nvcc not found: install the CUDA toolkit to build train_gpu"; exit 1; }
	@echo "train_gpu: nvcc $(NVCC), archs sm_$(GPU_ARCHS)"
	$(NVCC) -Xcompiler -fopenmp $(NVCC_GENCODE) $^ $(LIBS) -lcublas -lcurand -o $@

# ---- CUDA kernels on the CPU ----------------------------------------------------------------
EMU := build/emu
test_kernels: $(EMU)/test_kernels
	tests/run.sh $(EMU)/test_kernels

clean:
	rm -rf build train_cpu train_gpu gen_episodes
