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
export LC_ALL=C

CLIENTS=50
SECONDS_WINDOW=30
CONTAINERS=4
MIB=48
INTERVAL=0
CHANGE_MIB=0
KEEP=0
WORK=""
DEV_PID=""
PY_PID=""

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
log() { printf '[rest-bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf '[rest-bench] ERROR: %s\n' "$*" >&2; exit 2; }

need_value() { [[ $# -ge 2 && -n $2 ]] || die "$1 needs a value (try --help)"; }
is_uint() { [[ $1 =~ ^[0-9]+$ ]]; }

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
is_uint "$CLIENTS" && ((CLIENTS >= 1)) || die "--clients $CLIENTS: give a whole number >= 1"
is_uint "$SECONDS_WINDOW" && ((SECONDS_WINDOW >= 1)) || die "--seconds $SECONDS_WINDOW: give a whole number >= 1"
is_uint "$CONTAINERS" && ((CONTAINERS >= 1)) || die "--containers $CONTAINERS: give a whole number >= 1"
is_uint "$MIB" && ((MIB >= 1)) || die "--mib $MIB: give a whole number >= 1"
is_uint "$CHANGE_MIB" || die "--change-mib $CHANGE_MIB: give a whole number of MiB"
[[ $INTERVAL =~ ^[0-9]+([.][0-9]+)?$ ]] || die "--interval $INTERVAL: give seconds, e.g. 0.5"

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

WORK=$(mktemp -d "${TMPDIR:-/tmp}/cairn-rest-bench.XXXXXX")
CDIR=$WORK/containers
DATA=$WORK/data
DEV_LOG=$WORK/dev.log
mkdir -p "$CDIR" "$DATA"

log "writing $CONTAINERS container(s) of $MIB MiB fresh random data each (+300 small files) under $CDIR"
python3 "$HELPER" gen "$CDIR" --containers "$CONTAINERS" --mib "$MIB"

# Three consecutive free ports for the nodes, and one for the REST API. They are released
# before cairn binds them; another process taking one meanwhile makes dev fail to start,
# which is reported below.
read -r PORT RPORT < <(python3 - <<'EOF'
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
    rest = free()
    ok = all(held) and rest is not None
    out = f"{base} {rest.getsockname()[1]}" if ok else None
    for s in held + [rest]:
        if s is not None:
            s.close()
    if ok:
        print(out)
        break
else:
    raise SystemExit("no free ports found")
EOF
)
[[ -n ${PORT:-} && -n ${RPORT:-} ]] || die "could not find free local ports"

CAIRN_DEV_PASSWORD=$(python3 -c 'import secrets; print(secrets.token_urlsafe(18))')
export CAIRN_DEV_PASSWORD
URL=http://127.0.0.1:$RPORT/

log "starting cairn dev: nodes on 127.0.0.1:$PORT-$((PORT + 2)), REST API on $URL (log $DEV_LOG)"
setsid "$BIN" dev --data "$DATA" --listen "127.0.0.1:$PORT" --nodes 3 \
    --containers "$CDIR" --rest-listen "127.0.0.1:$RPORT" --xml-listen 127.0.0.1:0 >"$DEV_LOG" 2>&1 </dev/null &
DEV_PID=$!

deadline=$((SECONDS + 120))
until grep -q "REST API at $URL" "$DEV_LOG" 2>/dev/null; do
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
log "cairn dev is ready (pid $DEV_PID)"

# ---------------------------------------------------------------- measure

# In the background so that a signal to this script stops the run at once (see cleanup).
rc=0
python3 "$HELPER" run --url "$URL" --containers "$CDIR" --expect-vms "$CONTAINERS" \
    --clients "$CLIENTS" --seconds "$SECONDS_WINDOW" --interval "$INTERVAL" \
    --change-mib "$CHANGE_MIB" &
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
