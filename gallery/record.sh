#!/bin/sh
# Re-records every trace of the gallery on this machine. Needs strace and perf with the
# exceptions:* and filemap:* tracepoints (root, or CAP_PERFMON and perf_event_paranoid -1).
# Each program runs once unrecorded first, so that the recording starts from a warm page
# cache; numpy's runs after `drop_caches` instead, to record a cold start.
set -eu
cd "$(dirname "$0")"
F=${FAULTLINE:-../.build/release/faultline}
PYTHON=${PYTHON:-python3}
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT

warm_record() { name=$1; shift; "$@" >/dev/null 2>&1 || true; "$F" record -o "$name.trace" -- "$@" >/dev/null; }

gcc -O2 -pthread -o "$W/alloc-threads" src/alloc-threads.c
warm_record alloc-threads "$W/alloc-threads"
warm_record gcc-compile gcc -O2 -c src/list.c -o "$W/list.o"
warm_record node-worker-startup node src/node_worker.js
head -c 3000000 /dev/zero | tr '\0' 'a' > "$W/data"
awk 'BEGIN { srand(1); for (i = 0; i < 60000; i++) printf "%08x %d\n", rand() * 4294967295, i }' >> "$W/data"
warm_record xz-threads xz -T2 -6 -k -c "$W/data"
sync
if echo 3 2>/dev/null > /proc/sys/vm/drop_caches; then cold="cold"; else cold="warm (drop_caches refused)"; fi
"$F" record -o python-numpy-threads.trace -- "$PYTHON" src/numpy_threads.py >/dev/null
echo "recorded; python-numpy-threads started $cold"
