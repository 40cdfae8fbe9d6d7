#!/bin/sh
# CI smoke test of the fuzz targets: each one for 20,000 executions under atheris.
# Usage: sh fuzz/smoke.sh   (from anywhere; PYTHON=... picks the interpreter, default python)
# Exits 0 with a message when atheris is not installed (the corpus replay in
# tests/test_fuzz_corpus.py still runs without it). New inputs and any crash reproducers go
# to a temporary directory, which is kept (and printed) only when a target fails.
set -eu
PYTHON=${PYTHON:-python}
RUNS=${RUNS:-20000}
here=$(cd "$(dirname "$0")" && pwd)
if ! "$PYTHON" -c "import atheris" 2>/dev/null; then
    echo "fuzz smoke: atheris is not importable by $PYTHON; skipped (pip install 'hotline[fuzz]')"
    exit 0
fi
work=$(mktemp -d)
for target in frames records handshake connection; do
    echo "== fuzz smoke: $target, $RUNS runs"
    if ! "$PYTHON" "$here/run.py" "$target" "--work=$work" "-runs=$RUNS" \
            -max_total_time=900 -print_final_stats=0 >"$work/$target.log" 2>&1; then
        tail -n 60 "$work/$target.log"
        echo "fuzz smoke: $target FAILED; log and reproducer in $work"
        exit 1
    fi
    grep -E "^#[0-9]+ +DONE|^Done" "$work/$target.log" || true
done
rm -rf "$work"
echo "fuzz smoke: all targets passed"
