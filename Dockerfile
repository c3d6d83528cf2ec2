# The image behind the GitHub Action (action.yml: runs.using docker) and `docker run IMAGE model register ...`.
#
# Base: the official python:3.11-slim, pinned by tag. To pin by digest too, write
# `python:3.11-slim@sha256:<digest>` in both FROM lines (see README). Without a Docker engine,
# scripts/build-image.sh builds this file with buildah on a debootstrap stand-in tagged the same.

# ---- build stage: a virtualenv holding the locked runtime dependencies and the package ----------
FROM python:3.11-slim AS build

# pip's index settings of the machine that builds, passed as build arguments by
# scripts/build-image.sh (empty = pip's default, PyPI). They live in this stage only, so they never
# reach the final image or its history.
ARG PIP_INDEX_URL
ARG PIP_EXTRA_INDEX_URL
ARG PIP_TRUSTED_HOST
ARG PIP_FIND_LINKS
ARG PIP_CERT
ARG PIP_DEFAULT_TIMEOUT
ENV PIP_DISABLE_PIP_VERSION_CHECK=1

RUN python3 -m venv /opt/venv

# Dependencies first, from the lock alone, so editing the source does not reinstall them. Hash-checking
# mode: pip installs only files whose sha256 is in the lock (scripts/lock.sh writes it) and fails the
# build on any other, so a changed or substituted file on the index cannot enter the image. --no-deps:
# the lock already lists every dependency, pinned; nothing is resolved here.
COPY requirements.lock /tmp/requirements.lock
RUN /opt/venv/bin/pip install --no-cache-dir --require-virtualenv --require-hashes --no-deps \
        -r /tmp/requirements.lock

# The package itself, from the local source (no hash: it is not downloaded). It fetches nothing: its
# dependencies are in the lock (--no-deps), and so is what building it needs, setuptools and wheel
# (--no-build-isolation builds with those instead of downloading them unchecked). `pip check` proves
# the lock is complete and consistent; pip, setuptools and wheel are then removed, since the image
# only runs the package (about 26 MB). The last command fails the build if the console script cannot
# start.
COPY . /src
RUN /opt/venv/bin/pip install --no-cache-dir --require-virtualenv --no-deps --no-build-isolation /src \
    && /opt/venv/bin/pip check \
    && /opt/venv/bin/python -m pip uninstall --yes --require-virtualenv pip setuptools wheel \
    && /opt/venv/bin/hokusai-ml-platform --help >/dev/null

# ---- final stage: the base plus the virtualenv and the entrypoint --------------------------------
FROM python:3.11-slim

ARG IMAGE_VERSION=dev
ARG IMAGE_REVISION=unknown
ARG IMAGE_SOURCE=""
LABEL org.opencontainers.image.title="hokusai-ml-platform" \
      org.opencontainers.image.description="Register a model trained for a Hokusai token: MLflow registry, Hokusai site database, metric gate, token_ready_for_deploy event." \
      org.opencontainers.image.vendor="Hokusai" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${IMAGE_VERSION}" \
      org.opencontainers.image.revision="${IMAGE_REVISION}" \
      org.opencontainers.image.source="${IMAGE_SOURCE}" \
      org.opencontainers.image.base.name="docker.io/library/python:3.11-slim"

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PATH=/opt/venv/bin:$PATH

COPY --from=build /opt/venv /opt/venv
COPY entrypoint.py /app/entrypoint.py

# GitHub mounts the repository here and runs Docker actions as root, so that the step can write to
# the workspace: this image deliberately has no USER
# (https://docs.github.com/en/actions/creating-actions/dockerfile-support-for-github-actions#user).
WORKDIR /github/workspace
ENTRYPOINT ["/opt/venv/bin/python", "/app/entrypoint.py"]
