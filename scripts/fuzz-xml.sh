#!/usr/bin/env bash
# Fuzzes the Agent XML API's packet parser and NUL framing for a few minutes: runs the
# gateway's property tests in rounds, each with a fresh seed and many more cases than CI runs.
#
# Usage: scripts/fuzz-xml.sh [--minutes N] [--seed S] [--cases N] [-h|--help]
#
#   --minutes N  how long to fuzz, in minutes, decimals allowed (default 3); rounds start
#                until the time is up, the last one cut down to fit
#   --seed S     the first round's seed, a whole number below 10^18 (default: the clock in
#                microseconds); round k uses S + k - 1
#   --cases N    cases per test and round for the parser tests (default 1000000); the framing
#                tests, about ten times slower per case, get N/10
#
# It builds the gateway's unit tests in release (`cargo test --release -j2 -p cairn-gateway
# --lib --no-run`, so a first run takes several minutes), copies the test binary aside (a
# rebuild during the run does not change what is fuzzed) and then, per round, runs:
#   - the parser tests: every `xml::…never_panic` test of crates/cairn-gateway/src/xml/packet.rs
#     (arbitrary bytes, XML-ish token soup, and mutations of the seed files in
#     crates/cairn-gateway/tests/xml-corpus/ — add a file there to fuzz from a new shape of
#     packet); parse_packet and salvage_id must not panic;
#   - the framing tests of crates/cairn-gateway/src/xml/frame.rs: the corpus and random
#     streams cut into random chunks, oversized packets, all checked against a model.
# Seed and case count reach the tests through CAIRN_FUZZ_SEED and CAIRN_FUZZ_CASES (without
# them the tests use a fixed seed and CI's case counts). Every round prints its seed, cases
# and result. On the first failure (a panic, a broken property, a round hanging past the end
# of the run by 2 minutes) it prints the tests' output, with proptest's minimal failing input,
# and the command that reproduces it from the seed, and stops. No failure files are written:
# the seed is the reproduction.
#
# Exit status: 0 no failure (the last line gives rounds and total cases), 1 a failure,
# 2 a usage or build error.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/.." && pwd)
export LC_ALL=C

MINUTES=3
SEED=""
CASES=1000000
FRAME_TESTS=(
    xml::frame::tests::corpus_survives_any_chunking
    xml::frame::tests::any_stream_matches_the_model
    xml::frame::tests::oversized_corpus_packets_keep_their_heads
)
WORK=""

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
log() { printf '[fuzz-xml %s] %s\n' "$(date +%H:%M:%S)" "$*"; }
die() { printf '[fuzz-xml] ERROR: %s\n' "$*" >&2; exit 2; }
need_value() { [[ $# -ge 2 && -n $2 ]] || die "$1 needs a value (try --help)"; }
is_uint() { [[ $1 =~ ^[0-9]+$ ]]; }
# Seconds since the epoch, with microseconds.
now() { printf '%s' "${EPOCHREALTIME/,/.}"; }
# awk arithmetic on decimals: calc 'expression' prints the result (a comparison: 1 or 0).
calc() { awk "BEGIN { printf \"%.17g\", ($1) }"; }

while [[ $# -gt 0 ]]; do
    case $1 in
    --minutes) need_value "$@"; MINUTES=$2; shift ;;
    --seed) need_value "$@"; SEED=$2; shift ;;
    --cases) need_value "$@"; CASES=$2; shift ;;
    -h | --help) usage; exit 0 ;;
    *) die "unknown argument '$1' (try --help)" ;;
    esac
    shift
done
[[ $MINUTES =~ ^[0-9]+(\.[0-9]+)?$ ]] && [[ $(calc "$MINUTES > 0") == 1 ]] ||
    die "--minutes $MINUTES: give a positive number"
