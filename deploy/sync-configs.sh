#!/usr/bin/env bash
# Copies the Envoy configs that the cluster uses from envoy/ (owned by the
# filter's engineers) into the kustomize base, whose ConfigMap generator may
# only read files below deploy/k8s/base. deploy/validate.sh fails while a copy
# differs from its original, so a change to envoy/ can't silently skip the
# cluster.
set -euo pipefail
cd "$(dirname "$0")/.."
for copy in deploy/k8s/base/envoy/*; do
  orig=envoy/$(basename "$copy")
  if cmp -s "$orig" "$copy"; then
    echo "unchanged $copy"
  else
    cp "$orig" "$copy"
    echo "updated   $copy from $orig"
  fi
done
