#!/usr/bin/env bash
# Fifty concurrent clients polling statuses over the REST API while backups run: every
# request must be answered and the 99th percentile latency must stay within one second.
#
# Usage: scripts/rest-bench.sh [--clients N] [--seconds N] [--containers N] [--mib N]
#                              [--change-mib N] [--interval S] [--keep] [-h|--help]
#
#   --clients N     concurrent polling clients, each on its own HTTP/1.1 connection (default 50)
#   --seconds N     length of the measurement window (default 30)
#   --containers N  container directories, i.e. VMs, backed up over and over (default 4)
#   --mib N         MiB of fresh random data per container, in three files, next to 300
#                   small files (default 48)
#   --change-mib N  before each re-backup of a container, write N MiB of new random data over
#                   one of its big files (default 0: change 64 bytes)
#   --interval S    pause of each client between two requests (default 0: the next request
#                   goes out as soon as the previous answer is read)
#   --keep          keep the work directory (containers, cluster data, dev log) afterwards
#
# Environment:
#   CAIRN_BIN  the cairn binary (default target/release/cairn; build it with
#              `cargo build --release -j2 -p cairn`)
#   TMPDIR     where the work directory is made (default /tmp)
#
# It starts `cairn dev` (3 storage nodes, an agent whose environments are the generated
# containers, the REST API) on free local ports, finds the VMs by walking the API from GET /,
# keeps a backup running on every VM for the whole window (a new one, after changing a few
# bytes of one file, as soon as the last finishes), and meanwhile has the clients GET the
# backups' status URIs. It prints requests, requests/s, failures, latency p50/p90/p99/max,
# the backups, and PASS or FAIL. Exit status: 0 PASS, 1 FAIL, 2 the run could not be made.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/.." && pwd)
HELPER=$SCRIPT_DIR/bench/rest_pollers.py
BENCH_NAME=rest-bench
export LC_ALL=C
# shellcheck source-path=SCRIPTDIR source=bench/common.sh
source "$SCRIPT_DIR/bench/common.sh"

CLIENTS=50
SECONDS_WINDOW=30
CONTAINERS=4
MIB=48
INTERVAL=0
CHANGE_MIB=0
KEEP=0

while [[ $# -gt 0 ]]; do
    case $1 in
    --clients) need_value "$@"; CLIENTS=$2; shift ;;
    --seconds) need_value "$@"; SECONDS_WINDOW=$2; shift ;;
    --containers) need_value "$@"; CONTAINERS=$2; shift ;;
    --mib) need_value "$@"; MIB=$2; shift ;;
    --interval) need_value "$@"; INTERVAL=$2; shift ;;
    --change-mib) need_value "$@"; CHANGE_MIB=$2; shift ;;
    --keep) KEEP=1 ;;
    -h | --help) usage; exit 0 ;;
    *) die "unknown argument '$1' (try --help)" ;;
    esac
    shift
done
need_count --clients "$CLIENTS"
need_count --seconds "$SECONDS_WINDOW"
need_count --containers "$CONTAINERS"
need_count --mib "$MIB"
is_uint "$CHANGE_MIB" || die "--change-mib $CHANGE_MIB: give a whole number of MiB"
[[ $INTERVAL =~ ^[0-9]+([.][0-9]+)?$ ]] || die "--interval $INTERVAL: give seconds, e.g. 0.5"

find_tools
install_cleanup

# ---------------------------------------------------------------- setup

make_work "$CONTAINERS" "$MIB"

# Three consecutive free ports for the nodes, and one for the REST API.
read -r PORT RPORT < <(free_ports 1)
[[ -n ${PORT:-} && -n ${RPORT:-} ]] || die "could not find free local ports"
URL=http://127.0.0.1:$RPORT/

log "starting cairn dev: nodes on 127.0.0.1:$PORT-$((PORT + 2)), REST API on $URL (log $DEV_LOG)"
start_dev "$PORT" --rest-listen "127.0.0.1:$RPORT" --xml-listen 127.0.0.1:0
wait_dev_ready -F "REST API at $URL"
log "cairn dev is ready (pid $DEV_PID)"

# ---------------------------------------------------------------- measure

run_helper_and_exit --url "$URL" --containers "$CDIR" --expect-vms "$CONTAINERS" \
    --clients "$CLIENTS" --seconds "$SECONDS_WINDOW" --interval "$INTERVAL" \
    --change-mib "$CHANGE_MIB"
