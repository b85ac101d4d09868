#!/usr/bin/env bash
# tests/run.sh: runs every test program given on the command line, shows their output, and ends
# with one line "N passed, N failed" summing the per-program lines "<name>: N passed, N failed".
# A program that crashes or prints no summary counts as one failure.
set -u
total_pass=0
total_fail=0
for prog in "$@"; do
    echo "== $prog"
    out=$("$prog" 2>&1)
    rc=$?
    printf '%s\n' "$out"
    line=$(printf '%s\n' "$out" | grep -E '^[^ ]+: [0-9]+ passed, [0-9]+ failed$' | tail -n 1)
    if [ -z "$line" ]; then
        echo "!! $prog exited $rc without a summary line"
        total_fail=$((total_fail + 1))
        continue
    fi
    p=$(printf '%s' "$line" | sed -E 's/.*: ([0-9]+) passed, ([0-9]+) failed/\1/')
    f=$(printf '%s' "$line" | sed -E 's/.*: ([0-9]+) passed, ([0-9]+) failed/\2/')
    total_pass=$((total_pass + p))
    total_fail=$((total_fail + f))
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
        echo "!! $prog exited $rc"
        total_fail=$((total_fail + 1))
    fi
done
echo "$total_pass passed, $total_fail failed"
[ "$total_fail" -eq 0 ]
