#!/usr/bin/env bash
# The main job, with nothing configured: build blockvault, make a real ext4 disk image from
# files on this machine, back it up into a local-directory repository, change the image,
# back it up again (only the changed chunks are stored), and restore both versions.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --quiet
bv="$PWD/target/debug/blockvault"
work="${DEMO_DIR:-$PWD/demo}"
rm -rf "$work"
mkdir -p "$work/files"
cd "$work"
export BLOCKVAULT_REPO="$work/vault" BLOCKVAULT_PASSWORD="demo passphrase"

cp -r /usr/share/doc/. files/ 2>/dev/null || true
cp -r /usr/share/common-licenses/. files/ 2>/dev/null || true
if command -v mke2fs >/dev/null; then
  mke2fs -q -t ext4 -d files -F disk.img 256M
else
  echo "(mke2fs not found: using a file of real bytes instead of an ext4 image)"
  tar -C files -cf - . | head -c 200M > disk.img
  truncate -s 256M disk.img
fi

echo "== init"; "$bv" init
echo "== first backup of a 256 MiB disk image"; "$bv" backup --name disk disk.img
# Scattered changes: 16 writes of 64 KiB at random places.
for i in $(seq 16); do
  dd if=/dev/urandom of=disk.img bs=64K count=1 seek=$((RANDOM % 4096)) conv=notrunc status=none
done
echo "== second backup after scattered changes"; "$bv" backup --name disk disk.img
echo "== list"; "$bv" list
first=$("$bv" list --name disk --json | grep -m1 '"version"' | cut -d'"' -f4)
echo "== restore the current version and the first one"
"$bv" restore --name disk restored.img
"$bv" restore --name disk --version "$first" restored-first.img
cmp disk.img restored.img && echo "current version restored bit-exact"
echo "== in-place restore of the first version onto the changed image (writes only differing chunks)"
"$bv" restore --name disk --version "$first" --in-place disk.img
cmp disk.img restored-first.img && echo "in-place restore bit-exact"
echo "demo finished; everything is in $work"
