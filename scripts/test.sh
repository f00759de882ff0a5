#!/usr/bin/env bash
# Every check CI makes, in order: formatting, lints, docs, tests (all features), and the
# crate without its default features. Run from anywhere: scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (all targets, all features, -D warnings)"
cargo clippy --all-targets --all-features -- -D warnings

step "cargo doc (-D warnings)"
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --all-features

step "cargo build --no-default-features"
cargo build --no-default-features

step "cargo test --all-features"
cargo test --all-features
