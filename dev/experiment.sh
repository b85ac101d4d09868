#!/usr/bin/env bash
# dev/experiment.sh: arms of the RL experiment (issues 4 and 8), all from ONE shared warm start,
# run back to back (nice -n 10), then dev/experiment.py summarises them (paired over the test
# episodes) into OUT/experiment.md and draws OUT/f1_horizon.png and OUT/curves.png.
#
# ARMS holds one arm per line: "NAME FLAGS...". NAME may not contain '/' or spaces; every run is
# OUT/NAME-sSEED. The default arms are the issue-4 design: LoGo vs plain GRPO (G 10, so both
# arms roll out about the same tokens: LoGo's K 4 reruns of half the sessions add ~25% to G 8)
# vs direct-32, under both reward modes.
#
#   dev/experiment.sh                                   # defaults below
#   SEEDS="1 2" STEPS=16,8,4 dev/experiment.sh
#   INIT=out/x/sft3000/sft.bin D=out/x/d OUT=out/tune ARMS="base
#   lr6e-5 --lr 6e-5" dev/experiment.sh                # any arms, a given warm start and data
#   TRAIN=/path/to/train_cpu dev/experiment.sh          # a fixed binary (no rebuild)
#   JOBS=2 dev/experiment.sh                            # two runs at a time, one thread each
#
# D (a folder with train.json, val.json, test.json) chooses the data; default: the run's
# default data in data/. A run killed earlier (its directory has run.args but no eval.jsonl) is
# resumed, one that finished is kept.
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS=${STEPS:-16,8,4}
SEEDS=${SEEDS:-1 2 3}
OUT=${OUT:-out/experiment}
EXTRA=${EXTRA:-}
DEFAULT_ARMS="session-logo --algo logo --reward session
session-grpo --algo grpo --G 10 --reward session
session-direct --algo logo --direct --reward session
trajectory-logo --algo logo --reward trajectory
trajectory-grpo --algo grpo --G 10 --reward trajectory
trajectory-direct --algo logo --direct --reward trajectory"
ARMS=${ARMS:-$DEFAULT_ARMS}
# Checked before any work starts (a bad JOBS used to be found after the warm start).
JOBS=${JOBS:-1}
case "$JOBS" in
    '' | *[!0-9]* | 0) echo "experiment.sh: JOBS must be a whole number >= 1, not '$JOBS'" >&2; exit 2 ;;
esac
mkdir -p "$OUT"
if [ -z "${TRAIN:-}" ]; then
    make -s train_cpu gen_episodes
    TRAIN=./train_cpu
fi
data=()
if [ -n "${D:-}" ]; then
    data=(--train "$D/train.json" --val "$D/val.json" --test "$D/test.json")
fi
start=$(date +%s)

# One warm start shared by every arm, so the arms differ only in the RL algorithm.
if [ -z "${INIT:-}" ]; then
    if [ -f "$OUT/sft/run.args" ] && [ ! -f "$OUT/sft/eval.md" ]; then
        nice -n 10 "$TRAIN" --resume "$OUT/sft" -q | tail -n 12
    elif [ ! -f "$OUT/sft/sft.bin" ]; then
        nice -n 10 "$TRAIN" --algo sft -o "$OUT/sft" --seed 1 -q "${data[@]}" $EXTRA | tail -n 12
    fi
    INIT="$OUT/sft/sft.bin"
fi

# One run: OUT/NAME-sSEED (resumed if it was killed, skipped if it finished).
run_arm() {
    local name=$1 seed=$2 flags=$3 dir="$OUT/$1-s$2" t0 run
    [ -f "$dir/eval.jsonl" ] && return 0
    t0=$(date +%s)
    if [ -f "$dir/run.args" ]; then
        run=("$TRAIN" --resume "$dir" -q)
    else
        # shellcheck disable=SC2206  # FLAGS and EXTRA are word lists on purpose
        run=("$TRAIN" --init "$INIT" "${data[@]}" --seed "$seed" --stage-steps "$STEPS"
             -o "$dir" -q $flags $EXTRA)
    fi
    nice -n 10 "${run[@]}" > "$dir.log" 2>&1 || { echo "run $dir failed: see $dir.log"; return 1; }
    echo "$dir: $(( $(date +%s) - t0 ))s"
}

# JOBS runs at a time (default 1), each with its share of the cores: on 2 cores two one-thread
# runs side by side finish sooner than two two-thread runs in a row (threads scale 1.4-1.9x).
if [ "$JOBS" -gt 1 ] && [ -z "${OMP_NUM_THREADS:-}" ]; then
    n=$(( $(nproc) / JOBS ))
    export OMP_NUM_THREADS=$(( n > 0 ? n : 1 ))
fi
failed=0
running=0
while read -r name flags; do
    [ -z "$name" ] && continue
    for seed in $SEEDS; do
        if [ "$running" -ge "$JOBS" ]; then
            wait -n || failed=1
            running=$((running - 1))
        fi
        run_arm "$name" "$seed" "$flags" &
        running=$((running + 1))
    done
done <<< "$ARMS"
while [ "$running" -gt 0 ]; do
    wait -n || failed=1
    running=$((running - 1))
done
[ "$failed" -eq 0 ] || exit 1
echo "experiment wall time: $(( $(date +%s) - start ))s"
/usr/bin/python3 dev/experiment.py "$OUT" > "$OUT/experiment.md"
cat "$OUT/experiment.md"
