#!/usr/bin/env bash
# Install tailseal on the machine (or image) this runs on, for image builders that use neither
# the .deb nor the .rpm:  sudo packaging/install.sh [--no-enable]
#
# Run it from a tailseal source tree (a checkout or a release tarball) inside the image being
# built: a Packer shell provisioner, a Dockerfile-less VM build, mkosi's postinst, cloud-init.
# It does exactly what the packages do: the `tailseal` system user, a virtualenv at
# /opt/tailseal built with the image's own python3.11, the unit, /etc/tailseal (existing files
# are kept), the profile.d shell hook, the tmpfiles.d spool entry, and `systemctl enable`.
# It never starts the agent: the first boot of each instance does, and creates its identity.
# Needs python3.11 with venv (Debian: python3.11-venv) and a reachable Python package index.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
enable=yes
[ "${1:-}" = "--no-enable" ] && enable=

[ "$(id -u)" -eq 0 ] || { echo "install.sh: run as root" >&2; exit 1; }
command -v python3.11 >/dev/null || { echo "install.sh: python3.11 is required" >&2; exit 1; }

sh "$repo/packaging/scripts/preinstall.sh" install

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cp -a "$repo/pyproject.toml" "$repo/README.md" "$repo/agent" "$work/"
rm -rf /opt/tailseal
python3.11 -m venv /opt/tailseal
/opt/tailseal/bin/python -m pip install --quiet --disable-pip-version-check "$work"
/opt/tailseal/bin/python -m pip uninstall --quiet --disable-pip-version-check -y pip setuptools
ln -sf /opt/tailseal/bin/tailseal /usr/bin/tailseal

install -D -m 0644 "$repo/systemd/tailseal.service" /usr/lib/systemd/system/tailseal.service
install -D -m 0644 "$repo/packaging/tmpfiles.d/tailseal.conf" /usr/lib/tmpfiles.d/tailseal.conf
install -D -m 0644 "$repo/packaging/profile.d/tailseal.sh" /etc/profile.d/tailseal.sh
install -D -m 0644 "$repo/README.md" /usr/share/doc/tailseal/README.md
install -D -m 0644 "$repo/packaging/README.md" /usr/share/doc/tailseal/packaging.md
install -d -m 0755 /etc/tailseal /etc/tailseal/conf.d
keep() {  # install $1 as $2 unless the image already has its own
    [ -e "$2" ] || install -m "$3" "$1" "$2"
}
keep "$repo/packaging/config/tailseal.toml" /etc/tailseal/tailseal.toml 0644
keep "$repo/packaging/config/environment" /etc/tailseal/environment 0600
keep "$repo/packaging/config/conf.d.README" /etc/tailseal/conf.d/README 0644

if [ -n "$enable" ]; then
    sh "$repo/packaging/scripts/postinstall.sh" configure
fi
/opt/tailseal/bin/tailseal check -c /etc/tailseal/tailseal.toml
