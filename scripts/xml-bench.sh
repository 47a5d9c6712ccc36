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
export LC_ALL=C

CONNECTIONS=100
SECONDS_WINDOW=30
CONTAINERS=4
MIB=48
P99_MS=1000
KEEP=0
WORK=""
DEV_PID=""
PY_PID=""

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
log() { printf '[xml-bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf '[xml-bench] ERROR: %s\n' "$*" >&2; exit 2; }

need_value() { [[ $# -ge 2 && -n $2 ]] || die "$1 needs a value (try --help)"; }
is_uint() { [[ $1 =~ ^[0-9]+$ ]]; }

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
is_uint "$CONNECTIONS" && ((CONNECTIONS >= 1)) || die "--connections $CONNECTIONS: give a whole number >= 1"
is_uint "$SECONDS_WINDOW" && ((SECONDS_WINDOW >= 1)) || die "--seconds $SECONDS_WINDOW: give a whole number >= 1"
is_uint "$CONTAINERS" && ((CONTAINERS >= 1)) || die "--containers $CONTAINERS: give a whole number >= 1"
is_uint "$MIB" && ((MIB >= 1)) || die "--mib $MIB: give a whole number >= 1"
is_uint "$P99_MS" && ((P99_MS >= 1)) || die "--p99-ms $P99_MS: give a whole number of ms >= 1"

command -v python3 >/dev/null || die "python3 is needed (standard library only)"
[[ -f $HELPER ]] || die "missing $HELPER"

BIN=${CAIRN_BIN:-$REPO_ROOT/target/release/cairn}
if [[ ! -x $BIN ]]; then
    if [[ -n ${CAIRN_BIN:-} ]]; then
        die "CAIRN_BIN=$CAIRN_BIN is not an executable file"
    fi
    die "no cairn binary at $BIN: build it first with
    (cd $REPO_ROOT && cargo build --release -j2 -p cairn)
or point CAIRN_BIN at one"
fi
if [[ -z ${CAIRN_BIN:-} ]] && newer=$(find "$REPO_ROOT/crates" -name '*.rs' -newer "$BIN" -print -quit 2>/dev/null) &&
    [[ -n $newer ]]; then
    log "WARNING: $newer is newer than $BIN; rebuild with 'cargo build --release -j2 -p cairn' to measure the current code"
fi

# ---------------------------------------------------------------- cleanup

stop_dev() {
    local pid=${DEV_PID:-}
    [[ -n $pid ]] || return 0
    DEV_PID=""
    # cairn dev runs in its own process group (setsid): signal the group, children included.
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    local i
    for i in $(seq 1 150); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        log "cairn dev (pid $pid) did not stop within 15 s of SIGTERM; killing it"
        kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if [[ -n $PY_PID ]]; then
        kill -TERM "$PY_PID" 2>/dev/null || true
        wait "$PY_PID" 2>/dev/null || true
    fi
    stop_dev
    if [[ -n $WORK && -d $WORK ]]; then
        if ((KEEP)); then
            log "kept the work directory $WORK (dev log: $WORK/dev.log)"
        else
            rm -rf -- "$WORK"
        fi
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------- setup

WORK=$(mktemp -d "${TMPDIR:-/tmp}/cairn-xml-bench.XXXXXX")
CDIR=$WORK/containers
DATA=$WORK/data
DEV_LOG=$WORK/dev.log
mkdir -p "$CDIR" "$DATA"

log "writing $CONTAINERS container(s) of $MIB MiB fresh random data each (+300 small files) under $CDIR"
python3 "$HELPER" gen "$CDIR" --containers "$CONTAINERS" --mib "$MIB"

# Three consecutive free ports for the nodes. They are released before cairn binds them;
# another process taking one meanwhile makes dev fail to start, which is reported below.
# The XML and REST APIs listen on port 0 (the kernel picks a free one) and the XML address
# is read from dev's banner, so they cannot race.
PORT=$(python3 - <<'EOF'
import socket

def free(port=0):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind(("127.0.0.1", port))
        return s
    except OSError:
        s.close()
        return None

for _ in range(200):
    a = free()
    base = a.getsockname()[1]
    if base > 65530:
        a.close()
        continue
    held = [a] + [free(base + i) for i in (1, 2)]
    ok = all(held)
    for s in held:
        if s is not None:
            s.close()
    if ok:
        print(base)
        break
else:
    raise SystemExit("no free ports found")
EOF
)
[[ -n ${PORT:-} ]] || die "could not find free local ports"

CAIRN_DEV_PASSWORD=$(python3 -c 'import secrets; print(secrets.token_urlsafe(18))')
export CAIRN_DEV_PASSWORD
CLUSTER=http://127.0.0.1:$PORT

log "starting cairn dev: nodes on 127.0.0.1:$PORT-$((PORT + 2)), XML and REST APIs on free ports (log $DEV_LOG)"
setsid "$BIN" dev --data "$DATA" --listen "127.0.0.1:$PORT" --nodes 3 \
    --containers "$CDIR" --rest-listen 127.0.0.1:0 --xml-listen 127.0.0.1:0 >"$DEV_LOG" 2>&1 </dev/null &
DEV_PID=$!

XML_RE='^XML API \(Virtuozzo[^)]*\) at ([0-9.]+:[0-9]+)'
deadline=$((SECONDS + 120))
XML_ADDR=""
until [[ -n $XML_ADDR ]]; do
    line=$(grep -E -m1 "$XML_RE" "$DEV_LOG" 2>/dev/null || true)
    if [[ $line =~ $XML_RE ]]; then
        XML_ADDR=${BASH_REMATCH[1]}
        break
    fi
    if ! kill -0 "$DEV_PID" 2>/dev/null; then
        tail -n 20 "$DEV_LOG" >&2 || true
        die "cairn dev exited before it was ready (log above; $DEV_LOG)"
    fi
    if ((SECONDS > deadline)); then
        tail -n 20 "$DEV_LOG" >&2 || true
        die "cairn dev was not ready within 120 s (log above)"
    fi
    sleep 0.2
done
log "cairn dev is ready (pid $DEV_PID): XML API at $XML_ADDR"

# ---------------------------------------------------------------- measure

# In the background so that a signal to this script stops the run at once (see cleanup).
rc=0
python3 "$HELPER" run --addr "$XML_ADDR" --cluster "$CLUSTER" --cairn-bin "$BIN" \
    --containers "$CDIR" --expect-envs "$CONTAINERS" \
    --connections "$CONNECTIONS" --seconds "$SECONDS_WINDOW" --p99-ms "$P99_MS" &
PY_PID=$!
wait "$PY_PID" || rc=$?
PY_PID=""

if ! kill -0 "$DEV_PID" 2>/dev/null; then
    log "cairn dev is no longer running; the end of its log:"
    tail -n 20 "$DEV_LOG" >&2 || true
    ((rc != 0)) || rc=1
fi
if ((rc > 1)); then
    log "the measurement could not be made; the end of the dev log:"
    tail -n 20 "$DEV_LOG" >&2 || true
fi
exit "$rc"
