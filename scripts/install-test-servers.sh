#!/usr/bin/env bash
# Installs the real S3 servers the tests start on 127.0.0.1: Garage (built once with cargo
# into a cache outside the checkout: ~30 CPU-minutes the first time) and moto (a venv).
# Idempotent; prints nothing when both are already there.
set -euo pipefail
cache="${BLOCKVAULT_TEST_CACHE:-$HOME/.cache/blockvault-test}"
garage_version=2.5.0
garage="$cache/garage-$garage_version/bin/garage"
moto="$cache/moto-venv/bin/moto_server"
mkdir -p "$cache"
if [ ! -x "$garage" ]; then
  echo "building Garage $garage_version into $cache (once; about 15-20 minutes on 2 cores)"
  # Without metrics, LMDB and K2V: the tests need only the S3 API on SQLite.
  CARGO_TARGET_DIR="$cache/garage-build" cargo install garage --version "$garage_version" --locked \
    --no-default-features --features bundled-libs,sqlite --root "$cache/garage-$garage_version" --quiet
  rm -rf "$cache/garage-build"
fi
if [ ! -x "$moto" ]; then
  echo "installing moto[server] into $cache/moto-venv"
  python3 -m venv "$cache/moto-venv"
  "$cache/moto-venv/bin/pip" install --quiet 'moto[server]'
fi
