#!/usr/bin/env bash
# Copies the files listed in deploy/synced-files.txt from their owners' folders
# (envoy/, importer/) to where the kustomizations may read them: kustomize
# reads generator files only from below the kustomization root.
# deploy/validate.sh fails while a copy differs, so a change to an original
# can't silently skip the cluster.
set -euo pipefail
cd "$(dirname "$0")/.."
grep -v '^#' deploy/synced-files.txt | while read -r orig copy; do
  [[ -n $orig ]] || continue
  if cmp -s "$orig" "$copy"; then
    echo "unchanged $copy"
  else
    mkdir -p "$(dirname "$copy")"
    cp "$orig" "$copy"
    echo "updated   $copy from $orig"
  fi
done
