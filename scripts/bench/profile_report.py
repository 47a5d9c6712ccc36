#!/usr/bin/env python3
"""Groups perf samples of cairn's client and nodes into the data path's stages.

Reads `perf report` (flat: the symbol that was running, no call graph) of two perf.data
files and prints a markdown table: for each stage, the CPU seconds (samples / frequency)
and share of the client and of the nodes. A symbol goes to the first stage whose pattern
matches it; what matches none is "other" and the largest of those are listed below the
table, so a new hot spot is seen rather than hidden. Used by scripts/profile.sh.
"""

import argparse
import re
import subprocess
from collections import defaultdict

# (stage, pattern over "dso symbol"), first match wins.
STAGES = [
    ("hash (BLAKE3)", r"blake3"),
    ("chunk (FastCDC)", r"fastcdc|cairn_chunker::cdc|StreamChunker"),
    ("compress (zstd)", r"ZSTD_compress|ZSTD_(?:lazy|btlazy|btopt|opt|dfast|fast|row|RowFind|Hc|Bt|insert|update|count|encode|build|entropy|seq|CCtx|fill|ldm|rescale|selectBlock|noCompress|compressBlock)|HUF_compress|FSE_(?:compress|build|write|normalize|optimal)|HIST_|ZSTD_get.*Price"),
    ("decompress (zstd, verify)", r"ZSTD_decompress|ZSTD_decode|ZSTD_exec|ZSTD_DCtx|HUF_decompress|HUF_read|FSE_decode|FSE_read|ZSTD_build.*DTable|ZSTD_copy"),
    ("checksum (CRC32)", r"crc32"),
    ("TLS", r"rustls|ring::|aws_lc|GFp_|aes_|chacha"),
    ("RPC (tonic, h2, hyper, prost)", r"tonic|h2::|hyper|prost|tower|http::|bytes::"),
    ("index and catalog (sled, openraft)", r"sled::|openraft|cairn_meta|cairn_store::index"),
    ("async runtime", r"tokio::|futures_|crossbeam"),
    ("memory (copy, alloc)", r"memcpy|memmove|memset|malloc|_int_free|cfree|\bfree\b|realloc|alloc::|__rust_alloc|__rust_dealloc|_int_realloc|sysmalloc|unlink_chunk|__libc_calloc"),
    ("walk and manifest (agent)", r"cairn_agent|cairn_core::manifest|cairn_fs|serde|ciborium|postcard|bincode"),
    ("kernel (syscalls, page cache, network, fsync)", r"\[kernel|\[k\]"),
]
COMPILED = [(name, re.compile(p)) for name, p in STAGES]
LINE = re.compile(r"^\s*([\d.]+)%\s+(\d+)\s+(\S+)\s+\[(.)\]\s+(.*?)\s*$")


def samples(path):
    """(total samples, frequency, {(dso, kind, symbol): samples}) of a perf.data file."""
    out = subprocess.run(
        ["perf", "report", "-i", path, "--stdio", "--no-children", "-n", "-g", "none",
         "--sort", "dso,sym", "--percent-limit", "0"],
        capture_output=True, text=True, check=True).stdout
    freq = 0
    rows = {}
    total = 0
    for line in out.splitlines():
        m = re.search(r"freq[=:] ?(\d+)", line)
        if line.startswith("#") and m and not freq:
            freq = int(m.group(1))
        m = LINE.match(line)
        if m:
            n = int(m.group(2))
            rows[(m.group(3), m.group(4), m.group(5))] = n
            total += n
    return total, freq, rows


def stage_of(dso, kind, sym):
    text = f"{dso} [{kind}] {sym}"
    if kind == "k":
        return STAGES[-1][0]
    for name, pat in COMPILED:
        if pat.search(text):
            return name
    return "other"


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--title", required=True)
    ap.add_argument("--client", required=True)
    ap.add_argument("--nodes", required=True)
    ap.add_argument("--freq", type=int, default=0, help="when perf did not record it")
    a = ap.parse_args()
    sides = {}
    other = defaultdict(int)
    for side, path in (("client", a.client), ("nodes", a.nodes)):
        total, freq, rows = samples(path)
        freq = freq or a.freq or 499
        by = defaultdict(int)
        for (dso, kind, sym), n in rows.items():
            s = stage_of(dso, kind, sym)
            by[s] += n
            if s == "other":
                other[f"{side}: {sym}"] += n
        sides[side] = (total, freq, by)
    names = [n for n, _ in STAGES] + ["other"]
    print(f"\n**{a.title}**\n")
    print("| stage | client CPU s | client % | nodes CPU s | nodes % |")
    print("|---|---:|---:|---:|---:|")
    for name in names:
        cells = []
        for side in ("client", "nodes"):
            total, freq, by = sides[side]
            n = by.get(name, 0)
            cells += [f"{n / freq:.2f}", f"{100 * n / total:.1f}" if total else "0"]
        if any(c not in ("0.00", "0.0", "0") for c in cells):
            print(f"| {name} | " + " | ".join(cells) + " |")
    tot = []
    for side in ("client", "nodes"):
        total, freq, _ = sides[side]
        tot += [f"{total / freq:.2f}", "100"]
    print("| **total** | " + " | ".join(tot) + " |")
    top = sorted(other.items(), key=lambda kv: -kv[1])[:8]
    if top:
        print("\nLargest in \"other\": " + "; ".join(f"{k} ({v})" for k, v in top))


if __name__ == "__main__":
    main()
