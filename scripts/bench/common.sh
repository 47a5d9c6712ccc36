# shellcheck shell=bash
# What scripts/rest-bench.sh and scripts/xml-bench.sh share; sourced by both right after their
# `set -euo pipefail`. It provides: usage (--help from the caller's header comment), log, die
# (exit 2), need_value, is_uint, need_count (option checks), find_tools (python3, the helper,
# the cairn binary BIN), install_cleanup (traps: on exit, Ctrl-C or SIGTERM the helper and
# `cairn dev` are stopped and the work directory removed unless KEEP=1), make_work (the work
# directory WORK with CDIR, DATA, DEV_LOG, and the generated containers), free_ports, start_dev
# (`cairn dev` in its own process group; DEV_PID), wait_dev_ready (DEV_READY_LINE) and
# run_helper_and_exit (the measurement).
#
# The caller sets: BENCH_NAME (rest-bench, xml-bench: in messages and the work directory's
# name), REPO_ROOT, HELPER (its Python helper, with the subcommands gen and run) and KEEP (0/1).
# CAIRN_BIN and TMPDIR are read from the environment.

# shellcheck disable=SC2154 # BENCH_NAME, REPO_ROOT, HELPER and KEEP are set by the caller
# shellcheck disable=SC2034 # BIN, CDIR and the like are for the caller

# The helpers import scripts/bench/benchlib.py: leave no __pycache__ in the tree.
export PYTHONDONTWRITEBYTECODE=1

WORK=""
DEV_PID=""
PY_PID=""
DEV_READY_LINE=""

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
log() { printf '[%s %s] %s\n' "$BENCH_NAME" "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf '[%s] ERROR: %s\n' "$BENCH_NAME" "$*" >&2; exit 2; }

need_value() { [[ $# -ge 2 && -n $2 ]] || die "$1 needs a value (try --help)"; }
is_uint() { [[ $1 =~ ^[0-9]+$ ]]; }

# need_count OPTION VALUE: dies unless VALUE is a whole number >= 1.
need_count() {
    if ! is_uint "$2" || ! (($2 >= 1)); then
        die "$1 $2: give a whole number >= 1"
    fi
}

# find_tools: python3 and $HELPER must be there; sets BIN to $CAIRN_BIN or the release build
# (warning when a source file is newer than that build).
find_tools() {
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
    local newer
    if [[ -z ${CAIRN_BIN:-} ]] && newer=$(find "$REPO_ROOT/crates" -name '*.rs' -newer "$BIN" -print -quit 2>/dev/null) &&
        [[ -n $newer ]]; then
        log "WARNING: $newer is newer than $BIN; rebuild with 'cargo build --release -j2 -p cairn' to measure the current code"
    fi
}

# ---------------------------------------------------------------- cleanup

stop_dev() {
    local pid=${DEV_PID:-}
    [[ -n $pid ]] || return 0
    DEV_PID=""
    # cairn dev runs in its own process group (setsid): signal the group, children included.
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    local _
    for _ in $(seq 1 150); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        log "cairn dev (pid $pid) did not stop within 15 s of SIGTERM; killing it"
        kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}

# shellcheck disable=SC2317 # run by the EXIT trap
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

install_cleanup() {
    trap cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
}

# ---------------------------------------------------------------- setup

# make_work CONTAINERS MIB: the work directory, and CONTAINERS containers of MIB MiB each in CDIR.
make_work() {
    WORK=$(mktemp -d "${TMPDIR:-/tmp}/cairn-$BENCH_NAME.XXXXXX")
    CDIR=$WORK/containers
    DATA=$WORK/data
    DEV_LOG=$WORK/dev.log
    mkdir -p "$CDIR" "$DATA"

    log "writing $1 container(s) of $2 MiB fresh random data each (+300 small files) under $CDIR"
    python3 "$HELPER" gen "$CDIR" --containers "$1" --mib "$2"
}

# free_ports EXTRA: prints the first of three consecutive free local ports (for the nodes),
# then EXTRA more free ports. They are released before cairn binds them; another process
# taking one meanwhile makes dev fail to start, which wait_dev_ready reports.
free_ports() {
    python3 - "$1" <<'EOF'
import socket
import sys

extra = int(sys.argv[1])

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
    more = [free() for _ in range(extra)]
    ok = all(held) and all(s is not None for s in more)
    out = " ".join(str(p) for p in [base] + [s.getsockname()[1] for s in more]) if ok else None
    for s in held + more:
        if s is not None:
            s.close()
    if ok:
        print(out)
        break
else:
    raise SystemExit("no free ports found")
EOF
}

# start_dev PORT ARGS...: `cairn dev` with 3 nodes from 127.0.0.1:PORT on the containers of
# CDIR, ARGS appended, in its own process group (see stop_dev), output to DEV_LOG; sets DEV_PID
# and exports a fresh CAIRN_DEV_PASSWORD.
start_dev() {
    local port=$1
    shift
    CAIRN_DEV_PASSWORD=$(python3 -c 'import secrets; print(secrets.token_urlsafe(18))')
    export CAIRN_DEV_PASSWORD
    setsid "$BIN" dev --data "$DATA" --listen "127.0.0.1:$port" --nodes 3 \
        --containers "$CDIR" "$@" >"$DEV_LOG" 2>&1 </dev/null &
    DEV_PID=$!
}

# wait_dev_ready -F|-E PATTERN: waits up to 120 s for a line of DEV_LOG matching PATTERN (a
# fixed string or an extended regular expression) and sets DEV_READY_LINE to it; dies when
# cairn dev exits first or takes longer.
wait_dev_ready() {
    local deadline=$((SECONDS + 120))
    DEV_READY_LINE=""
    until DEV_READY_LINE=$(grep -m1 "$1" -e "$2" "$DEV_LOG" 2>/dev/null); do
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
}

# ---------------------------------------------------------------- measure

# run_helper_and_exit ARGS...: `python3 $HELPER run ARGS`, then exits with its status (at
# least 1 when cairn dev is no longer running; the end of the dev log when not 0 or 1).
run_helper_and_exit() {
    # In the background so that a signal to this script stops the run at once (see cleanup).
    local rc=0
    python3 "$HELPER" run "$@" &
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
}
