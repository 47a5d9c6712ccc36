#!/usr/bin/env bash
# A hundred concurrent connections to the XML API (Virtuozzo Agent backupm) each running
# list/get_info while a backup reports progress: every request must be answered and the
# 99th percentile latency must stay within one second.
#
# Usage: scripts/xml-bench.sh [--connections N] [--seconds N] [--containers N] [--mib N]
#                             [--p99-ms N] [--keep] [-h|--help]
#
#   --connections N  concurrent client connections, each with its own TCP connection and
#                    login, one request in flight, no pause between requests (default 100)
#   --seconds N      length of the measurement window (default 30)
#   --containers N   container directories, i.e. environments, backed up in turn (default 4)
#   --mib N          MiB of fresh random data per container, in three files, next to 300
#                    small files (default 48)
#   --p99-ms N       the highest 99th percentile latency that passes, in ms (default 1000)
#   --keep           keep the work directory (containers, cluster data, dev log) afterwards
#
# Environment:
#   CAIRN_BIN  the cairn binary (default target/release/cairn; build it with
#              `cargo build --release -j2 -p cairn`)
#   TMPDIR     where the work directory is made (default /tmp)
#
# It starts `cairn dev` (3 storage nodes, an agent whose environments are the generated
# containers, the XML API and the REST API) on free local ports, finds the environments'
# EIDs with `cairn envs list --json`, backs each one up once over the XML API, then for the
# window keeps one more XML connection running backup_env with progress="on" back to back
# over the environments (after changing 64 bytes of one file of the container), while the
# clients alternate `list` of an EID and `get_info` of a known backup. It prints connections,
# requests, requests/s, failures, latency p50/p90/p99/max, the backups completed and the
# progress packets received, and PASS or FAIL. Exit status: 0 PASS, 1 FAIL, 2 the run could
# not be made.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/.." && pwd)
HELPER=$SCRIPT_DIR/bench/xml_clients.py
BENCH_NAME=xml-bench
export LC_ALL=C
# shellcheck source-path=SCRIPTDIR source=bench/common.sh
source "$SCRIPT_DIR/bench/common.sh"

CONNECTIONS=100
SECONDS_WINDOW=30
CONTAINERS=4
MIB=48
P99_MS=1000
KEEP=0

while [[ $# -gt 0 ]]; do
    case $1 in
    --connections) need_value "$@"; CONNECTIONS=$2; shift ;;
    --seconds) need_value "$@"; SECONDS_WINDOW=$2; shift ;;
    --containers) need_value "$@"; CONTAINERS=$2; shift ;;
    --mib) need_value "$@"; MIB=$2; shift ;;
    --p99-ms) need_value "$@"; P99_MS=$2; shift ;;
    --keep) KEEP=1 ;;
    -h | --help) usage; exit 0 ;;
    *) die "unknown argument '$1' (try --help)" ;;
    esac
    shift
done
need_count --connections "$CONNECTIONS"
need_count --seconds "$SECONDS_WINDOW"
need_count --containers "$CONTAINERS"
need_count --mib "$MIB"
if ! is_uint "$P99_MS" || ! ((P99_MS >= 1)); then
    die "--p99-ms $P99_MS: give a whole number of ms >= 1"
fi

find_tools
install_cleanup

# ---------------------------------------------------------------- setup

make_work "$CONTAINERS" "$MIB"

# Three consecutive free ports for the nodes. The XML and REST APIs listen on port 0 (the
# kernel picks a free one) and the XML address is read from dev's banner, so they cannot race.
PORT=$(free_ports 0)
[[ -n ${PORT:-} ]] || die "could not find free local ports"
CLUSTER=http://127.0.0.1:$PORT

log "starting cairn dev: nodes on 127.0.0.1:$PORT-$((PORT + 2)), XML and REST APIs on free ports (log $DEV_LOG)"
start_dev "$PORT" --rest-listen 127.0.0.1:0 --xml-listen 127.0.0.1:0
XML_RE='^XML API \(Virtuozzo[^)]*\) at ([0-9.]+:[0-9]+)'
wait_dev_ready -E "$XML_RE"
[[ $DEV_READY_LINE =~ $XML_RE ]] || die "cannot read the XML API's address from: $DEV_READY_LINE"
XML_ADDR=${BASH_REMATCH[1]}
log "cairn dev is ready (pid $DEV_PID): XML API at $XML_ADDR"

# ---------------------------------------------------------------- measure

run_helper_and_exit --addr "$XML_ADDR" --cluster "$CLUSTER" --cairn-bin "$BIN" \
    --containers "$CDIR" --expect-envs "$CONTAINERS" \
    --connections "$CONNECTIONS" --seconds "$SECONDS_WINDOW" --p99-ms "$P99_MS"
