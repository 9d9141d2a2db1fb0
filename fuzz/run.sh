#!/usr/bin/env bash
# Builds and runs every cargo-fuzz target for FUZZ_SECONDS (default 30) each,
# starting from the committed seeds in fuzz/corpus/<target>. Fails on any
# crash, panic, leak or timeout libFuzzer reports; the input that did it is
# left in fuzz/artifacts/<target>/ to replay with
#   cargo fuzz run --sanitizer none <target> fuzz/artifacts/<target>/<file>
#
# `--sanitizer none` lets it build on stable; set FUZZ_TOOLCHAIN=nightly to
# use `cargo +nightly` (and e.g. FUZZ_SANITIZER=address for ASan there).
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${FUZZ_SECONDS:-30}
sanitizer=${FUZZ_SANITIZER:-none}
cargo_cmd=(cargo)
[[ -n ${FUZZ_TOOLCHAIN:-} ]] && cargo_cmd+=("+$FUZZ_TOOLCHAIN")

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "== installing cargo-fuzz"
  cargo install cargo-fuzz --locked --quiet
fi

"${cargo_cmd[@]}" fuzz build --sanitizer "$sanitizer"

# New inputs go to a scratch corpus so a run never dirties the tree.
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

for target in $("${cargo_cmd[@]}" fuzz list); do
  echo "== fuzz $target (${seconds}s)"
  mkdir -p "$scratch/$target"
  # libFuzzer exits non-zero on a crash; the outer timeout bounds a hang in
  # the harness itself (libFuzzer's -timeout bounds one input).
  timeout $((seconds + 120)) "${cargo_cmd[@]}" fuzz run --sanitizer "$sanitizer" "$target" \
    "$scratch/$target" "fuzz/corpus/$target" -- \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=1024 -print_final_stats=1 \
    2>"$scratch/$target.log" || {
    tail -n 40 "$scratch/$target.log" >&2
    echo "fuzz $target: FAILED (see fuzz/artifacts/$target/)" >&2
    exit 1
  }
  grep -E '^Done [0-9]+ runs' "$scratch/$target.log" || true
done
echo "fuzz: all targets ran ${seconds}s without a crash"
