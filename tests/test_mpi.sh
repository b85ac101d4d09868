#!/usr/bin/env bash
# tests/test_mpi.sh TRAIN: the data-parallel trainer (make train_cpu MPI=1; docs/scaleout.md)
# against one process on a tiny run with the same seed and global batch:
#   1. the warm start (SFT) on 2 ranks: weights within float summation order of 1 process;
#   2. 2 RL steps from one checkpoint on 2 and on 3 ranks: the same log.jsonl metrics (timings
#      aside) and the same final table as 1 process, and the same final weights up to float
#      summation order (measured: 0.3% of the update's norm, see docs/scaleout.md);
#   3. --eval of a checkpoint on 2 ranks prints what 1 process prints;
#   4. a rank killed with SIGKILL mid-run takes the job down: mpirun exits non-zero within 60 s.
# Ends with "N passed, N failed"; exit status 1 if any failed. Runs as root too (CI).
set -u
TRAIN=$(readlink -f "${1:-./train_cpu}")
GEN="$(dirname "$TRAIN")/gen_episodes"
MPIRUN=(mpirun --oversubscribe --bind-to none)
[ "$(id -u)" = 0 ] && MPIRUN+=(--allow-run-as-root)
passed=0 failed=0
check() {  # check NAME CONDITION-EXIT-STATUS DETAIL
    if [ "$2" = 0 ]; then passed=$((passed + 1)); echo "ok   $1"
    else failed=$((failed + 1)); echo "FAIL $1${3:+: $3}"; fi
}
finish() {
    echo "$passed passed, $failed failed"
    [ "$failed" = 0 ] && rm -rf "$TMP"
    [ "$failed" = 0 ] || { echo "kept $TMP for inspection"; exit 1; }
    exit 0
}
TMP=$(mktemp -d /tmp/memr2_test_mpi_XXXXXX)
if ! ldd "$TRAIN" | grep -q libmpi; then
    check "$TRAIN is an MPI build (make train_cpu MPI=1)" 1; finish
fi
"$GEN" --seed 3 --episodes 4 --sessions 4 -o "$TMP/tiny.json" > /dev/null
D="$TMP/tiny.json"
FLAGS=(--layers 1 --heads 2 --channels 32 --max-batch 16 --sft-batch 16 --G 6 --K 3
       --p-local 1 --eval-every 1 --val-episodes 3 --test-episodes 3 --lr 1e-3 -q
       --train "$D" --val "$D" --test "$D")
run() {  # run NP OUTDIR ARGS...: one trainer run under mpirun, one thread per rank
    local np=$1 out=$2; shift 2
    OMP_NUM_THREADS=1 "${MPIRUN[@]}" -np "$np" "$TRAIN" "${FLAGS[@]}" "$@" -o "$TMP/$out" \
        > "$TMP/$out.txt" 2>&1
}
# weights: CKPT_A CKPT_B [START]: prints max |a - b| / max |a| and, given the start, the
# difference's norm relative to the update's norm ||a - start||
weights() {
    python3 - "$@" <<'EOF'
import array, math, sys
def load(p):
    b = open(p, "rb").read()
    a = array.array("f"); a.frombytes(b[1024:]); return a
a, b = load(sys.argv[1]), load(sys.argv[2])
print("%.3g" % (max(abs(x - y) for x, y in zip(a, b)) / max(abs(x) for x in a)), end=" ")
if len(sys.argv) > 3:
    s = load(sys.argv[3])
    num = math.sqrt(sum((x - y) ** 2 for x, y in zip(a, b)))
    den = math.sqrt(sum((x - z) ** 2 for x, z in zip(a, s)))
    print("%.3g" % (num / den), end="")
print()
EOF
}
below() { python3 -c "import sys; sys.exit(0 if float(sys.argv[1]) < float(sys.argv[2]) else 1)" "$1" "$2"; }
metrics() {  # log.jsonl without its timings
    sed -E 's/"(time_s|step_s|tok_s_[a-z]+)":[0-9.e+-]+,?//g' "$1"
}

