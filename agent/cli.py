"""The ``tailseal`` command line: run, check, collector, verify, demo, version.

Exit codes: 0 success (``run``: drained and sealed), 78 configuration error (sysexits
EX_CONFIG), 75 stopped before the buffer drained (records kept on disk), 1 other failures.
``verify``: 0 every stream verifies, 1 a break was found, 2 PATH is not collector storage.
Signal handlers only set the shutdown event; the supervisor does the rest.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import os
import signal
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from agent import __version__
from agent.errors import EX_CONFIG, ConfigError, TailsealError
from agent.runtime import tune_gc, tune_malloc

DEFAULT_CONFIG = "/etc/tailseal/tailseal.toml"
DEFAULT_COLLECTOR_CONFIG = "/etc/tailseal/collector.toml"

log = logging.getLogger("tailseal")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tailseal",
        description="Log shipping agent for ephemeral hosts: durable, hash-chained, sealed.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    env_config = os.environ.get("TAILSEAL_CONFIG", DEFAULT_CONFIG)
    run = sub.add_parser("run", help="run the agent")
    run.add_argument("-c", "--config", default=env_config, help="agent config (TOML)")
    run.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    check = sub.add_parser("check", help="validate a config file and exit (78 when invalid)")
    check.add_argument("-c", "--config", default=env_config, help="config file (TOML)")
    check.add_argument(
        "--collector", action="store_true", help="the file is a collector config, not an agent's"
    )
    collector = sub.add_parser("collector", help="run the reference collector")
    collector.add_argument("-c", "--config", default=DEFAULT_COLLECTOR_CONFIG)
    collector.add_argument("--log-level", default="info", choices=["debug", "info", "warning"])
    demo = sub.add_parser("demo", help="local demo: agent + collector on loopback")
    demo.add_argument("--dir", default="demo-state", help="where the demo keeps its files")
    demo.add_argument(
        "--lines",
        type=_count,
        default=0,
        help="write this many demo lines, then stop (0: run until Ctrl-C)",
    )
    verify = sub.add_parser(
        "verify", help="re-verify stored streams offline (exit 0 only when all verify)"
    )
    verify.add_argument("path", help="collector storage directory, or one stream directory")
    verify.add_argument("--json", action="store_true", help="one JSON document on stdout")
    verify.add_argument(
        "--allow-unsealed",
        action="store_true",
        help="a stream without a final seal (agent still running) is not a break",
    )
    drain = sub.add_parser(
        "drain", help="ask the running agent to ship everything, seal and exit (preStop hook)"
    )
    drain.add_argument("-c", "--config", default=env_config, help="the agent's config (TOML)")
    drain.add_argument("--socket", default="", help="control socket (default: from the config)")
    drain.add_argument(
        "--timeout", type=_seconds, default=0, help="give up after this many seconds (0: never)"
    )
    reload_cmd = sub.add_parser("reload", help="make the running agent re-read its config")
    reload_cmd.add_argument("-c", "--config", default=env_config, help="the agent's config (TOML)")
    reload_cmd.add_argument("--socket", default="", help="control socket (default: from config)")
    status = sub.add_parser("status", help="show what a running agent is doing")
    status.add_argument("-c", "--config", default=env_config, help="the agent's config (TOML)")
    status.add_argument("--socket", default="", help="control socket (default: from the config)")
    status.add_argument("--watch", action="store_true", help="refresh every two seconds")
    status.add_argument("--json", action="store_true", help="the raw status document")
    sub.add_parser("version", help="print the version")
    return parser


def _seconds(text: str) -> float:
    """A --timeout: a finite number of seconds, 0 or more (nan gave up at once)."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < math.inf:
        raise argparse.ArgumentTypeError(f"not a number of seconds (0 or more): {text!r}")
    return value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"not a count (0 or more): {text!r}")
    return value


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        code = _dispatch(args)
    except TailsealError as exc:
        return _report(exc)
    except BaseExceptionGroup as group:
        # The agent runs in task groups: a state file refused at start (StateError) comes out
        # wrapped. Ours alone are reported as ours; anything else is a bug, with its traceback.
        ours, rest = group.split(TailsealError)
        if ours is None or rest is not None:
            raise
        return _report(_first(ours))
    except KeyboardInterrupt:
        return 130
    return code


