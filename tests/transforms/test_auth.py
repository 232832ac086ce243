"""Auth parser: Filebeat's expected output for beats-system-auth is the oracle."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from agent.record import Record
from agent.transforms import build
from agent.transforms.auth import parse_auth
from agent.transforms.fields import get
from tests.transforms.corpus import corpus, line_record, records
from tests.transforms.test_chain import source_config

IGNORED = ("@timestamp", "fileset.", "input.type", "prospector.type", "system.auth.ssh.geoip.")
# Filebeat 6.x field -> our (ECS) field. A field missing here fails the test: every oracle field
# is either compared or explicitly ignored above.
MAPPED = {
    "offset": "log.offset",
    "system.auth.hostname": "host.hostname",
    "system.auth.pid": "process.pid",
    "system.auth.user": "user.name",
    "system.auth.ssh.method": "system.auth.ssh.method",
    "system.auth.ssh.ip": "source.ip",
    "system.auth.ssh.port": "source.port",
    "system.auth.ssh.signature": "system.auth.ssh.signature",
    "system.auth.ssh.dropped_ip": "source.ip",
    "system.auth.sudo.tty": "process.tty.name",
    "system.auth.sudo.pwd": "process.working_directory",
    "system.auth.sudo.user": "user.effective.name",
    "system.auth.sudo.command": "process.command_line",
    "system.auth.sudo.error": "error.message",
    "system.auth.useradd.name": "user.target.name",
    "system.auth.useradd.uid": "user.target.id",
    "system.auth.useradd.gid": "user.target.group.id",
    "system.auth.useradd.home": "user.target.home",
    "system.auth.useradd.shell": "user.target.shell",
    "system.auth.groupadd.name": "group.name",
    "system.auth.groupadd.gid": "group.id",
}
SSH_EVENT = {  # Filebeat's ssh.event -> (event.action, event.outcome)
    "Accepted": ("ssh_login", "success"),
    "Failed": ("ssh_login", "failure"),
    "Invalid": ("invalid_user", "failure"),
}


def parse_auth_file(name: str) -> list[Record]:
    chain = build("auth", source_config(format="auth"))
    return [chain(r) for r in records(corpus("beats-system-auth", name))]


def test_beats_system_auth_fields_match_filebeat_expected_output() -> None:
    expected = json.loads(corpus("beats-system-auth", "test.log-expected.json").read_text())
    ours = {r["log"]["offset"]: r for r in parse_auth_file("test.log.aligned-to-expected")}
    assert len(ours) == len(expected) == 10
    compared = 0
    for entry in expected:
        record = ours[entry["offset"]]
        assert "parse_failure" not in record.get("tags", ())
        for key, value in entry.items():
            if key.startswith(IGNORED):
                continue
            want: object = value
            if key == "system.auth.timestamp":  # "Feb 21 21:54:44": no year in the line
                got: object = datetime.fromisoformat(record["ts"]).strftime("%b %d %H:%M:%S")
            elif key == "system.auth.ssh.event":
                got = (get(record, "event.action"), get(record, "event.outcome"))
                want = SSH_EVENT.get(value)
            else:
                got = get(record, MAPPED[key])
            assert str(got) == str(want), (entry["offset"], key)
            compared += 1
    assert compared == 80  # every non-ignored oracle field of the 10 entries


def test_dropped_connection_and_useradd_have_ecs_categories() -> None:
    by_offset = {r["log"]["offset"]: r for r in parse_auth_file("test.log.aligned-to-expected")}
    assert by_offset[522]["event"]["action"] == "ssh_dropped_connection"
    assert by_offset[934]["event"]["category"] == ["iam"]
    assert by_offset[934]["event"]["action"] == "user_created"
    assert by_offset[736]["event"]["outcome"] == "failure"


def test_filebeat_timestamp_oracle_with_minus_two_hours_zone() -> None:
    expected = json.loads(corpus("beats-system-auth", "timestamp.log-expected.json").read_text())
    chain = build("auth", source_config(format="auth", timezone="-02:00"))
    ours = [chain(r) for r in records(corpus("beats-system-auth", "timestamp.log"))]
    for entry, record in zip(expected, ours, strict=True):
        want = datetime.fromisoformat(entry["@timestamp"]).astimezone(UTC)
        got = datetime.fromisoformat(record["ts"])
        assert got.replace(microsecond=got.microsecond // 1000 * 1000) == want
        assert record["host"]["hostname"] == entry["host.hostname"]
        assert record["process"]["name"] == entry["process.name"]
        assert record["log"]["offset"] == entry["log.offset"]
        assert record["msg"].endswith(entry["message"])
    assert ours[0]["event"]["action"] == "session_opened"
    assert ours[0]["user"] == {"name": "userauth3", "id": "0", "effective": {"name": "root"}}


H = "Mar  3 10:00:01 h "

AUTH_LINES: list[tuple[str, dict[str, Any]]] = [
    (
        H + "sshd[1]: Failed password for invalid user admin from 1.2.3.4 port 22 ssh2",
        {"user.name": "admin", "event.outcome": "failure", "source.port": 22},
    ),
    (
        H + "sshd[1]: Accepted keyboard-interactive/pam for bob from ::1 port 5 ssh2",
        {"system.auth.ssh.method": "keyboard-interactive/pam", "source.ip": "::1"},
    ),
    (
        H + "sshd[1]: Connection closed by authenticating user root 5.6.7.8 port 4 [preauth]",
        {"event.action": "ssh_closed", "user.name": "root", "system.auth.ssh.preauth": True},
    ),
    (
        H + "sshd[1]: Received disconnect from 5.6.7.8 port 4:11: Bye Bye [preauth]",
        {"event.action": "ssh_disconnect", "source.ip": "5.6.7.8"},
    ),
    (
        H + "sshd[1]: Disconnected from user bob 5.6.7.8 port 4",
        {"event.action": "ssh_disconnect", "user.name": "bob"},
    ),
    (
        H + "sshd[1]: pam_unix(sshd:session): session opened for user bob(uid=1000) by (uid=0)",
        {"event.action": "session_opened", "user.name": "bob"},
    ),
    (
        H
        + "sshd[1]: pam_unix(sshd:auth): authentication failure; logname= uid=0 euid=0"
        + " tty=ssh ruser= rhost=9.9.9.9  user=root",
        {"event.action": "authentication_failure", "user.name": "root", "source.ip": "9.9.9.9"},
    ),
    (
        H
        + "sudo:   bob : 3 incorrect password attempts ; TTY=pts/0 ; PWD=/home/bob ; USER=root"
        + " ; COMMAND=/usr/bin/id",
        {"error.message": "3 incorrect password attempts", "event.outcome": "failure"},
    ),
    (
        H + "su[7]: (to root) bob on pts/1",
        {"event.action": "su", "user.name": "bob", "user.effective.name": "root"},
    ),
    (
        H + "su[7]: FAILED SU (to root) bob on pts/1",
        {"event.outcome": "failure", "user.name": "bob"},
    ),
    (
        H + "su[7]: pam_unix(su:session): session closed for user root",
        {"event.action": "session_closed", "user.name": "root"},
    ),
    (
        H + "userdel[7]: delete user 'bob'",
        {"event.action": "user_deleted", "user.target.name": "bob"},
    ),
    (
        H + "usermod[7]: add 'bob' to group 'sudo'",
        {"event.action": "user_added_to_group", "group.name": "sudo"},
    ),
    (
        H + "usermod[7]: change user 'bob' shell from '/bin/sh' to '/bin/bash'",
        {"event.action": "user_shell_changed", "user.target.name": "bob"},
    ),
    (
        H + "groupdel[7]: group 'ops' removed",
        {"event.action": "group_deleted", "group.name": "ops"},
    ),
    (
        H + "passwd[7]: pam_unix(passwd:chauthtok): password changed for bob",
        {"event.action": "password_changed", "user.target.name": "bob"},
    ),
    (
        H + "chpasswd[7]: pam_unix(chpasswd:chauthtok): password changed for amy",
        {"event.action": "password_changed", "user.target.name": "amy"},
    ),
    (
        H + "systemd-logind[5]: New session 12 of user bob.",
        {"event.action": "logind_session_new", "user.name": "bob", "system.auth.session.id": "12"},
    ),
    (
        H + "sshd[1]: Connection reset by 5.6.7.8 port 4 [preauth]",
        {"event.action": "ssh_closed", "source.port": 4, "system.auth.ssh.preauth": True},
    ),
    (
        H + "sshd[1]: Connection from 1.2.3.4 port 5 on 10.0.0.2 port 22 rdomain",
        {"event.action": "ssh_connection", "source.ip": "1.2.3.4", "user": None},
    ),
    (
        H + "sshd[1]: Did not receive identification string from 1.2.3.4 port 9",
        {"event.action": "ssh_dropped_connection", "source.port": 9, "user": None},
    ),
    (
        H + "sshd[1]: Invalid user  from 1.2.3.4 port 9",
        {"event.action": "invalid_user", "user": None},
    ),
    (
        H + "systemd-logind[5]: Removed session 12.",
        {"event.action": "logind_session_removed", "system.auth.session.id": "12"},
    ),
]


@pytest.mark.parametrize(("line", "want"), AUTH_LINES)
def test_auth_event_lines_map_to_ecs_fields(line: str, want: dict[str, Any]) -> None:
    record = build("auth", source_config(format="auth"))(line_record(line))
    assert "parse_failure" not in record.get("tags", ())
    for key, value in want.items():
        assert get(record, key) == value, key


def test_sshd_body_of_no_known_pattern_keeps_only_header_fields() -> None:
    record = build("auth", source_config(format="auth"))(
        line_record(H + "sshd[1]: Accepted-ish nothing we know")
    )
    assert "parse_failure" not in record.get("tags", ())
    assert record["process"] == {"name": "sshd", "pid": 1}
    assert "action" not in record["event"]
    assert "source" not in record
    assert "system" not in record


def test_sudo_fields_join_the_header_process_and_user_fields() -> None:
    line = (
        H
        + "sudo[9]:   bob : TTY=pts/0 ; PWD=/home/bob ; USER=root ; GROUP=ops ; COMMAND=/bin/id -u"
    )
    record = build("auth", source_config(format="auth"))(line_record(line))
    assert record["process"] == {
        "name": "sudo",
        "pid": 9,
        "tty": {"name": "pts/0"},
        "working_directory": "/home/bob",
        "command_line": "/bin/id -u",
    }
    assert record["user"] == {"name": "bob", "effective": {"name": "root"}}
    assert record["group"] == {"effective": {"name": "ops"}}


def test_fields_replace_non_object_values_on_their_path() -> None:
    # journald records reach parse_auth with fields of their own; a non-object on the way to a
    # nested field is replaced, never indexed into.
    record: Record = {"msg": "", "user": "x", "system": ["y"], "event": None}
    assert parse_auth("sshd", "Failed password for bob from 1.2.3.4 port 22 ssh2", record)
    assert record["user"] == {"name": "bob"}
    assert record["system"] == {"auth": {"ssh": {"method": "password"}}}
    assert record["event"]["outcome"] == "failure"
    pam: Record = {"user": 1, "system": {"auth": "z"}}
    line = "pam_unix(sudo:session): session opened for user root(uid=0) by bob(uid=1000)"
    assert parse_auth("sudo", line, pam)
    assert pam["user"] == {"name": "bob", "effective": {"name": "root"}, "id": "1000"}
    assert pam["system"] == {"auth": {"pam": {"module": "pam_unix", "service": "sudo"}}}
