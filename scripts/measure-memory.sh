#!/usr/bin/env bash
# Peak memory against input size (issue 7: "peak memory ≤ 128 MiB with default settings, and
# independent of the input size"). Backs up (twice: a first and an incremental backup),
# restores and checks (--read-data) two images with
# default settings and prints one Markdown table of peak RSS; benches/RESULTS.md holds its
# output from our machine.
#
#   real.img    4 GiB of real files: a tar of /usr (name order, fixed times), cut at 4 GiB
#   sparse.img  20 GiB, mostly hole: real.img's four GiB one at each of 0, 5, 10 and 15 GiB,
#               like a virtual disk a fifth full; five times the size, the same data
#   real.img through stdin as well: the content-defined chunker's path
#
# Each run once with a passphrase (the default: Argon2id asks 64 MiB for a moment while the
# repository opens) and once with a key file, whose peak is the pipeline's own. Peak RSS is
# /usr/bin/time's %M (the largest resident set, as VmHWM) and, as a cross-check, the
# peak_rss_bytes the --json summary reports.
#
# Usage: scripts/measure-memory.sh > memory.md
# Environment:
#   BENCH_DIR         work directory, never inside the checkout  [/var/tmp/blockvault-bench]
#   BENCH_BLOCKVAULT  this blockvault binary instead of `cargo build --release`
#   MEMORY_REAL_GIB   size of real.img in GiB  [4]
#   MEMORY_SPARSE_GIB size of sparse.img in GiB  [20]
# Time on our 2-core machine: ~6 minutes, plus building the inputs the first time (~2 min);
# needs ~4 × MEMORY_REAL_GIB GB free in BENCH_DIR.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
work=$(realpath -m "${BENCH_DIR:-/var/tmp/blockvault-bench}")/memory
real_gib=${MEMORY_REAL_GIB:-4}
sparse_gib=${MEMORY_SPARSE_GIB:-20}
case "$work/" in "$root/"*) echo "BENCH_DIR must not be inside the checkout" >&2; exit 1 ;; esac
log() { echo "memory: $*" >&2; }

if [ -n "${BENCH_BLOCKVAULT:-}" ]; then
  bv=$(realpath "$BENCH_BLOCKVAULT")
  bv_source="$bv"
