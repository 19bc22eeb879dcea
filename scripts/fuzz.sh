#!/usr/bin/env bash
# Runs every fuzz target for a while: scripts/fuzz.sh [SECONDS per target] [TARGET...]
# Installs cargo-fuzz if missing. libFuzzer needs nightly compiler flags: the nightly
# toolchain is used when rustup has it, else stable with RUSTC_BOOTSTRAP=1.
#
# Seeds come from real objects: the format's test vectors, the OpenZFS send streams of the
# test suite, and repositories that the blockvault binary itself writes here on every run
# (an unencrypted one whose object bodies seed `stored_object`, an encrypted one whose key
# file and exported paper key seed `key_file` and `paper_key`); the job files of docs/jobs.md
# and the README seed `job_config`.
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

seeds="$(mktemp -d)"
trap 'rm -rf "$seeds"' EXIT

# Writes real repositories with the debug binary and cuts seeds from them into $seeds/<target>.
make_seeds() {
  (cd .. && cargo build --quiet --bin blockvault)
  local bin="${CARGO_TARGET_DIR:-$PWD/../target}/debug/blockvault"
  local w="$seeds/work"
  mkdir -p "$w" "$seeds"/{stored_object,decode_payload,open_object,key_file,paper_key,job_config}
  bv() { env -u BLOCKVAULT_REPO -u BLOCKVAULT_PASSWORD "$bin" -q "$@" </dev/null; }

  # Unencrypted: every object's checksum can be cut off, leaving what stored_object frames.
  head -c 300000 /dev/urandom >"$w/random.img"
  { cat ../README.md; head -c 70000 /dev/zero; cat ../format-spec/README.md; } >"$w/text.img"
  bv init --repo "$w/plain" --encryption none --chunk-size 64K
  bv backup --repo "$w/plain" --name 'tank/vm' "$w/random.img"
  bv backup --repo "$w/plain" --name 'tank/vm' "$w/text.img"
  bzip2 -dc ../tests/data/zfs-streams/zfs-fuse-incr-s1-s2.zsend.bz2 |
    env -u BLOCKVAULT_REPO "$bin" -q backup --repo "$w/plain" --name 'tank/fs' -
  # A lock is deleted when its run ends: kill a run at its store operations in turn until
  # one dies holding its lock (the fault injector dies at an exact operation).
  for n in $(seq 1 40); do
    BLOCKVAULT_TEST_FAULTS="die-at=$n" bv backup --repo "$w/plain" --name 'tank/vm' \
      "$w/random.img" 2>/dev/null || true
    [ -z "$(ls -A "$w/plain/locks" 2>/dev/null)" ] || break
  done

  # Encrypted, opened by a key file; a passphrase key beside it; the paper key.
  bv init --repo "$w/enc" --key-file "$w/key" --chunk-size 64K
  bv --repo "$w/enc" --key-file "$w/key" backup --name disk "$w/text.img"
  printf 'a passphrase\n' >"$w/pass"
  bv --repo "$w/enc" --key-file "$w/key" key add --new-password-file "$w/pass"
  bv --repo "$w/enc" --key-file "$w/key" key export --output "$w/paper"

  local i=0 f
  while IFS= read -r f; do
    i=$((i + 1))
    # Header byte 7 is the codec, the control byte stored_object reads; then the body.
    tail -c +8 "$f" | head -c -32 >"$seeds/stored_object/$i"
    if [ "$(tail -c +8 "$f" | head -c 1 | xxd -p)" = 00 ]; then
      tail -c +9 "$f" | head -c -32 >"$seeds/decode_payload/$i"
    fi
  done < <(find "$w/plain" "$w/enc/keys" "$w/enc/config" -type f ! -name '.*')
  find "$w/plain" "$w/enc" -type f ! -name '.*' -exec cp --backup=numbered {} "$seeds/open_object/" \;

  cp "$w/key" "$seeds/key_file/ours"
  head -c 64 /dev/urandom >"$seeds/key_file/own-random"
  cp "$w/paper" "$seeds/paper_key/exported"
  # Job files: the documented example, and the ones the tests write are built from it.
  awk '/^```toml$/{f=1;next} /^```$/{f=0} f' ../docs/jobs.md >"$seeds/job_config/docs"
  awk '/^```toml$/{f=1;next} /^```$/{f=0} f' ../README.md >"$seeds/job_config/readme"
  # As typed back by hand: no comments, upper-case hex.
  grep -v '^#' "$w/paper" | sed -E 's/^(blockvault-paper-key-v1 repository|[0-9]+:|check:) /\1 \U/' \
    >"$seeds/paper_key/typed"
}
make_seeds

targets=("$@")
[ ${#targets[@]} -gt 0 ] || mapfile -t targets < <("${fuzz[@]}" list)
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t"
  # The real objects of the format's test vectors, and those written above.
  find ../format-spec/vectors/repo-* -type f -exec cp {} "corpus/$t/" \; 2>/dev/null || true
  [ ! -d "$seeds/$t" ] || cp "$seeds/$t"/* "corpus/$t/"
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
