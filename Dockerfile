# The operator image: `spotfleet run` and only what it needs.
#
# - Build stage: the runtime dependencies exactly as uv.lock pins them
#   (requirements/runtime.txt, exported by `make lock`: wheels only, hash-checked, from
#   build/image-wheels/, which hack/image.sh fills on the host: no network needed), and
#   a wheel of the two runtime packages, spotfleet_engine and spotfleet_operator, built
#   by the locked hatchling (requirements/build.txt). sim/ and tools/ are never copied
#   in, so the wheel holds neither the stand-in cloud nor the toolbox, and no extra
#   (moto, typer, rich, matplotlib, kubernetes, kubectl) is installed.
# - Runtime stage: the base image plus that virtualenv, without pip, a compiler or any
#   build tool; UID/GID 65532; ENTRYPOINT ["spotfleet", "run"] (the chart passes only
#   the flags). It runs with a read-only root filesystem: the only paths written are
#     /var/lib/spotfleet  the default SQLite store (SPOTFLEET_DATABASE_URL below)
#     /tmp                HOME, TMPDIR and numba's cache (NUMBA_CACHE_DIR)
#   both declared as volumes (the chart mounts an emptyDir on each).
#
# No registry is reachable where this is built, so the base is a build argument: a
# Debian with python3 and python3-venv (any image with a python3 >= 3.11 that has venv
# and ensurepip). `make image` (hack/image.sh) debootstraps one of the host's release,
# imports it as localhost/debian-python:<release>-<key> and runs
#   buildah build --layers --network none --build-arg BASE_IMAGE=<that> -t localhost/spotfleet:dev .
# after `pip download --no-deps --require-hashes --only-binary=:all: -r requirements/...`
# of both files into build/image-wheels/ for the base's Python (hack/image.sh does it).
# Run: podman run --rm --read-only --user 65532:65532 localhost/spotfleet:dev --help
# Sizes, build times and the e2e test (tests/e2e/test_image.py): docs/image.md.
ARG BASE_IMAGE=localhost/debian-python:bookworm

FROM ${BASE_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
# Dependencies first: these layers are reused until the lock changes.
COPY requirements/build.txt requirements/runtime.txt requirements/
COPY build/image-wheels/ /wheels/
RUN python3 -m venv /opt/build \
 && /opt/build/bin/pip install --quiet --no-index --find-links /wheels --no-deps \
      --require-hashes --only-binary=:all: -r requirements/build.txt \
 && python3 -m venv --without-pip /opt/spotfleet \
 && /opt/build/bin/pip --python /opt/spotfleet/bin/python install --quiet --no-index \
      --find-links /wheels --no-deps --require-hashes --only-binary=:all: \
      -r requirements/runtime.txt
# The runtime packages only (hatchling skips the absent sim/ and tools/ package dirs).
COPY pyproject.toml README.md NOTICE ./
COPY crds/ crds/
COPY engine/spotfleet_engine/ engine/spotfleet_engine/
COPY operator/spotfleet_operator/ operator/spotfleet_operator/
RUN /opt/build/bin/pip wheel --quiet --no-index --no-deps --no-build-isolation \
      --wheel-dir /dist . \
 && /opt/build/bin/pip --python /opt/spotfleet/bin/python install --quiet --no-index \
      --no-deps /dist/spotfleet-*.whl

FROM ${BASE_IMAGE}
COPY --from=build /opt/spotfleet /opt/spotfleet
RUN useradd --uid 65532 --user-group --no-create-home --home-dir /tmp \
      --shell /usr/sbin/nologin spotfleet \
 && install -d -o 65532 -g 65532 -m 0750 /var/lib/spotfleet
ENV PATH=/opt/spotfleet/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    LANG=C.UTF-8 \
    HOME=/tmp \
    TMPDIR=/tmp \
    NUMBA_CACHE_DIR=/tmp/numba-cache \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    SPOTFLEET_DATABASE_URL=sqlite+aiosqlite:////var/lib/spotfleet/audit.db
VOLUME ["/tmp", "/var/lib/spotfleet"]
WORKDIR /var/lib/spotfleet
USER 65532:65532
EXPOSE 8080 8081
ENTRYPOINT ["spotfleet", "run"]
