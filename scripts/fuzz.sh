#!/usr/bin/env bash
# Runs the cargo-fuzz targets (fuzz/) on the nightly toolchain, each for a given time, and
# prints what each did: executions, coverage, corpus, peak memory, and any finding.
#
#   scripts/fuzz.sh                 # every target, 60 s each
#   scripts/fuzz.sh 600             # every target, 10 minutes each
#   scripts/fuzz.sh 300 key codec   # the targets named (a name matches as a substring)
#   MERGE=1 scripts/fuzz.sh 600     # then merge inputs with new coverage into fuzz/corpus/
#
# New inputs go to a scratch corpus (fuzz/target/corpus/<target>); the committed corpus
# (fuzz/corpus/<target>, replayed on stable by tests/fuzz_corpus.rs) changes only with
# MERGE=1. A crash, an assert of a target's oracle, a leak of more than 512 MiB in one input
# or an input slower than 10 s is a finding: its input is saved in fuzz/artifacts/<target>/,
# and the script exits non-zero. Summaries are appended to fuzz/target/summary.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

seconds="${1:-60}"
shift || true
all=(binary_codec json_codec directives conditional key layer_request)
targets=()
if [ "$#" -eq 0 ]; then
  targets=("${all[@]}")
else
  for want in "$@"; do
    for target in "${all[@]}"; do
      case "$target" in *"$want"*) targets+=("$target") ;; esac
    done
  done
fi
if [ "${#targets[@]}" -eq 0 ]; then
  echo "no target matches: $*; targets: ${all[*]}" >&2
  exit 2
fi

if ! rustup toolchain list | grep -q '^nightly'; then
  echo "cargo fuzz needs a nightly toolchain (rustup toolchain list shows none)" >&2
  exit 2
fi
if ! command -v cargo-fuzz >/dev/null 2>&1; then
  echo "==> installing cargo-fuzz"
  cargo install --locked cargo-fuzz
fi

echo "==> building the fuzz targets (nightly, release, debug assertions)"
timeout 1800 cargo +nightly fuzz build

mkdir -p fuzz/target
summary="$root/fuzz/target/summary.txt"
failed=()
for target in "${targets[@]}"; do
  scratch="$root/fuzz/target/corpus/$target"
  mkdir -p "$scratch" "$root/fuzz/artifacts/$target"
  log="$root/fuzz/target/$target.log"
  echo "==> $target for ${seconds}s (log: $log)"
  status=0
  timeout "$((seconds + 300))" cargo +nightly fuzz run "$target" "$scratch" "$root/fuzz/corpus/$target" -- \
    -max_total_time="$seconds" -dict="$root/fuzz/http.dict" -rss_limit_mb=2048 \
    -malloc_limit_mb=512 -timeout=10 -print_final_stats=1 >"$log" 2>&1 || status=$?
  done_line=$(grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -1 || true)
  execs=$(grep -E '^stat::number_of_executed_units' "$log" | awk '{print $2}' | tail -1 || true)
  rss=$(grep -E '^stat::peak_rss_mb' "$log" | awk '{print $2}' | tail -1 || true)
  line="$(date -u +%FT%TZ) $target ${seconds}s: execs=${execs:-?} peak_rss_mb=${rss:-?} ${done_line:-no DONE line} exit=$status"
  echo "$line" | tee -a "$summary"
  if [ "$status" -ne 0 ]; then
    failed+=("$target")
    grep -E 'panicked|ERROR|SUMMARY|Test unit written' "$log" | head -20 || true
  fi
  if [ "${MERGE:-0}" = "1" ] && [ "$status" -eq 0 ]; then
    before=$(find "fuzz/corpus/$target" -type f | wc -l)
    timeout 1800 cargo +nightly fuzz run "$target" "$root/fuzz/corpus/$target" "$scratch" -- \
      -merge=1 >"$log.merge" 2>&1
    after=$(find "fuzz/corpus/$target" -type f | wc -l)
    echo "    merged into fuzz/corpus/$target: $before -> $after files"
  fi
done

if [ "${#failed[@]}" -ne 0 ]; then
  echo "findings in: ${failed[*]} (inputs in fuzz/artifacts/)" >&2
  exit 1
fi
