"""Configuration: typed loading, errors that name the field, env substitution, overrides."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from agent.compiled import load
from agent.config import (
    FileSourceConfig,
    load_agent_config,
    load_collector_config,
    parse_agent_config,
)
from agent.errors import EX_CONFIG, ConfigError

VALID = """
state_dir = "/var/lib/tailseal"

[sources.auth]
type = "file"
paths = ["/var/log/auth.log"]

[sinks.central]
type = "tailseal"
endpoint = "https://collector.example:8443"
token_file = "/etc/tailseal/token"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "tailseal.toml"
    path.write_text(text)
    return path


def check(path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent.cli", "check", "-c", str(path), *extra],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def test_valid_config_loads_into_typed_sections(tmp_path: Path) -> None:
    config = load_agent_config(write(tmp_path, VALID), environ={})
    auth = config.sources["auth"]
    assert isinstance(auth, FileSourceConfig)
    assert auth.paths == ["/var/log/auth.log"]
    assert auth.read_from == "beginning"
    assert config.sinks["central"].compression == "zstd"
    assert config.buffer.fsync == "batch"
    assert config.shutdown.timeout == 25.0
    assert config.heartbeat == 120.0  # within the collector's default silent_after of 300 s
    off = load_agent_config(write(tmp_path, "heartbeat = 0\n" + VALID), environ={})
    assert off.heartbeat == 0


FRAMES_COMPILED = load("agent._speedups") is not None
TRANSFORMS_COMPILED = load("agent.transforms._speedups") is not None


@pytest.mark.parametrize(
    ("table", "chunk"),
    [
        ("", (512 if FRAMES_COMPILED else 256) * 1024),  # a record: a few times its line
        ('parser = { format = "access" }', 64 * 1024),  # parsed: ~20 times
        # encoded from C, as raw lines are (in Python, as any parsed line)
        ('parser = { format = "auth" }', 128 * 1024 if TRANSFORMS_COMPILED else 64 * 1024),
        ('parser = { format = "syslog" }', 128 * 1024 if TRANSFORMS_COMPILED else 64 * 1024),
        ('parser = { format = "access" }\nread_chunk_bytes = 1000', 1000),
        ("read_chunk_bytes = 4096", 4096),
    ],
)
def test_read_chunk_defaults_by_parser_and_a_set_value_wins(
    tmp_path: Path, table: str, chunk: int
) -> None:
    text = VALID.replace('paths = ["/var/log/auth.log"]', f'paths = ["/x"]\n{table}')
    auth = load_agent_config(write(tmp_path, text), environ={}).sources["auth"]
    assert isinstance(auth, FileSourceConfig)
    assert auth.chunk_bytes == chunk


def test_typo_key_is_named_with_its_dotted_path(tmp_path: Path) -> None:
    text = VALID.replace('paths = ["/var/log/auth.log"]', 'pathz = ["/var/log/auth.log"]')
    with pytest.raises(ConfigError) as info:
        load_agent_config(write(tmp_path, text), environ={})
    assert info.value.field == "sources.auth.pathz"
    assert "unknown key" in str(info.value)


def test_wrong_type_is_named_with_its_dotted_path(tmp_path: Path) -> None:
    text = VALID + '\n[buffer]\nsegment_bytes = "big"\n'
    with pytest.raises(ConfigError) as info:
        load_agent_config(write(tmp_path, text), environ={})
    assert info.value.field == "buffer.segment_bytes"
    assert "expected int, got str" in str(info.value)


LEVEL = "sinks.central.compression_level"


@pytest.mark.parametrize(
    ("mutation", "field"),
    [
        (('type = "file"', 'type = "fiel"'), "sources.auth.type"),
        (
            ('endpoint = "https://collector.example:8443"', 'endpoint = "ftp://x"'),
            "sinks.central.endpoint",
        ),
        (('state_dir = "/var/lib/tailseal"', "state_dir = 5"), "state_dir"),
        (("[sinks.central]", '[sinks."bad name/"]'), "bad name/"),
        (
            ('paths = ["/var/log/auth.log"]', 'paths = ["/x"]\nread_chunk_bytes = 0'),
            "sources.auth.read_chunk_bytes",
        ),
        (('state_dir = "/var/lib/tailseal"', "heartbeat = -1"), "heartbeat"),
        (('state_dir = "/var/lib/tailseal"', "heartbeat = 0.01"), "heartbeat"),
        (('state_dir = "/var/lib/tailseal"', 'heartbeat = "often"'), "heartbeat"),
        (("[sinks.central]", "[sinks.central]\ncompression_level = 20"), LEVEL),
        (("[sinks.central]", "[sinks.central]\ncompression_level = -8"), LEVEL),
        (("[sinks.central]", '[sinks.central]\ncompression_level = "fast"'), LEVEL),
        (
            ("[sinks.central]", '[sinks.central]\ncompression = "gzip"\ncompression_level = 0'),
            LEVEL,
        ),
        (
            ("[sinks.central]", '[sinks.central]\ncompression = "none"\ncompression_level = 1'),
            LEVEL,
        ),
        (("[sinks.central]", "[sinks.central]\nconcurrency = 0"), "sinks.central.concurrency"),
        (("[sinks.central]", "[sinks.central]\nconcurrency = 17"), "sinks.central.concurrency"),
        (("[sinks.central]", "[sinks.central]\nconcurrency = 1.5"), "sinks.central.concurrency"),
        (
            ("[sinks.central]", "[sinks.central]\ndrain_concurrency = 0"),
            "sinks.central.drain_concurrency",
        ),
        # NaN is neither > 0 nor <= 0: it passed every positivity check, then crashed the loop
        # (call_later) or made a deadline of nothing that hung the shutdown.
        (('state_dir = "/var/lib/tailseal"', "heartbeat = nan"), "heartbeat"),
        (("[sinks.central]", "[sinks.central]\nbackoff_max = nan"), "sinks.central.backoff_max"),
        (("[sinks.central]", "[sinks.central]\nlinger = inf"), "sinks.central.linger"),
        (
            ('paths = ["/var/log/auth.log"]', 'paths = ["/x"]\npoll_interval = nan'),
            "sources.auth.poll_interval",
        ),
        (("[sinks.central]", "[shutdown]\ntimeout = nan\n[sinks.central]"), "shutdown.timeout"),
        (
            ("[sinks.central]", "[buffer]\nqueue_batches = 0\n[sinks.central]"),
            "buffer.queue_batches",
        ),
        (("[sinks.central]", "[buffer]\nretry_max = -1.0\n[sinks.central]"), "buffer.retry_max"),
        (
            ("[sinks.central]", "[buffer]\nmax_bytes = 1180591620717411303424\n[sinks.central]"),
            "buffer.max_bytes",
        ),
        (("[sinks.central]", "[sinks.central]\nbackoff_max = 0.0"), "sinks.central.backoff_max"),
        (
            ("[sinks.central]", "[sinks.central]\nrequest_timeout = -1.0"),
            "sinks.central.request_timeout",
        ),
        (
            ('state_dir = "/var/lib/tailseal"', '[control]\nlisten = "127.0.0.1:99999"'),
            "control.listen",
        ),
    ],
)
def test_invalid_values_name_their_field(
    tmp_path: Path, mutation: tuple[str, str], field: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load_agent_config(write(tmp_path, VALID.replace(*mutation)), environ={})
    assert info.value.field == field


@pytest.mark.parametrize(
    ("table", "level"),
    [("", None), ("compression_level = -7", -7), ("compression_level = 19", 19),
     ('compression = "gzip"\ncompression_level = 9', 9)],
)  # fmt: skip
def test_compression_level_defaults_to_the_codecs_and_takes_its_range(
    tmp_path: Path, table: str, level: int | None
) -> None:
    text = VALID.replace("[sinks.central]", f"[sinks.central]\n{table}")
    assert (
        load_agent_config(write(tmp_path, text), environ={}).sinks["central"].compression_level
        == level
    )


def test_missing_sources_and_sinks_are_errors() -> None:
    with pytest.raises(ConfigError, match="sources: at least one source"):
        parse_agent_config({}, environ={})


def test_hostile_toml_is_a_config_error_not_a_crash(tmp_path: Path) -> None:
    for text in ["[sources\n", "\x00\x01garbage", "sources = 5", "[sources.a]\ntype = 1"]:
        with pytest.raises(ConfigError):
            load_agent_config(write(tmp_path, text), environ={})
    deep = "x = " + "[" * 5000 + "]" * 5000  # past tomllib's recursion: RecursionError
    with pytest.raises(ConfigError, match="nested too deeply"):
        load_agent_config(write(tmp_path, deep), environ={})
    path = tmp_path / "binary.toml"
    path.write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(ConfigError, match="not valid UTF-8"):
        load_agent_config(path, environ={})


def test_env_substitution_and_overrides(tmp_path: Path) -> None:
    text = VALID.replace("https://collector.example:8443", "https://${COLLECTOR}:8443")
    config = load_agent_config(
        write(tmp_path, text),
        environ={
            "COLLECTOR": "c.internal",
            "TAILSEAL_BUFFER__SEGMENT_BYTES": "8192",
            "TAILSEAL_SINKS__CENTRAL__COMPRESSION": "gzip",
        },
    )
    assert config.sinks["central"].endpoint == "https://c.internal:8443"
    assert config.buffer.segment_bytes == 8192
    assert config.sinks["central"].compression == "gzip"


def test_unset_env_reference_names_the_field(tmp_path: Path) -> None:
    text = VALID.replace('"/etc/tailseal/token"', '"${TOKEN_PATH}"')
    with pytest.raises(ConfigError) as info:
        load_agent_config(write(tmp_path, text), environ={})
    assert info.value.field == "sinks.central.token_file"


def test_collector_config_requires_exactly_one_token_form(tmp_path: Path) -> None:
    path = tmp_path / "collector.toml"
    path.write_text('[[tokens]]\nname = "a"\n')
    with pytest.raises(ConfigError) as info:
        load_collector_config(path, environ={})
    assert info.value.field == "tokens[0]"


def test_check_command_exits_78_with_one_line_naming_typo_key(tmp_path: Path) -> None:
    text = VALID.replace('endpoint = "https', 'endpiont = "https')
    result = check(write(tmp_path, text))
    assert result.returncode == EX_CONFIG
    assert result.stderr.strip().splitlines() == [
        "tailseal: config error: sinks.central.endpiont: unknown key"
    ]


def test_check_command_exits_78_with_one_line_naming_wrong_type(tmp_path: Path) -> None:
    text = VALID.replace('paths = ["/var/log/auth.log"]', 'paths = "/var/log/auth.log"')
    result = check(write(tmp_path, text))
    assert result.returncode == EX_CONFIG
    assert result.stderr.strip().splitlines() == [
        "tailseal: config error: sources.auth.paths: expected array, got str"
    ]


def test_check_command_accepts_a_valid_config(tmp_path: Path) -> None:
    result = check(write(tmp_path, VALID))
    assert result.returncode == 0, result.stderr
    assert "OK (1 sources, 1 sinks)" in result.stdout


def test_check_command_reports_a_missing_file(tmp_path: Path) -> None:
    result = check(tmp_path / "nope.toml")
    assert result.returncode == EX_CONFIG
    assert "cannot read config file" in result.stderr


def test_prefixed_variables_that_name_no_config_key_are_not_overrides(tmp_path: Path) -> None:
    environ = {
        "TAILSEAL_K8S_NODE_NAME": "node-a",
        "TAILSEAL_CRASH_ITERATIONS": "500",
        "TAILSEAL_CONFIG": "/etc/tailseal/tailseal.toml",
        "TAILSEAL_SHUTDOWN__TIMEOUT": "12.5",
    }
    config = load_agent_config(write(tmp_path, VALID), environ=environ)
    assert config.shutdown.timeout == 12.5


def test_an_environment_shared_by_agent_and_collector_overrides_each_its_own(
    tmp_path: Path,
) -> None:
    # host is a collector key, state_dir an agent one: each broke the other program's config
    # ("host: unknown key"), without naming the variable.
    environ = {"TAILSEAL_HOST": "192.0.2.10", "TAILSEAL_STATE_DIR": "/srv/tailseal"}
    agent = load_agent_config(write(tmp_path, VALID), environ=environ)
    collector_file = tmp_path / "collector.toml"
    collector_file.write_text('[[tokens]]\nname = "a"\ntoken = "s"\n')
    collector = load_collector_config(collector_file, environ=environ)
    assert agent.state_dir == "/srv/tailseal"
    assert collector.host == "192.0.2.10"


def test_conf_d_drop_ins_merge_over_the_main_file_in_name_order(tmp_path: Path) -> None:
    path = write(tmp_path, VALID)
    (tmp_path / "conf.d").mkdir()
    (tmp_path / "conf.d" / "20-site.toml").write_text(
        '[sinks.central]\nendpoint = "https://collector.site:8443"\n[buffer]\nfsync = "always"\n'
    )
    (tmp_path / "conf.d" / "10-backup.toml").write_text(
        '[sinks.backup]\ntype = "tailseal"\nendpoint = "https://backup:8443"\n'
        '[buffer]\nfsync = "interval"\n'
    )
    (tmp_path / "conf.d" / "README").write_text("not toml, not read")
    config = load_agent_config(path, environ={})
    assert config.sinks["central"].endpoint == "https://collector.site:8443"
    assert config.sinks["central"].token_file == "/etc/tailseal/token"  # merged, not replaced
    assert config.sinks["backup"].endpoint == "https://backup:8443"
    assert config.buffer.fsync == "always"  # 20-site comes after 10-backup


def test_a_broken_drop_in_is_a_config_error_naming_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, VALID)
    (tmp_path / "conf.d").mkdir()
    (tmp_path / "conf.d" / "50-bad.toml").write_text("[sinks.central\n")
    with pytest.raises(ConfigError, match=r"50-bad\.toml"):
        load_agent_config(path, environ={})