def _report(exc: TailsealError) -> int:
    if isinstance(exc, ConfigError):
        print(f"tailseal: config error: {exc}", file=sys.stderr)
        return EX_CONFIG
    print(f"tailseal: {exc}", file=sys.stderr)
    return 1


def _first(group: BaseExceptionGroup[TailsealError]) -> TailsealError:
    inner = group.exceptions[0]
    return _first(inner) if isinstance(inner, BaseExceptionGroup) else inner


def _dispatch(args: argparse.Namespace) -> int:
    handlers: dict[str, Callable[[argparse.Namespace], int]] = {
        "version": _version,
        "check": lambda a: _check(Path(a.config), collector=a.collector),
        "run": lambda a: _run_agent(Path(a.config), a.log_level),
        "collector": lambda a: _run_collector(Path(a.config), a.log_level),
        "drain": _drain,
        "status": _status,
        "reload": _reload,
        "demo": _demo,
        "verify": _verify,
    }
    return handlers[args.command](args)


def _version(_args: argparse.Namespace) -> int:
    from agent.compiled import MODULE
    from agent.sources import tailed
    from agent.transforms import syslog

    # Which hot loops run compiled (an install without a C compiler runs them in Python).
    def said(compiled: bool) -> str:
        return "compiled" if compiled else "Python (not compiled)"

    print(f"tailseal {__version__}")
    print(f"hot loops: buffer and collector {said(MODULE is not None)}, ", end="")
    print(f"file source {said(tailed.speedups())}, ", end="")
    print(f"syslog header {said(syslog.speedups())}")
    return 0


def _drain(args: argparse.Namespace) -> int:
    from agent.drain import drain_agent

    return drain_agent(args.config, args.socket, args.timeout)


def _reload(args: argparse.Namespace) -> int:
    from agent.drain import reload_agent

    return reload_agent(args.config, args.socket)


def _status(args: argparse.Namespace) -> int:
    from agent.drain import control_socket
    from agent.status import show_status

    socket = control_socket(args.config, args.socket)
    return show_status(socket, watch=args.watch, as_json=args.json)


def _demo(args: argparse.Namespace) -> int:
    from agent.demo import run_demo

    return run_demo(Path(args.dir), lines=args.lines)


def _verify(args: argparse.Namespace) -> int:
    from agent.collector.report import run_verify

    return run_verify(Path(args.path), as_json=args.json, allow_unsealed=args.allow_unsealed)


def _check(path: Path, *, collector: bool) -> int:
    from agent.config import load_agent_config, load_collector_config

    if collector:
        cconf = load_collector_config(path)
        print(f"{path}: OK (collector on {cconf.host}:{cconf.port}, {len(cconf.tokens)} tokens)")
    else:
        aconf = load_agent_config(path)
        print(f"{path}: OK ({len(aconf.sources)} sources, {len(aconf.sinks)} sinks)")
    return 0


def _run_agent(path: Path, level: str) -> int:
    from agent.affinity import Affinity
    from agent.config import load_agent_config
    from agent.pipeline import Lifecycle
    from agent.service import run_service
    from agent.telemetry import setup_logging

    config = load_agent_config(path)
    setup_logging(level)
    affinity = Affinity(config.cpu_affinity)
    affinity.start()  # before any worker thread starts: they inherit it

    async def main() -> int:
        life = Lifecycle()
        _on_signals(life.signal)
        asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, life.reload.set)
        return await run_service(config, life, path, affinity)

    return _run_loop(main)


def _run_collector(path: Path, level: str) -> int:
    from agent.collector.server import serve
    from agent.config import load_collector_config
    from agent.telemetry import setup_logging

    config = load_collector_config(path)
    setup_logging(level)

    async def main() -> int:
        stop = asyncio.Event()
        _on_signals(lambda _name: stop.set())
        await serve(config, stop)
        return 0

    # The collector keeps the default allocator: one arena and a fixed mmap threshold made its
    # fresh buffer per request page-fault ~1 us per record (bench, issue #11); RSS is the agent's
    # target, not the collector's.
    return _run_loop(main, malloc=False)


def _on_signals(handler: Callable[[str], None]) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, handler, sig.name)


def _run_loop(main: Callable[[], Coroutine[Any, Any, int]], *, malloc: bool = True) -> int:
    if malloc:
        tune_malloc()
    tune_gc()
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on every supported platform
        return asyncio.run(main())
    return uvloop.run(main())


if __name__ == "__main__":
    sys.exit(main())
