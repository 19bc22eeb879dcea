#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what the tests use (Debian packages),
# checks formatting and lints, then runs every test. CI runs exactly this (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."

# Tools the end-to-end tests drive for real: mke2fs/debugfs (ext4 images), losetup (loop
# devices), setsid (running without a terminal).
need=()
command -v mke2fs >/dev/null || need+=(e2fsprogs)
command -v debugfs >/dev/null || need+=(e2fsprogs)
command -v losetup >/dev/null || need+=(mount)
command -v setsid >/dev/null || need+=(util-linux)
# Real `zfs send`/`zfs receive` (zfs-fuse: pools on image files, no kernel module), bzip2 for
# the OpenZFS test streams, diff for comparing restored datasets.
export PATH="$PATH:/usr/sbin:/sbin"
command -v zfs-fuse >/dev/null || need+=(zfs-fuse)
command -v bzip2 >/dev/null || need+=(bzip2)
command -v diff >/dev/null || need+=(diffutils)
# A real PostgreSQL server for the pg_dump job test (the test starts its own cluster), and
# runuser to run it as the postgres user.
ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || need+=(postgresql)
command -v runuser >/dev/null || need+=(util-linux)
if ((${#need[@]})); then
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  echo "installing: ${need[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi
# Loop devices need the loop module and root; fail loudly rather than skip.
if [ "$(id -u)" != 0 ]; then
  echo "the end-to-end tests attach loop devices and must run as root" >&2
  exit 1
fi
[ -e /dev/loop-control ] || modprobe loop 2>/dev/null || true
# zfs-fuse mounts datasets through FUSE; the ZFS tests start and stop the daemon themselves.
[ -e /dev/fuse ] || modprobe fuse 2>/dev/null || true

# Real S3 servers (Garage, moto) for the S3 tests; the tests start and stop them themselves.
python3 -c 'import venv, ensurepip' 2>/dev/null || {
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
}
./scripts/install-test-servers.sh

cargo fmt --all -- --check
cargo clippy --all-targets -- -D warnings
# One quick pass of each benchmark (they must keep working), then the unit, property and
# integration tests; the integration binary runs last so its summary closes the output.
cargo test --benches
cargo test --lib --bins --tests
