#!/usr/bin/env bash
# Runs every fuzz target for a while: scripts/fuzz.sh [SECONDS per target] [TARGET...]
# Installs cargo-fuzz if missing. libFuzzer needs nightly compiler flags: the nightly
# toolchain is used when rustup has it, else stable with RUSTC_BOOTSTRAP=1.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
secs="${1:-60}"
shift || true
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  fuzz=(cargo +nightly fuzz)
else
  export RUSTC_BOOTSTRAP=1
  fuzz=(cargo fuzz)
fi
targets=("$@")
[ ${#targets[@]} -gt 0 ] || mapfile -t targets < <("${fuzz[@]}" list)
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t"
  # Seeds: the real objects of the format's test vectors.
  find ../format-spec/vectors/repo-* -type f -exec cp {} "corpus/$t/" \; 2>/dev/null || true
  if [ "$t" = zfs_stream ]; then
    # Real send streams under -max_len, behind the control byte: required, one piece.
    for f in ../tests/data/zfs-streams/*.zsend.bz2; do
      seed="corpus/$t/$(basename "$f" .zsend.bz2)"
      { printf '\001'; bzip2 -dc "$f"; } > "$seed"
      [ "$(stat -c %s "$seed")" -le 1048576 ] || rm "$seed"
    done
  fi
  echo "== $t for ${secs}s"
  "${fuzz[@]}" run "$t" "corpus/$t" -- -max_total_time="$secs" -rss_limit_mb=2048 -max_len=1048576
done
