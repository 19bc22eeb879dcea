#!/usr/bin/env bash
# blockvault against restic and borg (rustic and bupstash when asked), on the same inputs, on this
# machine: the side-by-side measurement of issue 7. Prints one Markdown table on stdout (progress
# goes to stderr); benches/RESULTS.md holds its output from our machine.
#
# Inputs, built once into $BENCH_DIR/inputs and reused while BENCH_SIZE_MIB stays the same:
#   base.img     ext4 image of BENCH_SIZE_MIB made with `mke2fs -d` from real files of /usr (about
#                65% of the image; sorted file order, stopping at the budget; fixed UUID, hash
#                seed and times, so the same /usr gives the same bytes)
#   changed.img  base.img with ~1% of its bytes replaced in scattered 1 MiB regions (positions and
#                bytes from Python's random with a fixed seed)
#   random.bin   1 GiB of AES-256-CTR keystream under a fixed key (BENCH_SIZE_MIB/2 when smaller)
#   share.tar    a tar of /usr/share, ~500 MB (scaled with BENCH_SIZE_MIB below 2048): whole
#                top-level directories in name order while they fit, --sort=name --mtime=@0
#
# Runs, per repetition, each timed on its own with the inputs already in the page cache (every
# input is read once just before its run, for every tool alike); each run goes round all the
# tools before the next one starts, so that the tools' times of one run are minutes apart:
#   first backup of base.img into a fresh repository; backup of changed.img into the same one;
#   restore of that version to a file (fsync included), and again into tmpfs (no disk: the
#   engine's own speed); read-data check with the page cache dropped first (MB/s of repository
#   bytes); share.tar and random.bin through a pipe on stdin, each into a fresh repository.
# All repositories are encrypted; borg uses zstd,3 (and a second variant with fixed 4 MiB chunks).
#
# Usage: scripts/bench-peers.sh > results.md     (from any directory; needs root for apt-get)
# Environment:
#   BENCH_DIR       work directory, never inside the checkout  [/var/tmp/blockvault-bench]
#   BENCH_SIZE_MIB  image size in MiB (512 or 256 for a quick run)  [2048]
#   BENCH_RUNS      repetitions; the table shows the median  [3]
#   BENCH_TOOLS     any of: blockvault blockvault-zstd1 restic borg borg-fixed rustic bupstash
#                   [blockvault restic borg] (blockvault-zstd1: a repository made with
#                   `init --compression 1`, the faster setting)
#                   ("borg" runs both borg variants; rustic and bupstash are `cargo install`ed
#                   into $BENCH_DIR/cargo when named)
#   BENCH_LIMITS    1 to add reference rows: page-cache read, zstd, dd, and b3sum (`cargo
#                   install`ed into $BENCH_DIR/cargo)  [1]
#   BENCH_BLOCKVAULT  use this blockvault binary instead of `cargo build --release`
#   BENCH_MEMDIR    a directory on tmpfs for the restores into memory (needs ~2.5 GiB of memory
#                   at the default size)  [/dev/shm/blockvault-bench-restore]
# Time on our 2-core machine at BENCH_SIZE_MIB=2048, with blockvault, its zstd -1 variant,
# restic and both borgs: ~4.5 minutes of measuring per repetition (the default 3: ~13.5 min),
# ~1.5 min to build the inputs the first time, and the release build when it is not up to
# date (~3–4 min after a source change).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
work=${BENCH_DIR:-/var/tmp/blockvault-bench}
size_mib=${BENCH_SIZE_MIB:-2048}
runs=${BENCH_RUNS:-3}
tools_wanted=${BENCH_TOOLS:-blockvault restic borg}
limits=${BENCH_LIMITS:-1}
memdir=${BENCH_MEMDIR:-/dev/shm/blockvault-bench-restore}

log() { echo "bench: $*" >&2; }
die() { log "$*"; exit 1; }

if ! [[ "$size_mib" =~ ^[0-9]+$ ]] || ((size_mib < 64)); then die "BENCH_SIZE_MIB must be a number of MiB >= 64"; fi
if ! [[ "$runs" =~ ^[0-9]+$ ]] || ((runs < 1)); then die "BENCH_RUNS must be a positive number"; fi
work=$(realpath -m "$work")
case "$work/" in "$root/"*) die "BENCH_DIR ($work) must not be inside the checkout ($root)" ;; esac
mkdir -p "$work"

