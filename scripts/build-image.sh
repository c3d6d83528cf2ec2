#!/usr/bin/env bash
# Build the action's container image without a Docker engine, with buildah.
#
# `FROM python:3.11-slim` cannot be pulled on a machine that reaches only package registries, so this
# script first makes a stand-in for it: a Debian bookworm minbase (whose python3 is 3.11) made by
# debootstrap from the Debian mirror configured in this machine's apt sources, packed as a FROM-scratch
# image tagged docker.io/library/python:3.11-slim. The packed root filesystem is cached in
# .image-build/ and the image in buildah's storage, so both are made once. Then it runs
# `buildah bud --pull=never` on the Dockerfile, handing pip inside the build this machine's index
# settings as build arguments (never written into the repository). Whatever index serves them, pip
# installs only files whose sha256 is in requirements.lock (--require-hashes in the Dockerfile).
#
# usage: scripts/build-image.sh [TAG]            default TAG: hokusai-ml-platform:dev
# environment:
#   BUILD_CONTEXT   directory to build (default: the repository root); must hold the Dockerfile
#   DEBIAN_MIRROR   Debian mirror URL for debootstrap (default: read from /etc/apt/sources*)
# Needs root (debootstrap, buildah storage); installs buildah and debootstrap with apt-get if missing.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tag="${1:-hokusai-ml-platform:dev}"
context="${BUILD_CONTEXT:-${repo_root}}"
cache_dir="${repo_root}/.image-build"
base_image="docker.io/library/python:3.11-slim"
base_archive="${cache_dir}/python-3.11-slim-standin.tar"
debian_suite="bookworm"
# The stand-in carries this label so it is never mistaken for the official image.
standin_label="org.hokusai.image-build.stand-in=debootstrap-${debian_suite}"

# One storage driver and isolation for every buildah call: vfs works without overlay support and
# chroot isolation without a runtime that can set rlimits (podman/runc fail on them here).
export STORAGE_DRIVER=vfs BUILDAH_ISOLATION=chroot
bah() { buildah --storage-driver vfs "$@"; }

