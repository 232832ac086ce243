#!/bin/sh
# tailseal postinst (deb: "configure" [old-version]) / %post (rpm: 1 install, 2 upgrade).
#
# Enables the agent but never starts it on a fresh install: an image bake (chroot, Packer on a
# live VM, a container build) must not run the agent, open its buffer or create the stream
# identity; the first boot of each instance does. An upgrade restarts a running agent (it drains
# and seals the old run first) and leaves a stopped one stopped.
set -e
case "$1" in
    configure) upgrade=${2:+yes} ;;                  # deb: $2 = the version being replaced
    1) upgrade= ;;                                   # rpm: first install
    [0-9]*) upgrade=yes ;;                           # rpm: upgrade
    *) exit 0 ;;                                     # deb: abort-upgrade and friends
esac

# The shell-command spool, as /usr/lib/tmpfiles.d/tailseal.conf recreates it at every boot
# (systemd-tmpfiles itself needs /proc, which a chroot bake may not have).
install -d -m 0711 -o root -g root /var/log/tailseal
if [ ! -e /var/log/tailseal/shell.jsonl ]; then
    install -m 0622 -o tailseal -g tailseal /dev/null /var/log/tailseal/shell.jsonl
fi

if command -v systemctl >/dev/null 2>&1; then
    booted=
    [ -d /run/systemd/system ] && booted=yes
    if [ -n "$booted" ]; then
        systemctl daemon-reload || true
    fi
    # Works offline too (chroot, image build): it only creates the WantedBy symlink.
    systemctl enable tailseal.service >/dev/null 2>&1 || \
        echo "tailseal: could not enable tailseal.service" >&2
    if [ -n "$upgrade" ] && [ -n "$booted" ]; then
        systemctl try-restart tailseal.service || true
    fi
fi
exit 0
