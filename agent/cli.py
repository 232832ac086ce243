"""The ``tailseal`` command line: run, check, collector, demo, version.

Exit codes: 0 success (``run``: drained and sealed), 78 configuration error (sysexits
EX_CONFIG), 75 stopped before the buffer drained (records kept on disk), 1 other failures.
Signal handlers only set the shutdown event; the supervisor does the rest.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from agent import __version__
from agent.errors import EX_CONFIG, ConfigError, TailsealError

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
        type=int,
        default=0,
        help="write this many demo lines, then stop (0: run until Ctrl-C)",
    )
    sub.add_parser("version", help="print the version")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        code = _dispatch(args)
    except ConfigError as exc:
        print(f"tailseal: config error: {exc}", file=sys.stderr)
        return EX_CONFIG
    except TailsealError as exc:
        print(f"tailseal: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return code


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "version":
        print(f"tailseal {__version__}")
        return 0
    if args.command == "check":
        return _check(Path(args.config), collector=args.collector)
    if args.command == "run":
        return _run_agent(Path(args.config), args.log_level)
    if args.command == "collector":
        return _run_collector(Path(args.config), args.log_level)
    if args.command == "demo":
        from agent.demo import run_demo

        return run_demo(Path(args.dir), lines=args.lines)
    raise AssertionError(args.command)  # pragma: no cover - argparse enforces the choices


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
    from agent.config import load_agent_config
    from agent.pipeline import Agent, Shutdown
    from agent.telemetry import setup_logging

    config = load_agent_config(path)
    setup_logging(level)

    async def main() -> int:
        shutdown = Shutdown()
        _on_signals(shutdown.request)
        return await Agent(config).run(shutdown)

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

    return _run_loop(main)


def _on_signals(handler: Callable[[str], None]) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, handler, sig.name)


def _run_loop(main: Callable[[], Coroutine[Any, Any, int]]) -> int:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on every supported platform
        return asyncio.run(main())
    return uvloop.run(main())


if __name__ == "__main__":
    sys.exit(main())