else
  log "cargo build --release"
  (cd "$root" && cargo build --release --quiet --bin blockvault)
  bv="${CARGO_TARGET_DIR:-$root/target}/release/blockvault"
  [[ "$bv" = /* ]] || bv="$root/$bv"
  bv_source="built from $(cd "$root" && git describe --always --dirty 2>/dev/null || echo "an unknown commit")"
fi

mkdir -p "$work/inputs"
in="$work/inputs"
recipe="memory v2: real=${real_gib}GiB sparse=${sparse_gib}GiB"
if [ "$(cat "$in/.recipe" 2>/dev/null)" != "$recipe" ]; then
  log "building $in/real.img (${real_gib} GiB of /usr) and $in/sparse.img"
  rm -f "$in/real.img" "$in/sparse.img"
  # head ends the pipe early; tar's complaint about that is expected.
  tar -C / --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -cf - usr 2>/dev/null |
    head -c $((real_gib << 30)) > "$in/real.img" || true
  [ "$(stat -c %s "$in/real.img")" = $((real_gib << 30)) ] || { log "/usr holds less than ${real_gib} GiB"; exit 1; }
  truncate -s "${sparse_gib}G" "$in/sparse.img"
  # GiB i of real.img at (sparse ÷ real) × i GiB, in 4 MiB blocks.
  for i in $(seq 0 $((real_gib - 1))); do
    dd if="$in/real.img" of="$in/sparse.img" bs=4M count=256 skip=$((i * 256)) \
      seek=$((i * 256 * sparse_gib / real_gib)) conv=notrunc status=none
  done
  echo "$recipe" > "$in/.recipe"
fi

export BLOCKVAULT_PASSWORD=memory
rows="$work/rows.tsv"
: > "$rows"
# run LABEL OP SECRET -- COMMAND...: one row of peak RSS (time and --json) and seconds.
run() {
  local label=$1 op=$2 secret=$3 rss json_peak t0 t1
  shift 4
  t0=$(date +%s%N)
  /usr/bin/time -o "$work/time" -f '%M' "$@" > "$work/out.json" 2> "$work/err" || {
    log "FAILED: $label $op ($secret)"; cat "$work/err" >&2; exit 1; }
  t1=$(date +%s%N)
  rss=$(tail -n 1 "$work/time")
  json_peak=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1])).get("peak_rss_bytes") or "")' "$work/out.json" 2>/dev/null || true)
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$label" "$op" "$secret" "$rss" "$json_peak" $(((t1 - t0) / 1000000)) >> "$rows"
}

for secret in passphrase key-file; do
  auth=()
  [ "$secret" = passphrase ] || auth=(--key-file "$work/key")
  rm -f "$work/key"
  for input in sparse real stdin; do
    repo="$work/repo-$input"
    rm -rf "$repo" "$work/restored"
    "$bv" init --repo "$repo" "${auth[@]}" -q
    src="$in/$input.img"
    [ "$input" = stdin ] && src="$in/real.img"
    cat "$src" > /dev/null  # warm page cache, as for every run
    log "$secret: $input"
    # Twice: a first backup, then the same source again, whose chunks are then mapped, not
    # read (a file's; the stream is cut again); the pages of mapped chunks count as resident
    # while they are mapped.
    for op in backup incremental; do
      if [ "$input" = stdin ]; then
        run "$input" "$op" "$secret" -- sh -c 'exec "$@" < "$0"' "$src" "$bv" backup --repo "$repo" "${auth[@]}" --name m --json -
      else
        run "$input" "$op" "$secret" -- "$bv" backup --repo "$repo" "${auth[@]}" --name m --json "$src"
      fi
    done
    run "$input" restore "$secret" -- "$bv" restore --repo "$repo" "${auth[@]}" --name m --json "$work/restored"
    cmp -s "$src" "$work/restored" || { log "MISMATCH: the restore of $input differs"; exit 1; }
    rm -f "$work/restored"
    run "$input" check "$secret" -- "$bv" check --repo "$repo" "${auth[@]}" --read-data --json
    rm -rf "$repo"
  done
done

echo "Peak memory by input size: scripts/measure-memory.sh, $(date -u +%Y-%m-%d)"
echo
echo "- blockvault: $("$bv" --version) ($bv_source); default settings (--in-flight, chunk sizes, zstd level)"
echo "- machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg) at the end"
echo "- inputs: real.img ${real_gib} GiB of a tar of /usr (also through stdin); sparse.img ${sparse_gib} GiB holding the same ${real_gib} GiB in ${real_gib} pieces, the rest hole"
echo "- peak RSS in MiB: /usr/bin/time %M (the --json peak_rss_bytes in brackets when it differs by more than 1 MiB)"
echo
python3 - "$rows" "$sparse_gib" "$real_gib" <<'EOF'
import sys
from collections import defaultdict
rows = defaultdict(dict)
for line in open(sys.argv[1]):
    label, op, secret, rss, peak, ms = line.rstrip("\n").split("\t")
    rss = int(rss) / 1024
    cell = f"{rss:.1f}"
    if peak and abs(int(peak) / 1048576 - rss) > 1:
        cell += f" [{int(peak) / 1048576:.1f}]"
    rows[(op, secret)][label] = (cell, rss, int(ms) / 1000)
sparse_gib, real_gib = sys.argv[2], sys.argv[3]
print(f"| run | opened with | {sparse_gib} GiB sparse image | {real_gib} GiB of real data | the same through stdin | sparse ÷ real |")
print("|---|---|---|---|---|---|")
for op in ("backup", "incremental", "restore", "check"):
    for secret in ("passphrase", "key-file"):
        r = rows[(op, secret)]
        cells = [f"{r[l][0]} ({r[l][2]:.1f} s)" if l in r else "" for l in ("sparse", "real", "stdin")]
        ratio = f"{r['sparse'][1] / r['real'][1]:.2f}" if "sparse" in r and "real" in r else ""
        print(f"| {op} | {secret} | {' | '.join(cells)} | {ratio} |")
EOF