# 1. the warm start
run 1 sft1 --algo sft --sft-steps 30 --seed 5; r1=$?
run 2 sft2 --algo sft --sft-steps 30 --seed 5; r2=$?
check "warm start on 1 and 2 ranks runs (exit $r1, $r2)" $(( r1 != 0 || r2 != 0 ))
w=$(weights "$TMP/sft1/sft.bin" "$TMP/sft2/sft.bin" 2>&1)
below "${w%% *}" 1e-4; check "warm start on 2 ranks: weights within 1e-4 of 1 process (max rel $w)" $?
cmp -s <(metrics "$TMP/sft1/log.jsonl" | sed -E 's/"(sft_loss|grad_norm)":[0-9.e+-]+//g') \
       <(metrics "$TMP/sft2/log.jsonl" | sed -E 's/"(sft_loss|grad_norm)":[0-9.e+-]+//g')
check "warm start on 2 ranks: the same log lines (losses aside)" $?

# 2. RL from one checkpoint (a longer warm start, so the policy writes parseable outputs and the
#    advantages are not all zero)
run 1 init --algo sft --sft-steps 300 --seed 5; r=$?
check "the RL tests' warm start runs (exit $r)" $r
cp "$TMP/init/vocab.txt" "$TMP/vocab.txt" && cp "$TMP/init/sft.bin" "$TMP/init.bin"
for np in 1 2 3; do
    run $np rl$np --init "$TMP/init.bin" --stage-steps 2,0,0 --seed 7; r=$?
    check "2 RL steps on $np rank(s) run (exit $r)" $r
done
nz=$(grep -o '"frac_nonzero_adv":[0-9.]*' "$TMP/rl1/log.jsonl" | head -1 | cut -d: -f2)
below 0 "${nz:-0}"; check "the RL steps carry signal (frac_nonzero_adv $nz > 0)" $?
for np in 2 3; do
    cmp -s <(metrics "$TMP/rl1/log.jsonl") <(metrics "$TMP/rl$np/log.jsonl")
    check "RL on $np ranks: the same log.jsonl metrics as 1 process" $?
    cmp -s "$TMP/rl1/eval.md" "$TMP/rl$np/eval.md"
    check "RL on $np ranks: the same final table (eval.md)" $?
    w=$(weights "$TMP/rl1/final.bin" "$TMP/rl$np/final.bin" "$TMP/init.bin" 2>&1)
    below "${w##* }" 2e-2
    check "RL on $np ranks: final weights within 2% of the update's norm (max rel, norm rel: $w)" $?
done
ls "$TMP/rl2" > "$TMP/rl2.ls"; ls "$TMP/rl1" > "$TMP/rl1.ls"
cmp -s "$TMP/rl1.ls" "$TMP/rl2.ls"; check "2 ranks write the files 1 process writes" $?
[ "$(grep -c 'done in' "$TMP/rl2.txt")" = 1 ]; check "one rank speaks (one 'done in' line)" $?

# 3. evaluation split by episode
for np in 1 2; do
    OMP_NUM_THREADS=1 "${MPIRUN[@]}" -np $np "$TRAIN" --eval "$TMP/rl1/final.bin" -d "$D" \
        > "$TMP/eval$np.txt" 2> "$TMP/eval$np.err"
done
grep -q '^eval policy' "$TMP/eval1.txt" && cmp -s <(grep -v ranks "$TMP/eval1.txt") \
    <(grep -v ranks "$TMP/eval2.txt")
check "--eval on 2 ranks prints what 1 process prints" $?

# 4. a killed rank ends the job: a long warm start, SIGKILL to one rank once it logs
OMP_NUM_THREADS=1 "${MPIRUN[@]}" -np 2 "$TRAIN" "${FLAGS[@]}" --algo sft --sft-steps 1000000 \
    --seed 5 -o "$TMP/kill" > "$TMP/kill.txt" 2>&1 &
mp=$!
for _ in $(seq 600); do  # up to 60 s for the first log lines
    [ -s "$TMP/kill/log.jsonl" ] && break
    sleep 0.1
done
victim=$(ps -o pid= --ppid "$mp" | tail -n 1 | tr -d ' ')
if [ -n "$victim" ]; then kill -9 "$victim"; fi
t0=$(date +%s)
while kill -0 "$mp" 2> /dev/null && [ $(( $(date +%s) - t0 )) -lt 60 ]; do sleep 0.2; done
if kill -0 "$mp" 2> /dev/null; then
    kill -9 "$mp"; wait "$mp" 2> /dev/null
    check "a killed rank ends the job within 60 s" 1 "mpirun still running"
else
    wait "$mp"; rc=$?
    check "a killed rank (pid ${victim:-none}) ends the job non-zero within 60 s (exit $rc after $(( $(date +%s) - t0 )) s)" \
        $(( rc == 0 || ${#victim} == 0 ))
fi
finish
