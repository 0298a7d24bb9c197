#!/bin/sh
# base-image.sh - build the debian:bookworm-slim base image locally.
#
# The Dockerfiles of deploy/ start FROM debian:bookworm-slim. Where no
# container registry can be reached, this script makes that image from
# Debian's package mirror instead: debootstrap (minbase variant) into a
# scratch directory, then `docker import`. It does nothing when the image
# already exists, so it is cheap to call before every build.
#
# Usage: deploy/base-image.sh [--force]
# Environment: BASE_IMAGE (debian:bookworm-slim), DEBIAN_MIRROR
# (http://deb.debian.org/debian), DEBIAN_SECURITY_MIRROR
# (http://deb.debian.org/debian-security), BASE_WORKDIR (a temporary
# directory, removed afterwards).
# Needs root (debootstrap); installs debootstrap with apt-get if missing.
set -eu

IMAGE=${BASE_IMAGE:-debian:bookworm-slim}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
SECURITY=${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}

if [ "${1:-}" != --force ] && docker image inspect "$IMAGE" >/dev/null 2>&1; then
    echo "base-image: $IMAGE already exists"
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi

if ! command -v debootstrap >/dev/null 2>&1; then
    echo "base-image: installing debootstrap"
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -q
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
        --no-install-recommends debootstrap
fi

dir=${BASE_WORKDIR:-$(mktemp -d /tmp/starling-rootfs.XXXXXX)}
cleanup() {
    $SUDO rm -rf "$dir"
}
trap cleanup EXIT INT TERM

echo "base-image: debootstrap bookworm into $dir (a few minutes)"
$SUDO debootstrap --variant=minbase bookworm "$dir" "$MIRROR"

# Slim it the way the official image is: no package lists, no docs.
$SUDO rm -rf "$dir"/var/lib/apt/lists/* "$dir"/var/cache/apt/archives/*.deb \
    "$dir"/usr/share/doc/* "$dir"/usr/share/man/* "$dir"/usr/share/info/*
# debootstrap leaves the host's resolver configuration behind.
$SUDO rm -f "$dir/etc/resolv.conf"
printf 'deb %s bookworm main\ndeb %s bookworm-updates main\ndeb %s bookworm-security main\n' \
    "$MIRROR" "$MIRROR" "$SECURITY" | $SUDO tee "$dir/etc/apt/sources.list" >/dev/null
# As in the official slim image: apt keeps no package cache in image layers
# and dpkg installs no documentation.
$SUDO tee "$dir/etc/apt/apt.conf.d/docker-clean" >/dev/null <<'CONF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
CONF
$SUDO tee "$dir/etc/apt/apt.conf.d/docker-no-languages" >/dev/null <<'CONF'
Acquire::Languages "none";
CONF
$SUDO tee "$dir/etc/dpkg/dpkg.cfg.d/docker-excludes" >/dev/null <<'CONF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
CONF
$SUDO rm -f "$dir"/var/cache/apt/*.bin

$SUDO tar -C "$dir" -c . | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["bash"]' - "$IMAGE"
echo "base-image: $IMAGE ready"
