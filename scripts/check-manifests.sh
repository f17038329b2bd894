#!/usr/bin/env bash
# Deployment and alerting checks for CI (.ci/run calls this; it runs anywhere with the tools):
#   1. renders every kustomize overlay under mesh/k8s/overlays with `kubectl kustomize`;
#   2. `promtool check rules` and `promtool test rules` on ops/alerts;
#   3. checks that the PrometheusRule manifest matches the plain rule file.
# Needs kubectl and promtool (Debian package `prometheus`) on PATH, and node_modules (npm ci).
# Exits non-zero, naming what failed, on the first error.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

fail() {
  echo "check-manifests: FAILED: $*" >&2
  exit 1
}

need() {
  command -v "$1" >/dev/null 2>&1 || fail "'$1' is not on PATH ($2)"
}

need kubectl "install kubectl; it renders the kustomize overlays"
need promtool "install the Debian package: apt-get install -y prometheus"

rendered="$(mktemp -d)"
trap 'rm -rf "$rendered"' EXIT

shopt -s nullglob
overlays=(mesh/k8s/overlays/*/)
[ "${#overlays[@]}" -gt 0 ] || fail "no overlay found under mesh/k8s/overlays"
[ -f mesh/k8s/overlays/production/kustomization.yaml ] || fail "mesh/k8s/overlays/production is missing"

for dir in "${overlays[@]}"; do
  name="$(basename "$dir")"
  echo "check-manifests: kubectl kustomize ${dir%/}"
  if ! kubectl kustomize "$dir" >"$rendered/$name.yaml" 2>"$rendered/$name.err"; then
    cat "$rendered/$name.err" >&2
    fail "kubectl kustomize ${dir%/}"
  fi
  objects="$(grep -c '^kind:' "$rendered/$name.yaml" || true)"
  [ "$objects" -gt 0 ] || fail "kubectl kustomize ${dir%/} rendered no objects"
  echo "check-manifests:   ${objects} objects"
done

echo "check-manifests: promtool check rules ops/alerts/shieldx.rules.yml"
promtool check rules ops/alerts/shieldx.rules.yml || fail "promtool check rules"

echo "check-manifests: promtool test rules ops/alerts/shieldx.rules.test.yml"
promtool test rules ops/alerts/shieldx.rules.test.yml || fail "promtool test rules"

echo "check-manifests: PrometheusRule manifest up to date"
[ -x node_modules/.bin/tsx ] || fail "node_modules/.bin/tsx missing (run npm ci first)"
node_modules/.bin/tsx ops/alerts/sync-prometheus-rule.ts --check \
  || fail "mesh/k8s/base/monitoring/prometheus-rule.yaml is stale: npx tsx ops/alerts/sync-prometheus-rule.ts"

echo "check-manifests: OK"
