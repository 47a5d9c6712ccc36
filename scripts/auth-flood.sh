#!/usr/bin/env bash
# An unauthenticated flood of the gateway (REST and XML API) while a logged-in client works:
# the gateway's memory must stay within a bound and every logged-in request must be answered.
#
# Usage: scripts/auth-flood.sh [--attempts N] [--concurrency N] [--xml-flooders N]
#                              [--budget-mib N] [--keep] [-h|--help]
#
#   --attempts N      REST requests with HTTP Basic and a wrong password, half for user admin
#                     and half for names that do not exist (default 10000)
#   --concurrency N   connections the REST attempts are spread over (default 64)
#   --xml-flooders N  XML connections writing `x\0` (a malformed packet) as fast as the
#                     gateway takes it and never reading (default 16)
#   --budget-mib N    how much the process's resident size may grow during the flood over its
#                     value just before it (default 128)
#   --abort-mib N     stop the floods (FAIL) once the resident size passes N MiB, to spare the
#                     machine when the gateway does not hold (default 4096)
#   --keep            keep the work directory (container, cluster data, dev log) afterwards
#
# Environment:
#   CAIRN_BIN  the cairn binary (default target/release/cairn; build it with
#              `cargo build --release -j2 -p cairn`)
#   TMPDIR     where the work directory is made (default /tmp)
#
# It starts `cairn dev` (3 storage nodes, an agent with one small container, the REST and
# XML APIs, a known random CAIRN_DEV_PASSWORD) on free local ports, logs one client in (REST
# and XML), resets the process's peak resident size, then runs the two floods while that
# client alternates REST `GET /vdc` and XML `get_config`, until every REST attempt has been
# answered. It prints the memory of the `cairn dev` process (VmRSS before, VmHWM during, the
# RSS over time), what the floods got (401, 503 busy, packets written, what the gateway's
# /metrics counted), the logged-in client's requests and latency percentiles, and PASS or
# FAIL. Exit status: 0 PASS, 1 FAIL, 2 the run could not be made.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/.." && pwd)
HELPER=$SCRIPT_DIR/bench/auth_flood.py
BENCH_NAME=auth-flood
export LC_ALL=C
# shellcheck source-path=SCRIPTDIR source=bench/common.sh
source "$SCRIPT_DIR/bench/common.sh"

ATTEMPTS=10000
CONCURRENCY=64
XML_FLOODERS=16
BUDGET_MIB=128
ABORT_MIB=4096
KEEP=0

while [[ $# -gt 0 ]]; do
    case $1 in
    --attempts) need_value "$@"; ATTEMPTS=$2; shift ;;
    --concurrency) need_value "$@"; CONCURRENCY=$2; shift ;;
    --xml-flooders) need_value "$@"; XML_FLOODERS=$2; shift ;;
    --budget-mib) need_value "$@"; BUDGET_MIB=$2; shift ;;
    --abort-mib) need_value "$@"; ABORT_MIB=$2; shift ;;
    --keep) KEEP=1 ;;
    -h | --help) usage; exit 0 ;;
    *) die "unknown argument '$1' (try --help)" ;;
    esac
    shift
done
need_count --attempts "$ATTEMPTS"
need_count --concurrency "$CONCURRENCY"
is_uint "$XML_FLOODERS" || die "--xml-flooders $XML_FLOODERS: give a whole number"
need_count --budget-mib "$BUDGET_MIB"
need_count --abort-mib "$ABORT_MIB"

find_tools
install_cleanup

# ---------------------------------------------------------------- setup

# One small container: the agent needs an environment, the flood does not need data.
make_work 1 1

# Three consecutive free ports for the nodes, and one for the REST API; the XML API listens
# on port 0 and its address is read from dev's banner.
read -r PORT RPORT < <(free_ports 1)
[[ -n ${PORT:-} && -n ${RPORT:-} ]] || die "could not find free local ports"
URL=http://127.0.0.1:$RPORT/

log "starting cairn dev: nodes on 127.0.0.1:$PORT-$((PORT + 2)), REST API on $URL (log $DEV_LOG)"
start_dev "$PORT" --rest-listen "127.0.0.1:$RPORT" --xml-listen 127.0.0.1:0
XML_RE='^XML API \(Virtuozzo[^)]*\) at ([0-9.]+:[0-9]+)'
wait_dev_ready -E "$XML_RE"
[[ $DEV_READY_LINE =~ $XML_RE ]] || die "cannot read the XML API's address from: $DEV_READY_LINE"
XML_ADDR=${BASH_REMATCH[1]}
log "cairn dev is ready (pid $DEV_PID): REST API at $URL, XML API at $XML_ADDR"

# ---------------------------------------------------------------- measure

run_helper_and_exit --rest "$URL" --xml "$XML_ADDR" --pid "$DEV_PID" \
    --attempts "$ATTEMPTS" --concurrency "$CONCURRENCY" --xml-flooders "$XML_FLOODERS" \
    --budget-mib "$BUDGET_MIB" --abort-mib "$ABORT_MIB"
