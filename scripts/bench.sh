#!/usr/bin/env bash
# Benchmark Cairn side by side with restic, rustic and borg on the same real data in the same run.
#
# Usage: scripts/bench.sh [--data minbase|heavy] [--runs N] [--seed S] [--db-mib N]
#                         [--quick] [--keep] [--skip-cairn] [-h|--help]
#
#   --data minbase  a `debootstrap --variant=minbase` root file system (the default)
#   --data heavy    a debootstrap root with python3, perl, nginx, git and sqlite3 (~400 MB)
#                   holding a generated SQLite database; row 3 updates 1 % of its rows at
#                   random, grows a log by 4 MiB and adds a new 8 MiB file
#   --runs N        repeat every row N times per tool, each run on fresh stores (default 3);
#                   the tables show medians and [min-max]
#   --seed S        seed of the generated data (database, changes, random files; default 1)
#   --db-mib N      size of the generated database with --data heavy (default 140)
#   --quick         back up only /usr of the root file system (plus the log and the database)
#   --keep          keep the sources, repositories and restored trees of the last run
#   --skip-cairn    do not build or run cairn (its columns read n/a)
#
# Environment:
#   CAIRN_BENCH_DIR     cache and work directory (default /var/tmp/cairn-bench)
#   CAIRN_BIN           use this cairn binary instead of `cargo build --release -j2 -p cairn`
#   CAIRN_BENCH_SUITE   Debian suite to debootstrap (default: this machine's VERSION_CODENAME)
#   CAIRN_BENCH_MIRROR  Debian mirror (default: the one configured in /etc/apt/sources.list*)
#
# rustic is measured when `rustic` is on PATH (its column reads n/a otherwise). The root file
# system is built once and cached in $CAIRN_BENCH_DIR/rootfs-<suite>[-heavy], the database in
# $CAIRN_BENCH_DIR/db-<seed>-<MiB>.sqlite. Each run copies them, then measures five rows for each
# tool (see scripts/README.md): wall seconds, CPU seconds and peak RSS (GNU time; for cairn also
# its node processes) and stored bytes, and the report prints medians and ratios.
# Must run as root (debootstrap, device nodes, owners on restore, dropping page caches).
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/.." && pwd)
BENCH_DIR=${CAIRN_BENCH_DIR:-/var/tmp/cairn-bench}
RUN=$BENCH_DIR/run
LOGS=$RUN/logs
DATA_PY=$SCRIPT_DIR/bench/bench_data.py
TIME_BIN=/usr/bin/time
TOOLS=(cairn cairn3 restic rustic borg)
OTHERS=(restic rustic borg)
ROWS=(full unchanged change second restore)
declare -A ROW_LABEL=(
    [full]="1 full backup (fresh repo)"
    [unchanged]="2 unchanged re-backup"
    [change]="3 after small change"
    [second]="4 2nd container, same repo"
    [restore]="5 restore c1 latest"
)
ENV1=11111111-1111-4111-8111-111111111111
ENV2=22222222-2222-4222-8222-222222222222
export RESTIC_PASSWORD=cairn-bench # benchmark repositories only
export RUSTIC_PASSWORD=cairn-bench
export BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK=yes
export BORG_RELOCATED_REPO_ACCESS_IS_OK=yes
export PYTHONDONTWRITEBYTECODE=1
export LC_ALL=C

DATA=minbase
RUNS=3
SEED=1
DB_MIB=140
QUICK=0
KEEP=0
SKIP_CAIRN=0
NODE_PID=""
CLUSTER_URL=""
CLUSTER3_PID=""
CLUSTER3_URL=""
CACHE_POLICY=""
HWM_RESET=1
RUNI=0

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
die() { printf '[bench] ERROR: %s\n' "$*" >&2; exit 1; }
need_value() { [[ $# -ge 2 && -n $2 ]] || die "$1 needs a value (try --help)"; }

while [[ $# -gt 0 ]]; do
    case $1 in
    --data)
        need_value "$@"
        DATA=$2
        shift
        ;;
    --runs)
        need_value "$@"
        RUNS=$2
        shift
        ;;
    --seed)
        need_value "$@"
        SEED=$2
        shift
        ;;
    --db-mib)
        need_value "$@"
        DB_MIB=$2
        shift
        ;;
    --quick) QUICK=1 ;;
    --keep) KEEP=1 ;;
    --skip-cairn) SKIP_CAIRN=1 ;;
    -h | --help) usage; exit 0 ;;
    *) echo "bench.sh: unknown argument '$1' (try --help)" >&2; exit 2 ;;
    esac
    shift
