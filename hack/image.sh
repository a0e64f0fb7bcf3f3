#!/usr/bin/env bash
# Build the operator image without a Docker engine or a registry:
#   1. base: a minimal Debian of the host's release (debootstrap --variant=minbase with
#      python3 and python3-venv), imported into the local container storage as
#      $BASE_IMAGE. The cleaned root filesystem is cached as a tarball under
#      ${XDG_CACHE_HOME:-$HOME/.cache}/spotfleet/image/, keyed by release, packages and
#      this script's BASE_REVISION; a warm cache or an existing image is reused untouched.
#   2. wheels: every wheel requirements/runtime.txt and requirements/build.txt pin,
#      downloaded by the host's pip (its certificate trust and download cache; hashes
#      checked) for the base's Python into build/image-wheels/ (git-ignored), so that
#   3. build: `buildah build` of the repository's Dockerfile with
#      --build-arg BASE_IMAGE=$BASE_IMAGE runs with no network at all (tagged $IMAGE;
#      layers cached between builds).
#   podman ARGS: podman with the runtime flags this machine needs (below); the e2e test
#      runs the image through it.
# Usage: hack/image.sh [base|wheels|build|podman ARGS...]   (default: build, after the base)
# Env:   IMAGE (localhost/spotfleet:dev), BASE_IMAGE (localhost/debian-python:<key>),
#        DEBIAN_MIRROR (http://deb.debian.org/debian), STORAGE_DRIVER (e.g. vfs, where
#        overlay mounts are refused; read by buildah and podman alike).
# Needs root (debootstrap, and buildah/podman with the system's container storage) and
# Debian's buildah, podman, crun and debootstrap (hack/system-deps.sh installs them).
# The last line printed is the image reference. See docs/image.md.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"

# Bump when the way the base is made changes (the cache is keyed by it).
BASE_REVISION=1
BASE_PACKAGES=python3,python3-venv
# shellcheck disable=SC1091  # the host's own file
release="$(. /etc/os-release && echo "${VERSION_CODENAME:?no VERSION_CODENAME in /etc/os-release}")"
key="$release-$(printf '%s %s' "$BASE_PACKAGES" "$BASE_REVISION" | sha1sum | cut -c1-8)"
cache="${SPOTFLEET_IMAGE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/spotfleet/image}"
base_tar="$cache/debian-python-$key.tar"
BASE_IMAGE="${BASE_IMAGE:-localhost/debian-python:$key}"
IMAGE="${IMAGE:-localhost/spotfleet:dev}"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"

log() { printf '[image] %s\n' "$*" >&2; }

# The OCI runtime and rlimits, for buildah's RUN steps and podman alike:
# - crun refuses a hybrid cgroup hierarchy (v1 controllers plus a cgroup2 mount with a
#   controller, as on this project's machines: "cgroups in hybrid mode not supported,
#   drop all controllers from cgroupv2"); runc runs there. Pure cgroup v2: the default.
# - without CAP_SYS_RESOURCE (a sandboxed root), the default rlimits (nofile 1048576 ...)
#   cannot be set ("setrlimit `RLIMIT_NOFILE`: Operation not permitted"): ask for the
#   hard open-files limit this shell has and 4096 processes instead.
# OCI_RUNTIME overrides the choice.
runtime_flags=()
if [[ -n "${OCI_RUNTIME:-}" ]]; then
  runtime_flags=(--runtime "$OCI_RUNTIME")
elif [[ "$(stat -fc %T /sys/fs/cgroup)" != cgroup2fs ]]; then
  runtime_flags=(--runtime runc)
