"""Configuration: TOML (stdlib ``tomllib``) into typed, frozen msgspec structures.

Validated once at load; unknown keys and wrong types are ``ConfigError``s naming the dotted field
path (``sources.auth.pathz``). String values may use ``${ENV}`` substitution, and
``TAILSEAL_<PATH>`` environment variables override keys (path segments joined by ``__``, e.g.
``TAILSEAL_SINKS__CENTRAL__ENDPOINT``) so containers can configure the agent without a file.
Each component receives only its own section. Nothing here holds mutable state.
"""

from __future__ import annotations

import functools
import math
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar, cast

import msgspec

from agent import affinity
from agent.errors import ConfigError

MiB = 1024 * 1024
MAX_BUFFER_BYTES = 1 << 62  # beyond, the writer's room arithmetic leaves C's 64-bit integers
# read_chunk_bytes unset: the most a source reads at once, by its parser. A record held as a
# Python object is ~20 times its line in memory; raw lines, and the syslog and auth parsers'
# lines, go to the buffer as runs framed in C, a few times their size.
# Where the C loops are not built, the Python ones hold more per line: half as much is read.
RAW_CHUNK_BYTES = 512 * 1024  # no parser (256 KiB in Python)
ENCODED_CHUNK_BYTES = 128 * 1024  # syslog, auth, where their C parser is built
PARSED_CHUNK_BYTES = 64 * 1024  # the other parsers (and those two in Python)
ENV_PREFIX = "TAILSEAL_"
MAX_REORDER_WAIT = 60.0  # seconds: the collector's reorder_wait
_T = TypeVar("_T")