done
[[ $DATA == minbase || $DATA == heavy ]] || die "--data $DATA: give minbase or heavy"
[[ $RUNS =~ ^[0-9]+$ ]] && ((RUNS >= 1)) || die "--runs $RUNS: give a whole number >= 1"
[[ $DB_MIB =~ ^[0-9]+$ ]] && ((DB_MIB >= 1)) || die "--db-mib $DB_MIB: give a whole number >= 1"
[[ $SEED =~ ^[A-Za-z0-9._-]+$ ]] || die "--seed $SEED: use letters, digits, '.', '_' or '-'"
if [[ $DATA == heavy ]]; then ROW_LABEL[change]="3 after the day's changes"; fi

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
warn() { printf '[bench %s] WARNING: %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# ---------------------------------------------------------------- cleanup

stop_cluster3() {
    local pid=${CLUSTER3_PID:-}
    [[ -n $pid ]] || return 0
    kill -TERM "$pid" 2>/dev/null || true
    local i
    for i in $(seq 1 100); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    CLUSTER3_PID=""
}

stop_node() {
    stop_cluster3
    [[ -n $NODE_PID ]] || return 0
    if kill -0 "$NODE_PID" 2>/dev/null; then
        kill -TERM "$NODE_PID" 2>/dev/null || true
        local i
        for i in $(seq 1 100); do
            kill -0 "$NODE_PID" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$NODE_PID" 2>/dev/null; then
            warn "cairn node $NODE_PID ignored SIGTERM for 10s; sending SIGKILL"
            kill -KILL "$NODE_PID" 2>/dev/null || true
        fi
    fi
    wait "$NODE_PID" 2>/dev/null || true
    NODE_PID=""
}

# Unmount anything left mounted below $1 (an interrupted debootstrap leaves /proc, /sys).
umount_under() {
    local dir=$1 m
    [[ -d $dir ]] || return 0
    dir=$(cd "$dir" && pwd -P)
    while read -r m; do
        umount -l "$m" 2>/dev/null || true
    done < <(awk -v d="$dir" '$2 == d || index($2, d "/") == 1 { print $2 }' /proc/self/mounts | sort -r)
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    stop_node
    umount_under "$BENCH_DIR/rootfs-${SUITE:-x}.tmp"
    umount_under "$BENCH_DIR/rootfs-${SUITE:-x}-heavy.tmp"
    rm -f "$BENCH_DIR/db-$SEED-$DB_MIB.sqlite.tmp"
    if [[ $KEEP -eq 0 && -d $RUN ]]; then
        rm -rf "${RUN:?}/src" "${RUN:?}/repo" "${RUN:?}/restore" "${RUN:?}/home"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------- setup

[[ $(id -u) -eq 0 ]] || die "run as root (debootstrap, device nodes, owners, drop_caches)"

mkdir -p "$BENCH_DIR"
exec 9>"$BENCH_DIR/.lock"
flock -n 9 || die "another bench.sh holds $BENCH_DIR/.lock"

ensure_tools() {
    local need=()
    command -v debootstrap >/dev/null || need+=(debootstrap)
    command -v restic >/dev/null || need+=(restic)
    command -v borg >/dev/null || need+=(borgbackup)
    command -v jq >/dev/null || need+=(jq)
    command -v flock >/dev/null || need+=(util-linux)
    [[ -x $TIME_BIN ]] || need+=(time)
    command -v python3 >/dev/null || need+=(python3)
    if [[ ${#need[@]} -gt 0 ]]; then
        log "installing ${need[*]} from Debian's packages"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
    fi
}

# The Debian mirror apt already uses for this suite (the only network we may have).
find_mirror() {
    local f m
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
        [[ -f $f ]] || continue
        if [[ $f == *.sources ]]; then
            m=$(awk -v s="$SUITE" 'BEGIN { RS = ""; FS = "\n" }
                {
                    deb = 0; suite = 0; uri = ""
                    for (i = 1; i <= NF; i++) {
                        if ($i ~ /^Types:/ && $i ~ /[ \t]deb([ \t]|$)/) deb = 1
                        if ($i ~ /^Suites:/ && (" " substr($i, 8) " ") ~ ("[ \t]" s "[ \t]")) suite = 1
                        if ($i ~ /^URIs:/) { split(substr($i, 6), u, /[ \t]+/); for (j in u) if (u[j] != "" && uri == "") uri = u[j] }
                    }
                    if (deb && suite && uri != "") { print uri; exit }
                }' "$f")
        else
            m=$(sed -E 's/\[[^]]*\]//' "$f" | awk -v s="$SUITE" '$1 == "deb" && $3 == s { print $2; exit }')
        fi
        if [[ -n $m ]]; then
            echo "${m%/}"
            return
        fi
    done
    echo "http://deb.debian.org/debian"
}

# The cached root file system of --data: minbase, or minbase plus the heavy packages.
build_rootfs() {
    local variant=(--variant=minbase) what="minbase"
    ROOTFS=$BENCH_DIR/rootfs-$SUITE
    if [[ $DATA == heavy ]]; then
        ROOTFS=$ROOTFS-heavy
        variant+=(--include=python3,perl,nginx,git,sqlite3)
        what="minbase + python3, perl, nginx, git, sqlite3"
    fi
    if [[ -f $ROOTFS.done && -d $ROOTFS ]]; then
        log "using cached root file system $ROOTFS"
        return
    fi
    local tmp=$ROOTFS.tmp dlog
    dlog=$BENCH_DIR/logs/debootstrap-$(basename "$ROOTFS").log
    umount_under "$tmp"
    rm -rf "$tmp" "$ROOTFS" "$ROOTFS.done"
    log "debootstrap ($what) $SUITE from $MIRROR (once; cached in $ROOTFS)"
    mkdir -p "$BENCH_DIR/logs"
    if ! debootstrap "${variant[@]}" "$SUITE" "$tmp" "$MIRROR" >"$dlog" 2>&1; then
        tail -n 20 "$dlog" >&2
        umount_under "$tmp"
        die "debootstrap failed (log: $dlog)"
    fi
    umount_under "$tmp"
    mv "$tmp" "$ROOTFS"
    date -u +%FT%TZ >"$ROOTFS.done"
}

# The generated database of --data heavy, made once per seed and size and cached.
build_db() {
    DB_CACHE=$BENCH_DIR/db-$SEED-$DB_MIB.sqlite
    [[ $DATA == heavy ]] || return 0
    if [[ -f $DB_CACHE.done && -f $DB_CACHE ]]; then
        log "using cached database $DB_CACHE"
        return
    fi
    rm -f "$DB_CACHE" "$DB_CACHE.done"
    log "generating a $DB_MIB MiB SQLite database (seed $SEED; cached in $DB_CACHE)"
    python3 "$DATA_PY" db "$DB_CACHE.tmp" --mib "$DB_MIB" --seed "$SEED" >&2 || die "generating the database failed"
    mv "$DB_CACHE.tmp" "$DB_CACHE"
    date -u +%FT%TZ >"$DB_CACHE.done"
}

build_cairn() {
    if [[ $SKIP_CAIRN -eq 1 ]]; then
        CAIRN_BIN=""
        return
    fi
    if [[ -n ${CAIRN_BIN:-} ]]; then
        [[ -x $CAIRN_BIN ]] || die "CAIRN_BIN=$CAIRN_BIN is not an executable"
        return
    fi
    log "cargo build --release -j2 -p cairn"
    if (cd "$REPO_ROOT" && cargo build --release -j2 -p cairn) >"$LOGS/cargo-build.log" 2>&1 &&
        [[ -x $REPO_ROOT/target/release/cairn ]]; then
        CAIRN_BIN=$REPO_ROOT/target/release/cairn
    else
        warn "cairn does not build; its column will read n/a (log: $LOGS/cargo-build.log)"
        grep -E '^(error|warning: unused)' "$LOGS/cargo-build.log" | head -n 10 >&2 || true
        CAIRN_BIN=""
    fi
}

start_node() {
    local data=$RUN/repo/cairn
    mkdir -p "$data"
    cat >"$RUN/cairn-node.toml" <<EOF
node_id = 1
listen = "127.0.0.1:0"
data_dir = "$data"
EOF
    "$CAIRN_BIN" node --config "$RUN/cairn-node.toml" >"$LOGS/cairn-node.log" 2>&1 9>&- &
    NODE_PID=$!
    local deadline=$((SECONDS + 60)) url=""
    while :; do
        if [[ -s $data/node.addr ]]; then
            url=$(head -n 1 "$data/node.addr" | tr -d '[:space:]')
            [[ $url =~ ^https?://[^/]+:[0-9]+/?$ ]] && break
        fi
        if ! kill -0 "$NODE_PID" 2>/dev/null; then
            warn "cairn node exited before serving:"
            tail -n 10 "$LOGS/cairn-node.log" >&2
            NODE_PID=""
            return 1
        fi
        if [[ $SECONDS -ge $deadline ]]; then
            warn "cairn node did not write $data/node.addr within 60s"
            stop_node
            return 1
        fi
        sleep 0.2
    done
    CLUSTER_URL=${url%/}
    log "cairn node $NODE_PID serves $CLUSTER_URL"
}

# A 3-node cluster (replication factor 3) in one `cairn dev` process on three consecutive
# free-looking ports; sets CLUSTER3_URL.
start_cluster3() {
    local data=$RUN/repo/cairn3 base try
    mkdir -p "$data"
    for try in 1 2 3 4 5; do
        base=$((20000 + RANDOM % 20000))
        "$CAIRN_BIN" dev --nodes 3 --data "$data" --listen "127.0.0.1:$base" \
            >"$LOGS/cairn3-dev.log" 2>&1 9>&- &
        CLUSTER3_PID=$!
        local deadline=$((SECONDS + 60))
        while kill -0 "$CLUSTER3_PID" 2>/dev/null && ((SECONDS < deadline)); do
            if grep -q "cluster (replication factor 3) is serving" "$LOGS/cairn3-dev.log"; then
                CLUSTER3_URL=http://127.0.0.1:$base
                log "cairn 3-node cluster $CLUSTER3_PID serves $CLUSTER3_URL"
                return 0
            fi
            sleep 0.2
        done
        stop_cluster3
        rm -rf "$data"/node*
    done
    warn "the cairn 3-node cluster did not start; see $LOGS/cairn3-dev.log"
    CLUSTER3_URL=""
    return 1
}

# ---------------------------------------------------------------- measuring

# Make every tool start cold: drop the page cache, or (when that is not allowed) read the
# tool's input once so every tool starts equally warm.
settle() {
    sync
    if [[ $CACHE_POLICY == dropped ]]; then
        echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true
    else
        local d
        for d in "$@"; do
            if [[ -e $d ]]; then tar -C "$d" -cf - . 2>/dev/null | cat >/dev/null; fi
        done
    fi
}

# stored_bytes DIR: bytes under DIR; for `cairn dev` only its nodes' data dirs (node1..node3),
# not the sample containers and the agent's state it keeps beside them.
stored_bytes() {
    local -a nodes=()
    if [[ -d $1/node1 ]]; then nodes=("$1"/node[0-9]*); fi
    if ((${#nodes[@]})); then
        du -scb "${nodes[@]}" 2>/dev/null | tail -n 1 | cut -f1
    else
        du -sb "$1" 2>/dev/null | cut -f1
    fi
}

# Per run, row and tool (key "row,tool,run"): wall seconds (or "fail"), the command's CPU
# seconds (user + sys, children included) and peak RSS (KiB) from GNU time, the cairn nodes'
# CPU seconds and peak RSS during the row (SCPU, SRSS), stored bytes after the row, and for
# cairn backups what its JSON summary says (bytes read and sent, chunks, files).
declare -A WALL=() CPU=() RSS=() SCPU=() SRSS=() SIZE=() NOTE=()
declare -A READ=() SENT=() CHUNKS=() FREAD=() FREUSED=()

# The server processes of a tool: the cairn node (1 node) or `cairn dev` (3 nodes, one
# process) and their descendants; none for the other tools.
server_pids() {
    local root=""
    case $1 in
    cairn) root=$NODE_PID ;;
    cairn3) root=$CLUSTER3_PID ;;
    esac
    [[ -n $root ]] || return 0
    ps -e -o pid=,ppid= | awk -v r="$root" '
        { kids[$2] = kids[$2] " " $1 }
        END {
            n = 1; q[1] = r
            for (i = 1; i <= n; i++) {
                print q[i]
                c = split(kids[q[i]], k, " ")
                for (j = 1; j <= c; j++) q[++n] = k[j]
            }
        }'
}

# CPU clock ticks (user + sys, of the process and its reaped children) of the PIDs given.
proc_ticks() {
    local pid line rest sum=0
    local -a f
    for pid in "$@"; do
        read -r line 2>/dev/null <"/proc/$pid/stat" || continue
        rest=${line##*) }
        read -r -a f <<<"$rest"
        # fields 14-17 of stat (utime stime cutime cstime) are 12-15 after "pid (comm) "
        sum=$((sum + f[11] + f[12] + f[13] + f[14]))
    done
    echo "$sum"
}

# Sum of the peak RSS (VmHWM, KiB) of the PIDs given.
proc_hwm() {
    local pid sum=0 v
    for pid in "$@"; do
        v=$(awk '/^VmHWM:/ { print $2 }' "/proc/$pid/status" 2>/dev/null || true)
        sum=$((sum + ${v:-0}))
    done
    echo "$sum"
}

CLK_TCK=$(getconf CLK_TCK)
SRV_PIDS=()
SRV_T0=0

# srv_begin TOOL: remembers the server processes' CPU ticks and resets their peak RSS to the
# current RSS (clear_refs 5), so that VmHWM afterwards is the peak during the row.
srv_begin() {
    mapfile -t SRV_PIDS < <(server_pids "$1")
    local pid
    for pid in "${SRV_PIDS[@]}"; do
        echo 5 2>/dev/null >"/proc/$pid/clear_refs" || HWM_RESET=0
    done
    SRV_T0=$(proc_ticks "${SRV_PIDS[@]}")
}

# srv_end KEY: the servers' CPU seconds and peak RSS since srv_begin, into SCPU and SRSS.
srv_end() {
    local key=$1 t1
    ((${#SRV_PIDS[@]})) || return 0
    t1=$(proc_ticks "${SRV_PIDS[@]}")
    SCPU[$key]=$(awk -v a="$SRV_T0" -v b="$t1" -v hz="$CLK_TCK" 'BEGIN { printf "%.2f", (b - a) / hz }')
    SRSS[$key]=$(proc_hwm "${SRV_PIDS[@]}")
}

# timed ROW TOOL STORE -- CMD...: runs CMD under GNU time with its output in the logs, records
# wall seconds, CPU seconds and peak RSS (and the servers' for cairn), and the stored bytes of
# STORE afterwards. Returns CMD's status.
timed() {
    local row=$1 tool=$2 store=$3 t0 t1 rc key base res
    shift 4
    key=$row,$tool,$RUNI
    base=$LOGS/r$RUNI-$row-$tool
    srv_begin "$tool"
    t0=$(date +%s.%N)
    set +e
    "$TIME_BIN" -o "$base.time" -f '%U %S %M' "$@" >"$base.out" 2>"$base.err"
    rc=$?
    set -e
    t1=$(date +%s.%N)
    srv_end "$key"
    WALL[$key]=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')
    # GNU time writes "Command exited with non-zero status N" before the format line
    res=$(tail -n 1 "$base.time" 2>/dev/null || true)
    if [[ $res =~ ^([0-9.]+)\ ([0-9.]+)\ ([0-9]+)$ ]]; then
        CPU[$key]=$(awk -v u="${BASH_REMATCH[1]}" -v s="${BASH_REMATCH[2]}" 'BEGIN { printf "%.2f", u + s }')
        RSS[$key]=${BASH_REMATCH[3]}
    fi
    SIZE[$key]=$(stored_bytes "$store")
    log "run $RUNI $row/$tool: ${WALL[$key]}s wall, ${CPU[$key]:-?} CPU s${SCPU[$key]:+ + nodes ${SCPU[$key]}}, rc $rc, store ${SIZE[$key]} bytes"
    return "$rc"
}

# status ROW TOOL RC OKCODES WARNCODES: turns an exit status into a note, "fail" replaces WALL,
# and the tool's later rows in this run are skipped (they would measure a broken state).
declare -A TOOL_FAILED=()
status() {
    local row=$1 tool=$2 rc=$3 ok=$4 warncodes=$5 key=$1,$2,$RUNI
    local err=$LOGS/r$RUNI-$row-$tool.err
    if [[ " $ok " == *" $rc "* ]]; then
        return 0
    elif [[ " $warncodes " == *" $rc "* ]]; then
        NOTE[$key]="warning (rc $rc)"
        warn "$row/$tool finished with warnings (rc $rc): $(tail -n 3 "$err" | tr '\n' ' ')"
        return 0
    fi
    NOTE[$key]="FAILED (rc $rc)"
    WALL[$key]=fail
    TOOL_FAILED[$tool]=1
    warn "run $RUNI $row/$tool FAILED (rc $rc): $(tail -n 5 "$err" | tr '\n' ' ')"
    return 1
}

declare -A CAIRN_ID=() CAIRN3_ID=() RESTIC_ID=() RUSTIC_ID=() BORG_ID=()

# runnable ROW TOOL: false (and the row marked "skip") when TOOL failed earlier in this run.
runnable() {
    [[ -n ${TOOL_FAILED[$2]:-} ]] || return 0
    WALL[$1,$2,$RUNI]=skip
    NOTE[$1,$2,$RUNI]="skipped: an earlier row failed in this run"
    return 1
}

# cairn_backup ROW TOOL URL SRC ENV KIND: one cairn backup; sets CB_ID to its id ("" if none).
CB_ID=""
cairn_backup() {
    local row=$1 tool=$2 url=$3 src=$4 env=$5 kind=$6 rc=0 key=$1,$2,$RUNI out id
    out=$LOGS/r$RUNI-$row-$tool.out
    CB_ID=""
    sleep 1.1 # backup ids have one-second resolution
    settle "$src" "$RUN/repo/$tool"
    timed "$row" "$tool" "$RUN/repo/$tool" -- \
        "$CAIRN_BIN" backup "$src" --env "$env" --cluster "$url" --type "$kind" --json || rc=$?
    status "$row" "$tool" "$rc" 0 3 || return 0
    id=$(jq -r '.id // empty' "$out" 2>/dev/null || true)
    if [[ -z $id ]]; then
        NOTE[$key]="no id in JSON"
        warn "$row/$tool printed no backup id"
        return 0
    fi
    READ[$key]=$(jq -r '.bytes_read // empty' "$out" 2>/dev/null || true)
    SENT[$key]=$(jq -r '.bytes_sent // empty' "$out" 2>/dev/null || true)
    CHUNKS[$key]=$(jq -r '.chunks_sent // empty' "$out" 2>/dev/null || true)
    FREAD[$key]=$(jq -r '.files_read // empty' "$out" 2>/dev/null || true)
    FREUSED[$key]=$(jq -r '.files_reused // empty' "$out" 2>/dev/null || true)
    CB_ID=$id
}

# backup_all ROW SRC ENV KIND NAME: one backup of SRC with each tool.
backup_all() {
    local row=$1 src=$2 env=$3 kind=$4 name=$5 rc
    if [[ -n $CLUSTER_URL ]] && runnable "$row" cairn; then
        cairn_backup "$row" cairn "$CLUSTER_URL" "$src" "$env" "$kind"
        CAIRN_ID[$name]=$CB_ID
    fi
    if [[ -n $CLUSTER3_URL ]] && runnable "$row" cairn3; then
        cairn_backup "$row" cairn3 "$CLUSTER3_URL" "$src" "$env" "$kind"
        CAIRN3_ID[$name]=$CB_ID
    fi

    if runnable "$row" restic; then
        settle "$src" "$RUN/repo/restic"
        rc=0
        timed "$row" restic "$RUN/repo/restic" -- \
            restic -r "$RUN/repo/restic" backup --json --tag "$name" "$src" || rc=$?
        if status "$row" restic "$rc" 0 3; then
            RESTIC_ID[$name]=$(jq -r 'select(.message_type == "summary") | .snapshot_id' \
                "$LOGS/r$RUNI-$row-restic.out" 2>/dev/null | tail -n 1)
        fi
    fi

    if [[ -n $RUSTIC ]] && runnable "$row" rustic; then
        settle "$src" "$RUN/repo/rustic"
        rc=0
        timed "$row" rustic "$RUN/repo/rustic" -- \
            "${RUSTIC_CMD[@]}" backup --json --tag "$name" "$src" || rc=$?
        if status "$row" rustic "$rc" 0 ""; then
            RUSTIC_ID[$name]=$(jq -r '.id // empty' "$LOGS/r$RUNI-$row-rustic.out" 2>/dev/null | tail -n 1)
            [[ -n ${RUSTIC_ID[$name]} ]] || NOTE[$row,rustic,$RUNI]="no snapshot id in JSON"
        fi
    fi

    if runnable "$row" borg; then
        settle "$src" "$RUN/repo/borg"
        rc=0
        timed "$row" borg "$RUN/repo/borg" -- \
            borg create "$RUN/repo/borg::$name" "$src" || rc=$?
        if status "$row" borg "$rc" 0 1; then
            BORG_ID[$name]=$name
        fi
    fi
}

# restore_all NAME: each tool restores the backup NAME of c1; each restore is checked and
# removed before the next tool runs.
restore_all() {
    local row=restore name=$1 rc
    mkdir -p "$RUN/restore"
    if [[ -n $CLUSTER_URL ]] && ! runnable "$row" cairn; then
        :
    elif [[ -n $CLUSTER_URL && -n ${CAIRN_ID[$name]:-} ]]; then
        settle "$RUN/repo/cairn"
        rc=0
        timed "$row" cairn "$RUN/repo/cairn" -- \
            "$CAIRN_BIN" restore "${CAIRN_ID[$name]}" "$RUN/restore/cairn" --cluster "$CLUSTER_URL" || rc=$?
        status "$row" cairn "$rc" 0 "" || true
        verify_restore cairn
    elif [[ -n $CLUSTER_URL ]]; then
        NOTE[$row,cairn,$RUNI]="no backup to restore"
    fi

    if [[ -n $CLUSTER3_URL ]] && ! runnable "$row" cairn3; then
        :
    elif [[ -n $CLUSTER3_URL && -n ${CAIRN3_ID[$name]:-} ]]; then
        settle "$RUN/repo/cairn3"
        rc=0
        timed "$row" cairn3 "$RUN/repo/cairn3" -- \
            "$CAIRN_BIN" restore "${CAIRN3_ID[$name]}" "$RUN/restore/cairn3" --cluster "$CLUSTER3_URL" || rc=$?
        status "$row" cairn3 "$rc" 0 "" || true
        verify_restore cairn3
    elif [[ -n $CLUSTER3_URL ]]; then
        NOTE[$row,cairn3,$RUNI]="no backup to restore"
    fi

    if ! runnable "$row" restic; then
        :
    elif [[ -n ${RESTIC_ID[$name]:-} ]]; then
        settle "$RUN/repo/restic"
        rc=0
        timed "$row" restic "$RUN/repo/restic" -- \
            restic -r "$RUN/repo/restic" restore "${RESTIC_ID[$name]}" --target "$RUN/restore/restic" || rc=$?
        status "$row" restic "$rc" 0 "" || true
        verify_restore restic
    else
        NOTE[$row,restic,$RUNI]="no snapshot to restore"
    fi

    if [[ -n $RUSTIC ]] && ! runnable "$row" rustic; then
        :
    elif [[ -n $RUSTIC && -n ${RUSTIC_ID[$name]:-} ]]; then
        settle "$RUN/repo/rustic"
        rc=0
        timed "$row" rustic "$RUN/repo/rustic" -- \
            "${RUSTIC_CMD[@]}" restore "${RUSTIC_ID[$name]}" "$RUN/restore/rustic" || rc=$?
        status "$row" rustic "$rc" 0 "" || true
        verify_restore rustic
    elif [[ -n $RUSTIC ]]; then
        NOTE[$row,rustic,$RUNI]="no snapshot to restore"
    fi

    if ! runnable "$row" borg; then
        :
    elif [[ -n ${BORG_ID[$name]:-} ]]; then
        settle "$RUN/repo/borg"
        mkdir -p "$RUN/restore/borg"
        rc=0
        # shellcheck disable=SC2016 # expanded by the inner sh
        timed "$row" borg "$RUN/repo/borg" -- \
            sh -c 'cd "$1" && exec borg extract "$2"' sh "$RUN/restore/borg" "$RUN/repo/borg::${BORG_ID[$name]}" || rc=$?
        status "$row" borg "$rc" 0 1 || true
        verify_restore borg
    else
        NOTE[$row,borg,$RUNI]="no archive to restore"
    fi
}

# Where a tool put the restored c1 (restic, rustic and borg recreate the absolute path).
restored_dir() {
    local d=$RUN/restore/$1
    if [[ -d $d$C1 ]]; then echo "$d$C1"; else echo "$d"; fi
}

# verify_restore TOOL: TOOL's restored tree against c1 as backed up; the tree is removed after
# its check (disk space: one restored tree at a time) unless this is the last run and --keep.
declare -A VERIFY_OK=() VERIFY_BAD=()
verify_restore() {
    local tool=$1 dir res key=restore,$1,$RUNI
    dir=$(restored_dir "$tool")
    if [[ -n ${WALL[$key]:-} && ${WALL[$key]} != fail && -d $RUN/restore/$tool ]]; then
        log "run $RUNI: verifying the $tool restore"
        if res=$("$SCRIPT_DIR/bench/verify-tree.sh" "$C1" "$dir" "$RUN/verify-$tool-r$RUNI"); then
            VERIFY_OK[$tool]=$((${VERIFY_OK[$tool]:-0} + 1))
            VERIFY_BAD[$tool,last]=$res
            rm -rf "${RUN:?}/verify-$tool-r$RUNI"
        else
            [[ -n ${VERIFY_BAD[$tool]:-} ]] || VERIFY_BAD[$tool]="run $RUNI: $res"
        fi
    fi
    if [[ $KEEP -eq 0 || $RUNI -lt $RUNS ]]; then rm -rf "${RUN:?}/restore/$tool"; fi
}

# ---------------------------------------------------------------- the containers

tree_stats() {
    local d=$1
    (cd "$d" && find . -printf '%y\n') | sort | uniq -c | awk '
        { n[$2] = $1 }
        END { printf "%d files, %d dirs, %d symlinks, %d device nodes, %d fifos/sockets", n["f"], n["d"], n["l"], n["c"] + n["b"], n["p"] + n["s"] }'
    printf ', %d hardlinked files' "$(find "$d" -type f -links +1 | wc -l)"
    printf ', %s bytes\n' "$(du -sb "$d" | cut -f1)"
}

# A log that grows between backups, present from the first backup on.
seed_log() {
    local f=$1/var/log/bench-app.log i
    mkdir -p "$(dirname "$f")"
    for i in $(seq 1 12000); do
        printf '2026-01-01T00:00:%05d app[4242]: request %d served in %d ms\n' "$i" "$i" $((i % 97))
    done >"$f"
}

# Container 1: the cached root file system (or its /usr with --quick), the log, and with
# --data heavy the generated database.
make_c1() {
    local c=$1
    if [[ $QUICK -eq 1 ]]; then cp -a "$ROOTFS/usr" "$c"; else cp -a "$ROOTFS" "$c"; fi
    seed_log "$c"
    if [[ $DATA == heavy ]]; then
        mkdir -p "$c/var/lib/bench-app"
        cp "$DB_CACHE" "$c/var/lib/bench-app/app.db"
    fi
}

# Row 3 with --data minbase: modify a few files, append to a log, add a small file.
small_change() {
    local c=$1 f
    # five existing files spread over the tree (deterministic choice)
    while read -r f; do
        printf '# changed by cairn bench (seed %s)\n' "$SEED" >>"$f"
    done < <(cd "$c" && find . -type f -links 1 -size +1k -size -256k -not -path './dev/*' | sort |
        awk '{ a[NR] = $0 } END { for (i = 1; i <= 5; i++) print a[int(NR * (2 * i - 1) / 10) + 1] }' |
        sed "s|^\.|$c|")
    for f in $(seq 1 800); do
        printf '2026-01-02T00:00:%05d app[4242]: request %d served in %d ms\n' "$f" "$f" $((f % 89))
    done >>"$c/var/log/bench-app.log"
    mkdir -p "$c/etc/bench"
    printf 'listen = 0.0.0.0:8080\nworkers = 4\n' >"$c/etc/bench/new-service.conf"
}

# Row 3 with --data heavy: 1 % of the database's rows updated at random, the log grown by
# 4 MiB, one new 8 MiB file of random bytes (all seeded).
day_change() {
    local c=$1
    {
        python3 "$DATA_PY" change-db "$c/var/lib/bench-app/app.db" --percent 1 --seed "$SEED"
        python3 "$DATA_PY" append-log "$c/var/log/bench-app.log" --mib 4 --seed "$SEED"
        python3 "$DATA_PY" randfile "$c/var/lib/bench-app/import-0002.bin" --mib 8 --seed "$SEED"
    } >>"$LOGS/r$RUNI-data.log" 2>&1 || die "changing c1 failed (log: $LOGS/r$RUNI-data.log)"
}

# Row 4: a second similar container: a copy of container 1 with a few differences.
make_second() {
    local c1=$1 c2=$2 doc biggest
    cp -a "$c1" "$c2"
    mkdir -p "$c2/etc"
    echo "bench-c2" >"$c2/etc/hostname"
    printf '%s\n' "22222222222242228222222222222222" >"$c2/etc/machine-id"
    # remove the documentation of the package with the largest docs
    for doc in "$c2/usr/share/doc" "$c2/share/doc"; do
        [[ -d $doc ]] || continue
        biggest=$(cd "$doc" && du -s -- */ | sort -n | tail -n 1 | cut -f2)
        rm -rf "${doc:?}/${biggest:?}"
        break
    done
    python3 "$DATA_PY" randfile "$c2/opt/app/data.bin" --mib 2 --seed "$SEED" >>"$LOGS/r$RUNI-data.log" 2>&1 ||
        die "writing c2's data failed (log: $LOGS/r$RUNI-data.log)"
    printf 'name = c2\n' >"$c2/opt/app/app.conf"
}

# ---------------------------------------------------------------- output

os_field() { sed -n "s/^$1=//p" /etc/os-release | tr -d '"'; }

machine_line() {
    local cpu mem
    cpu=$(awk -F': *' '/^model name/ { print $2; exit }' /proc/cpuinfo)
    mem=$(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)
    printf 'machine: %s cores, %s, %s RAM, kernel %s, %s, load at start %s, at end %s\n' "$(nproc)" \
        "${cpu:-unknown CPU}" "$mem" "$(uname -r)" "$(os_field PRETTY_NAME)" "$LOAD_START" \
        "$(cut -d' ' -f1-3 /proc/loadavg)"
}

# stat3 ARRAY ROW TOOL: "median min max count" over the runs' numeric values of ARRAY (WALL,
# CPU, ...) for ROW and TOOL, leaving out runs where that row failed or was skipped; nothing
# when no run has a value.
stat3() {
    local -n arr=$1
    local row=$2 tool=$3 r v
    local -a vals=()
    for ((r = 1; r <= RUNS; r++)); do
        case ${WALL[$row,${tool/cairn3r/cairn3},$r]:-} in fail | skip) continue ;; esac
        v=${arr[$row,$tool,$r]:-}
        if [[ $v =~ ^[0-9]+(\.[0-9]+)?$ ]]; then vals+=("$v"); fi
    done
    ((${#vals[@]})) || return 0
    printf '%s\n' "${vals[@]}" | sort -g | awk -v OFMT=%.4f '
        { a[NR] = $1 }
        END { m = (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2; print m, a[1], a[NR], NR }'
}

# med ARRAY ROW TOOL: the median, or "n/a".
med() {
    local s
    s=$(stat3 "$@")
    if [[ -n $s ]]; then echo "${s%% *}"; else echo n/a; fi
}

# failed ROW TOOL: in how many runs the row failed or was skipped after an earlier failure.
failed() {
    local r n=0
    for ((r = 1; r <= RUNS; r++)); do
        case ${WALL[$1,$2,$r]:-} in fail | skip) n=$((n + 1)) ;; esac
    done
    echo "$n"
}

# Is TOOL measured at all in this run (cairn built and started, rustic installed)?
measured() {
    case $1 in
    cairn | cairn3) [[ -n $CAIRN_BIN ]] ;;
    rustic) [[ -n $RUSTIC ]] ;;
    *) true ;;
    esac
}

# wall_cell ROW TOOL: "median [min-max]" of the wall seconds, "fail", or "n/a".
wall_cell() {
    local s m lo hi n f
    f=$(failed "$1" "$2")
    s=$(stat3 WALL "$1" "$2")
    if [[ -z $s ]]; then
        if ((f > 0)); then echo fail; else echo n/a; fi
        return
    fi
    read -r m lo hi n <<<"$s"
    if ((RUNS > 1)); then
        printf '%.2f [%.2f-%.2f]%s' "$m" "$lo" "$hi" "$( ((f == 0)) || echo " ${f}F")"
    else
        printf '%.2f' "$m"
    fi
}

num() { awk -v v="$1" -v f="${2:-%.2f}" 'BEGIN { if (v ~ /^[0-9.]+$/) printf f, v; else printf "n/a" }'; }

ratio() {
    awk -v a="$1" -v b="$2" 'BEGIN {
        if (a !~ /^[0-9.]+$/ || b !~ /^[0-9.]+$/ || b + 0 == 0) { print "n/a"; exit }
        printf "%.2f", a / b }'
}

# scaled VALUE DIVISOR FORMAT: VALUE / DIVISOR in FORMAT, or n/a.
scaled() { awk -v x="$1" -v d="$2" -v f="$3" 'BEGIN { if (x ~ /^[0-9.]+$/) printf f, x / d; else printf "n/a" }'; }

mib() { awk -v b="$1" 'BEGIN { if (b ~ /^[0-9.]+$/) printf "%.1f", b / 1048576; else printf "n/a" }'; }

# best ARRAY ROW: "tool median" of the other tool (restic, rustic, borg) with the lowest median.
best() {
    local tool m out="" bm=""
    for tool in "${OTHERS[@]}"; do
        m=$(med "$1" "$2" "$tool")
        [[ $m != n/a ]] || continue
        if [[ -z $bm ]] || awk -v a="$m" -v b="$bm" 'BEGIN { exit !(a < b) }'; then
            bm=$m
            out="$tool $m"
        fi
    done
    echo "${out:-n/a n/a}"
}

# Stored bytes of the 3-node cluster per replica (its three data dirs / 3), per run.
declare -A SIZE3=()
per_replica() {
    local k
    for k in "${!SIZE[@]}"; do
        if [[ $k == *,cairn3,* && ${SIZE[$k]} =~ ^[0-9]+$ ]]; then SIZE3[${k/,cairn3,/,cairn3r,}]=$((SIZE[$k] / 3)); fi
    done
}

print_time_table() {
    local row b bt bm
    local fmt='| %-28s | %-21s | %-21s | %-21s | %-21s | %-21s | %-6s | %7s | %7s |\n'
    # shellcheck disable=SC2059
    printf "$fmt" "row" "cairn 1 node" "cairn 3 nodes" "restic" "rustic" "borg" "best" "1n/best" "3n/best"
    # shellcheck disable=SC2059
    printf "$fmt" "----------------------------" "---------------------" "---------------------" \
        "---------------------" "---------------------" "---------------------" "------" "-------" "-------"
    for row in "${ROWS[@]}"; do
        b=$(best WALL "$row")
        bt=${b% *}
        bm=${b#* }
        # shellcheck disable=SC2059
        printf "$fmt" "${ROW_LABEL[$row]}" "$(wall_cell "$row" cairn)" "$(wall_cell "$row" cairn3)" \
            "$(wall_cell "$row" restic)" "$(wall_cell "$row" rustic)" "$(wall_cell "$row" borg)" "$bt" \
            "$(ratio "$(med WALL "$row" cairn)" "$bm")" "$(ratio "$(med WALL "$row" cairn3)" "$bm")"
    done
}

# print_res_table ARRAY FORMAT DIVISOR: medians of CPU seconds or peak RSS per tool, the cairn
# columns split into the client command and the node processes.
print_res_table() {
    local arr=$1 sarr=$2 f=$3 div=$4 row
    local fmt='| %-28s | %9s | %9s | %9s | %9s | %9s | %9s | %9s |\n'
    # shellcheck disable=SC2059
    printf "$fmt" "row" "1n client" "1n node" "3n client" "3n nodes" "restic" "rustic" "borg"
    # shellcheck disable=SC2059
    printf "$fmt" "----------------------------" "---------" "---------" "---------" "---------" "---------" "---------" "---------"
    for row in "${ROWS[@]}"; do
        # shellcheck disable=SC2059
        printf "$fmt" "${ROW_LABEL[$row]}" \
            "$(scaled "$(med "$arr" "$row" cairn)" "$div" "$f")" "$(scaled "$(med "$sarr" "$row" cairn)" "$div" "$f")" \
            "$(scaled "$(med "$arr" "$row" cairn3)" "$div" "$f")" "$(scaled "$(med "$sarr" "$row" cairn3)" "$div" "$f")" \
            "$(scaled "$(med "$arr" "$row" restic)" "$div" "$f")" "$(scaled "$(med "$arr" "$row" rustic)" "$div" "$f")" \
            "$(scaled "$(med "$arr" "$row" borg)" "$div" "$f")"
    done
}

print_size_table() {
    local row b bt bm
    local fmt='| %-28s | %9s | %11s | %9s | %9s | %9s | %-6s | %7s | %7s |\n'
    # shellcheck disable=SC2059
    printf "$fmt" "row" "cairn 1n" "3n/replica" "restic" "rustic" "borg" "best" "1n/best" "3n/best"
    # shellcheck disable=SC2059
    printf "$fmt" "----------------------------" "---------" "-----------" "---------" "---------" "---------" "------" "-------" "-------"
    for row in "${ROWS[@]}"; do
        [[ $row != restore ]] || continue
        b=$(best SIZE "$row")
        bt=${b% *}
        bm=${b#* }
        # shellcheck disable=SC2059
        printf "$fmt" "${ROW_LABEL[$row]}" "$(mib "$(med SIZE "$row" cairn)")" "$(mib "$(med SIZE3 "$row" cairn3r)")" \
            "$(mib "$(med SIZE "$row" restic)")" "$(mib "$(med SIZE "$row" rustic)")" "$(mib "$(med SIZE "$row" borg)")" \
            "$bt" "$(ratio "$(med SIZE "$row" cairn)" "$bm")" "$(ratio "$(med SIZE3 "$row" cairn3r)" "$bm")"
    done
}

# why ROW TOOL BEST: what the measurements say about a row where cairn (TOOL: cairn or
# cairn3) is not ahead of BEST: the data it read and sent (its backup JSON), the CPU seconds
# of its client and nodes against the wall time and the cores, and BEST's.
why() {
    local row=$1 tool=$2 bt=$3 tag=$4 w c s t bw bc cores prev grow rd sn ch fr fu busy bbusy
    cores=$(nproc)
    w=$(med WALL "$row" "$tool")
    c=$(med CPU "$row" "$tool")
    s=$(med SCPU "$row" "$tool")
    t=$(awk -v a="$c" -v b="$s" 'BEGIN { if (a ~ /^[0-9.]+$/ && b ~ /^[0-9.]+$/) printf "%.2f", a + b; else print "n/a" }')
    bw=$(med WALL "$row" "$bt")
    bc=$(med CPU "$row" "$bt")
    busy=$(ratio "$t" "$w")
    bbusy=$(ratio "$bc" "$bw")
    printf -- '- %s, %s: %s s against %s s of %s (ratio %s: %s)\n' "${ROW_LABEL[$row]}" \
        "$([[ $tool == cairn ]] && echo "1 node" || echo "3 nodes")" "$(num "$w")" "$(num "$bw")" "$bt" "$(ratio "$w" "$bw")" "$tag"
    if [[ $row != restore ]]; then
        rd=$(med READ "$row" "$tool")
        sn=$(med SENT "$row" "$tool")
        ch=$(med CHUNKS "$row" "$tool")
        fr=$(med FREAD "$row" "$tool")
        fu=$(med FREUSED "$row" "$tool")
        case $row in
        full | second) prev=0 ;;
        unchanged) prev=$(med SIZE full "$bt") ;;
        change) prev=$(med SIZE unchanged "$bt") ;;
        esac
        grow=$(awk -v a="$(med SIZE "$row" "$bt")" -v b="$prev" 'BEGIN { if (a ~ /^[0-9]+/ && b ~ /^[0-9]+/) printf "%.1f", (a - b) / 1048576; else print "n/a" }')
        if [[ $rd == n/a ]]; then
            printf '    operator: no backup JSON from cairn for this row; explain here why it is slower\n'
        else
            printf '    cairn read %s MiB (%s files read, %s reused unchanged) and sent %s MiB in %s chunks; %s'"'"'s store grew by %s MiB in this row\n' \
                "$(mib "$rd")" "$(num "$fr" %.0f)" "$(num "$fu" %.0f)" "$(mib "$sn")" "$(num "$ch" %.0f)" "$bt" "$grow"
        fi
    else
        printf '    restored %s MiB (the tree c1 after row 3)\n' "$(mib "$C1_BYTES")"
    fi
    printf '    CPU: cairn client %s s + nodes %s s = %s s in %s s (%s of %s cores busy); %s: %s s CPU (%s cores busy)\n' \
        "$(num "$c")" "$(num "$s")" "$t" "$(num "$w")" "$busy" "$cores" "$bt" "$(num "$bc")" "$bbusy"
    if awk -v b="$busy" -v n="$cores" 'BEGIN { exit !(b ~ /^[0-9.]+$/ && b >= 0.75 * n) }'; then
        printf '    => bound by CPU on this machine: cairn spends %sx the CPU seconds of %s%s; fewer CPU seconds per byte is the lever\n' \
            "$(ratio "$t" "$bc")" "$bt" "$([[ $tool == cairn3 ]] && echo " (chunk, hash, compress, send; receive, verify and write on three replicas)" || echo " (chunk, hash, compress, send; verify and write)")"
    elif awk -v a="$t" -v b="$bc" 'BEGIN { exit !(a ~ /^[0-9.]+$/ && b ~ /^[0-9.]+$/ && a > 1.2 * b) }'; then
        printf '    => cairn spends %sx the CPU seconds of %s but is not bound by CPU (%s cores busy): it also waits (disk, fsync, round trips)\n' \
            "$(ratio "$t" "$bc")" "$bt" "$busy"
    elif [[ $busy != n/a ]]; then
        printf '    => not bound by CPU (%s of %s cores busy) and no more CPU than %s: the time goes to waiting (disk, fsync, round trips between client and nodes)\n' \
            "$busy" "$cores" "$bt"
    else
        printf '    operator: explain here why cairn is not ahead (no CPU figures)\n'
    fi
}

# print_why: why() for every row where cairn is not ahead (ratio >= 1.00) or misses issue 17's
# bar (1 node <= 0.50, 3 nodes <= 0.80 of the best tool).
print_why() {
    local row tool b bt bm r bar any=0
    for row in "${ROWS[@]}"; do
        b=$(best WALL "$row")
        bt=${b% *}
        bm=${b#* }
        [[ $bt != n/a ]] || continue
        for tool in cairn cairn3; do
            r=$(ratio "$(med WALL "$row" "$tool")" "$bm")
            [[ $r != n/a ]] || continue
            if [[ $tool == cairn ]]; then bar=0.50; else bar=0.80; fi
            if awk -v r="$r" 'BEGIN { exit !(r >= 1) }'; then
                why "$row" "$tool" "$bt" "not ahead"
                any=1
            elif awk -v r="$r" -v b="$bar" 'BEGIN { exit !(r > b) }'; then
                why "$row" "$tool" "$bt" "ahead, but above the bar of $bar"
                any=1
            fi
        done
    done
    if ((any == 0)); then
        if [[ -n $CAIRN_BIN ]]; then
            echo "- cairn (1 node and 3 nodes) is ahead of the best other tool, within the bar, in every row measured"
        else
            echo "- cairn was not measured"
        fi
    fi
}

# Issue 17's bar: every row at or below 0.5 (1 node) and 0.8 (3 nodes) of the best tool.
print_targets() {
    local tool bar row b bm r met missed
    for tool in cairn cairn3; do
        [[ -n $CAIRN_BIN ]] || continue
        if [[ $tool == cairn ]]; then bar=0.50; else bar=0.80; fi
        met=""
        missed=""
        for row in "${ROWS[@]}"; do
            b=$(best WALL "$row")
            bm=${b#* }
            r=$(ratio "$(med WALL "$row" "$tool")" "$bm")
            if [[ $r == n/a ]]; then
                missed+=" ${row}(n/a)"
            elif awk -v r="$r" -v b="$bar" 'BEGIN { exit !(r <= b) }'; then
                met+=" $row"
            else
                missed+=" $row($r)"
            fi
        done
        printf 'target %s <= %s of the best tool: met in:%s; missed in:%s\n' \
            "$([[ $tool == cairn ]] && echo "1 node" || echo "3 nodes")" "$bar" "${met:- none}" "${missed:- none}"
    done
}

write_tsv() {
    local r row tool k
    {
        printf 'run\trow\ttool\twall_s\tcpu_s\tpeak_rss_kib\tnode_cpu_s\tnode_peak_rss_kib\tstored_bytes\tcairn_bytes_read\tcairn_bytes_sent\tcairn_chunks_sent\tnote\n'
        for ((r = 1; r <= RUNS; r++)); do
            for row in "${ROWS[@]}"; do
                for tool in "${TOOLS[@]}"; do
                    measured "$tool" || continue
                    k=$row,$tool,$r
                    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$r" "$row" "$tool" \
                        "${WALL[$k]:-n/a}" "${CPU[$k]:-n/a}" "${RSS[$k]:-n/a}" "${SCPU[$k]:-}" "${SRSS[$k]:-}" \
                        "${SIZE[$k]:-n/a}" "${READ[$k]:-}" "${SENT[$k]:-}" "${CHUNKS[$k]:-}" "${NOTE[$k]:-}"
                done
            done
        done
    } >"$RUN/results.tsv"
}

# ---------------------------------------------------------------- one run

# run_once: fresh stores and a fresh c1, the five rows for every tool, the restores checked.
run_once() {
    log "run $RUNI of $RUNS"
    umount_under "$RUN/src"
    rm -rf "${RUN:?}/src" "${RUN:?}/repo" "${RUN:?}/restore" "${RUN:?}/home"
    mkdir -p "$RUN/src" "$RUN/repo" "$RUN/home"
    export BORG_BASE_DIR=$RUN/home/borg     # borg's cache and keys: per run, outside the repo
    export RESTIC_CACHE_DIR=$RUN/home/restic # restic's local cache: per run, outside the repo
    CAIRN_ID=() CAIRN3_ID=() RESTIC_ID=() RUSTIC_ID=() BORG_ID=() TOOL_FAILED=()

    make_c1 "$C1"
    if [[ $RUNI -eq 1 ]]; then TREE_STATS=$(tree_stats "$C1"); fi

    "${restic_init[@]}" >"$LOGS/r$RUNI-restic-init.log" 2>&1 ||
        die "restic init failed: $(cat "$LOGS/r$RUNI-restic-init.log")"
    if [[ -n $RUSTIC ]]; then
        RUSTIC_CMD=("$RUSTIC" -r "$RUN/repo/rustic" --cache-dir "$RUN/home/rustic" --no-progress)
        "${RUSTIC_CMD[@]}" init >"$LOGS/r$RUNI-rustic-init.log" 2>&1 ||
            die "rustic init failed: $(cat "$LOGS/r$RUNI-rustic-init.log")"
    fi
    borg init -e none "$RUN/repo/borg" >"$LOGS/r$RUNI-borg-init.log" 2>&1 ||
        die "borg init failed: $(cat "$LOGS/r$RUNI-borg-init.log")"

    CLUSTER_URL=""
    CLUSTER3_URL=""
    if [[ -n $CAIRN_BIN ]]; then
        start_node || NOTE[full,cairn,$RUNI]="node did not start (run $RUNI; see $LOGS/cairn-node.log)"
        start_cluster3 || NOTE[full,cairn3,$RUNI]="3-node cluster did not start (run $RUNI)"
    fi

    log "run $RUNI row 1: full backup of c1"
    backup_all full "$C1" "$ENV1" full c1-full
    log "run $RUNI row 2: unchanged re-backup of c1"
    backup_all unchanged "$C1" "$ENV1" incremental c1-unchanged
    if [[ $DATA == heavy ]]; then
        log "run $RUNI row 3: the day's changes in c1 (database rows, log, new file)"
        day_change "$C1"
    else
        log "run $RUNI row 3: small change in c1"
        small_change "$C1"
    fi
    if [[ $RUNI -eq 1 ]]; then C1_BYTES=$(du -sb "$C1" | cut -f1); fi
    backup_all change "$C1" "$ENV1" incremental c1-change
    log "run $RUNI row 4: second container c2 into the same repositories"
    make_second "$C1" "$C2"
    backup_all second "$C2" "$ENV2" full c2-full
    if [[ $KEEP -eq 0 || $RUNI -lt $RUNS ]]; then rm -rf "$C2"; fi
    log "run $RUNI row 5: restore of c1's latest backup"
    restore_all c1-change
    stop_node
    # cairn's logs of the last run stay as cairn-node.log and cairn3-dev.log
}

# ---------------------------------------------------------------- main

SUITE=${CAIRN_BENCH_SUITE:-$(os_field VERSION_CODENAME)}
[[ -n $SUITE ]] || die "cannot tell this machine's Debian suite; set CAIRN_BENCH_SUITE"
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
ensure_tools
MIRROR=${CAIRN_BENCH_MIRROR:-$(find_mirror)}
build_rootfs
build_db

# a fresh work area (idempotent: whatever a previous run left is removed)
umount_under "$RUN"
rm -rf "$RUN"
mkdir -p "$LOGS"

build_cairn

RUSTIC=$(command -v rustic || true)
RUSTIC_CMD=()

if (sync && echo 3 >/proc/sys/vm/drop_caches) 2>/dev/null; then
    CACHE_POLICY=dropped
else
    CACHE_POLICY=warmed
fi

C1=$RUN/src/c1
C2=$RUN/src/c2
if [[ $DATA == heavy ]]; then
    DATA_DESC="debootstrap minbase $SUITE root file system with python3, perl, nginx, git, sqlite3"
else
    DATA_DESC="debootstrap minbase $SUITE root file system"
fi
if [[ $QUICK -eq 1 ]]; then DATA_DESC="/usr of the $DATA_DESC (--quick)"; fi

# disk space: c1, c2, one restored tree at a time, and the stores (3 copies for 3 nodes)
src_kib=$(du -sk "$ROOTFS$([[ $QUICK -eq 1 ]] && echo /usr)" | cut -f1)
if [[ $DATA == heavy ]]; then src_kib=$((src_kib + DB_MIB * 1024)); fi
need_kib=$((src_kib * 8))
free_kib=$(df -Pk "$BENCH_DIR" | awk 'NR == 2 { print $4 }')
if ((free_kib < need_kib)); then
    warn "only $((free_kib / 1024)) MiB free under $BENCH_DIR; a run may need up to $((need_kib / 1024)) MiB"
fi

restic_repo_desc="repository format v1 (no compression: this restic cannot make v2)"
restic_init=(restic -r "$RUN/repo/restic" init)
if restic init --help 2>/dev/null | grep -q -- '--repository-version'; then
    restic_init+=(--repository-version 2)
    restic_repo_desc="repository format v2, compression auto (zstd)"
fi

cairn_desc="n/a (does not build)"
if [[ $SKIP_CAIRN -eq 1 ]]; then cairn_desc="n/a (--skip-cairn)"; fi
if [[ -n $CAIRN_BIN ]]; then
    cairn_desc="$("$CAIRN_BIN" --version 2>/dev/null | head -n 1), compression level 1 (zstd 3); one node (cairn node), and 3 nodes RF 3 (cairn dev --nodes 3)"
fi
rustic_desc="n/a (rustic is not on PATH: its column reads n/a; install rustic-rs to add it)"
if [[ -n $RUSTIC ]]; then
    rustic_desc="$("$RUSTIC" --version 2>/dev/null | head -n 1), default repository options (zstd)"
fi

for ((RUNI = 1; RUNI <= RUNS; RUNI++)); do
    run_once
done
per_replica
write_tsv

# ---------------------------------------------------------------- report
{
    echo
    echo "== Cairn benchmark: cairn vs restic, rustic and borg, --data $DATA, $RUNS run(s), $(date -u +%FT%TZ) =="
    machine_line
    echo "tools: cairn: $cairn_desc"
    echo "       restic: $(restic version | head -n 1); $restic_repo_desc"
    echo "       rustic: $rustic_desc"
    echo "       borg: $(borg --version); borg init -e none, default compression (lz4)"
    echo "tree: c1 = $DATA_DESC + a 0.6 MiB log$([[ $DATA == heavy ]] && echo " + a generated $DB_MIB MiB SQLite database (seed $SEED)"): $TREE_STATS"
    if [[ $DATA == heavy ]]; then
        echo "      row 3 updates 1 % of the database's rows at random, appends 4 MiB to the log and adds an 8 MiB random file (seed $SEED)"
    else
        echo "      row 3 appends to 5 files and the log and adds a file"
    fi
    echo "      c2 = copy of c1 with new hostname/machine-id, one package's docs removed, 2 MiB new data"
    if [[ $CACHE_POLICY == dropped ]]; then
        echo "cache: page cache dropped (sync; echo 3 > drop_caches) before every tool in every row"
    else
        echo "cache: dropping page caches not permitted; source and repo read once before every tool (equally warm)"
    fi
    echo "runs: every run starts from fresh stores and a fresh c1; cells are the median [min-max] over the $RUNS run(s)"
    echo "      that did not fail (nF: in n runs the row failed, or was skipped after an earlier row of that tool failed)"
    echo
    echo "wall seconds of the tool's command (lower is better); ratios: cairn median / the best other tool's median:"
    print_time_table
    echo
    echo "CPU seconds (user + sys, median): 'client' = the command under GNU time (with its children);"
    echo "'node(s)' = the cairn node process (1 node) or the cairn dev process holding the 3 nodes (and its mostly idle agent"
    echo "and gateway), during the row (/proc/PID/stat):"
    print_res_table CPU SCPU %.2f 1
    echo
    if [[ $HWM_RESET -eq 1 ]]; then
        echo "peak RSS MiB (median): client = GNU time's maximum RSS; node(s) = VmHWM during the row (reset by clear_refs before it):"
    else
        echo "peak RSS MiB (median): client = GNU time's maximum RSS; node(s) = VmHWM since the process started (clear_refs not permitted):"
    fi
    print_res_table RSS SRSS %.0f 1024
    echo
    echo "stored MiB after the row (median; du -sb of the repository or cairn's data dirs; 3 nodes: per replica = total / 3):"
    print_size_table
    echo
    echo "where cairn is not ahead of the best other tool (median ratio >= 1.00) or above issue 17's bar (1 node 0.50,"
    echo "3 nodes 0.80), and what explains it:"
    print_why
    print_targets
    echo
    for tool in "${TOOLS[@]}"; do
        if ! measured "$tool"; then
            printf 'restore check %-7s not measured\n' "$tool:"
        elif [[ -n ${VERIFY_BAD[$tool]:-} ]]; then
            printf 'restore check %-7s identical in %s of %s runs; DIFFERS in %s\n' "$tool:" "${VERIFY_OK[$tool]:-0}" "$RUNS" "${VERIFY_BAD[$tool]}"
        else
            printf 'restore check %-7s identical in %s of %s runs%s\n' "$tool:" "${VERIFY_OK[$tool]:-0}" "$RUNS" \
                "${VERIFY_BAD[$tool,last]:+ ${VERIFY_BAD[$tool,last]#identical }}"
        fi
    done
    for k in $(printf '%s\n' "${!NOTE[@]}" | sort -t, -k3n -k1,1 -k2,2); do
        echo "note: run ${k##*,}: ${k%,*}: ${NOTE[$k]}"
    done
    for tool in cairn cairn3; do
        [[ -s $LOGS/r$RUNS-full-$tool.out ]] || continue
        echo "$tool summaries of run $RUNS:"
        for row in full unchanged change second; do
            [[ -s $LOGS/r$RUNS-$row-$tool.out ]] || continue
            jq -r --arg r "$row" '"  \($r): \(.id) \(.type) files read \(.files_read), reused \(.files_reused), read \(.bytes_read) B, sent \(.bytes_sent) B in \(.chunks_sent) chunks, \(.duration_secs * 100 | round / 100)s, \(.state)"' \
                "$LOGS/r$RUNS-$row-$tool.out" 2>/dev/null || true
        done
    done
    for tool in cairn cairn3; do
        [[ -n ${VERIFY_BAD[$tool]:-} ]] || continue
        d=$(find "$RUN" -maxdepth 1 -name "verify-$tool-r*" | sort | head -n 1)
        [[ -n $d ]] || continue
        echo "first $tool restore differences ($d):"
        head -n 10 "$d/diff.txt" | sed 's/^/  /' || true
        { grep -h '^[<>]' "$d/meta.diff" "$d/dev.diff" "$d/links.diff" || true; } | head -n 10 | sed 's/^/  /' || true
    done
    echo "raw numbers (every run, row and tool): $RUN/results.tsv; logs: $LOGS"
} | tee "$RUN/report.txt"
