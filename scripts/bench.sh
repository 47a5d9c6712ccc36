#!/usr/bin/env bash
# Benchmark Cairn side by side with restic and borg on the same real data in the same run.
#
# Usage: scripts/bench.sh [--quick] [--keep] [--skip-cairn] [-h|--help]
#
#   --quick       back up only /usr of the root file system (a smoke run)
#   --keep        keep the sources, repositories and restored trees of this run for inspection
#   --skip-cairn  do not build or run cairn (its column reads n/a)
#
# Environment:
#   CAIRN_BENCH_DIR     cache and work directory (default /var/tmp/cairn-bench)
#   CAIRN_BIN           use this cairn binary instead of `cargo build --release -j2 -p cairn`
#   CAIRN_BENCH_SUITE   Debian suite to debootstrap (default: this machine's VERSION_CODENAME)
#   CAIRN_BENCH_MIRROR  Debian mirror (default: the one configured in /etc/apt/sources.list*)
#
# The tree is a `debootstrap --variant=minbase` Debian root file system (device nodes,
# symlinks, hardlinks), built once and cached in $CAIRN_BENCH_DIR/rootfs-<suite>. Each run
# copies it, then measures five rows for each tool (see scripts/README.md) and prints a table.
# Must run as root (debootstrap, device nodes, owners on restore, dropping page caches).
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/.." && pwd)
BENCH_DIR=${CAIRN_BENCH_DIR:-/var/tmp/cairn-bench}
RUN=$BENCH_DIR/run
LOGS=$RUN/logs
TOOLS=(cairn cairn3 restic borg)
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
export BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK=yes
export BORG_RELOCATED_REPO_ACCESS_IS_OK=yes
export LC_ALL=C

QUICK=0
KEEP=0
SKIP_CAIRN=0
NODE_PID=""
CLUSTER_URL=""
CLUSTER3_PID=""
CLUSTER3_URL=""
CACHE_POLICY=""
declare -A TIME=() SIZE=() NOTE=()

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }

while [[ $# -gt 0 ]]; do
    case $1 in
    --quick) QUICK=1 ;;
    --keep) KEEP=1 ;;
    --skip-cairn) SKIP_CAIRN=1 ;;
    -h | --help) usage; exit 0 ;;
    *) echo "bench.sh: unknown argument '$1' (try --help)" >&2; exit 2 ;;
    esac
    shift
