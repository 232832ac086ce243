#!/bin/sh
# tailseal preinst (deb) / %pre (rpm): the system user exists before the files are unpacked.
# The agent gets the adm and systemd-journal groups from the unit (SupplementaryGroups=), so the
# account itself belongs to no log group: nothing else running as tailseal could read the logs.
set -e
if ! getent group tailseal >/dev/null; then
    groupadd --system tailseal
fi
if ! getent passwd tailseal >/dev/null; then
    # No home is created: /var/lib/tailseal (the state directory, with the stream identity) must
    # not exist in a baked image; systemd creates it at the first start (StateDirectory=).
    useradd --system --gid tailseal --no-create-home --home-dir /var/lib/tailseal \
        --shell /usr/sbin/nologin --comment "tailseal log shipping agent" tailseal
fi
exit 0