fi
ulimit_flags=()
cap_eff=$(awk '/^CapEff:/ {print $2}' /proc/self/status)
if (( (16#$cap_eff >> 24 & 1) == 0 )); then
  ulimit_flags=(--ulimit "nofile=$(ulimit -Hn):$(ulimit -Hn)" --ulimit nproc=4096:4096)
fi

need() {
  local missing=()
  for c in "$@"; do command -v "$c" >/dev/null || missing+=("$c"); done
  if ((${#missing[@]})); then
    log "missing: ${missing[*]} (bash hack/system-deps.sh installs them)"
    exit 1
  fi
}

rootfs() {  # debootstrap a cleaned minimal Debian into $1
  local root=$1
  log "debootstrap --variant=minbase --include=$BASE_PACKAGES $release ($mirror)"
  debootstrap --variant=minbase --include="$BASE_PACKAGES" "$release" "$root" "$mirror" >&2
  # what an image never needs: package indexes and downloads, docs, man pages, locales
  rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/* "$root"/var/log/* \
    "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/* \
    "$root"/usr/share/locale/* "$root"/tmp/* "$root"/var/tmp/*
  chroot "$root" python3 -c 'import ensurepip, venv, sqlite3, ssl' ||
    { log "the base has no working python3 (venv, sqlite3, ssl)"; exit 1; }
}

base() {
  need podman
  if podman image exists "$BASE_IMAGE"; then log "base $BASE_IMAGE: present"; return; fi
  if [[ ! -s "$base_tar" ]]; then
    need debootstrap
    mkdir -p "$cache"
    local root; root="$(mktemp -d "$cache/rootfs.XXXXXX")"
    # shellcheck disable=SC2064  # expand now: the path is known
    trap "rm -rf '$root'" EXIT
    rootfs "$root"
    tar --numeric-owner -C "$root" -cf "$base_tar.part" .
    mv "$base_tar.part" "$base_tar"
    rm -rf "$root"; trap - EXIT
    log "base rootfs cached at $base_tar ($(du -h "$base_tar" | cut -f1))"
  else
    log "base rootfs: cached at $base_tar"
  fi
  podman import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["python3"]' \
    --message "debootstrap --variant=minbase --include=$BASE_PACKAGES $release" \
    --quiet "$base_tar" "$BASE_IMAGE" >/dev/null
  log "base $BASE_IMAGE: imported"
}

wheels() {  # the locked wheels for the base's python3, into build/image-wheels/
  local py dest="$repo/build/image-wheels"
  py="$(podman "${runtime_flags[@]}" run "${ulimit_flags[@]}" --rm --network none \
    "$BASE_IMAGE" python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
  local stamp
  # beside the directory, not in it: the build copies the directory (and caches on it)
  stamp="$dest.complete-$(cat "$repo"/requirements/{runtime,build}.txt | sha1sum | cut -c1-12)-py$py"
  if [[ -e "$stamp" ]]; then log "wheels for python $py: present in $dest"; return; fi
  mkdir -p "$dest"
  log "wheels for python $py: pip download -r requirements/{runtime,build}.txt -> $dest"
  python3 -m pip download --quiet --disable-pip-version-check --no-deps --require-hashes \
    --only-binary=:all: --python-version "$py" --dest "$dest" \
    -r "$repo/requirements/runtime.txt" -r "$repo/requirements/build.txt"
  rm -f "$dest".complete-* && touch "$stamp"
}

build() {
  need buildah
  base
  wheels
  log "buildah build --network none --build-arg BASE_IMAGE=$BASE_IMAGE -t $IMAGE"
  buildah build "${runtime_flags[@]}" "${ulimit_flags[@]}" --layers --network none \
    --build-arg "BASE_IMAGE=$BASE_IMAGE" \
    -f "$repo/Dockerfile" -t "$IMAGE" "$repo" >&2
  log "$IMAGE: $(podman image inspect --format '{{.Size}}' "$IMAGE") bytes"
  echo "$IMAGE"
}

run_podman() {  # podman with the runtime flags; the ulimits on run and create
  need podman
  case "${1:-}" in
    run | create) exec podman "${runtime_flags[@]}" "$1" "${ulimit_flags[@]}" "${@:2}" ;;
    *) exec podman "${runtime_flags[@]}" "$@" ;;
  esac
}

case "${1:-build}" in
  base) base; echo "$BASE_IMAGE" ;;
  wheels) base; wheels ;;
  build) build ;;
  podman) shift; run_podman "$@" ;;
  *) echo "usage: $0 [base|wheels|build|podman ARGS...]" >&2; exit 2 ;;
esac
