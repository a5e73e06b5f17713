#!/bin/sh
# The base image the Dockerfile builds on, made from Debian packages alone (no container registry
# needed): Debian 12 minbase with its Python 3.11, venv and CA certificates, imported into podman.
#
#   sudo container/base-image.sh [TAG]        # default localhost/vault-base:bookworm, ~1 min
#
# Needs mmdebstrap and podman (Debian packages), run as root. DEBIAN_MIRROR picks the mirror.
set -eu
TAG="${1:-localhost/vault-base:bookworm}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
SECURITY="${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
# Documentation, manual pages and translations are left out (about 40 MB).
mmdebstrap --quiet --variant=minbase --mode=root \
  --include=python3,python3-venv,ca-certificates \
  --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
  --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
  --dpkgopt='path-exclude=/usr/share/info/*' \
  bookworm "$work/base.tar" \
  "deb $MIRROR bookworm main" "deb $MIRROR bookworm-updates main" "deb $SECURITY bookworm-security main"
podman import --quiet --change 'CMD ["/bin/bash"]' --change 'ENV LANG=C.UTF-8' "$work/base.tar" "$TAG" >/dev/null
echo "$TAG: $(podman image inspect --format '{{.Size}}' "$TAG") bytes"