if [[ -n $SEED ]]; then
    [[ $SEED =~ ^[0-9]{1,18}$ ]] || die "--seed $SEED: give a whole number below 10^18"
    SEED=$((10#$SEED))
else
    SEED=$(($(date +%s%N) / 1000))
fi
is_uint "$CASES" && ((CASES >= 10 && CASES <= 4000000000)) ||
    die "--cases $CASES: give a whole number from 10 to 4000000000"
command -v cargo >/dev/null || die "cargo not found"
command -v timeout >/dev/null || die "timeout (coreutils) not found"

cleanup() { if [[ -n $WORK ]]; then rm -rf "$WORK"; fi; }
trap cleanup EXIT
trap 'exit 130' INT TERM
WORK=$(mktemp -d "${TMPDIR:-/tmp}/fuzz-xml.XXXXXX")

# ---- build -------------------------------------------------------------------------------

cd "$REPO_ROOT"
log "building the cairn-gateway unit tests in release (the first build takes minutes)"
# Diagnostics go to stderr as usual; the JSON on stdout names the test executable.
if ! cargo test --release -j2 -p cairn-gateway --lib --no-run \
    --message-format=json-render-diagnostics >"$WORK/build.json"; then
    die "the build failed"
fi
BUILT=$(grep -o '"executable":"[^"]*"' "$WORK/build.json" | tail -n 1 | sed 's/^"executable":"//; s/"$//')
[[ -n $BUILT && -x $BUILT ]] || die "no test executable in cargo's output"
BIN=$WORK/$(basename "$BUILT")
cp "$BUILT" "$BIN"

mapfile -t PARSER_TESTS < <("$BIN" --list 2>/dev/null | sed -n 's/^\(xml::[^ ]*never_panic\): test$/\1/p')
((${#PARSER_TESTS[@]} > 0)) || die "no never_panic test found in $BUILT"
LISTED=$("$BIN" --list 2>/dev/null)
for t in "${FRAME_TESTS[@]}"; do
    grep -qx "$t: test" <<<"$LISTED" || die "test $t not found in $BUILT (renamed?)"
done
log "test binary $BUILT"
log "parser tests: ${PARSER_TESTS[*]##*::}"
log "framing tests: ${FRAME_TESTS[*]##*::}"

# ---- rounds ------------------------------------------------------------------------------

START=$(now)
DEADLINE=$(calc "$START + $MINUTES * 60")
FRAME_CASES=$((CASES / 10))
PARSER_RATE=""  # seconds per case and test, measured
FRAME_RATE=""
ROUNDS=0
TOTAL=0
FAILED_OUT=""

# Runs one group: run_group SEED CASES OUT TEST...; sets GROUP_PASSED and GROUP_SECS,
# returns the test binary's status (124 when it was stopped by the timeout).
run_group() {
    local seed=$1 cases=$2 out=$3 limit rc t0
    shift 3
    limit=$(calc "int($DEADLINE - $(now) + 120)")
    ((limit >= 120)) || limit=120
    t0=$(now)
    rc=0
    CAIRN_FUZZ_SEED=$seed CAIRN_FUZZ_CASES=$cases RUST_BACKTRACE=0 \
        timeout --kill-after=10 "$limit" "$BIN" --exact --test-threads=2 "$@" >"$out" 2>&1 || rc=$?
    GROUP_SECS=$(calc "$(now) - $t0")
    GROUP_PASSED=$(sed -n 's/^test result: [A-Za-z]*\. \([0-9]*\) passed.*/\1/p' "$out" | tail -n 1)
    GROUP_PASSED=${GROUP_PASSED:-0}
    return "$rc"
}

# A failing group's output, shortened: the passing tests' lines go, of the panics printed
# while proptest shrinks the input only the first three different ones stay, and proptest's
# verdict (the minimal failing input, pretty-printed over many lines) is put on one line.
condense() {
    awk '
        /^thread .* panicked at / { head = $0; inpanic = 1; first = 1; next }
        inpanic && /^Test failed:/ { inpanic = 0; collect = 1; buf = $0; next }
        inpanic {
            if (first) {
                first = 0
                key = head " " $0
                sub(/ \([0-9]+\) panicked/, " panicked", key)
                shown = !(key in seen) && kept < 3
                if (shown) { seen[key] = 1; kept++; print head } else hidden++
            }
            if ($0 == "") inpanic = 0
            if (shown && $0 !~ /^note: run with/) print
            next
        }
        collect {
            if ($0 ~ /^[ \t]*successes:/) {
                collect = 0
                gsub(/[ \t]+/, " ", buf)
                if (length(buf) > 4000) buf = substr(buf, 1, 4000) " ... (cut; see the log)"
                print buf
                print
            } else {
                buf = buf " " $0
            }
            next
        }
        / \.\.\. ok$/ { next }
        { print }
        END { if (hidden) printf "(%d more panics while shrinking not shown; see the log)\n", hidden }
    ' "$1"
}

# What failed in a group's output, and how to reproduce it.
report_failure() {
    local seed=$1 cases=$2 out=$3 rc=$4 failed kept
    shift 4
    kept=${TMPDIR:-/tmp}/fuzz-xml-seed-$seed.log
    cp "$out" "$kept"
    echo
    echo "----- test output (seed $seed, $cases cases per test; all of it in $kept) -----"
    condense "$out"
    echo "-----"
    failed=$(sed -n 's/^test \(.*\) \.\.\. FAILED$/\1/p' "$out" | tr '\n' ' ' | sed 's/ $//')
    if ((rc == 124 || rc == 137)); then
        log "FAIL in round $ROUNDS: still running 2 minutes after the end of the run (a hang?);" \
            "$(grep -c ' \.\.\. ok$' "$out" || true) of $# tests had finished"
        failed=${failed:-$*}
    elif [[ -z $failed ]]; then
        log "FAIL in round $ROUNDS: the test binary exited with status $rc"
        failed=$*
    else
        log "FAIL in round $ROUNDS: $failed"
    fi
    log "seed to reproduce: $seed"
    log "reproduce: CAIRN_FUZZ_SEED=$seed CAIRN_FUZZ_CASES=$cases" \
        "cargo test --release -p cairn-gateway --lib -- --exact $failed"
}

while [[ $(calc "$(now) < $DEADLINE") == 1 ]]; do
    ROUNDS=$((ROUNDS + 1))
    seed=$((SEED + ROUNDS - 1))
    parser_cases=$CASES
    frame_cases=$FRAME_CASES
    # Cut the round down when it would run past the deadline (once the speed is known).
    if [[ -n $PARSER_RATE ]]; then
        left=$(calc "$DEADLINE - $(now)")
        need=$(calc "${#PARSER_TESTS[@]} * $parser_cases * $PARSER_RATE + ${#FRAME_TESTS[@]} * $frame_cases * $FRAME_RATE")
        if [[ $(calc "$need > $left") == 1 ]]; then
            parser_cases=$(calc "int($parser_cases * $left / $need)")
            frame_cases=$(calc "int($frame_cases * $left / $need)")
            ((parser_cases >= 1000)) || parser_cases=1000
            ((frame_cases >= 100)) || frame_cases=100
        fi
    fi

    rc=0
    run_group "$seed" "$parser_cases" "$WORK/parser.out" "${PARSER_TESTS[@]}" || rc=$?
    parser_secs=$GROUP_SECS
    if ((rc != 0 || GROUP_PASSED != ${#PARSER_TESTS[@]})); then
        log "round $ROUNDS  seed $seed  parser ${#PARSER_TESTS[@]} tests x $parser_cases cases  FAILED"
        report_failure "$seed" "$parser_cases" "$WORK/parser.out" "$rc" "${PARSER_TESTS[@]}"
        FAILED_OUT=1
        break
    fi
    TOTAL=$((TOTAL + GROUP_PASSED * parser_cases))

    run_group "$seed" "$frame_cases" "$WORK/frame.out" "${FRAME_TESTS[@]}" || rc=$?
    frame_secs=$GROUP_SECS
    if ((rc != 0 || GROUP_PASSED != ${#FRAME_TESTS[@]})); then
        log "round $ROUNDS  seed $seed  parser ok  framing ${#FRAME_TESTS[@]} tests x $frame_cases cases  FAILED"
        report_failure "$seed" "$frame_cases" "$WORK/frame.out" "$rc" "${FRAME_TESTS[@]}"
        FAILED_OUT=1
        break
    fi
    TOTAL=$((TOTAL + GROUP_PASSED * frame_cases))

    # Two test threads: a group's wall time is shared by its tests.
    PARSER_RATE=$(calc "$parser_secs / (${#PARSER_TESTS[@]} * $parser_cases)")
    FRAME_RATE=$(calc "$frame_secs / (${#FRAME_TESTS[@]} * $frame_cases)")
    log "$(printf 'round %d  seed %d  parser %d tests x %d cases  framing %d tests x %d cases  ok  (%.1f s + %.1f s)' \
        "$ROUNDS" "$seed" "${#PARSER_TESTS[@]}" "$parser_cases" "${#FRAME_TESTS[@]}" "$frame_cases" \
        "$parser_secs" "$frame_secs")"
done

ELAPSED=$(calc "$(now) - $START")
if [[ -n $FAILED_OUT ]]; then
    log "$(printf 'stopped after %d rounds, %.1f min: %d cases passed before the failure' \
        "$ROUNDS" "$(calc "$ELAPSED / 60")" "$TOTAL")"
    exit 1
fi
log "$(printf 'done: %d rounds in %.1f min, %d cases in total (%d parser and %d framing tests), no failure' \
    "$ROUNDS" "$(calc "$ELAPSED / 60")" "$TOTAL" "${#PARSER_TESTS[@]}" "${#FRAME_TESTS[@]}")"
exit 0
