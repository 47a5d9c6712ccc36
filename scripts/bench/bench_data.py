"""The generated parts of scripts/bench.sh's containers, deterministic by seed (Python 3
standard library only): a SQLite database, the day's changes to it, a growing log and files of
random bytes.

Every subcommand draws from random.Random(f"{seed}:{purpose}"), so the same seed gives the same
rows, the same updated rows, the same log lines and the same random files on every run and for
every tool (the benchmark copies one generated tree for all tools in a run anyway).

Subcommands:
  db FILE --mib N --seed S        a new database of about N MiB: table `items` (id, name, body
                                  text of words, a random blob, updated), journal mode DELETE
  change-db FILE --percent P --seed S
                                  updates P % of the rows, chosen at random (scattered pages)
  append-log FILE --mib N --seed S
                                  appends about N MiB of log lines
  randfile FILE --mib N --seed S  writes N MiB of random bytes (incompressible)
Each prints one line saying what it did.
"""

import argparse
import os
import random
import sqlite3

MIB = 1024 * 1024
WORDS = (
    "backup restore chunk replica node cluster catalog snapshot volume container image "
    "index pack verify commit raft leader follower schedule policy retention tenant quota "
    "request served error warning latency throughput kernel socket buffer page cache disk "
    "database table row column value key hash zstd block file directory owner mode mtime"
).split()


def rng(seed, purpose):
    return random.Random(f"{seed}:{purpose}")


def text(r, lo, hi):
    """Words from WORDS, lo..hi characters: compressible like real text columns."""
    n = r.randint(lo, hi)
    out = []
    size = 0
    while size < n:
        w = r.choice(WORDS)
        out.append(w)
        size += len(w) + 1
    return " ".join(out)[:n]


def row(r, i, generation):
    return (
        f"item-{i:08d}-{r.getrandbits(32):08x}",
        text(r, 200, 1200),
        r.randbytes(r.randint(256, 1536)),
        generation,
    )


def cmd_db(a):
    if os.path.exists(a.file):
        os.remove(a.file)
    r = rng(a.seed, "db")
    target = a.mib * MIB
    con = sqlite3.connect(a.file)
    con.execute("PRAGMA journal_mode=DELETE")
    con.execute(
        "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL, body TEXT NOT NULL,"
        " blob BLOB NOT NULL, updated INTEGER NOT NULL)"
    )
    con.execute("CREATE INDEX items_name ON items (name)")
    i = 0
    while True:
        batch = []
        for _ in range(2000):
            i += 1
            batch.append((i,) + row(r, i, 0))
        con.executemany("INSERT INTO items VALUES (?, ?, ?, ?, ?)", batch)
        con.commit()
        if os.path.getsize(a.file) >= target:
            break
    con.close()
    print(f"database {a.file}: {i} rows, {os.path.getsize(a.file)} bytes (seed {a.seed})")


def cmd_change_db(a):
    r = rng(a.seed, "change-db")
    con = sqlite3.connect(a.file)
    (n,) = con.execute("SELECT max(id) FROM items").fetchone()
    (gen,) = con.execute("SELECT max(updated) FROM items").fetchone()
    k = max(1, round(n * a.percent / 100))
    ids = sorted(r.sample(range(1, n + 1), k))
    con.executemany(
        "UPDATE items SET name = ?, body = ?, blob = ?, updated = ? WHERE id = ?",
        [row(r, i, gen + 1) + (i,) for i in ids],
    )
    con.commit()
    con.close()
    print(f"database {a.file}: updated {k} of {n} rows at random (seed {a.seed})")


def cmd_append_log(a):
    r = rng(a.seed, "log")
    target = a.mib * MIB
    written = 0
    lines = []
    with open(a.file, "a", encoding="ascii") as f:
        while written < target:
            line = (
                f"2026-01-02T{r.randint(0, 23):02d}:{r.randint(0, 59):02d}:"
                f"{r.randint(0, 59):02d} app[{r.randint(1000, 9999)}]: "
                f"{text(r, 20, 120)} in {r.randint(1, 999)} ms\n"
            )
            lines.append(line)
            written += len(line)
            if len(lines) >= 4096:
                f.write("".join(lines))
                lines.clear()
        f.write("".join(lines))
    print(f"log {a.file}: appended {written} bytes (seed {a.seed})")


def cmd_randfile(a):
    r = rng(a.seed, f"randfile:{os.path.basename(a.file)}")
    os.makedirs(os.path.dirname(os.path.abspath(a.file)), exist_ok=True)
    with open(a.file, "wb") as f:
        for _ in range(a.mib):
            f.write(r.randbytes(MIB))
    print(f"file {a.file}: {a.mib} MiB of random bytes (seed {a.seed})")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name, fn, size in (
        ("db", cmd_db, True),
        ("change-db", cmd_change_db, False),
        ("append-log", cmd_append_log, True),
        ("randfile", cmd_randfile, True),
    ):
        p = sub.add_parser(name)
        p.add_argument("file")
        p.add_argument("--seed", default="1")
        if size:
            p.add_argument("--mib", type=int, required=True)
        else:
            p.add_argument("--percent", type=float, default=1.0)
        p.set_defaults(fn=fn)
    a = ap.parse_args()
    a.fn(a)


if __name__ == "__main__":
    main()
