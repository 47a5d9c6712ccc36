#!/usr/bin/env bash
# Compare a restored tree with its source: content, metadata, device numbers, hardlink groups.
#
# Usage: scripts/bench/verify-tree.sh SOURCE RESTORED OUTDIR
#
# Writes the details into OUTDIR (diff.txt, meta.diff, dev.diff, links.diff and the listings
# they come from), prints one summary line on stdout, and exits 0 when the trees are
# identical, 1 when they differ, 2 on bad usage. Nothing is filtered out of the reports
# except diff's "X is a <type> while file Y is a <type>" notes for two fifos, two character or
# two block devices: diff -r does not compare such files by content (it has none) and prints
# that note even for a plain `cp -a` copy; their type, mode, owner and mtime are compared in
# meta.diff and their major:minor numbers in dev.diff.
#
# Metadata compared per entry: path, type, mode, owner, group, size (not for directories,
# whose st_size depends on the file system's history), mtime (ns), symlink target, link count.
# Not compared: atime/ctime (cannot be restored), extended attributes.
set -euo pipefail

if [[ $# -ne 3 ]]; then
    echo "usage: $0 SOURCE RESTORED OUTDIR" >&2
    exit 2
fi
src=$1
dst=$2
out=$3
[[ -d $src ]] || { echo "verify: no source dir $src" >&2; exit 2; }
[[ -d $dst ]] || { echo "verify: no restored dir $dst" >&2; exit 2; }
mkdir -p "$out"
export LC_ALL=C

# 1. content (and types, symlink targets) with diff.
set +e
diff -r --no-dereference "$src" "$dst" >"$out/diff.raw" 2>&1
set -e
grep -Ev '^File .* is a (fifo|character special file|block special file) while file .* is a \1$' \
    "$out/diff.raw" >"$out/diff.txt" || true
content=$(grep -c '' "$out/diff.txt" || true)

# 2. metadata listing.
listing() {
    (cd "$1" && find . \( -type d -printf '%p %y %m %u %g - %T@ %l %n\n' \) \
        -o -printf '%p %y %m %u %g %s %T@ %l %n\n' | sort)
}
listing "$src" >"$out/meta.src"
listing "$dst" >"$out/meta.dst"
diff "$out/meta.src" "$out/meta.dst" >"$out/meta.diff" || true
meta=$(grep -c '^[<>]' "$out/meta.diff" || true)

# 3. device numbers of block and character devices.
devices() {
    (cd "$1" && find . \( -type b -o -type c \) -exec stat -c '%n %F %t:%T' {} + | sort)
}
devices "$src" >"$out/dev.src"
devices "$dst" >"$out/dev.dst"
diff "$out/dev.src" "$out/dev.dst" >"$out/dev.diff" || true
dev=$(grep -c '^[<>]' "$out/dev.diff" || true)

# 4. hardlink groups: the sets of paths that share an inode.
links() {
    (cd "$1" && find . ! -type d -links +1 -printf '%i %p\n') |
        awk '{ g[$1] = g[$1] " " $2 } END { for (i in g) print g[i] }' |
        while read -r line; do tr ' ' '\n' <<<"$line" | sort | paste -sd ' '; done | sort
}
links "$src" >"$out/links.src"
links "$dst" >"$out/links.dst"
diff "$out/links.src" "$out/links.dst" >"$out/links.diff" || true
lnk=$(grep -c '^[<>]' "$out/links.diff" || true)

entries=$(grep -c '' "$out/meta.src" || true)
ndev=$(grep -c '' "$out/dev.src" || true)
nlink=$(grep -c '' "$out/links.src" || true)
if [[ $content -eq 0 && $meta -eq 0 && $dev -eq 0 && $lnk -eq 0 ]]; then
    echo "identical ($entries entries, $ndev device nodes, $nlink hardlink groups)"
    exit 0
fi
echo "DIFFERS: $content content/type diff lines, $meta metadata lines (<src >restored), $dev device lines, $lnk hardlink-group lines (of $entries entries; details in $out)"
exit 1
