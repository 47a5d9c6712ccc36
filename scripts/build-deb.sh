#!/usr/bin/env bash
# Builds the Debian package of Cairn with dpkg-deb (always present on Debian; no extra tool
# to build): the `cairn` binary, the systemd units of packaging/systemd, the maintainer
# scripts of packaging/debian, and the docs.
#
#   scripts/build-deb.sh [--binary PATH] [--out DIR] [--version V]
#
# Without --binary it builds the release binary first; without --version the package takes
# the workspace's version (a test gives a later one to rehearse an upgrade). Prints the
# package's path.
set -euo pipefail
cd "$(dirname "$0")/.."

bin=""
out="target/debian"
version=""
while [ $# -gt 0 ]; do
  case "$1" in
    --binary) bin="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --version) version="$2"; shift 2 ;;
    -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
    *) echo "build-deb: unknown argument $1" >&2; exit 2 ;;
  esac
done
if [ -z "$bin" ]; then
  cargo build --release -j2 -p cairn >&2
  bin="target/release/cairn"
fi
[ -x "$bin" ] || { echo "build-deb: $bin is not an executable" >&2; exit 1; }

[ -n "$version" ] || version=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version = "\(.*\)"/\1/p' Cargo.toml)
arch=$(dpkg --print-architecture)
stage=$(mktemp -d)
chmod 0755 "$stage"
trap 'rm -rf "$stage"' EXIT

install -D -m 0755 "$bin" "$stage/usr/bin/cairn"
# Debug info makes a debug build ten times larger; the package ships without it.
strip --strip-debug "$stage/usr/bin/cairn" 2>/dev/null || true
for unit in packaging/systemd/*.service; do
  install -D -m 0644 "$unit" "$stage/lib/systemd/system/$(basename "$unit")"
done
doc="$stage/usr/share/doc/cairn"
install -D -m 0644 README.md "$doc/README.md"
[ -f docs/operations.md ] && install -m 0644 docs/operations.md "$doc/operations.md"
# The command reference, generated from the binary's clap definitions.
"$stage/usr/bin/cairn" --help > "$doc/cairn-help.txt"
for cmd in node agent gateway init backup restore cluster; do
  if "$stage/usr/bin/cairn" "$cmd" --help > "$doc/cairn-$cmd-help.txt" 2>/dev/null; then :; else rm -f "$doc/cairn-$cmd-help.txt"; fi
done
chmod 0644 "$doc"/*

install -d "$stage/DEBIAN"
size=$(du -sk --exclude=DEBIAN "$stage" | cut -f1)
sed -e "s/@VERSION@/$version/" -e "s/@ARCH@/$arch/" -e "s/@SIZE@/$size/" \
  packaging/debian/control > "$stage/DEBIAN/control"
for s in postinst prerm postrm; do
  install -m 0755 "packaging/debian/$s" "$stage/DEBIAN/$s"
done
(cd "$stage" && find usr lib -type f -print0 | sort -z | xargs -0 md5sum) > "$stage/DEBIAN/md5sums"

mkdir -p "$out"
deb="$out/cairn_${version}_${arch}.deb"
dpkg-deb --root-owner-group -Zgzip --build "$stage" "$deb" >&2
echo "$deb"