log() { printf 'build-image: %s\n' "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}

ensure_tools() {
    local missing=()
    command -v buildah >/dev/null || missing+=(buildah)
    command -v debootstrap >/dev/null || missing+=(debootstrap)
    if ((${#missing[@]} == 0)); then return; fi
    [[ "$(id -u)" == 0 ]] || die "${missing[*]} missing and not root; install them: apt-get install -y ${missing[*]}"
    log "installing ${missing[*]} with apt-get"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

# Print the URL of the Debian mirror that serves "${debian_suite} main", read from the apt sources
# (deb822 *.sources files and one-line *.list files). A URI ending in /debian wins over others that
# happen to serve the same suite name.
debian_mirror() {
    if [[ -n "${DEBIAN_MIRROR:-}" ]]; then
        printf '%s\n' "${DEBIAN_MIRROR}"
        return
    fi
    local deb822=() oneline=() f
    for f in /etc/apt/sources.list.d/*.sources; do [[ -f "$f" ]] && deb822+=("$f"); done
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do [[ -f "$f" ]] && oneline+=("$f"); done
    {
        if ((${#deb822[@]})); then awk -v suite="${debian_suite}" '
            BEGIN { RS = ""; FS = "\n" }          # paragraph mode: one record per source stanza
            {
                delete field
                for (i = 1; i <= NF; i++) {
                    line = $i
                    if (line ~ /^[ \t]*#/) continue
                    if (line ~ /^[ \t]/) { field[key] = field[key] " " line; continue }   # continuation
                    n = index(line, ":"); if (n == 0) continue
                    key = tolower(substr(line, 1, n - 1)); field[key] = substr(line, n + 1)
                }
                if (tolower(field["enabled"]) ~ /no/) next
                if ((" " field["types"] " ") !~ /[ \t]deb[ \t]/) next
                if ((" " field["suites"] " ") !~ ("[ \t]" suite "[ \t]")) next
                if ((" " field["components"] " ") !~ /[ \t]main[ \t]/) next
                split(field["uris"], uris, /[ \t]+/)
                for (u in uris) if (uris[u] != "") print uris[u]
            }' "${deb822[@]}"; fi
        if ((${#oneline[@]})); then awk -v suite="${debian_suite}" '
            $1 == "deb" {
                sub(/\[[^]]*\][ \t]*/, "")        # drop [arch=... signed-by=...] options
                if ($3 != suite) next
                for (i = 4; i <= NF; i++) if ($i == "main") { print $2; next }
            }' "${oneline[@]}"; fi
    } | awk '{ sub(/\/+$/, "") } /\/debian$/ { print; found = 1; exit } NR == 1 { first = $0 }
             END { if (!found && first != "") print first }'
}

# Unmount anything debootstrap left mounted inside the root filesystem, then remove it without ever
# crossing into another file system.
remove_rootfs() {
    local rootfs="$1" target
    [[ -e "${rootfs}" ]] || return 0
    while read -r target; do
        umount -l "${target}" 2>/dev/null || true
    done < <(awk -v root="${rootfs}/" 'index($2, root) == 1 { print $2 }' /proc/self/mounts | sort -r)
    rm -rf --one-file-system "${rootfs}"
}

make_base_archive() {
    local mirror rootfs="${cache_dir}/rootfs"
    mirror="$(debian_mirror)"
    [[ -n "${mirror}" ]] || die "no apt source serves '${debian_suite} main'; set DEBIAN_MIRROR to a Debian mirror URL"
    mkdir -p "${cache_dir}"
    remove_rootfs "${rootfs}"
    trap 'remove_rootfs "'"${rootfs}"'"' EXIT
    log "debootstrap ${debian_suite} (minbase + python3) from the machine's apt mirror"
    debootstrap --variant=minbase --include=python3,python3-pip,python3-venv,ca-certificates \
        "${debian_suite}" "${rootfs}" "${mirror}" >"${cache_dir}/debootstrap.log" 2>&1 ||
        die "debootstrap failed; see ${cache_dir}/debootstrap.log"

    # Make it behave like python:3.11-slim where the Dockerfile relies on it.
    ln -sf python3 "${rootfs}/usr/bin/python"
    ln -sf pip3 "${rootfs}/usr/bin/pip"
    # PEP 668 marker: python:3.11-slim lets pip install system-wide, so the stand-in does too.
    rm -f "${rootfs}"/usr/lib/python3*/EXTERNALLY-MANAGED
    # The host's CA bundle, so TLS inside the build trusts what the host trusts.
    if [[ -f /etc/ssl/certs/ca-certificates.crt ]]; then
        install -m 0644 /etc/ssl/certs/ca-certificates.crt "${rootfs}/etc/ssl/certs/ca-certificates.crt"
    fi
    rm -rf "${rootfs}"/var/cache/apt/archives/*.deb "${rootfs}"/var/cache/apt/*.bin \
        "${rootfs}"/var/lib/apt/lists/* "${rootfs}"/var/log/*.log "${rootfs}"/var/log/apt/*

    # /dev, /proc and /sys are provided by whatever runs the container: pack them empty.
    tar --numeric-owner --one-file-system -C "${rootfs}" \
        --exclude=./dev/* --exclude=./proc/* --exclude=./sys/* -cf "${base_archive}.partial" .
    mv "${base_archive}.partial" "${base_archive}"
    remove_rootfs "${rootfs}"
    trap - EXIT
}

import_base() {
    local ctr
    ctr="$(bah from --pull=never scratch)"
    bah add "${ctr}" "${base_archive}" / >/dev/null
    bah config --os linux --arch "$(dpkg --print-architecture)" \
        --env LANG=C.UTF-8 --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        --cmd python3 --label "${standin_label}" "${ctr}"
    bah commit --quiet --rm "${ctr}" "${base_image}" >/dev/null
}

ensure_base() {
    if bah inspect --type image "${base_image}" >/dev/null 2>&1; then
        log "base ${base_image} present in buildah storage"
        return
    fi
    local start=${SECONDS}
    if [[ -s "${base_archive}" ]]; then
        log "base image missing; importing the cached root filesystem ${base_archive#"${repo_root}"/}"
    else
        make_base_archive
    fi
    import_base
    log "base ${base_image} (stand-in) ready in $((SECONDS - start)) s"
}

# pip's effective value for one setting: PIP_<NAME> in the environment, else pip's configuration files
# (`pip config list` already merges them, site over user over global; [install] over [global]).
pip_setting() {
    local key="$1" env_name value
    env_name="PIP_$(tr 'a-z-' 'A-Z_' <<<"${key}")"
    if [[ -n "${!env_name:-}" ]]; then
        printf '%s\n' "${!env_name}"
        return
    fi
    value="$({ python3 -m pip config list 2>/dev/null || true; } | awk -v key="${key}" '
        { n = index($0, "="); name = substr($0, 1, n - 1); v = substr($0, n + 1)
          gsub(/^'\''|'\''$/, "", v) }
        name == "global." key { g = v } name == "install." key { i = v }
        END { print (i != "" ? i : g) }')"
    printf '%s\n' "${value}"
}

# Fill the array pip_args with --build-arg options carrying this machine's pip index settings. Every
# argument the Dockerfile declares is passed, empty when unset (pip treats an empty PIP_* as unset).
# Only network locations are passed: a local directory or file:// index does not exist in the build.
pip_build_args() {
    pip_args=()
    local key value item kept
    for key in index-url extra-index-url find-links trusted-host; do
        value="$(pip_setting "${key}")"
        kept=()
        for item in ${value}; do
            if [[ "${key}" == trusted-host || "${item}" =~ ^https?:// ]]; then
                kept+=("${item}")
            else
                log "pip ${key} ${item}: local to this machine, not passed to the build"
            fi
        done
        if ((${#kept[@]})); then
            # Credentials in an index URL stay out of the log.
            log "pip ${key} for the build: $(sed -E 's#://[^/@ ]+@#://***@#g' <<<"${kept[*]}")"
        fi
        pip_args+=(--build-arg "PIP_$(tr 'a-z-' 'A-Z_' <<<"${key}")=${kept[*]}")
    done
    # The stand-in carries the host CA bundle at this path; the official image has Debian's there.
    value=""
    [[ -z "$(pip_setting cert)" ]] || value=/etc/ssl/certs/ca-certificates.crt
    pip_args+=(--build-arg "PIP_CERT=${value}")
    pip_args+=(--build-arg "PIP_DEFAULT_TIMEOUT=$(pip_setting default-timeout)")
}

# Bytes the image adds on top of the base: the sizes of its layers that the base does not have.
added_bytes() {
    local image="$1" base="$2"
    python3 - "$(bah inspect --type image "${image}")" "$(bah inspect --type image "${base}")" <<'PY'
import json
import sys

image, base = (json.loads(json.loads(arg)["Manifest"])["layers"] for arg in sys.argv[1:])
base_digests = {layer["digest"] for layer in base}
print(sum(layer["size"] for layer in image if layer["digest"] not in base_digests))
PY
}

main() {
    ensure_tools
    [[ -f "${context}/Dockerfile" ]] || die "no Dockerfile in ${context}"
    [[ -f "${context}/entrypoint.py" ]] || die "no entrypoint.py in ${context}; the image's ENTRYPOINT runs it"
    ensure_base

    local pip_args version revision source old_id new_id start
    pip_build_args
    version="$(python3 -c 'import sys, tomllib; print(tomllib.load(open(sys.argv[1], "rb"))["project"]["version"])' \
        "${repo_root}/pyproject.toml")"
    revision="$(git -C "${repo_root}" rev-parse --verify --quiet HEAD 2>/dev/null || echo unknown)"
    source="$(git -C "${repo_root}" remote get-url origin 2>/dev/null || true)"
    old_id="$(bah images --quiet --no-trunc "${tag}" 2>/dev/null || true)"

    log "building ${tag} from ${context}"
    start=${SECONDS}
    # No --layers: with vfs every cached step is a full copy of the file system, which made a
    # layered rebuild slower here (224 s, all steps cached) than a plain build (96-170 s).
    bah bud --pull=never --isolation chroot --layers=false --tag "${tag}" \
        "${pip_args[@]}" \
        --build-arg "IMAGE_VERSION=${version}" \
        --build-arg "IMAGE_REVISION=${revision}" \
        --build-arg "IMAGE_SOURCE=${source}" \
        --file "${context}/Dockerfile" "${context}"
    log "image ${tag} built in $((SECONDS - start)) s"

    # A rebuild leaves the previous image of this tag untagged; with vfs that is a full copy on disk.
    new_id="$(bah images --quiet --no-trunc "${tag}")"
    if [[ -n "${old_id}" && "${old_id}" != "${new_id}" ]]; then
        bah rmi "${old_id}" >/dev/null 2>&1 || true
    fi

    local added
    added="$(added_bytes "${tag}" "${base_image}")"
    log "size added by the Dockerfile on top of ${base_image}: $((added / 1000000)) MB" \
        "(${added} bytes; target <= 250 MB)"
}

main