done

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
warn() { printf '[bench %s] WARNING: %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf '[bench] ERROR: %s\n' "$*" >&2; exit 1; }

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

build_rootfs() {
    ROOTFS=$BENCH_DIR/rootfs-$SUITE
    if [[ -f $ROOTFS.done && -d $ROOTFS ]]; then
        log "using cached root file system $ROOTFS"
        return
    fi
    local tmp=$ROOTFS.tmp
    umount_under "$tmp"
    rm -rf "$tmp" "$ROOTFS" "$ROOTFS.done"
    log "debootstrap --variant=minbase $SUITE from $MIRROR (once; cached in $ROOTFS)"
    mkdir -p "$BENCH_DIR/logs"
    if ! debootstrap --variant=minbase "$SUITE" "$tmp" "$MIRROR" >"$BENCH_DIR/logs/debootstrap.log" 2>&1; then
        tail -n 20 "$BENCH_DIR/logs/debootstrap.log" >&2
        umount_under "$tmp"
        die "debootstrap failed (log: $BENCH_DIR/logs/debootstrap.log)"
    fi
    umount_under "$tmp"
    mv "$tmp" "$ROOTFS"
    date -u +%FT%TZ >"$ROOTFS.done"
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

stored_bytes() { du -sb "$1" 2>/dev/null | cut -f1; }

# timed ROW TOOL STORE -- CMD...: runs CMD with its output in the logs, records the wall
# clock seconds in TIME and the stored bytes of STORE afterwards in SIZE. Returns CMD's status.
timed() {
    local row=$1 tool=$2 store=$3 t0 t1 rc
    shift 4
    t0=$(date +%s.%N)
    set +e
    "$@" >"$LOGS/$row-$tool.out" 2>"$LOGS/$row-$tool.err"
    rc=$?
    set -e
    t1=$(date +%s.%N)
    TIME[$row,$tool]=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')
    SIZE[$row,$tool]=$(stored_bytes "$store")
    log "$row/$tool: ${TIME[$row,$tool]}s, rc $rc, store ${SIZE[$row,$tool]} bytes"
    return "$rc"
}

# status ROW TOOL RC OKCODES WARNCODES: turns an exit status into a note, "fail" clears TIME.
status() {
    local row=$1 tool=$2 rc=$3 ok=$4 warncodes=$5
    if [[ " $ok " == *" $rc "* ]]; then
        return 0
    elif [[ " $warncodes " == *" $rc "* ]]; then
        NOTE[$row,$tool]="warning (rc $rc)"
        warn "$row/$tool finished with warnings (rc $rc): $(tail -n 3 "$LOGS/$row-$tool.err" | tr '\n' ' ')"
        return 0
    fi
    NOTE[$row,$tool]="FAILED (rc $rc)"
    TIME[$row,$tool]=fail
    warn "$row/$tool FAILED (rc $rc): $(tail -n 5 "$LOGS/$row-$tool.err" | tr '\n' ' ')"
    return 1
}

declare -A CAIRN_ID=() CAIRN3_ID=() RESTIC_ID=() BORG_ID=()

# backup_all ROW SRC ENV KIND NAME: one backup of SRC with each tool.
backup_all() {
    local row=$1 src=$2 env=$3 kind=$4 name=$5 rc
    if [[ -n $CLUSTER_URL ]]; then
        sleep 1.1 # backup ids have one-second resolution
        settle "$src" "$RUN/repo/cairn"
        rc=0
        timed "$row" cairn "$RUN/repo/cairn" -- \
            "$CAIRN_BIN" backup "$src" --env "$env" --cluster "$CLUSTER_URL" --type "$kind" --json || rc=$?
        if status "$row" cairn "$rc" 0 3; then
            CAIRN_ID[$name]=$(jq -r '.id' "$LOGS/$row-cairn.out" 2>/dev/null || true)
            [[ -n ${CAIRN_ID[$name]} && ${CAIRN_ID[$name]} != null ]] ||
                { NOTE[$row,cairn]="no id in JSON"; warn "$row/cairn printed no backup id"; }
        fi
    fi

    if [[ -n ${CLUSTER3_URL:-} ]]; then
        sleep 1.1
        settle "$src" "$RUN/repo/cairn3"
        rc=0
        timed "$row" cairn3 "$RUN/repo/cairn3" -- \
            "$CAIRN_BIN" backup "$src" --env "$env" --cluster "$CLUSTER3_URL" --type "$kind" --json || rc=$?
        if status "$row" cairn3 "$rc" 0 3; then
            CAIRN3_ID[$name]=$(jq -r '.id' "$LOGS/$row-cairn3.out" 2>/dev/null || true)
        fi
    fi

    settle "$src" "$RUN/repo/restic"
    rc=0
    timed "$row" restic "$RUN/repo/restic" -- \
        restic -r "$RUN/repo/restic" backup --json --tag "$name" "$src" || rc=$?
    if status "$row" restic "$rc" 0 3; then
        RESTIC_ID[$name]=$(jq -r 'select(.message_type == "summary") | .snapshot_id' \
            "$LOGS/$row-restic.out" 2>/dev/null | tail -n 1)
    fi

    settle "$src" "$RUN/repo/borg"
    rc=0
    timed "$row" borg "$RUN/repo/borg" -- \
        borg create "$RUN/repo/borg::$name" "$src" || rc=$?
    if status "$row" borg "$rc" 0 1; then
        BORG_ID[$name]=$name
    fi
}

restore_all() {
    local row=restore name=$1 rc
    mkdir -p "$RUN/restore"
    if [[ -n $CLUSTER_URL && -n ${CAIRN_ID[$name]:-} ]]; then
        settle "$RUN/repo/cairn"
        rc=0
        timed "$row" cairn "$RUN/repo/cairn" -- \
            "$CAIRN_BIN" restore "${CAIRN_ID[$name]}" "$RUN/restore/cairn" --cluster "$CLUSTER_URL" || rc=$?
        status "$row" cairn "$rc" 0 "" || true
    elif [[ -n $CLUSTER_URL ]]; then
        NOTE[$row,cairn]="no backup to restore"
    fi

    if [[ -n ${CLUSTER3_URL:-} && -n ${CAIRN3_ID[$name]:-} ]]; then
        settle "$RUN/repo/cairn3"
        rc=0
        timed "$row" cairn3 "$RUN/repo/cairn3" -- \
            "$CAIRN_BIN" restore "${CAIRN3_ID[$name]}" "$RUN/restore/cairn3" --cluster "$CLUSTER3_URL" || rc=$?
        status "$row" cairn3 "$rc" 0 "" || true
    fi

    if [[ -n ${RESTIC_ID[$name]:-} ]]; then
        settle "$RUN/repo/restic"
        rc=0
        timed "$row" restic "$RUN/repo/restic" -- \
            restic -r "$RUN/repo/restic" restore "${RESTIC_ID[$name]}" --target "$RUN/restore/restic" || rc=$?
        status "$row" restic "$rc" 0 "" || true
    else
        NOTE[$row,restic]="no snapshot to restore"
    fi

    if [[ -n ${BORG_ID[$name]:-} ]]; then
        settle "$RUN/repo/borg"
        mkdir -p "$RUN/restore/borg"
        rc=0
        # shellcheck disable=SC2016 # expanded by the inner sh
        timed "$row" borg "$RUN/repo/borg" -- \
            sh -c 'cd "$1" && exec borg extract "$2"' sh "$RUN/restore/borg" "$RUN/repo/borg::${BORG_ID[$name]}" || rc=$?
        status "$row" borg "$rc" 0 1 || true
    else
        NOTE[$row,borg]="no archive to restore"
    fi
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

# Row 3: modify a few files, append to a log, add a small file.
small_change() {
    local c=$1 f
    # five existing files spread over the tree (deterministic choice)
    while read -r f; do
        printf '# changed by cairn bench %s\n' "$(date +%s)" >>"$f"
    done < <(cd "$c" && find . -type f -links 1 -size +1k -size -256k -not -path './dev/*' | sort |
        awk '{ a[NR] = $0 } END { for (i = 1; i <= 5; i++) print a[int(NR * (2 * i - 1) / 10) + 1] }' |
        sed "s|^\.|$c|")
    for f in $(seq 1 800); do
        printf '2026-01-02T00:00:%05d app[4242]: request %d served in %d ms\n' "$f" "$f" $((f % 89))
    done >>"$c/var/log/bench-app.log"
    mkdir -p "$c/etc/bench"
    printf 'listen = 0.0.0.0:8080\nworkers = 4\n' >"$c/etc/bench/new-service.conf"
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
    mkdir -p "$c2/opt/app"
    head -c 2097152 /dev/urandom >"$c2/opt/app/data.bin"
    printf 'name = c2\n' >"$c2/opt/app/app.conf"
}

# ---------------------------------------------------------------- output

os_field() { sed -n "s/^$1=//p" /etc/os-release | tr -d '"'; }

machine_line() {
    local cpu mem
    cpu=$(awk -F': *' '/^model name/ { print $2; exit }' /proc/cpuinfo)
    mem=$(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)
    printf 'machine: %s cores, %s, %s RAM, kernel %s, %s, load %s\n' "$(nproc)" "${cpu:-unknown CPU}" \
        "$mem" "$(uname -r)" "$(os_field PRETTY_NAME)" "$(cut -d' ' -f1-3 /proc/loadavg)"
}

ratio() {
    awk -v a="$1" -v b="$2" 'BEGIN {
        if (a !~ /^[0-9.]+$/ || b !~ /^[0-9.]+$/ || b + 0 == 0) { print "n/a"; exit }
        printf "%.2f", a / b }'
}

mib() { if [[ $1 =~ ^[0-9]+$ ]]; then awk -v b="$1" 'BEGIN { printf "%.1f", b / 1048576 }'; else echo "${1:-n/a}"; fi; }

print_table() {
    local row tool t s
    local -A tt=() ss=()
    local fmt='| %-28s | %8s | %8s | %8s | %6s | %6s | %10s | %10s | %10s | %6s | %6s |\n'
    # shellcheck disable=SC2059
    printf "$fmt" "row" "cairn s" "restic s" "borg s" "c/r s" "c/b s" "cairn MiB" "restic MiB" "borg MiB" "c/r sz" "c/b sz"
    # shellcheck disable=SC2059
    printf "$fmt" "----------------------------" "--------" "--------" "--------" "------" "------" "----------" "----------" "----------" "------" "------"
    for row in "${ROWS[@]}"; do
        for tool in "${TOOLS[@]}"; do
            t=${TIME[$row,$tool]:-n/a}
            s=${SIZE[$row,$tool]:-n/a}
            if [[ $t == fail ]]; then s=fail; fi
            tt[$tool]=$t
            ss[$tool]=$s
        done
        # shellcheck disable=SC2059
        printf "$fmt" "${ROW_LABEL[$row]}" "${tt[cairn]}" "${tt[restic]}" "${tt[borg]}" \
            "$(ratio "${tt[cairn]}" "${tt[restic]}")" "$(ratio "${tt[cairn]}" "${tt[borg]}")" \
            "$(mib "${ss[cairn]}")" "$(mib "${ss[restic]}")" "$(mib "${ss[borg]}")" \
            "$(ratio "${ss[cairn]}" "${ss[restic]}")" "$(ratio "${ss[cairn]}" "${ss[borg]}")"
    done
}

# The 3-node cluster beside the single node and borg: seconds, and MiB per replica (the
# cluster's data directories divided by 3).
print_table3() {
    local row t1 t3 tb s3
    local fmt='| %-28s | %10s | %10s | %8s | %8s | %12s |\n'
    # shellcheck disable=SC2059
    printf "$fmt" "row" "1-node s" "3-node s" "borg s" "3n/b s" "3n MiB/repl"
    # shellcheck disable=SC2059
    printf "$fmt" "----------------------------" "----------" "----------" "--------" "--------" "------------"
    for row in "${ROWS[@]}"; do
        t1=${TIME[$row,cairn]:-n/a}
        t3=${TIME[$row,cairn3]:-n/a}
        tb=${TIME[$row,borg]:-n/a}
        s3=${SIZE[$row,cairn3]:-n/a}
        if [[ $s3 =~ ^[0-9]+$ ]]; then s3=$((s3 / 3)); fi
        # shellcheck disable=SC2059
        printf "$fmt" "${ROW_LABEL[$row]}" "$t1" "$t3" "$tb" "$(ratio "$t3" "$tb")" "$(mib "$s3")"
    done
}

write_tsv() {
    local row tool
    {
        printf 'row\ttool\tseconds\tstored_bytes\tnote\n'
        for row in "${ROWS[@]}"; do
            for tool in "${TOOLS[@]}"; do
                printf '%s\t%s\t%s\t%s\t%s\n' "$row" "$tool" "${TIME[$row,$tool]:-n/a}" \
                    "${SIZE[$row,$tool]:-n/a}" "${NOTE[$row,$tool]:-}"
            done
        done
    } >"$RUN/results.tsv"
}

# ---------------------------------------------------------------- main

SUITE=${CAIRN_BENCH_SUITE:-$(os_field VERSION_CODENAME)}
[[ -n $SUITE ]] || die "cannot tell this machine's Debian suite; set CAIRN_BENCH_SUITE"
ensure_tools
MIRROR=${CAIRN_BENCH_MIRROR:-$(find_mirror)}
build_rootfs

# a fresh work area (idempotent: whatever a previous run left is removed)
umount_under "$RUN"
rm -rf "$RUN"
mkdir -p "$LOGS" "$RUN/src" "$RUN/repo" "$RUN/home"
export BORG_BASE_DIR=$RUN/home/borg     # borg's cache and keys: per run, outside the repo
export RESTIC_CACHE_DIR=$RUN/home/restic # restic's local cache: per run, outside the repo

build_cairn

if (sync && echo 3 >/proc/sys/vm/drop_caches) 2>/dev/null; then
    CACHE_POLICY=dropped
else
    CACHE_POLICY=warmed
fi

C1=$RUN/src/c1
C2=$RUN/src/c2
if [[ $QUICK -eq 1 ]]; then
    TREE_DESC="/usr of the debootstrap minbase $SUITE root file system (--quick)"
    cp -a "$ROOTFS/usr" "$C1"
else
    TREE_DESC="debootstrap minbase $SUITE root file system"
    cp -a "$ROOTFS" "$C1"
fi
seed_log "$C1"
TREE_STATS=$(tree_stats "$C1")

restic_repo_desc="repository format v1 (no compression: this restic cannot make v2)"
restic_init=(restic -r "$RUN/repo/restic" init)
if restic init --help 2>/dev/null | grep -q -- '--repository-version'; then
    restic_init+=(--repository-version 2)
    restic_repo_desc="repository format v2, compression auto (zstd)"
fi
"${restic_init[@]}" >"$LOGS/restic-init.log" 2>&1 || die "restic init failed: $(cat "$LOGS/restic-init.log")"
borg init -e none "$RUN/repo/borg" >"$LOGS/borg-init.log" 2>&1 || die "borg init failed: $(cat "$LOGS/borg-init.log")"

cairn_desc="n/a (does not build)"
if [[ $SKIP_CAIRN -eq 1 ]]; then cairn_desc="n/a (--skip-cairn)"; fi
if [[ -n $CAIRN_BIN ]]; then
    cairn_desc="$("$CAIRN_BIN" --version 2>/dev/null | head -n 1), one node, compression level 1 (zstd 3)"
    start_node || { cairn_desc="n/a (node did not start; see $LOGS/cairn-node.log)"; CLUSTER_URL=""; }
    start_cluster3 || true
fi

log "row 1: full backup of c1"
backup_all full "$C1" "$ENV1" full c1-full
log "row 2: unchanged re-backup of c1"
backup_all unchanged "$C1" "$ENV1" incremental c1-unchanged
log "row 3: small change in c1"
small_change "$C1"
backup_all change "$C1" "$ENV1" incremental c1-change
log "row 4: second container c2 into the same repositories"
make_second "$C1" "$C2"
backup_all second "$C2" "$ENV2" full c2-full
log "row 5: restore of c1's latest backup"
restore_all c1-change

# verify the restores against c1 as it was backed up
declare -A VERIFY=()
declare -A RESTORED=(
    [cairn]=$RUN/restore/cairn
    [cairn3]=$RUN/restore/cairn3
    [restic]=$RUN/restore/restic$C1
    [borg]=$RUN/restore/borg$C1
)
for tool in "${TOOLS[@]}"; do
    if [[ -n ${TIME[restore,$tool]:-} && ${TIME[restore,$tool]} != fail && -d ${RESTORED[$tool]} ]]; then
        log "verifying the $tool restore"
        VERIFY[$tool]=$("$SCRIPT_DIR/bench/verify-tree.sh" "$C1" "${RESTORED[$tool]}" "$RUN/verify-$tool" || true)
    else
        VERIFY[$tool]="not verified: ${NOTE[restore,$tool]:-no restore}"
    fi
done
stop_node
write_tsv

# ---------------------------------------------------------------- report
{
    echo
    echo "== Cairn benchmark: cairn vs restic vs borg, $(date -u +%FT%TZ) =="
    machine_line
    echo "tools: cairn: $cairn_desc"
    echo "       restic: $(restic version | head -n 1); $restic_repo_desc"
    echo "       borg: $(borg --version); borg init -e none, default compression (lz4)"
    echo "tree: c1 = $TREE_DESC + a 0.6 MiB log: $TREE_STATS"
    echo "      row 3 appends to 5 files and the log and adds a file; c2 = copy of c1 with new hostname/machine-id, one package's docs removed, 2 MiB new data"
    if [[ $CACHE_POLICY == dropped ]]; then
        echo "cache: page cache dropped (sync; echo 3 > drop_caches) before every tool in every row"
    else
        echo "cache: dropping page caches not permitted; source and repo read once before every tool (equally warm)"
    fi
    echo "seconds: wall clock of the tool's command; MiB: du -sb of the repo / cairn node data dir after the row; ratios: cairn / other (lower is better)"
    echo
    print_table
    echo
    echo "cairn as a 3-node cluster on localhost (replication factor 3, cairn dev --nodes 3), beside the single node and borg:"
    print_table3
    echo
    for tool in "${TOOLS[@]}"; do
        printf 'restore check %-7s %s\n' "$tool:" "${VERIFY[$tool]}"
    done
    for row in "${ROWS[@]}"; do
        for tool in "${TOOLS[@]}"; do
            if [[ -n ${NOTE[$row,$tool]:-} ]]; then echo "note: $row/$tool: ${NOTE[$row,$tool]}"; fi
        done
    done
    if [[ -n $CLUSTER_URL ]]; then
        echo "cairn summaries:"
        for row in full unchanged change second; do
            [[ -s $LOGS/$row-cairn.out ]] || continue
            jq -r --arg r "$row" '"  \($r): \(.id) \(.type) files read \(.files_read), reused \(.files_reused), read \(.bytes_read) B, sent \(.bytes_sent) B in \(.chunks_sent) chunks, \(.duration_secs * 100 | round / 100)s, \(.state)"' \
                "$LOGS/$row-cairn.out" 2>/dev/null || true
        done
        if [[ -n ${VERIFY[cairn]:-} && ${VERIFY[cairn]} == DIFFERS* ]]; then
            echo "first cairn restore differences:"
            head -n 10 "$RUN/verify-cairn/diff.txt" | sed 's/^/  /' || true
            { grep -h '^[<>]' "$RUN/verify-cairn/meta.diff" "$RUN/verify-cairn/dev.diff" \
                "$RUN/verify-cairn/links.diff" || true; } | head -n 10 | sed 's/^/  /' || true
        fi
    fi
    echo "raw numbers: $RUN/results.tsv; logs: $LOGS"
} | tee "$RUN/report.txt"
