#!/usr/bin/env bash
# `make image`: Vigil's image (components/Dockerfile) built here with podman, on a Debian
# bookworm base made by mmdebstrap from the Debian mirror apt uses (no registry image can be
# pulled on these machines).
#
#   scripts/build-image.sh [IMAGE]        default IMAGE: localhost/vigil:dev
#
# Podman settings that work on these machines (crun fails here): scripts/podman/containers.conf
# (runc, cgroupfs, file events, raised ulimits), unless CONTAINERS_CONF names another. pip inside
# the build trusts the host's CA bundle: it is mounted read-only over the base's, which Debian's
# pip uses. Needs podman, runc and mmdebstrap (Debian).
set -euo pipefail

IMAGE="${1:-localhost/vigil:dev}"
BASE_IMAGE="localhost/vigil-base:bookworm"
SUITE="bookworm"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CA_BUNDLE="/etc/ssl/certs/ca-certificates.crt"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

die() { printf 'build-image: %s\n' "$*" >&2; exit 1; }
for program in podman mmdebstrap runc; do
    command -v "$program" >/dev/null || die "$program is not installed (Debian package ${program})"
done
[[ -r "$CA_BUNDLE" ]] || die "no CA bundle at $CA_BUNDLE"

export CONTAINERS_CONF="${CONTAINERS_CONF:-$ROOT/scripts/podman/containers.conf}"

mirror="$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)"
mirror="${mirror:-http://deb.debian.org/debian}"

if ! podman image exists "$BASE_IMAGE"; then
    echo "== base $BASE_IMAGE: Debian $SUITE from $mirror"
    start=$SECONDS
    # The hooks' "$1" is mmdebstrap's (the root being built), not this script's.
    # shellcheck disable=SC2016
    mmdebstrap --variant=minbase \
        --include=python3,python3-pip,python-is-python3,libgomp1,ca-certificates \
        --customize-hook='rm -f "$1"/usr/lib/python3.11/EXTERNALLY-MANAGED' \
        --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*' \
        "$SUITE" "$WORK/base.tar" "$mirror"
    podman import --change 'CMD ["python"]' "$WORK/base.tar" "$BASE_IMAGE"
    echo "   $((SECONDS - start)) s"
fi

echo "== image $IMAGE"
start=$SECONDS
revision="$(git -C "$ROOT" rev-parse HEAD 2>/dev/null || echo unknown)"
version="$(awk -F'"' '/^version = / {print $2; exit}' "$ROOT/pyproject.toml")"
podman build \
    --file "$ROOT/components/Dockerfile" \
    --build-arg BASE_IMAGE="$BASE_IMAGE" \
    --build-arg VERSION="$version" \
    --build-arg REVISION="$revision" \
    --volume "$CA_BUNDLE:$CA_BUNDLE:ro" \
    --tag "$IMAGE" \
    "$ROOT"
echo "   $((SECONDS - start)) s"
podman image inspect "$IMAGE" --format '{{.Size}}' \
    | awk -v image="$IMAGE" '{printf "== %s: %.0f MB\n", image, $1 / 1e6}'
