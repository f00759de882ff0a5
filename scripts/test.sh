#!/usr/bin/env bash
# Every check CI makes, in order: formatting, lints, docs, the crate without its default
# features, the tests (all features; the fuzz corpus replayed), then the load and fault
# tests on their own. Run from anywhere: scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

# The Redis tests start their own redis-server processes (standalone and a local cluster),
# the memcached tests their own memcached: install what the machine lacks (one
# `apt-get update`, then one install).
missing=()
if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-cli >/dev/null 2>&1; then
  missing+=(redis-server redis-tools)
fi
if ! command -v memcached >/dev/null 2>&1; then
  missing+=(memcached)
fi
# The demo tests run the docs' `curl` lines as written.
if ! command -v curl >/dev/null 2>&1; then
  missing+=(curl)
fi
if [ "${#missing[@]}" -gt 0 ]; then
  step "installing ${missing[*]}"
  if [ "$(id -u)" -eq 0 ]; then sudo=""; else sudo="sudo"; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (all targets, all features, -D warnings)"
cargo clippy --all-targets --all-features -- -D warnings

step "cargo doc (-D warnings)"
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --all-features

step "cargo build --no-default-features"
cargo build --no-default-features

# The declared MSRV (Cargo.toml's rust-version), and each feature on its own, checked on
# that toolchain without warnings (in a target directory of their own, so that the main one
# stays warm). rustup installs the toolchain when the machine lacks it.
msrv=$(sed -n 's/^rust-version = "\(.*\)"/\1/p' Cargo.toml)
features=$(sed -n '/^\[features\]/,/^\[/s/^\([a-z][a-z0-9-]*\) = .*/\1/p' Cargo.toml | grep -vx default)
step "MSRV $msrv: cargo check, all features, then each feature alone (-D warnings)"
rustup toolchain list | grep -q "^$msrv" || rustup toolchain install "$msrv" --profile minimal
msrv_check() { RUSTFLAGS="-D warnings" CARGO_TARGET_DIR=target/msrv cargo "+$msrv" check "$@"; }
msrv_check --all-features
msrv_check --no-default-features
for feature in $features; do
  echo "    --features $feature"
  msrv_check --no-default-features --features "$feature"
done

# The docs as docs.rs builds them (Cargo.toml's [package.metadata.docs.rs]): nightly, the
# `docsrs` cfg (feature labels), broken intra-doc links denied.
step "docs as on docs.rs (nightly, --cfg docsrs, -D warnings)"
rustup toolchain list | grep -q "^nightly" || rustup toolchain install nightly --profile minimal
docs_features=$(sed -n '/^\[package.metadata.docs.rs\]/,/^\[/s/^features = \[\(.*\)\]/\1/p' Cargo.toml | tr -d '" ')
RUSTDOCFLAGS="--cfg docsrs -D warnings" CARGO_TARGET_DIR=target/docsrs \
  cargo +nightly doc --no-deps --features "$docs_features"

step "cargo test --all-features (all but the load tests)"
cargo test --all-features -- --skip load_

# Floods and faults under sustained load, one at a time (they measure the process's memory
# and latency), printing their figures.
step "load and fault tests (tests/load.rs, tests/redis/load.rs)"
cargo test --all-features --test load --test redis -- load_ --nocapture --test-threads=1
