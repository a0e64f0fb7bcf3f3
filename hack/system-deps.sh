#!/usr/bin/env bash
# Install the system packages the tests and the demo need, from Debian's
# packages, when they are missing: PostgreSQL (initdb/pg_ctl), Prometheus
# (prometheus, promtool), buildah, podman, crun and debootstrap (the image), and the
# basics the scripts use. Idempotent; a warm machine returns at once. Go must already
# be on the machine (it builds the control-plane binaries, see hack/tools.sh).
set -euo pipefail
need=()
pg_ok=0
for d in /usr/lib/postgresql/*/bin; do [[ -x "$d/initdb" ]] && pg_ok=1; done
command -v initdb >/dev/null && pg_ok=1
[[ $pg_ok == 1 ]] || need+=(postgresql)
command -v prometheus >/dev/null || need+=(prometheus)
command -v promtool >/dev/null || need+=(prometheus)
command -v runuser >/dev/null || need+=(util-linux)
# the image: built with buildah on a debootstrapped base, run with podman (crun; runc
# where crun refuses a hybrid cgroup hierarchy)
# (hack/image.sh, tests/e2e/test_image.py; shellcheck lints the script)
for c in buildah podman crun runc debootstrap shellcheck; do command -v "$c" >/dev/null || need+=("$c"); done
# the e2e node (tests/fixtures/node.py): containerd + runc, the CNI bridge plugin,
# iptables for kube-proxy, ip and nsenter/unshare for its namespaces
command -v containerd >/dev/null || need+=(containerd)
[[ -x /usr/lib/cni/bridge ]] || need+=(containernetworking-plugins)
command -v iptables >/dev/null || need+=(iptables)
command -v ip >/dev/null || need+=(iproute2)
command -v nsenter >/dev/null || need+=(util-linux)
command -v git >/dev/null || need+=(git)
command -v make >/dev/null || need+=(make)
if ((${#need[@]} == 0)); then echo "[system-deps] all present"; exit 0; fi
mapfile -t need < <(printf '%s\n' "${need[@]}" | sort -u)
if [[ $(id -u) != 0 ]]; then
  echo "[system-deps] missing: ${need[*]}. Install them with: sudo apt-get install -y ${need[*]}" >&2
  exit 1
fi
echo "[system-deps] installing ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
# Debian starts the packaged services; the tests start their own instances.
for svc in prometheus postgresql containerd; do
  if command -v systemctl >/dev/null && systemctl is-active --quiet "$svc" 2>/dev/null; then
    systemctl stop "$svc" || true
  fi
done
echo "[system-deps] done"
