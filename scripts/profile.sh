#!/usr/bin/env bash
# Where cairn's CPU time goes on the benchmark's heavy container: perf samples of the client
# (`cairn backup`) and of the nodes (`cairn dev`, every node in one process) during the full
# backup and during the backup after the day's changes, for 1 node and for 3 nodes (RF 3),
# grouped by stage: chunk, hash, compress, verify (decompress + hash on the nodes), checksum,
# RPC (tonic, h2, hyper, prost), index and catalog (sled, openraft), memory, kernel (system
# calls, page cache, network, fsync), other.
#
# Usage: scripts/profile.sh [--nodes "1 3"] [--freq HZ] [--seed S] [--keep]
#
#   --nodes "1 3"  cluster sizes to profile (default both)
#   --freq HZ      perf sampling frequency (default 499)
#   --seed S       the data's seed, as scripts/bench.sh's (default 1)
#   --keep         keep the work directory (perf.data files, logs)
#
# Environment: CAIRN_BENCH_DIR (default /var/tmp/cairn-bench) must hold the caches that
# `scripts/bench.sh --data heavy` builds; CAIRN_BIN (default target/release/cairn, built
# when missing). Needs root and perf (Debian package linux-perf). Prints one table per
# cluster size and row (markdown), the report's input for the README's performance section.
# CPU samples, not wall time: time spent waiting (fsync, the network) shows as kernel time
# only while a CPU works on it.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/.." && pwd)
BENCH_DIR=${CAIRN_BENCH_DIR:-/var/tmp/cairn-bench}
DATA_PY=$SCRIPT_DIR/bench/bench_data.py
REPORT_PY=$SCRIPT_DIR/bench/profile_report.py
NODES="1 3"
FREQ=499
SEED=1
KEEP=0
ENV1=11111111-1111-4111-8111-111111111111

die() { printf '[profile] ERROR: %s\n' "$*" >&2; exit 1; }
log() { printf '[profile %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

while [[ $# -gt 0 ]]; do
    case $1 in
    --nodes) NODES=${2:?--nodes needs a value}; shift 2 ;;
    --freq) FREQ=${2:?--freq needs a value}; shift 2 ;;
    --seed) SEED=${2:?--seed needs a value}; shift 2 ;;
    --keep) KEEP=1; shift ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument $1 (try --help)" ;;
    esac
done
[[ $(id -u) -eq 0 ]] || die "needs root (perf on other processes, owners when copying the root file system)"
command -v perf >/dev/null || die "needs perf: apt-get install linux-perf"
ROOTFS=$(ls -d "$BENCH_DIR"/rootfs-*-heavy 2>/dev/null | head -n 1 || true)
DB=$BENCH_DIR/db-$SEED-140.sqlite
[[ -n $ROOTFS && -f $ROOTFS.done && -f $DB.done ]] ||
    die "no heavy data in $BENCH_DIR: run 'scripts/bench.sh --data heavy --runs 1 --seed $SEED' once first"
CAIRN_BIN=${CAIRN_BIN:-$REPO_ROOT/target/release/cairn}
if [[ ! -x $CAIRN_BIN ]]; then
    log "building $CAIRN_BIN"
    (cd "$REPO_ROOT" && cargo build --release -j2 -p cairn >&2)
fi

WORK=$(mktemp -d /var/tmp/cairn-profile.XXXXXX)
DEV_PID=""
PERF_PID=""
cleanup() {
    [[ -n $PERF_PID ]] && kill -INT "$PERF_PID" 2>/dev/null || true
    [[ -n $DEV_PID ]] && kill "$DEV_PID" 2>/dev/null && wait "$DEV_PID" 2>/dev/null || true
    if [[ $KEEP -eq 1 ]]; then log "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

start_dev() {
    local n=$1 data=$WORK/repo-$1 base try
    for try in 1 2 3 4 5; do
        base=$((20000 + RANDOM % 20000))
        "$CAIRN_BIN" dev --nodes "$n" --data "$data" --listen "127.0.0.1:$base" >"$WORK/dev-$n.log" 2>&1 &
        DEV_PID=$!
        local deadline=$((SECONDS + 60))
        while kill -0 "$DEV_PID" 2>/dev/null && ((SECONDS < deadline)); do
            if grep -q "is serving" "$WORK/dev-$n.log"; then
                URL=http://127.0.0.1:$base
                return 0
            fi
            sleep 0.2
        done
        kill "$DEV_PID" 2>/dev/null || true
        wait "$DEV_PID" 2>/dev/null || true
        rm -rf "$data"
    done
    die "cairn dev --nodes $n did not start (see $WORK/dev-$n.log)"
}

# profiled N ROW: one backup of c1 with perf sampling the client and the nodes.
profiled() {
    local n=$1 row=$2 t0 t1
    perf record -q -F "$FREQ" -o "$WORK/$n-$row-nodes.data" -p "$DEV_PID" 2>"$WORK/$n-$row-perf.log" &
    PERF_PID=$!
    sleep 0.5
    sync
    echo 3 >/proc/sys/vm/drop_caches
    t0=$(date +%s.%N)
    perf record -q -F "$FREQ" -o "$WORK/$n-$row-client.data" -- \
        "$CAIRN_BIN" backup "$WORK/c1" --env "$ENV1" --cluster "$URL" --json >"$WORK/$n-$row.json" 2>>"$WORK/$n-$row-perf.log"
    t1=$(date +%s.%N)
    kill -INT "$PERF_PID"
    wait "$PERF_PID" 2>/dev/null || true
    PERF_PID=""
    python3 "$REPORT_PY" --title "$n node(s), $row: $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }') s wall" \
        --client "$WORK/$n-$row-client.data" --nodes "$WORK/$n-$row-nodes.data"
}

for n in $NODES; do
    log "$n node(s): preparing the container"
    rm -rf "$WORK/c1"
    cp -a "$ROOTFS" "$WORK/c1"
    mkdir -p "$WORK/c1/var/lib/bench-app"
    cp "$DB" "$WORK/c1/var/lib/bench-app/app.db"
    python3 "$DATA_PY" append-log "$WORK/c1/var/log/bench-app.log" --mib 1 --seed "$SEED" >/dev/null
    start_dev "$n"
    log "$n node(s): full backup"
    profiled "$n" full
    python3 "$DATA_PY" change-db "$WORK/c1/var/lib/bench-app/app.db" --percent 1 --seed "$SEED" >/dev/null
    python3 "$DATA_PY" append-log "$WORK/c1/var/log/bench-app.log" --mib 4 --seed "$SEED" >/dev/null
    python3 "$DATA_PY" randfile "$WORK/c1/var/lib/bench-app/import-0002.bin" --mib 8 --seed "$SEED" >/dev/null
    sleep 1.1 # backup ids have one-second resolution
    log "$n node(s): after the day's changes"
    profiled "$n" change
    kill "$DEV_PID"
    wait "$DEV_PID" 2>/dev/null || true
    DEV_PID=""
done
