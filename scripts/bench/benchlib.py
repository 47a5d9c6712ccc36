"""What scripts/bench/rest_pollers.py and xml_clients.py share (Python 3 standard library only):
the argument parser with the `gen` subcommand and `gen` itself (the container directories),
changing a few bytes of a container between backups, the password and log of `run`, retrying
until a deadline, and the report: percentiles, latency and duration lines, the first failures
and the PASS/FAIL verdict.

The helpers run as `python3 scripts/bench/NAME.py`, so this directory is on sys.path and they
`import benchlib`.
"""

import argparse
import math
import os
import random
import sys
import time

MIB = 1024 * 1024

# ---------------------------------------------------------------------------------- gen


def parser(doc):
    """The helper's argument parser (described by the first paragraph of `doc`) and its
    subparsers, with `gen` added; the helper adds `run`."""
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("gen", help="write the container directories")
    g.add_argument("dir")
    g.add_argument("--containers", type=int, default=4)
    g.add_argument("--mib", type=int, default=48, help="MiB of random data per container")
    g.add_argument("--small", type=int, default=300, help="small files per container")
    return ap, sub


def gen(args, name):
    """Writes args.containers container directories c1..cN under args.dir, each with
    args.mib MiB of fresh random data in three files (var/lib/data/blob-*.bin) and args.small
    small files (srv/small/), plus etc/hostname and etc/os-release (naming `name`)."""
    root = args.dir
    os.makedirs(root, exist_ok=True)
    big_files = 3
    per_file = max(1, (args.mib * MIB) // big_files)
    for i in range(1, args.containers + 1):
        c = os.path.join(root, f"c{i}")
        os.makedirs(os.path.join(c, "etc"), exist_ok=True)
        with open(os.path.join(c, "etc", "hostname"), "w") as f:
            f.write(f"bench-c{i}\n")
        with open(os.path.join(c, "etc", "os-release"), "w") as f:
            f.write(f'NAME="Bench Linux"\nPRETTY_NAME="Bench Linux ({name})"\nID=bench\n')
        data = os.path.join(c, "var", "lib", "data")
        os.makedirs(data, exist_ok=True)
        for j in range(big_files):
            with open(os.path.join(data, f"blob-{j}.bin"), "wb") as f:
                write_random(f, per_file)
        rng = random.Random(os.urandom(16))
        for d in range(args.small // 25 + 1):
            os.makedirs(os.path.join(c, "srv", "small", f"d{d:02}"), exist_ok=True)
        for k in range(args.small):
            path = os.path.join(c, "srv", "small", f"d{k // 25:02}", f"f{k:04}.dat")
            with open(path, "wb") as f:
                f.write(os.urandom(rng.randint(200, 8192)))
    return 0


def write_random(f, n):
    """Writes n fresh random bytes to f, a MiB at a time."""
    while n > 0:
        k = min(n, MIB)
        f.write(os.urandom(k))
        n -= k


def change_a_file(container, name, rng, nbytes, errors):
    """Writes `nbytes` new random bytes (at most the file's size) at a random place of one
    big file (var/lib/data/*.bin) of the container directory, so that its next backup has
    something to upload. True when it did; False when there is no container directory or no
    such file, or on trouble, which is appended to `errors` as (what, detail)."""
    if container is None:
        return False
    data = os.path.join(container, "var", "lib", "data")
    try:
        files = sorted(f for f in os.listdir(data) if f.endswith(".bin"))
        if not files:
            return False
        path = os.path.join(data, rng.choice(files))
        size = os.path.getsize(path)
        n = min(nbytes, size)
        with open(path, "r+b") as f:
            f.seek(rng.randrange(max(1, size - n + 1)))
            write_random(f, n)
        return True
    except OSError as e:
        errors.append((f"changing a file of {name}", repr(e)))
        return False


# ---------------------------------------------------------------------------------- run


def dev_password(name):
    """The password of `cairn dev`'s admin (CAIRN_DEV_PASSWORD); None, said on stderr, when
    it is not set."""
    password = os.environ.get("CAIRN_DEV_PASSWORD", "")
    if not password:
        print(f"{name}: CAIRN_DEV_PASSWORD is not set", file=sys.stderr)
        return None
    return password


def make_log(name):
    """A function printing `[name HH:MM:SS] message` lines to stderr."""

    def log(msg):
        print(f"[{name} {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    return log


def retry(attempt, catch, deadline, log, failed):
    """Calls attempt() every half second until it returns (value, None) and returns that
    value. attempt() returns (None, why) to be called again; the exceptions in `catch` count
    the same. Past `deadline` (a perf_counter time), logs `failed: why` and returns None."""
    last = None
    while True:
        try:
            value, last = attempt()
            if last is None:
                return value
        except catch as e:
            last = repr(e)
        if time.perf_counter() > deadline:
            log(f"{failed}: {last}")
            return None
        time.sleep(0.5)


# ---------------------------------------------------------------------------------- report


def pct(sorted_values, p):
    """Nearest-rank percentile of an ascending list."""
    if not sorted_values:
        return float("nan")
    k = max(1, math.ceil(p / 100.0 * len(sorted_values)))
    return sorted_values[k - 1]


def busy_fraction(jobs, start, end):
    """The share of [start, end] during which at least one of the jobs (with `started` and
    `ended`, None while running) was queued or running."""
    spans = sorted(
        (max(j.started, start), min(j.ended if j.ended is not None else end, end))
        for j in jobs
    )
    covered, cur_s, cur_e = 0.0, None, None
    for s, e in spans:
        if e <= s:
            continue
        if cur_e is None or s > cur_e:
            if cur_e is not None:
                covered += cur_e - cur_s
            cur_s, cur_e = s, e
        else:
            cur_e = max(cur_e, e)
    if cur_e is not None:
        covered += cur_e - cur_s
    return covered / (end - start) if end > start else 0.0


def latency_line(values, empty="none"):
    """`p50 … p90 … p99 … max … (mean …)` in ms of ascending latencies in seconds; `empty`
    when there are none (None: the numbers read nan)."""
    ms = [v * 1000.0 for v in values]
    if not ms and empty is not None:
        return empty
    nan = float("nan")
    return (f"p50 {pct(ms, 50):.1f}  p90 {pct(ms, 90):.1f}  p99 {pct(ms, 99):.1f}  "
            f"max {ms[-1] if ms else nan:.1f}  (mean {sum(ms) / len(ms) if ms else nan:.1f})")


def print_durations(durations, note):
    """The `backup duration s` line of ascending durations in seconds (none when empty)."""
    if durations:
        print(f"backup duration s     min {durations[0]:.1f}  median {pct(durations, 50):.1f}  "
              f"max {durations[-1]:.1f}  ({note})")


def print_firsts(failures, driver_errors):
    """The first five failures (seconds into the window, what was asked, what went wrong)
    and the first five driver errors (what, detail)."""
    if failures:
        print(f"first failures (of {len(failures)}):")
        for t, asked, what in failures[:5]:
            print(f"  +{t:.2f}s {asked}: {what}")
    if driver_errors:
        print(f"first driver errors (of {len(driver_errors)}):")
        for what, detail in driver_errors[:5]:
            print(f"  {what}: {detail}")


def request_problems(total, unanswered):
    """The verdict's first problems: no request at all, requests not answered."""
    problems = []
    if total == 0:
        problems.append("no request was made")
    if unanswered:
        problems.append(f"{unanswered} request(s) not answered")
    return problems


def verdict(problems, passed):
    """Prints a blank line, then FAIL with the problems (1) or the PASS line `passed` (0)."""
    print()
    if problems:
        print("FAIL: " + "; ".join(problems))
        return 1
    print(passed)
    return 0
