#!/usr/bin/env bash
# Runs the 3-node localhost cluster of cluster-config/ as background processes.
#
#   scripts/dev-cluster.sh up DIR       start node1..3 (data DIR/nodeN, logs DIR/nodeN.log)
#   scripts/dev-cluster.sh status DIR   each node's process state, then `cairn cluster status`
#   scripts/dev-cluster.sh down DIR     stop them (SIGTERM, then SIGKILL after 20 s)
#
# The binary is $CAIRN_BIN, else target/release/cairn, else target/debug/cairn, else
# `cairn` on PATH. `up` waits until the cluster has a leader and a placement (60 s at most).
set -euo pipefail

usage() { sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
[[ $# -eq 2 ]] || usage
cmd=$1
dir=$2
repo=$(cd "$(dirname "$0")/.." && pwd)

bin=${CAIRN_BIN:-}
if [[ -z $bin ]]; then
    for b in "$repo/target/release/cairn" "$repo/target/debug/cairn"; do
        if [[ -x $b ]]; then bin=$b; break; fi
    done
fi
bin=${bin:-$(command -v cairn || true)}
[[ -n $bin && -x $bin ]] || { echo "no cairn binary: run 'cargo build --release' or set CAIRN_BIN" >&2; exit 1; }

running() { [[ -f $dir/node$1.pid ]] && kill -0 "$(cat "$dir/node$1.pid")" 2>/dev/null; }

case $cmd in
up)
    mkdir -p "$dir"
    for i in 1 2 3; do
        if running "$i"; then
            echo "node$i already running (pid $(cat "$dir/node$i.pid"))"
            continue
        fi
        nohup "$bin" node --config "$repo/cluster-config/node$i.toml" --data "$dir/node$i" \
            >>"$dir/node$i.log" 2>&1 </dev/null &
        echo $! >"$dir/node$i.pid"
        echo "node$i started (pid $!, log $dir/node$i.log)"
    done
    deadline=$((SECONDS + 60))
    until out=$("$bin" --cluster http://127.0.0.1:7700 cluster status --json 2>/dev/null) &&
        grep -q '"leader": [0-9]' <<<"$out" && grep -q '"epoch": [1-9]' <<<"$out"; do
        if ((SECONDS > deadline)); then
            echo "the cluster did not form within 60 s; see $dir/node*.log" >&2
            exit 1
        fi
        for i in 1 2 3; do
            running "$i" || { echo "node$i exited; see $dir/node$i.log" >&2; tail -n 5 "$dir/node$i.log" >&2; exit 1; }
        done
        sleep 0.2
    done
    "$bin" --cluster http://127.0.0.1:7700 cluster status
    ;;
status)
    for i in 1 2 3; do
        if running "$i"; then echo "node$i: running (pid $(cat "$dir/node$i.pid"))"; else echo "node$i: stopped"; fi
    done
    "$bin" --cluster http://127.0.0.1:7700 cluster status || true
    ;;
down)
    for i in 1 2 3; do
        if running "$i"; then kill -TERM "$(cat "$dir/node$i.pid")"; fi
    done
    for i in 1 2 3; do
        for _ in $(seq 100); do running "$i" || break; sleep 0.2; done
        if running "$i"; then kill -KILL "$(cat "$dir/node$i.pid")"; fi
        rm -f "$dir/node$i.pid"
        echo "node$i stopped"
    done
    ;;
*) usage ;;
esac
