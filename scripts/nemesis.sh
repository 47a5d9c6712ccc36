#!/usr/bin/env bash
# A Jepsen-style run: a real cluster of `cairn node` processes on this machine under faults
# (kill -9, SIGSTOP, a flipped byte in a pack, a full disk, a skewed clock, a node added and
# removed, network partitions between nodes in namespaces of their own) while clients back
# up, restore, delete, collect garbage and scrub; every operation goes to a history, and a
# checker judges it once every fault is healed.
#
# Usage: scripts/nemesis.sh [--nodes N] [--minutes M] [--seed S] [--envs E] [--disk-mib MiB]
#                           [--faults K,K,...] [--keep] [-h|--help]
#
#   --nodes N     voters (3..=7, default 5); replication factor 3
#   --minutes M   how long the workload and the faults run (default 3); healing and checking
#                 come after
#   --seed S      seeds every choice (default: the time; printed with the command to rerun)
#   --envs E      environments, each with its own client (default 3)
#   --disk-mib N  size of each node's tmpfs data dir when run as root (default 1024)
#   --faults K,…  only these fault kinds: kill, pause, corrupt, disk-full, clock, membership,
#                 partition
#                 (default all; e.g. leave out disk-full to look past a known defect)
#   --keep        keep the run directory even when the run passes
#
# Environment: CAIRN_BIN (default: the debug build next to the harness, built here with
# `cargo build -j2`), CARGO_PROFILE (dev or release, default dev).
#
# Output: the seed and the command to reproduce, anomalies and lost backups, then one summary
# line ending in `lost = N`. Exit status: 0 nothing lost and no anomaly, 1 otherwise (the run
# directory with history.jsonl and the node logs is kept and printed), 2 the run could not be
# made. See scripts/README.md for what is checked and what is not injected.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

case "${1:-}" in -h|--help) sed -n '2,28p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;; esac

profile=${CARGO_PROFILE:-dev}
flag=()
out=debug
if [ "$profile" = release ]; then flag=(--release); out=release; fi
cargo build -j2 "${flag[@]}" -p cairn --bin cairn -p cairn-tests --bin nemesis
export CAIRN_BIN=${CAIRN_BIN:-$PWD/target/$out/cairn}
if [ "$(id -u)" = 0 ] && ! [ -e /usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1 ]; then
  echo "nemesis: libfaketime is not installed; clock faults are skipped (apt-get install -y faketime)" >&2
fi
exec "target/$out/nemesis" "$@"