class _Section(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """Base of every config section: unknown keys are errors, values are immutable."""


class ParserConfig(_Section, frozen=True):
    """How a source's lines are parsed (agent/transforms); ``none`` ships them as read."""

    format: Literal["none", "syslog", "auth", "access", "json", "auditd", "shell"] = "none"
    timezone: str = "UTC"  # for times without an offset: UTC, Local, +01:30 or an IANA name
    timestamp_field: str = "time"  # json: dotted path of the event time ("" = keep read time)
    message_field: str = "message"  # json: dotted path copied to ``message``
    audit_timeout: float = 2.0  # auditd: seconds an incomplete multi-record event may wait


class RedactConfig(_Section, frozen=True):
    """Secret redaction before records reach the buffer (on unless explicitly disabled)."""

    enabled: bool = True
    patterns: list[str] = []  # extra regexes; a (?P<secret>...) group limits the replacement


class FileSourceConfig(_Section, frozen=True, tag="file", tag_field="type"):
    paths: list[str]
    exclude: list[str] = []
    read_from: Literal["beginning", "end"] = "beginning"
    max_line_bytes: int = MiB
    poll_interval: float = 1.0
    partial_line_timeout: float = 5.0
    # Bytes read per step, and so the lines of one batch (a few batches are in flight). Unset:
    # 256 KiB of raw lines, 64 KiB with a parser, whose records take ~20x their line in memory
    # (an access line of 250 bytes is ~5 KB of dicts); ``chunk_bytes`` is what applies.
    read_chunk_bytes: int | None = None
    # Skip rotated siblings (*.1, *.gz, *-YYYYMMDD, ...) matched by a pattern with glob magic in
    # its file name; a rotated file already open is still read to its end.
    exclude_rotated: bool = True
    # File identity = device + inode + a hash of the first fingerprint_bytes (inode reuse).
    fingerprint_bytes: int = 1024
    # Keep reading a file that left the glob set (rotated, deleted) until it is this idle.
    rotate_wait: float = 5.0
    max_open_files: int = 1024
    close_idle_after: float = 300.0  # seconds without growth before a file's fd is closed
    multiline_start: str = ""  # regex: a line matching it starts a record; others continue it
    multiline_timeout: float = 1.0
    parser: ParserConfig = ParserConfig()
    redact: RedactConfig = RedactConfig()

    @property
    def chunk_bytes(self) -> int:
        """``read_chunk_bytes``, or its default for this source's parser."""
        if self.read_chunk_bytes is not None:
            return self.read_chunk_bytes
        return default_chunk_bytes(self.parser.format)


@functools.cache
def default_chunk_bytes(parser: str) -> int:
    """``read_chunk_bytes`` unset, for a source with ``parser``: by what its lines become. The
    C modules are looked for when a source first asks, not when this module is imported (the
    command line imports it before it tunes the allocator, and they bring libcrypto in)."""
    from agent.compiled import load

    if parser == "none":
        return RAW_CHUNK_BYTES if load("agent._speedups") is not None else RAW_CHUNK_BYTES // 2
    if parser in ("syslog", "auth") and load("agent.transforms._speedups") is not None:
        return ENCODED_CHUNK_BYTES
    return PARSED_CHUNK_BYTES


class JournaldSourceConfig(_Section, frozen=True, tag="journald", tag_field="type"):
    """The systemd journal through ``journalctl --follow --output=json`` (sources/journald.py)."""

    journalctl: str = "journalctl"  # the binary: a name looked up in PATH, or a path
    matches: list[str] = []  # "FIELD=value" terms and "+" (OR), as journalctl combines them
    units: list[str] = []  # journalctl --unit=...
    directory: str = ""  # a journal directory instead of the system journal
    files: list[str] = []  # journal files (globs allowed) instead of the system journal
    since_boot: bool = True  # first start only: the current boot's entries, else all there are
    # Never our own output (feedback loop); filtered here, journalctl has no negative matches.
    exclude_units: list[str] = msgspec.field(default_factory=lambda: ["tailseal.service"])
    auth: bool = True  # parse sshd/sudo/su/... entries into auth events by SYSLOG_IDENTIFIER
    retry_initial: float = 1.0  # backoff before restarting a journalctl that failed
    retry_max: float = 30.0
    parser: ParserConfig = ParserConfig()
    redact: RedactConfig = RedactConfig()


SourceConfig = FileSourceConfig | JournaldSourceConfig


MAX_CONCURRENCY = 16  # a sink's batches in flight (the collector lets 16 per stream wait)


class TailsealSinkConfig(_Section, frozen=True, tag="tailseal", tag_field="type"):
    endpoint: str
    token_file: str = ""
    token: str = ""
    ca_file: str = ""
    tls_verify: bool = True
    compression: Literal["zstd", "gzip", "none"] = "zstd"
    # Unset: the codec's fast default (zstd 1, gzip 1). zstd takes -7 (fastest, least packed: on
    # bench/'s raw lines ~0.3 us/line less compressing than level 1, for ~1.5x the bytes on the
    # wire) to 19, gzip 1 to 9.
    compression_level: int | None = None
    max_batch_records: int = 10_000
    # A batch's body and each copy of it (the join zstd takes, its TLS records) must stay under
    # the malloc mmap threshold (runtime.py, 2 MiB) to be reused from the heap: at 2 MiB, each
    # was mapped fresh, a page fault per 4 KiB (bench/ raw lines: 2.85-3.01 CPU-s/M, peak RSS
    # 74-78 MB; at 1.5 MiB 2.59-2.74 and 71.5-74.4 MB; at 1.75 MiB RSS reached 81 MB).
    max_batch_bytes: int = 3 * MiB // 2
    # How long a record may wait, from its commit, for a batch to fill (Kafka's linger.ms):
    # a trickle ships in fewer requests; a backlog's last records, older than this, at once.
    linger: float = 0.05
    # Batches in flight at once (answers are still taken in order): the collector stores one
    # while the next is on its way, read and checked. Two while shipping as records come (each
    # in flight holds up to max_batch_bytes: bench/ raw lines +10-13% lines/s on loopback for
    # ~4 MB more peak RSS), more while draining before the host goes, where every round trip
    # to a distant collector counts.
    concurrency: int = 2
    drain_concurrency: int = 4
    request_timeout: float = 30.0
    backoff_initial: float = 0.2
    backoff_max: float = 30.0


SinkConfig = TailsealSinkConfig


class BufferConfig(_Section, frozen=True):
    segment_bytes: int = 64 * MiB
    # Disk the buffer may use; must hold at least two segments.
    max_bytes: int = 1024 * MiB
    when_full: Literal["block", "drop_oldest"] = "block"
    # batch: one fsync per group commit; always: one per record; interval: commits gather
    # for up to fsync_interval seconds (fewer fsyncs, more latency).
    fsync: Literal["batch", "always", "interval"] = "batch"
    fsync_interval: float = 0.2
    max_commit_records: int = 5_000
    # Batches (one read chunk each) waiting for the writer: bounds the memory records in
    # flight may take, and is how backpressure reaches the sources. Two keep the writer busy
    # while the next batch is parsed; a longer queue only holds more records (the files the
    # sources read are the real backlog).
    queue_batches: int = 2
    # Pause between attempts after a write error (disk full, EIO): capped, jittered backoff.
    retry_initial: float = 0.5
    retry_max: float = 30.0


class ShutdownConfig(_Section, frozen=True):
    timeout: float = 25.0


class EnrichConfig(_Section, frozen=True):
    """Host identity sent in batch headers (agent/transforms/enrich.py)."""

    provenance_file: str = "/etc/tailseal/provenance.json"  # written at image bake, optional
    cloud: bool = True  # ask the detected platform's metadata service for instance identity


class ControlConfig(_Section, frozen=True):
    """The local control endpoint (``tailseal drain``, ``/status``, probes); never public."""

    socket: str = ""  # unix socket; "" = <state_dir>/control.sock, "off" = none
    listen: str = ""  # optional loopback TCP "127.0.0.1:7879" for HTTP probes; "" = none


Platform = Literal["auto", "on", "off"]


class TerminationConfig(_Section, frozen=True):
    """Cloud termination notice watchers; "auto" enables one when its platform is detected."""

    ec2: Platform = "auto"
    gcp: Platform = "auto"
    azure: Platform = "auto"
    poll_interval: float = 5.0
    timeout: float = 1.0  # per metadata request: a missing service costs this, once
    ec2_endpoint: str = "http://169.254.169.254"
    gcp_endpoint: str = "http://metadata.google.internal"
    azure_endpoint: str = "http://169.254.169.254"


class AgentConfig(_Section, frozen=True):
    state_dir: str = "/var/lib/tailseal"
    host_name: str = ""
    # Seconds without a committed record after which the agent writes a heartbeat ``notice``, so
    # an idle host's stream stays ``live`` at the collector (``silent_after``, default 300 s) and
    # ``silent`` means gone. 0 = never.
    heartbeat: float = 120.0
    # "none" (the OS places threads), "auto" (one CPU, followed) or CPUs ("0-3", [0, 1]): see
    # agent/affinity.py for why one CPU costs the GIL-bound agent less per line.
    cpu_affinity: str | list[int] = "none"
    buffer: BufferConfig = BufferConfig()
    shutdown: ShutdownConfig = ShutdownConfig()
    control: ControlConfig = ControlConfig()
    enrich: EnrichConfig = EnrichConfig()
    termination: TerminationConfig = TerminationConfig()
    sources: dict[str, SourceConfig] = {}
    sinks: dict[str, SinkConfig] = {}


class TlsConfig(_Section, frozen=True):
    cert_file: str
    key_file: str
    client_ca_file: str = ""


class TokenConfig(_Section, frozen=True):
    name: str
    token: str = ""
    token_file: str = ""
    hosts: list[str] = msgspec.field(default_factory=lambda: ["*"])
    # Token bucket per token: batches per second (0 = unlimited) and bucket size (0 = one
    # second's worth, at least 1). Over the limit the collector answers 429 + Retry-After.
    rate_limit_batches_per_second: float = 0.0
    burst: int = 0


class CollectorConfig(_Section, frozen=True):
    host: str = "127.0.0.1"
    port: int = 8443
    port_file: str = ""
    storage_dir: str = "/var/lib/tailseal-collector"
    tls: TlsConfig | None = None
    tokens: list[TokenConfig] = []
    max_body_bytes: int = 16 * MiB
    max_decompressed_bytes: int = 64 * MiB
    body_timeout: float = 30.0  # seconds a request body may take to arrive (slow-loris bound)
    silent_after: float = 300.0  # seconds without data before an unsealed stream is `silent`
    # Seconds a batch that came in ahead of the batches before it (an agent sends several at
    # once) waits for them before it gets its 409; 0: never; at most MAX_REORDER_WAIT.
    reorder_wait: float = 2.0


# --- loading -------------------------------------------------------------------------------------

_UNKNOWN = re.compile(r"Object contains unknown field `(?P<name>[^`]+)`(?: - at `(?P<at>[^`]+)`)?")
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _join(prefix: str, at: str | None) -> str:
    """Turn msgspec's ``$.a[0].b`` into ``prefix.a[0].b``."""
    rest = (at or "$")[1:].lstrip(".")
    if not prefix:
        return rest
    if not rest:
        return prefix
    return f"{prefix}{rest}" if rest.startswith("[") else f"{prefix}.{rest}"


def _convert(value: Any, kind: type[_T], prefix: str) -> _T:
    try:
        return msgspec.convert(value, kind)
    except msgspec.ValidationError as exc:
        text = str(exc)
        unknown = _UNKNOWN.match(text)
        if unknown:
            field = _join(prefix, unknown["at"])
            name = unknown["name"]
            raise ConfigError(f"{field}.{name}" if field else name, "unknown key") from exc
        message, _, at = text.partition(" - at `")
        message = message.replace("`", "")
        field = _join(prefix, at.rstrip("`") or None)
        raise ConfigError(field, message[:1].lower() + message[1:]) from exc


def _substitute_env(value: Any, path: str, environ: Mapping[str, str]) -> Any:
    if isinstance(value, str):

        def repl(match: re.Match[str]) -> str:
            name = match[1]
            if name not in environ:
                raise ConfigError(path, f"environment variable {name} is not set")
            return environ[name]

        return _ENV_REF.sub(repl, value)
    if isinstance(value, dict):
        return {
            k: _substitute_env(v, f"{path}.{k}" if path else k, environ) for k, v in value.items()
        }
    if isinstance(value, list):
        return [_substitute_env(v, f"{path}[{i}]", environ) for i, v in enumerate(value)]
    return value


def _apply_overrides(
    data: dict[str, Any], environ: Mapping[str, str], kind: type[msgspec.Struct]
) -> None:
    """Apply ``TAILSEAL_A__B__C=value`` overrides; the value is parsed as TOML if it can be.

    Only variables naming a top-level key of this config (``kind``: the agent's or the
    collector's) are overrides: others with the prefix (``TAILSEAL_CONFIG``,
    ``TAILSEAL_K8S_NODE_NAME``, the other program's keys in an environment both share, a
    test's settings) are not this config's."""
    top = {f.lower() for f in kind.__struct_fields__}
    for name, raw in sorted(environ.items()):
        if not name.startswith(ENV_PREFIX):
            continue
        keys = [k.lower() for k in name[len(ENV_PREFIX) :].split("__")]
        if keys[0] not in top:
            continue
        if not all(keys):
            raise ConfigError(name, "empty path segment in override variable")
        try:
            value: Any = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw
        node = data
        for key in keys[:-1]:
            child = node.setdefault(key, {})
            if not isinstance(child, dict):
                raise ConfigError(".".join(keys), f"cannot override inside non-table key {key!r}")
            node = child
        node[keys[-1]] = value


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError("", f"cannot read config file {path}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError("", f"config file {path} is not valid UTF-8") from exc
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("", f"{path}: invalid TOML: {exc}") from exc
    except RecursionError as exc:  # tomllib recurses per nested array or inline table
        raise ConfigError("", f"{path}: nested too deeply") from exc


def _prepare(
    data: dict[str, Any], environ: Mapping[str, str] | None, kind: type[msgspec.Struct]
) -> dict[str, Any]:
    env = os.environ if environ is None else environ
    _apply_overrides(data, env, kind)
    prepared: dict[str, Any] = _substitute_env(data, "", env)
    return prepared


def parse_agent_config(
    data: dict[str, Any], environ: Mapping[str, str] | None = None
) -> AgentConfig:
    """Validate an already-parsed TOML document as the agent configuration."""
    data = _prepare(data, environ, AgentConfig)
    # Named tables are converted one by one so errors name the entry (msgspec says ``[...]``).
    sections: dict[str, Any] = {}
    for family in ("sources", "sinks"):
        raw = data.pop(family, {})
        if not isinstance(raw, dict):
            raise ConfigError(family, "expected a table of named entries")
        sections[family] = raw
    config = _convert(data, AgentConfig, "")
    # A union is not a ``type`` to mypy; msgspec converts to it all the same (tag ``type``).
    source_kind = cast("type[SourceConfig]", SourceConfig)
    sources = {
        name: _convert(_require_type(body, f"sources.{name}"), source_kind, f"sources.{name}")
        for name, body in sections["sources"].items()
    }
    sinks = {
        name: _convert(_require_type(body, f"sinks.{name}"), SinkConfig, f"sinks.{name}")
        for name, body in sections["sinks"].items()
    }
    config = msgspec.structs.replace(config, sources=sources, sinks=sinks)
    _check_agent(config)
    _check_heartbeat(config.heartbeat)
    try:
        affinity.parse(config.cpu_affinity)
    except ValueError as exc:
        raise ConfigError("cpu_affinity", str(exc)) from None
    return config


def _require_type(body: Any, path: str) -> Any:
    if not isinstance(body, dict):
        raise ConfigError(path, "expected a table")
    if "type" not in body:
        raise ConfigError(f"{path}.type", "missing required key")
    return body


def _check_agent(config: AgentConfig) -> None:
    if not config.sources:
        raise ConfigError("sources", "at least one source is required")
    if not config.sinks:
        raise ConfigError("sinks", "at least one sink is required")
    for name in [*config.sources, *config.sinks]:
        if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", name):
            raise ConfigError(name, "names may use letters, digits, '_', '.', '-' (max 64)")
    for name, src in config.sources.items():
        if isinstance(src, JournaldSourceConfig):
            _check_journald_source(f"sources.{name}", src)
        else:
            _check_file_source(f"sources.{name}", src)
        _check_transforms(f"sources.{name}", src.parser, src.redact)
    for name, sink in config.sinks.items():
        _check_sink(f"sinks.{name}", sink)
    if config.buffer.segment_bytes < 4096:
        raise ConfigError("buffer.segment_bytes", "must be at least 4096")
    if config.buffer.max_bytes < 2 * config.buffer.segment_bytes:
        raise ConfigError("buffer.max_bytes", "must hold at least two segments (2 x segment_bytes)")
    _positive("buffer.fsync_interval", config.buffer.fsync_interval)
    _positive("buffer.retry_initial", config.buffer.retry_initial)
    _positive("buffer.retry_max", config.buffer.retry_max)
    _positive("buffer.queue_batches", config.buffer.queue_batches)
    if config.buffer.max_bytes > MAX_BUFFER_BYTES:
        raise ConfigError("buffer.max_bytes", f"must be at most {MAX_BUFFER_BYTES} (2**62)")
    _positive("buffer.max_commit_records", config.buffer.max_commit_records)
    _positive("shutdown.timeout", config.shutdown.timeout)
    _check_control(config)


COMPRESSION_LEVELS = {"zstd": (-7, 19), "gzip": (1, 9)}


def _check_sink(path: str, sink: TailsealSinkConfig) -> None:
    if not sink.endpoint.startswith(("https://", "http://")):
        raise ConfigError(f"{path}.endpoint", "must be an http(s):// URL")
    if sink.token and sink.token_file:
        raise ConfigError(f"{path}.token", "set token or token_file, not both")
    _check_compression_level(path, sink)
    _positive(f"{path}.max_batch_records", sink.max_batch_records)
    _positive(f"{path}.max_batch_bytes", sink.max_batch_bytes)
    for key, value in (
        ("concurrency", sink.concurrency),
        ("drain_concurrency", sink.drain_concurrency),
    ):
        if not 1 <= value <= MAX_CONCURRENCY:
            raise ConfigError(f"{path}.{key}", f"must be 1..{MAX_CONCURRENCY}, got {value}")
    _positive(f"{path}.backoff_initial", sink.backoff_initial)
    _positive(f"{path}.backoff_max", sink.backoff_max)
    if sink.backoff_max < sink.backoff_initial:
        raise ConfigError(f"{path}.backoff_max", "must not be below backoff_initial")
    _positive(f"{path}.request_timeout", sink.request_timeout)
    _non_negative(f"{path}.linger", sink.linger)


def _check_compression_level(path: str, sink: TailsealSinkConfig) -> None:
    if sink.compression_level is None:
        return
    levels = COMPRESSION_LEVELS.get(sink.compression)
    if levels is None:
        raise ConfigError(
            f"{path}.compression_level", f"not used with compression = {sink.compression!r}"
        )
    low, high = levels
    if not low <= sink.compression_level <= high:
        raise ConfigError(
            f"{path}.compression_level", f"{sink.compression} levels are {low} to {high}"
        )


def _check_file_source(path: str, src: FileSourceConfig) -> None:
    if not src.paths:
        raise ConfigError(f"{path}.paths", "at least one path is required")
    if src.max_line_bytes < 64:
        raise ConfigError(f"{path}.max_line_bytes", "must be at least 64")
    _positive(f"{path}.poll_interval", src.poll_interval)
    if src.read_chunk_bytes is not None and src.read_chunk_bytes < 1:
        raise ConfigError(f"{path}.read_chunk_bytes", "must be at least 1")
    if src.fingerprint_bytes < 16:
        raise ConfigError(f"{path}.fingerprint_bytes", "must be at least 16")
    if src.max_open_files < 1:
        raise ConfigError(f"{path}.max_open_files", "must be at least 1")
    _positive(f"{path}.close_idle_after", src.close_idle_after)
    _positive(f"{path}.multiline_timeout", src.multiline_timeout)
    _non_negative(f"{path}.rotate_wait", src.rotate_wait)
    _non_negative(f"{path}.partial_line_timeout", src.partial_line_timeout)
    try:
        re.compile(src.multiline_start)
    except re.error as exc:
        raise ConfigError(f"{path}.multiline_start", f"not a valid regex: {exc}") from exc


def _check_journald_source(path: str, src: JournaldSourceConfig) -> None:
    if src.directory and src.files:
        raise ConfigError(f"{path}.directory", "set directory or files, not both")
    for i, term in enumerate(src.matches):
        if term != "+" and not re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", term, re.S):
            raise ConfigError(f"{path}.matches[{i}]", 'expected "FIELD=value" or "+"')
    if src.parser.format in ("syslog", "auth"):
        raise ConfigError(
            f"{path}.parser.format",
            "journal entries carry no syslog header; auth events are parsed with auth = true",
        )
    _positive(f"{path}.retry_initial", src.retry_initial)
    _positive(f"{path}.retry_max", src.retry_max)


def _check_transforms(path: str, parser: ParserConfig, redact: RedactConfig) -> None:
    from agent.transforms.syslog import parse_timezone

    try:
        parse_timezone(parser.timezone)
    except ValueError as exc:
        raise ConfigError(f"{path}.parser.timezone", str(exc)) from exc
    _positive(f"{path}.parser.audit_timeout", parser.audit_timeout)
    for i, pattern in enumerate(redact.patterns):
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ConfigError(f"{path}.redact.patterns[{i}]", f"invalid regex: {exc}") from exc


def _check_control(config: AgentConfig) -> None:
    _positive("termination.poll_interval", config.termination.poll_interval)
    _positive("termination.timeout", config.termination.timeout)
    if config.control.listen:
        host, _, port = config.control.listen.rpartition(":")
        loopback = host in ("127.0.0.1", "::1", "[::1]", "localhost")
        if not loopback or not port.isdigit() or not 1 <= int(port) <= 65535:
            raise ConfigError("control.listen", "must be a loopback host:port, e.g. 127.0.0.1:7879")


def _check_heartbeat(value: float) -> None:
    if not (value == 0 or value >= 0.1):
        raise ConfigError("heartbeat", f"must be 0 (never) or at least 0.1 seconds, got {value}")


def _non_negative(path: str, value: float) -> None:
    if not 0 <= value < math.inf:  # NaN fails every comparison
        raise ConfigError(path, f"must be 0 or a positive number, got {value}")


def _positive(path: str, value: float) -> None:
    if not value > 0 or value == math.inf:  # NaN is neither > 0 nor <= 0
        raise ConfigError(path, f"must be a positive number, got {value}")


def parse_collector_config(
    data: dict[str, Any], environ: Mapping[str, str] | None = None
) -> CollectorConfig:
    config = _convert(_prepare(data, environ, CollectorConfig), CollectorConfig, "")
    if not 0 <= config.port <= 65535:
        raise ConfigError("port", f"must be 0..65535, got {config.port}")
    for i, token in enumerate(config.tokens):
        if bool(token.token) == bool(token.token_file):
            raise ConfigError(f"tokens[{i}]", "set exactly one of token and token_file")
    _positive("max_body_bytes", config.max_body_bytes)
    _positive("max_decompressed_bytes", config.max_decompressed_bytes)
    _positive("body_timeout", config.body_timeout)
    _positive("silent_after", config.silent_after)
    # Stopping wakes waiting batches, so the bound is not for shutdown: a wait of minutes would
    # only hold a body in memory and the agent's answer for nothing.
    if not 0 <= config.reorder_wait <= MAX_REORDER_WAIT:
        raise ConfigError(
            "reorder_wait", f"must be 0..{MAX_REORDER_WAIT:g} seconds, got {config.reorder_wait}"
        )
    for i, token in enumerate(config.tokens):
        if token.rate_limit_batches_per_second < 0:
            raise ConfigError(f"tokens[{i}].rate_limit_batches_per_second", "must be >= 0")
        if token.burst < 0:
            raise ConfigError(f"tokens[{i}].burst", "must be >= 0")
    return config


def load_agent_config(path: Path, environ: Mapping[str, str] | None = None) -> AgentConfig:
    """``path`` with the drop-ins of ``conf.d/`` beside it merged over it in name order."""
    data = _read_toml(path)
    drop_ins = path.parent / "conf.d"
    if drop_ins.is_dir():
        for drop_in in sorted(drop_ins.glob("*.toml")):
            _merge(data, _read_toml(drop_in))
    return parse_agent_config(data, environ)


def _merge(base: dict[str, Any], over: dict[str, Any]) -> None:
    """Tables merge key by key; any other value (arrays included) replaces the one before."""
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value


def load_collector_config(path: Path, environ: Mapping[str, str] | None = None) -> CollectorConfig:
    return parse_collector_config(_read_toml(path), environ)
