#!/bin/sh
# tailseal postrm (deb: remove | purge | ...) / %postun (rpm: 0 erase, 1 upgrade).
# Purge (deb) also deletes the buffer and the stream identity; a plain removal keeps them, so
# records not yet shipped are still there if the package comes back. The user stays (files in
# other places may still belong to it), as Debian policy recommends.
set -e
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
    systemctl daemon-reload || true
fi
if [ "$1" = "purge" ]; then
    rm -rf /var/lib/tailseal /var/log/tailseal
fi
exit 0
