#!/usr/bin/env bash
# tests/race_check.sh REAL MUTANT: the CUDA emulation's race mode (CUDA_CPU_RACE=1, see
# dev/cuda_cpu.h) against two builds of the kernel test: REAL (kernels.cu as shipped) must pass
# in race mode in forward and reverse lane order; MUTANT (block_sum without its leading
# __syncthreads, -DMEMR2_MUTANT_BLOCK_SUM) must fail in race mode with failed checks (not a
# crash). The mutant in the default mode is run too and reported: that it passes there is the
# blind spot race mode exists for. Ends with "N passed, N failed" like tests/run.sh.
set -u
real=$1
mutant=$2
log=$(mktemp -d)
trap 'rm -rf "$log"' EXIT
pass=0
fail=0
ok() { pass=$((pass + 1)); echo "ok   $*"; }
bad() { fail=$((fail + 1)); echo "FAIL $*"; }

for order in fwd rev; do
    if CUDA_CPU_RACE=1 CUDA_CPU_ORDER=$order "$real" > "$log/real_$order" 2>&1; then
        ok "race mode, $order order: the real kernels pass ($(tail -n 1 "$log/real_$order"))"
    else
        bad "race mode, $order order: the real kernels fail:"
        grep -E '^FAIL|cuda_cpu' "$log/real_$order" | head -n 20
    fi
done

for order in fwd rev; do
    CUDA_CPU_RACE=1 CUDA_CPU_ORDER=$order "$mutant" > "$log/mut_$order" 2>&1
    rc=$?
    nfail=$(grep -c '^FAIL' "$log/mut_$order")
    if [ "$rc" -eq 1 ] && [ "$nfail" -gt 0 ]; then
        ok "race mode, $order order: the barrier-less block_sum is caught ($nfail failed checks," \
           "e.g. $(grep -m1 '^FAIL' "$log/mut_$order" | cut -c1-160))"
    else
        bad "race mode, $order order: the barrier-less block_sum is not caught (exit $rc," \
            "$nfail failed checks)"
        tail -n 5 "$log/mut_$order"
    fi
done

if "$mutant" > "$log/mut_default" 2>&1; then
    echo "note the default mode does not see it: the mutant passes ($(tail -n 1 "$log/mut_default"))"
else
    echo "note the default mode also fails the mutant ($(grep -c '^FAIL' "$log/mut_default") checks)"
fi
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
