#!/usr/bin/env bash
# Builds a variant of the filter outside the repository and prints its .wasm path:
#
#   bench/proxy/variant.sh bench/proxy/variants/min.patch
#   CASES="b d" EXTRA_FILTER_WASM=<printed path> EXTRA_ROUTE_STRIP=1 ROUNDS=3 bench/proxy/run.sh
#
# The patch applies to filter/ at HEAD (a/filter/... b/filter/...); the
# patches for filter/src/inject.rs predate the split into injector.rs and
# apply to commits before it. The copy
# lives in a scratch directory with its own target dir, so nothing in the
# working tree or its build cache changes.
set -euo pipefail
patch_file=$(realpath "$1")
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
name=$(basename "$patch_file" .patch)
SCRATCH=${SCRATCH:-/tmp/authproxy-filter-variants}
dir=$SCRATCH/$name
rm -rf "$dir" && mkdir -p "$dir"
git -C "$ROOT" archive HEAD filter protocol Cargo.toml Cargo.lock | tar -x -C "$dir"
sed -i 's/^members = .*/members = ["protocol", "filter"]/; s/^default-members = .*/default-members = ["filter"]/' "$dir/Cargo.toml"
(cd "$dir" && patch -s -p1 <"$patch_file")
(cd "$dir" && CARGO_TARGET_DIR=$SCRATCH/target cargo build -q -p filter --target wasm32-wasip1 --profile wasm)
cp "$SCRATCH/target/wasm32-wasip1/wasm/filter.wasm" "$SCRATCH/$name.wasm"
echo "$SCRATCH/$name.wasm"
