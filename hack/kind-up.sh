#!/usr/bin/env bash
# Try spotfleet on a kind cluster of your own machine:
#   1. image: the operator image, built by hack/image.sh (the same buildah path CI
#      builds and runs with podman), saved as a docker archive;
#   2. cluster: `kind create cluster` (an existing cluster of that name is reused),
#      and the image loaded into its nodes (`kind load image-archive`);
#   3. charts: charts/spotfleet-crds (upgradable CRDs), then charts/spotfleet with the
#      loaded image (pullPolicy Never); waits for the Deployment;
#   4. a tenant: its namespace, its credentials Secret, and examples/dry-run.yaml (a
#      policy that decides and reports, and never launches or terminates);
#   5. prints `kubectl get spotpolicies -A`.
# Usage: hack/kind-up.sh [--plan]   (--plan prints the commands and runs none)
# Env:   CLUSTER (spotfleet), IMAGE (localhost/spotfleet:dev), NAMESPACE
#        (spotfleet-system), TENANT_NAMESPACE (analytics), AWS_ACCESS_KEY_ID and
#        AWS_SECRET_ACCESS_KEY (the tenant's keys, put in its Secret; a dry-run policy
#        only reads EC2), AWS_ENDPOINT_URL (optional: an EC2 endpoint reachable from the
#        cluster, such as a stand-in cloud; empty: AWS).
# Needs kind, kubectl and helm on PATH, and what hack/image.sh needs (root, buildah,
# podman). kind needs a container engine that can pull its node image; this project's
# CI machines have none, so CI lints this script and checks its plan, and never runs it.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"

CLUSTER="${CLUSTER:-spotfleet}"
IMAGE="${IMAGE:-localhost/spotfleet:dev}"
NAMESPACE="${NAMESPACE:-spotfleet-system}"
TENANT_NAMESPACE="${TENANT_NAMESPACE:-analytics}"
archive="$repo/build/spotfleet-image.tar"
plan=0
if [[ "${1:-}" == "--plan" ]]; then plan=1; fi

log() { printf '[kind] %s\n' "$*" >&2; }

# run CMD...: run it, or print it (shell-quoted, one line) under --plan
run() {
  if (( plan )); then
    printf '%q ' "$@" | sed 's/ $//'
    printf '\n'
  else
    "$@"
  fi
}

if (( ! plan )); then
  for c in kind kubectl helm; do
    command -v "$c" >/dev/null || { log "$c is required on PATH"; exit 1; }
  done
  : "${AWS_ACCESS_KEY_ID:?is needed: the access key of the tenant (put in its Secret)}"
  : "${AWS_SECRET_ACCESS_KEY:?is needed: the secret key of the tenant}"
fi

log "1/5 the operator image"
run env IMAGE="$IMAGE" bash "$repo/hack/image.sh" build
run mkdir -p "$repo/build"
run bash "$repo/hack/image.sh" podman save --format docker-archive -o "$archive" "$IMAGE"

log "2/5 the kind cluster $CLUSTER"
if (( plan )) || ! kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
  run kind create cluster --name "$CLUSTER"
fi
run kind load image-archive "$archive" --name "$CLUSTER"
run kubectl config use-context "kind-$CLUSTER"

log "3/5 the charts"
run helm upgrade --install spotfleet-crds "$repo/charts/spotfleet-crds" \
  --namespace "$NAMESPACE" --create-namespace --wait
chart_args=(
  --set "image.repository=${IMAGE%:*}" --set "image.tag=${IMAGE##*:}"
  --set image.pullPolicy=Never
)
if [[ -n "${AWS_ENDPOINT_URL:-}" ]]; then
  chart_args+=(--set "awsEndpointUrl=$AWS_ENDPOINT_URL")
fi
run helm upgrade --install spotfleet "$repo/charts/spotfleet" \
  --namespace "$NAMESPACE" --create-namespace "${chart_args[@]}"
run kubectl --namespace "$NAMESPACE" rollout status deployment/spotfleet --timeout=180s

log "4/5 a tenant and a dry-run policy"
if (( plan )) || ! kubectl get namespace "$TENANT_NAMESPACE" >/dev/null 2>&1; then
  run kubectl create namespace "$TENANT_NAMESPACE"
fi
# the keys reach kubectl on its stdin, never on a command line
secret=(kubectl --namespace "$TENANT_NAMESPACE" create secret generic aws-analytics
  --from-env-file=/dev/stdin --dry-run=client -o yaml)
if (( plan )); then
  printf '%q ' "${secret[@]}"
  printf '< <keys> | kubectl apply -f -\n'
else
  printf 'aws_access_key_id=%s\naws_secret_access_key=%s\n' \
    "$AWS_ACCESS_KEY_ID" "$AWS_SECRET_ACCESS_KEY" | "${secret[@]}" | kubectl apply -f -
fi
run kubectl --namespace "$TENANT_NAMESPACE" apply -f "$repo/examples/dry-run.yaml"
run kubectl --namespace "$TENANT_NAMESPACE" wait spotpolicy/analytics-preview \
  --for=condition=Ready --timeout=180s || log "not Ready yet: kubectl describe spotpolicy -n $TENANT_NAMESPACE"

log "5/5 the policies"
run kubectl get spotpolicies --all-namespaces