# "borg" means both borg variants; keep the order given, drop repeats.
tools=()
for t in $tools_wanted; do
  case "$t" in
    borg) set -- borg borg-fixed ;;
    blockvault | blockvault-zstd1 | restic | borg-fixed | rustic | bupstash) set -- "$t" ;;
    *) die "unknown tool in BENCH_TOOLS: $t" ;;
  esac
  for x in "$@"; do [[ " ${tools[*]} " == *" $x "* ]] || tools+=("$x"); done
done
has_tool() { [[ " ${tools[*]} " == *" $1 "* ]]; }

# --- What is missing gets installed ------------------------------------------------------------
sudo=""
[ "$(id -u)" = 0 ] || sudo="sudo"
need=()
command -v mke2fs >/dev/null || [ -x /usr/sbin/mke2fs ] || [ -x /sbin/mke2fs ] || need+=(e2fsprogs)
[ -x /usr/bin/time ] || need+=(time)
command -v python3 >/dev/null || need+=(python3)
command -v openssl >/dev/null || need+=(openssl)
command -v tar >/dev/null || need+=(tar)
[ "$limits" = 1 ] && ! command -v zstd >/dev/null && need+=(zstd)
has_tool restic && ! command -v restic >/dev/null && need+=(restic)
# bupstash's build links the system libsodium.
has_tool bupstash && [ ! -x "$work/cargo/bin/bupstash" ] && ! pkg-config --exists libsodium 2>/dev/null &&
  need+=(libsodium-dev pkg-config)
{ has_tool borg || has_tool borg-fixed; } && ! command -v borg >/dev/null && need+=(borgbackup)
if ((${#need[@]})); then
  log "installing from Debian: ${need[*]}"
  for p in "${need[@]}"; do
    # apt-cache knows nothing before the first `apt-get update` on a fresh machine.
    if ! apt-cache show "$p" >/dev/null 2>&1; then $sudo apt-get update -qq; break; fi
  done
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi
export PATH="$PATH:/usr/sbin:/sbin:$work/cargo/bin"
for crate in rustic:rustic-rs bupstash:bupstash; do
  bin=${crate%%:*}
  if has_tool "$bin" && [ ! -x "$work/cargo/bin/$bin" ]; then
    log "cargo install ${crate#*:} into $work/cargo"
    cargo install --quiet --locked --root "$work/cargo" "${crate#*:}" >&2
  fi
done
if [ "$limits" = 1 ] && ! command -v b3sum >/dev/null && command -v cargo >/dev/null; then
  log "cargo install b3sum into $work/cargo (a reference row)"
  cargo install --quiet --locked --root "$work/cargo" b3sum >&2 || log "no b3sum: leaving out its row"
fi
if has_tool borg-fixed && ! borg create --help 2>/dev/null | grep -q 'fixed'; then
  log "this borg has no fixed chunker: leaving out borg-fixed"
  tools=("${tools[@]/borg-fixed/}")
fi

# --- blockvault ----------------------------------------------------------------------------------
bv_source=""
if [ -n "${BENCH_BLOCKVAULT:-}" ]; then
  bv=$(realpath "$BENCH_BLOCKVAULT")
  bv_source="$bv"
elif has_tool blockvault || has_tool blockvault-zstd1; then
  log "cargo build --release"
  (cd "$root" && cargo build --release --quiet --bin blockvault)
  bv_source="built from $(cd "$root" && git describe --always --dirty 2>/dev/null || echo "an unknown commit")"
  bv="${CARGO_TARGET_DIR:-$root/target}/release/blockvault"
  [[ "$bv" = /* ]] || bv="$root/$bv"
fi

# --- Inputs --------------------------------------------------------------------------------------
in="$work/inputs"
recipe="inputs v1: size_mib=$size_mib"
image_bytes=$((size_mib * 1048576))
random_mib=$((size_mib / 2 < 1024 ? size_mib / 2 : 1024))
tar_budget=$((500000000 * (size_mib < 2048 ? size_mib : 2048) / 2048))
if [ "$(cat "$in/.recipe" 2>/dev/null)" != "$recipe" ]; then
  log "building inputs in $in (${size_mib} MiB image)"
  rm -rf "$in"
  mkdir -p "$in/files"
  # Real files, whole, in sorted order until 65% of the image is spent (blocks plus an inode each).
  python3 - $((image_bytes * 65 / 100)) "$in/files.list" /usr/share /usr/lib /usr/include /usr/bin /usr/sbin <<'EOF'
import os, stat, sys
budget, out, roots = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
total = 0
def files():
    for r in roots:
        for d, dirs, names in os.walk(r):
            dirs.sort()
            for n in sorted(names):
                yield os.path.join(d, n)
with open(out, "wb") as f:
    for p in files():
        try:
            st = os.lstat(p)
        except OSError:
            continue
        if not stat.S_ISREG(st.st_mode) or st.st_size > 64 << 20 or not os.access(p, os.R_OK):
            continue
        cost = (st.st_size + 4095) // 4096 * 4096 + 256
        if total + cost > budget:
            break
        total += cost
        f.write(os.fsencode(p.lstrip("/")) + b"\0")
EOF
  tar -C / --null --no-recursion -T "$in/files.list" -cf - | tar -C "$in/files" -xf -
  entries=$(find "$in/files" | wc -l)
  # mke2fs -d copies each file's atime and mtime: fix them, and the UUID, hash seed and clock.
  find "$in/files" -exec touch -h -d @946684800 {} +
  E2FSPROGS_FAKE_TIME=946684800 mke2fs -q -F -t ext4 -N $((entries + 4096)) \
    -U 6c6f636b-7661-756c-7462-656e63680001 -E hash_seed=6c6f636b-7661-756c-7462-656e63680002 \
    -d "$in/files" "$in/base.img" "${size_mib}M" >&2 # it names the file on stdout even with -q
  rm -rf "$in/files"
  # ~1% of the bytes, in 1 MiB regions anywhere but the first MiB (the superblock).
  cp --sparse=always "$in/base.img" "$in/changed.img"
  python3 - "$in/changed.img" "$size_mib" > "$in/changed.regions" <<'EOF'
import random, sys
path, mib = sys.argv[1], int(sys.argv[2])
rng = random.Random(20261129)
regions = sorted(rng.sample(range(1, mib), max(1, round(mib / 100))))
print(len(regions))
with open(path, "r+b") as f:
    for r in regions:
        f.seek(r << 20)
        f.write(rng.randbytes(1 << 20))
EOF
  head -c $((random_mib * 1048576)) /dev/zero |
    openssl enc -aes-256-ctr -nosalt -K "$(printf '%064x' 7)" -iv "$(printf '%032x' 0)" > "$in/random.bin"
  # Whole top-level directories of /usr/share in name order while they fit the budget.
  python3 - "$tar_budget" "$in/share.list" <<'EOF'
import os, sys
budget, out = int(sys.argv[1]), sys.argv[2]
def size(p):
    if not os.path.isdir(p) or os.path.islink(p):
        return 512 + (os.lstat(p).st_size + 511) // 512 * 512
    t = 512
    for d, dirs, names in os.walk(p):
        for n in dirs + names:
            try:
                t += 512 + (os.lstat(os.path.join(d, n)).st_size + 511) // 512 * 512
            except OSError:
                pass
    return t
total = 0
with open(out, "wb") as f:
    for n in sorted(os.listdir("/usr/share")):
        s = size(os.path.join("/usr/share", n))
        if total + s <= budget:
            total += s
            f.write(os.fsencode("share/" + n) + b"\0")
EOF
  tar -C /usr --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner --null -T "$in/share.list" \
    -cf "$in/share.tar"
  echo "$recipe" > "$in/.recipe"
fi
changed_mib=$(cat "$in/changed.regions")

# --- Measuring -----------------------------------------------------------------------------------
export BLOCKVAULT_PASSWORD=bench RESTIC_PASSWORD=bench RUSTIC_PASSWORD=bench BORG_PASSPHRASE=bench
export BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK=yes BORG_RELOCATED_REPO_ACCESS_IS_OK=yes
export BORG_DISPLAY_PASSPHRASE=no BORG_BASE_DIR="$work/home/borg"
export RESTIC_CACHE_DIR="$work/home/restic-cache" XDG_CACHE_HOME="$work/home/cache"
results="$work/results.tsv"
logf="$work/bench.log"
rm -rf "${work:?}/repos" "${work:?}/restore" "${work:?}/tmp" "${work:?}/home" "${memdir:?}"
mkdir -p "$work/repos" "$work/restore" "$work/tmp" "$work/home" "$memdir"
trap 'rm -rf "${memdir:?}"' EXIT
: > "$results"
: > "$logf"

warm() { cat "$@" > /dev/null; }
cold_cache() {
  sync
  if ! echo 3 | $sudo tee /proc/sys/vm/drop_caches > /dev/null 2>&1; then
    log "could not drop the page cache: checks may read from memory"
  fi
}
size_of() { du -sb "$1" | cut -f1; }

# measure REP RUN TOOL BYTES REPO -- COMMAND...: times COMMAND (plus `sync` of $sync_file, for
# restores), its peak RSS and CPU share, then the repository's size; one row in $results.
sync_file=""
measure() {
  local rep=$1 run=$2 tool=$3 bytes=$4 repo=$5 status=ok t0 t1 rss cpu repo_bytes=""
  shift 6
  echo "== $rep $run $tool: $*" >> "$logf"
  # Whatever earlier runs left unwritten is flushed before the clock starts: otherwise the
  # first fsync of this run (a lock, a journal commit) pays for another tool's writes.
  sync
  t0=$(date +%s%N)
  /usr/bin/time -o "$work/tmp/time" -f '%M %P' "$@" >> "$logf" 2>&1 || status=failed
  [ -z "$sync_file" ] || [ ! -e "$sync_file" ] || sync "$sync_file"
  t1=$(date +%s%N)
  read -r rss cpu < <(tail -n 1 "$work/tmp/time")
  [ -z "$repo" ] || repo_bytes=$(size_of "$repo")
  [ "$status" = ok ] || log "FAILED: $run $tool (see $logf)"
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$rep" "$run" "$tool" "$bytes" $((t1 - t0)) \
    "$rss" "${cpu%\%}" "$repo_bytes" "$status" >> "$results"
}

# tool_cmd TOOL OP REPO [NAME FILE|OUTDIR]: sets the array `cmd` (stdin operations read `-`).
tool_cmd() {
  local tool=$1 op=$2 repo=$3 name=${4:-} path=${5:-} fixed=()
  case "$tool" in
    blockvault | blockvault-zstd1)
      case "$op" in
        init)
          cmd=("$bv" init --repo "$repo" -q)
          [ "$tool" = blockvault ] || cmd+=(--compression 1) ;;
        backup) cmd=("$bv" backup --repo "$repo" --name img --json "$path") ;; # one series
        stdin) cmd=("$bv" backup --repo "$repo" --name "$name" --json -) ;;
        restore) cmd=("$bv" restore --repo "$repo" --name img --json "$path/$name.out") ;;
        check) cmd=("$bv" check --repo "$repo" --read-data --json) ;;
      esac ;;
    restic)
      case "$op" in
        init) cmd=(restic -r "$repo" init --repository-version 2 -q) ;;
        backup) cmd=(restic -r "$repo" backup -q "$path") ;;
        stdin) cmd=(restic -r "$repo" backup -q --stdin --stdin-filename "$name") ;;
        restore) cmd=(restic -r "$repo" restore latest --target "$path" -q) ;;
        check) cmd=(restic -r "$repo" check --read-data -q) ;;
      esac ;;
    rustic)
      case "$op" in
        init) cmd=(rustic -r "$repo" init) ;;
        backup) cmd=(rustic -r "$repo" backup "$path") ;;
        stdin) cmd=(rustic -r "$repo" backup --stdin-filename "$name" -) ;;
        restore) cmd=(rustic -r "$repo" restore latest "$path") ;;
        check) cmd=(rustic -r "$repo" check --read-data) ;;
      esac ;;
    borg | borg-fixed)
      [ "$tool" = borg ] || fixed=(--chunker-params "fixed,4194304")
      case "$op" in
        init) cmd=(borg init -e repokey "$repo") ;;
        backup) cmd=(borg create --compression "zstd,3" "${fixed[@]}" "$repo::$name" "$path") ;;
        stdin) cmd=(borg create --compression "zstd,3" "${fixed[@]}" --stdin-name "$name" "$repo::$name" -) ;;
        restore) cmd=(env -C "$path" borg extract "$repo::$name") ;;
        check) cmd=(borg check --verify-data "$repo") ;;
      esac ;;
    bupstash)
      # shellcheck disable=SC2016 # expanded by that sh
      case "$op" in
        init) cmd=(bupstash init -r "$repo") ;;
        backup) cmd=(bupstash put -q -r "$repo" -k "$work/home/bupstash.key" name="$name" "$path") ;;
        # bupstash reads no stdin and gives --exec commands none: pass ours on as fd 3.
        stdin) cmd=(sh -c 'exec bupstash put -q -r "$1" -k "$2" --exec name="$3" sh -c "exec cat <&3" 3<&0' \
          sh "$repo" "$work/home/bupstash.key" "$name") ;;
        restore) cmd=(sh -c 'exec bupstash get -r "$1" -k "$2" name="$3" > "$4/$3.out"' sh \
          "$repo" "$work/home/bupstash.key" "$name" "$path") ;;
        check) cmd=() ;;
      esac ;;
  esac
}
# Where TOOL's restore of changed.img lands under OUTDIR.
restored_file() {
  case "$1" in
    blockvault | blockvault-zstd1 | bupstash) echo "$2/changed.out" ;;
    *) echo "$2$in/changed.img" ;;
  esac
}

if has_tool bupstash && [ ! -e "$work/home/bupstash.key" ]; then
  bupstash new-key -o "$work/home/bupstash.key"
fi

uptime_before=$(uptime)
# Each run goes round every tool before the next run starts: a tool's time and the others'
# are then a few minutes apart, not a whole repetition, and the ratios do not take in the
# drift of a shared VM's speed (a third within a day on ours). Each step below takes the tool
# as its argument and reads the repetition ($rep) and stream ($stream) of the loop further down.
each_tool() {
  local tool
  for tool in "${tools[@]}"; do
    [ -n "$tool" ] || continue
    "$@" "$tool"
  done
}
img_repo() { echo "$work/repos/$1-img"; }
init_img() {
  local repo
  repo=$(img_repo "$1")
  tool_cmd "$1" init "$repo" && "${cmd[@]}" >> "$logf" 2>&1
}
first_backup() {
  warm "$in/base.img"
  tool_cmd "$1" backup "$(img_repo "$1")" base "$in/base.img"
  measure "$rep" first "$1" "$image_bytes" "$(img_repo "$1")" -- "${cmd[@]}"
}
changed_backup() {
  warm "$in/changed.img"
  tool_cmd "$1" backup "$(img_repo "$1")" changed "$in/changed.img"
  measure "$rep" changed "$1" "$image_bytes" "$(img_repo "$1")" -- "${cmd[@]}"
}
restore_to_disk() {
  local out="$work/restore/$1"
  mkdir -p "$out"
  tool_cmd "$1" restore "$(img_repo "$1")" changed "$out"
  sync_file=$(restored_file "$1" "$out")
  measure "$rep" restore "$1" "$image_bytes" "" -- "${cmd[@]}"
  if ! cmp -s "$sync_file" "$in/changed.img"; then
    log "MISMATCH: $1 restored something other than changed.img"
    sed -i '$ s/\tok$/\tmismatch/' "$results"
  fi
  sync_file=""
  rm -rf "$out"
}
# The same restore into memory (tmpfs): what the engine does when the disk is not the limit.
restore_to_memory() {
  local out="$memdir/$1"
  mkdir -p "$out"
  tool_cmd "$1" restore "$(img_repo "$1")" changed "$out"
  measure "$rep" restore-mem "$1" "$image_bytes" "" -- "${cmd[@]}"
  if ! cmp -s "$(restored_file "$1" "$out")" "$in/changed.img"; then
    log "MISMATCH: $1 restored something other than changed.img into memory"
    sed -i '$ s/\tok$/\tmismatch/' "$results"
  fi
  rm -rf "$out"
}
check_repo() {
  tool_cmd "$1" check "$(img_repo "$1")"
  if ((${#cmd[@]})); then
    # From the disk, for every tool: a check reads a repository nobody has read lately, and
    # blockvault's chunks, written around the page cache, would otherwise be the only ones
    # not already in memory.
    cold_cache
    measure "$rep" check "$1" "$(size_of "$(img_repo "$1")")" "" -- "${cmd[@]}"
  fi
}
remove_img_repo() { rm -rf "$(img_repo "$1")"; }
stream_backup() {
  local repo="$work/repos/$1-${stream%%:*}"
  tool_cmd "$1" init "$repo" && "${cmd[@]}" >> "$logf" 2>&1
  warm "$in/${stream#*:}"
  tool_cmd "$1" stdin "$repo" "${stream#*:}"
  # A pipe, not a file: a stream source cannot seek or mmap.
  # shellcheck disable=SC2002
  cat "$in/${stream#*:}" |
    measure "$rep" "${stream%%:*}" "$1" "$(size_of "$in/${stream#*:}")" "$repo" -- "${cmd[@]}" || {
    log "the pipe into $1 broke: it did not read all of its input"
    sed -i '$ s/\tok$/\tbroken-pipe/' "$results"
  }
  rm -rf "$repo"
}

started=$(date +%s)
for rep in $(seq "$runs"); do
  if [ "$limits" = 1 ] && [ "$rep" = 1 ]; then
    log "reference limits"
    warm "$in/base.img"
    measure "$rep" first "limit: page-cache read" "$image_bytes" "" -- \
      dd if="$in/base.img" of=/dev/null bs=1M status=none
    for z in "-1 -T2" "-3 -T2" "-3 -T1"; do
      # shellcheck disable=SC2086 # $z is two options
      measure "$rep" first "limit: zstd $z" "$image_bytes" "$work/tmp/out.zst" -- \
        zstd -q -f $z "$in/base.img" -o "$work/tmp/out.zst"
    done
    rm -f "$work/tmp/out.zst"
    if command -v b3sum >/dev/null; then
      warm "$in/changed.img"
      measure "$rep" changed "limit: b3sum 2 threads" "$image_bytes" "" -- b3sum --num-threads 2 "$in/changed.img"
    fi
    warm "$in/changed.img"
    sync_file="$work/tmp/dd.out"
    measure "$rep" restore "limit: dd conv=fsync" "$image_bytes" "" -- \
      dd if="$in/changed.img" of="$work/tmp/dd.out" bs=4M conv=fsync status=none
    sync_file=""
    rm -f "$work/tmp/dd.out"
    measure "$rep" restore-mem "limit: dd to tmpfs" "$image_bytes" "" -- \
      dd if="$in/changed.img" of="$memdir/dd.out" bs=4M status=none
    rm -f "$memdir/dd.out"
    warm "$in/random.bin"
    measure "$rep" random "limit: zstd -3 -T2" "$(size_of "$in/random.bin")" "$work/tmp/out.zst" -- \
      zstd -q -f -3 -T2 "$in/random.bin" -o "$work/tmp/out.zst"
    rm -f "$work/tmp/out.zst"
  fi
  log "run $rep/$runs: the image"
  each_tool init_img
  each_tool first_backup
  each_tool changed_backup
  each_tool restore_to_disk
  each_tool restore_to_memory
  each_tool check_repo
  each_tool remove_img_repo
  for stream in tar:share.tar random:random.bin; do
    log "run $rep/$runs: ${stream%%:*} through stdin"
    each_tool stream_backup
  done
done
elapsed=$(($(date +%s) - started))
uptime_after=$(uptime)

# --- The table -----------------------------------------------------------------------------------
versions=()
{ has_tool blockvault || has_tool blockvault-zstd1; } && versions+=("$("$bv" --version) ($bv_source)")
has_tool restic && versions+=("$(restic version | cut -d' ' -f1-2)")
{ has_tool borg || has_tool borg-fixed; } && versions+=("$(borg --version)")
has_tool rustic && versions+=("$(rustic --version)")
has_tool bupstash && versions+=("bupstash $(bupstash version 2>/dev/null || true)")
echo "Side-by-side run of scripts/bench-peers.sh, $(date -u +%Y-%m-%d)"
echo
echo "- machine: $(nproc) cores, $(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)," \
  "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
tools_line=$(IFS=';'; echo "${versions[*]}")
echo "- tools: ${tools_line//;/; }"
echo "- inputs: ${size_mib} MiB ext4 image, sparse ($(du -s -B1 "$in/base.img" | awk '{ printf "%.0f", $1 / 1e6 }') MB" \
  "allocated), the changed image with ${changed_mib} random 1 MiB regions," \
  "$((random_mib)) MiB random data, $(size_of "$in/share.tar" | awk '{ printf "%.0f", $1 / 1e6 }') MB tar of /usr/share"
echo "- BENCH_SIZE_MIB=$size_mib BENCH_RUNS=$runs BENCH_TOOLS=\"$tools_wanted\"; median of $runs;" \
  "MB = 10^6 bytes of input per second (check: of repository bytes); page cache warm: every input" \
  "is read once right before each run, for every tool; restores include an fsync of the file;" \
  "checks start with the page cache dropped"
echo "- load average before: ${uptime_before##*load average: }; after: ${uptime_after##*load average: };" \
  "measuring took ${elapsed} s"
[ "$limits" != 1 ] || echo "- \"limit:\" rows: other programs on the same input, measured once (first repetition);" \
  "b3sum's RSS counts its mmap of the file"
echo
python3 - "$results" "${tools[@]}" <<'EOF'
import statistics, sys
from collections import defaultdict
path, tools = sys.argv[1], [t for t in sys.argv[2:] if t]
rows = defaultdict(list)
for line in open(path):
    rep, run, tool, nbytes, ns, rss, cpu, repo, status = line.rstrip("\n").split("\t")
    rows[(run, tool)].append(dict(rep=int(rep), speed=int(nbytes) / 1e6 / (int(ns) / 1e9),
        rss=int(rss) / 1024, cpu=int(cpu) if cpu.isdigit() else None,
        repo=int(repo) if repo else None, status=status))
def med(run, tool, key):
    v = [r[key] for r in rows.get((run, tool), []) if r[key] is not None]
    return statistics.median(v) if v else None
def growth(tool):
    g = [c["repo"] - f["repo"] for c in rows.get(("changed", tool), [])
         for f in rows.get(("first", tool), []) if c["rep"] == f["rep"] and c["repo"] and f["repo"]]
    return statistics.median(g) if g else None
def num(x, fmt="{:.0f}"):
    return "" if x is None else (fmt.format(x) if x >= 100 or fmt != "{:.0f}" else f"{x:.1f}")
runs = [("first", "first backup of the image"), ("changed", "backup of the changed image"),
        ("restore", "restore of the changed image"),
        ("restore-mem", "restore of the changed image into memory (tmpfs)"), ("check", "read-data check (MB/s of stored data)"),
        ("tar", "tar of /usr/share through stdin"), ("random", "random data through stdin")]
# With the zstd -1 variant measured, a column of its own speed ratios.
fast = "blockvault-zstd1" if any(t == "blockvault-zstd1" for (_, t) in rows) else None
print("| run | tool | MB/s | peak RSS (MiB) | CPU % | repository (MB) | blockvault ÷ tool: speed | blockvault ÷ tool: repository |"
      + (" zstd1 ÷ tool: speed | zstd1 ÷ tool: repository |" if fast else ""))
print("|---|---|---|---|---|---|---|---|" + ("---|---|" if fast else ""))
for run, title in runs:
    names = [t for t in tools if (run, t) in rows] + sorted(t for (r, t) in rows if r == run and t.startswith("limit"))
    bv_speed, bv_repo = med(run, "blockvault", "speed"), med(run, "blockvault", "repo")
    if run == "changed":
        bv_repo = growth("blockvault")
    for t in names:
        speed, repo = med(run, t, "speed"), med(run, t, "repo")
        if run == "changed" and not t.startswith("limit"):
            repo = growth(t)
        bad = sorted({r["status"] for r in rows[(run, t)] if r["status"] != "ok"})
        shown = num(speed) + (" " + "/".join(bad).upper() if bad else "")
        repo_s = "" if repo is None or run in ("restore", "restore-mem", "check") else ("+" if run == "changed" else "") + num(repo / 1e6)
        ratio = "" if t == "blockvault" or not (bv_speed and speed) else f"{bv_speed / speed:.2f}×"
        rratio = "" if t == "blockvault" or not (bv_repo and repo) or run in ("restore", "restore-mem", "check") else f"{bv_repo / repo:.2f}×"
        cpu = med(run, t, "cpu")
        extra = ""
        if fast:
            f_speed, f_repo = med(run, fast, "speed"), (growth(fast) if run == "changed" else med(run, fast, "repo"))
            own = t.startswith("blockvault")
            extra = " {} | {} |".format(
                "" if own or not (f_speed and speed) else f"{f_speed / speed:.2f}×",
                "" if own or not (f_repo and repo) or run in ("restore", "restore-mem", "check") else f"{f_repo / repo:.2f}×")
        print(f"| {title} | {t} | {shown} | {num(med(run, t, 'rss'))} | {'' if cpu is None else f'{cpu:.0f}'} | {repo_s} | {ratio} | {rratio} |{extra}")
EOF
