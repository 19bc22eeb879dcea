#!/usr/bin/env bash
# Measures the fixed chunk size trade-off: write amplification (bytes stored for a small
# change) against object count (S3 requests, manifest size), on realistic scattered changes.
# Prints a Markdown table; docs/chunk-size.md holds the output from our machine.
# Needs root (loop-mounts an ext4 image). Usage: scripts/measure-chunk-size.sh [image MiB]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
bv="$PWD/target/release/blockvault"
mib="${1:-1024}"
work=$(mktemp -d)
mnt="$work/mnt"
trap 'umount "$mnt" 2>/dev/null || true; rm -rf "$work"' EXIT
export BLOCKVAULT_PASSWORD=measure
mkdir -p "$work/files" "$mnt"
# Real files: documentation, libraries, headers — about 60% of the image.
budget=$((mib * 1024 * 6 / 10))   # KiB
for d in /usr/share/doc /usr/include /usr/share/locale /usr/lib/x86_64-linux-gnu /usr/lib/python3* /usr/lib/gcc; do
  [ -d "$d" ] || continue
  have=$(du -sk "$work/files" | cut -f1)
  # Whole files only, until the budget is spent.
  find "$d" -type f -size -64M -print0 2>/dev/null | while IFS= read -r -d '' f; do
    size=$(( $(stat -c %s "$f") / 1024 + 4 ))
    have=$((have + size))
    [ "$have" -gt "$budget" ] && break
    mkdir -p "$work/files$(dirname "$f")" && cp "$f" "$work/files$f" 2>/dev/null || true
  done
  [ "$(du -sk "$work/files" | cut -f1)" -ge $((budget * 95 / 100)) ] && break
done
mke2fs -q -t ext4 -d "$work/files" -F "$work/base.img" "${mib}M"

# Pattern A, "a day on a server": edit files inside the mounted filesystem.
cp "$work/base.img" "$work/files-changed.img"
mount -o loop "$work/files-changed.img" "$mnt"
mapfile -t victims < <(find "$mnt" -type f -size +16k | shuf -n 40 --random-source=<(yes))
for f in "${victims[@]:0:30}"; do   # rewrite 4 KiB in the middle of 30 files
  dd if=/dev/urandom of="$f" bs=4k count=1 seek=1 conv=notrunc status=none
done
for f in "${victims[@]:30:10}"; do rm -f "$f"; done
head -c 2M /dev/urandom > "$mnt/new-log.bin"           # a log that grew by 2 MiB
for i in $(seq 50); do head -c 8k /dev/urandom > "$mnt/new-$i"; done
umount "$mnt"

# Pattern B, "a VM disk": 256 random 4 KiB writes anywhere in the image.
cp "$work/base.img" "$work/blocks-changed.img"
for i in $(seq 256); do
  dd if=/dev/urandom of="$work/blocks-changed.img" bs=4k count=1 seek=$(( (RANDOM * 32768 + RANDOM) % (mib * 256) )) conv=notrunc status=none
done

changed_a=$({ cmp -l "$work/base.img" "$work/files-changed.img" || true; } | wc -l)
changed_b=$({ cmp -l "$work/base.img" "$work/blocks-changed.img" || true; } | wc -l)
echo "image: ${mib} MiB ext4 from real files; pattern A changes ${changed_a} bytes, pattern B ${changed_b} bytes"
echo
echo "| chunk size | objects after first backup | manifest entries | A: new chunks | A: stored bytes | A: amplification | B: new chunks | B: stored bytes | B: amplification |"
echo "|---|---|---|---|---|---|---|---|---|"
for cs in 256K 512K 1M 2M 4M 8M 16M; do
  repo="$work/repo-$cs"
  "$bv" init --repo "$repo" --chunk-size "$cs" -q
  first=$("$bv" backup --repo "$repo" --name img "$work/base.img" --json)
  objects=$(find "$repo/chunks" -type f | wc -l)
  entries=$(echo "$first" | grep '"chunks"' | tr -dc 0-9)
  row="| $cs | $objects | $entries"
  for img in files-changed blocks-changed; do
    "$bv" init --repo "$repo-$img" --chunk-size "$cs" -q
    "$bv" backup --repo "$repo-$img" --name img "$work/base.img" -q
    s=$("$bv" backup --repo "$repo-$img" --name img "$work/$img.img" --json)
    new=$(echo "$s" | grep '"chunks_new"' | tr -dc 0-9)
    stored=$(echo "$s" | grep '"bytes_new_stored"' | tr -dc 0-9)
    changed=$changed_a; [ "$img" = blocks-changed ] && changed=$changed_b
    amp=$(awk -v s="$stored" -v c="$changed" 'BEGIN { printf "%.0fx", s / (c > 0 ? c : 1) }')
    row="$row | $new | $stored | $amp"
    rm -rf "$repo-$img"
  done
  echo "$row |"
  rm -rf "$repo"
done
