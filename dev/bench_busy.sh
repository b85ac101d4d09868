#!/usr/bin/env bash
# dev/bench_busy.sh: how the warm start's speed holds up on a busy machine (issue 11).
#
# Times a short fixed warm start (seconds per SFT step, from log.jsonl's time_s) alone, two
# side by side (a user running two seeds at once), and one beside `yes > /dev/null`; prints
# each figure and the ratios to "alone". Fair share on 2 cores is 2x for both.
#
#   dev/bench_busy.sh                     # ./train_cpu, 3 repetitions
#   TRAIN=/path/train_cpu REPS=5 STEPS=40 dev/bench_busy.sh
set -euo pipefail
cd "$(dirname "$0")/.."
TRAIN=${TRAIN:-./train_cpu}
GEN=${GEN:-./gen_episodes}
REPS=${REPS:-3}
STEPS=${STEPS:-40}
work=$(mktemp -d /tmp/memr2_busy_XXXXXX)
trap 'rm -rf "$work"' EXIT
"$GEN" --seed 1001 --episodes 16 --sessions 32 -o "$work/train.json" > /dev/null
# A short validation/test set: the final table after the warm start is not what is timed.
"$GEN" --seed 1002 --episodes 1 --sessions 2 -o "$work/val.json" > /dev/null

# one warm start into $1; prints seconds per step over steps 2..STEPS (step 1 pays for warm-up)
one() {
    "$TRAIN" --algo sft --sft-steps "$STEPS" --train "$work/train.json" --val "$work/val.json" \
        --test "$work/val.json" --test-episodes 1 -o "$1" -q > "$1.txt" 2>&1 || {
        echo "run failed: $(tail -n 3 "$1.txt")" >&2; exit 1; }
    awk -F'"time_s":' '/"phase":"sft"/ { split($2, a, ","); t[++n] = a[1] }
        END { printf "%.4f\n", (t[n] - t[1]) / (n - 1) }' "$1/log.jsonl"
}

for r in $(seq "$REPS"); do
    alone=$(one "$work/a$r")
    one "$work/p$r" > "$work/p$r.s" & pid=$!
    pair2=$(one "$work/q$r")
    wait "$pid"
    pair1=$(cat "$work/p$r.s")
    yes > /dev/null & ypid=$!
    withyes=$(one "$work/y$r")
    kill "$ypid"; wait "$ypid" 2>/dev/null || true
    awk -v a="$alone" -v p1="$pair1" -v p2="$pair2" -v y="$withyes" -v r="$r" 'BEGIN {
        printf "rep %d: alone %.3f s/step; side by side %.3f %.3f (%.2fx %.2fx); beside yes %.3f (%.2fx)\n",
            r, a, p1, p2, p1 / a, p2 / a, y, y / a }'
done
