#!/bin/sh
# tailseal prerm (deb: remove | upgrade | ...) / %preun (rpm: 0 erase, 1 upgrade).
# On removal the agent is stopped, which drains the buffer and seals the stream, then disabled.
set -e
case "$1" in
    remove|0) ;;
    *) exit 0 ;;
esac
if command -v systemctl >/dev/null 2>&1; then
    if [ -d /run/systemd/system ]; then
        systemctl stop tailseal.service || true
    fi
    systemctl disable tailseal.service >/dev/null 2>&1 || true
fi
exit 0
