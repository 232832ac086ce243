"""The collector's HTTPS server: docs/protocol.md over aiohttp.

``POST /v1/batches`` runs each request through the same gates, cheapest first: bearer token
(401), the token's rate limit (429), media type and encoding (415), body size while reading
(413) within ``body_timeout`` (408), bounded decompression (413), header (400), host
authorization (403), record structure (400); then, under the stream's lock: the token must also
be allowed for the host holding the stream (403), linking to the held head (409; a
batch that came in ahead of the ones before it may first wait for them, see below), chain
verification (400), and either an idempotent 200 for a repeat or a durable append before the
200. ``GET /v1/streams`` lists the streams the token may see, deciding ``silent`` at listing
time. Unexpected failures become a JSON 500 and a log line; the server keeps serving. Storage
errors (disk full, I/O errors) become 503 with ``Retry-After``.

A batch that overtook the batches before it (the agent sends several at once) waits for the
stream's head to reach it, for at most ``reorder_wait`` seconds and only while all of these hold,
checked again at every wake-up: another request of its token is being handled (something may
fill the hole), the collector is not stopping, and the waiting stays within its bounds —
``MAX_WAITING`` batches per stream, ``MAX_WAITING_ALL`` in all, and decompressed bodies of
``max_decompressed_bytes`` in all (each waiting batch holds its body and parsed lines). Otherwise
it is answered at once: a 409 if it does not link. The owner check (403) comes before any
waiting, on every read of the head.

Stopping closes the listener, wakes the waiting batches (they are answered at once), answers 503
to new requests on open connections, and lets requests in flight finish (bodies still arriving
included) for up to ``SHUTDOWN_TIMEOUT``.

:class:`Collector` owns the aiohttp runner, the loaded tokens and one ``asyncio.Condition`` per
stream, its lock and its wake-up (all touched only by the event-loop thread); the
:class:`StreamStore` owns what is on disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import ssl
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from agent.collector.batch import (
    ENCODINGS,
    Batch,
    BatchError,
    decompress,
    first_new_index,
    is_ahead,
    parse_header,
    parse_records,
    rejected,
)
from agent.collector.ratelimit import TokenBucket
from agent.collector.storage import (
    FileStreamStore,
    Skip,
    StreamHead,
    StreamStore,
    parse_ts,
    stream_state,
)
from agent.config import CollectorConfig, TlsConfig, TokenConfig
from agent.errors import ConfigError
from agent.record import genesis
from agent.statefile import write_atomic

NDJSON = "application/x-ndjson"
MAX_WAITING = 16  # batches per stream waiting for those before them (``reorder_wait``)
MAX_WAITING_ALL = 64  # such batches in all streams together
SHUTDOWN_TIMEOUT = 10.0  # seconds in-flight requests get to finish at stop
RETRY_AFTER = "5"

log = logging.getLogger("tailseal.collector")


@dataclass(frozen=True, slots=True)
class _Token:
    name: str
    secret: bytes
    hosts: tuple[str, ...]
    bucket: TokenBucket  # the token's request rate limit (event-loop thread only)

    def allows(self, host_name: str) -> bool:
        return any(fnmatchcase(host_name, pattern) for pattern in self.hosts)


class Collector:
    """The reference collector; ``start()`` binds and returns the port, ``stop()`` drains."""

    def __init__(
        self,
        config: CollectorConfig,
        store: StreamStore | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self._clock = clock  # wall clock: ``silent`` compares it with a head's ``updated``
        self.store: StreamStore = store or FileStreamStore(config.storage_dir)
        self._tokens: list[_Token] = []
        # Per stream: its lock, and the wake-up for batches waiting for those before them.
        self._turns: dict[str, asyncio.Condition] = {}
        self._users: dict[str, int] = {}  # per stream: requests that hold or want its turn
        self._waiting: dict[str, int] = {}  # per stream: batches waiting for their turn
        self._waiting_bytes = 0  # decompressed size of the waiting batches together
        self._wakers: set[asyncio.Task[None]] = set()  # wake-ups of waiting batches under way
        self._sending: dict[str, int] = {}  # per token name: batches being handled
        self._runner: web.AppRunner | None = None
        self.port = 0
        self.in_flight = 0  # requests being handled (a gauge for metrics and tests)
        self._idle = asyncio.Event()  # set while in_flight == 0
        self._idle.set()
        self._stopping = False

    @property
    def busy_streams(self) -> int:
        """Streams with a request under way (each holds a condition until its last ends)."""
        return len(self._turns)

    @property
    def waiting(self) -> int:
        """Batches waiting for the batches before them (a gauge for metrics and tests)."""
        return sum(self._waiting.values())

    async def start(self) -> int:
        config = self.config
        self._tokens = await asyncio.to_thread(load_tokens, config.tokens)
        context = await asyncio.to_thread(ssl_context, config.tls) if config.tls else None
        app = web.Application(middlewares=[self._counted(), _replies])
        app.router.add_post("/v1/batches", self._post_batch)
        app.router.add_get("/v1/streams", self._get_streams)
        # auto_decompress=False: aiohttp would inflate the body without our size bound.
        runner = web.AppRunner(
            app, auto_decompress=False, access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT
        )
        await runner.setup()
        try:
            await web.TCPSite(runner, config.host, config.port, ssl_context=context).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self.port = int(runner.addresses[0][1])
        if config.port_file:
            await asyncio.to_thread(_write_port_file, Path(config.port_file), self.port)
        fields = {"host": config.host, "port": self.port}
        log.info("collector listening", extra={"fields": fields})
        if context is None:
            log.warning("TLS is not configured: serving plain HTTP", extra={"fields": fields})
        return self.port

    async def stop(self) -> None:
        """Stop listening, let in-flight requests finish (up to a deadline), close the store."""
        runner, self._runner = self._runner, None
        if runner is not None:
            self._stopping = True
            # Close the listener first but keep connections open: aiohttp's own shutdown stops
            # reading them at once, which would cut off a batch whose body is still arriving.
            for site in list(runner.sites):
                await site.stop()
            await self._wake_waiting()  # stopping: they are answered now, not at their deadline
            try:
                await asyncio.wait_for(self._idle.wait(), SHUTDOWN_TIMEOUT)
            except TimeoutError:
                log.warning(
                    "stopping with requests in flight", extra={"fields": {"count": self.in_flight}}
                )
            await runner.cleanup()
        await asyncio.gather(*self._wakers)
        await self.store.close()

    def _counted(self) -> Middleware:
        @web.middleware
        async def counted(request: web.Request, handler: Handler) -> web.StreamResponse:
            if self._stopping:
                refused = web.json_response(
                    {"error": "collector is stopping"},
                    status=503,
                    headers={"Retry-After": RETRY_AFTER},
                )
                refused.force_close()
                return refused
            self.in_flight += 1
            self._idle.clear()
            try:
                return await handler(request)
            finally:
                self.in_flight -= 1
                if not self.in_flight:
                    self._idle.set()

        return counted

    async def _post_batch(self, request: web.Request) -> web.Response:
        token = self._authenticate(request)
        if not token.bucket.take():
            retry = str(token.bucket.retry_after())
            raise BatchError(
                429, {"error": f"rate limit of token {token.name!r}"}, {"Retry-After": retry}
            )
        self._sending[token.name] = self._sending.get(token.name, 0) + 1
        try:
            return await self._batch(request, token)
        finally:
            left = self._sending[token.name] - 1
            if left:
                self._sending[token.name] = left
            else:
                del self._sending[token.name]
            if left == 1 and self._waiting:
                # The token's last request may be a waiting batch, now alone: nothing else can
                # fill its hole. Woken in a task, so this reply does not wait for other locks.
                waker = asyncio.get_running_loop().create_task(self._wake_waiting())
                self._wakers.add(waker)
                waker.add_done_callback(self._wakers.discard)

    async def _batch(self, request: web.Request, token: _Token) -> web.Response:
        if request.content_type != NDJSON:
            raise rejected(415, f"Content-Type must be {NDJSON}")
        encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
        if encoding not in ENCODINGS:
            raise rejected(415, f"unsupported Content-Encoding {encoding!r}")
        body = await self._read_body(request)
        limit = self.config.max_decompressed_bytes
        if encoding == "identity":
            data = decompress(body, encoding, limit)
        else:
            data = await asyncio.to_thread(decompress, body, encoding, limit)
        header, offset = parse_header(data)
        if not token.allows(header.host_name):
            raise rejected(403, f"token {token.name!r} may not send for host {header.host_name!r}")
        batch = await asyncio.to_thread(parse_records, header, data, offset)
        try:
            acked, head = await self._accept(batch, token, client_identity(request))
        except OSError as exc:
            log.exception("storage failed", extra={"fields": {"stream": header.stream}})
            raise BatchError(
                503, {"error": "storage unavailable"}, {"Retry-After": RETRY_AFTER}
            ) from exc
        return web.json_response({"acked": acked, "head": head})

    async def _accept(
        self, batch: Batch, token: _Token, client: dict[str, Any] | None
    ) -> tuple[int, str]:
        """Store the records of ``batch`` the collector lacks; returns the held (seq, head).

        The token must also be allowed for the host that holds the stream so far: a token for
        ``web-*`` cannot extend a ``db-1`` stream by claiming a web host name (403).
        """
        header = batch.header
        stream = header.stream
        turn = self._turns.setdefault(stream, asyncio.Condition())
        self._users[stream] = self._users.get(stream, 0) + 1
        try:
            return await self._append(turn, batch, token, client)
        finally:  # the last request of a stream drops its condition: ids come and go with hosts
            left = self._users.pop(stream) - 1
            if left:
                self._users[stream] = left
            else:
                del self._turns[stream]

    async def _append(
        self,
        turn: asyncio.Condition,
        batch: Batch,
        token: _Token,
        client: dict[str, Any] | None,
    ) -> tuple[int, str]:
        """:meth:`_accept` under the stream's ``turn``."""
        header = batch.header
        stream = header.stream
        async with turn:
            held = await self._held_for(turn, batch, token)
            if held is None:
                held_seq, held_head, held_gaps = 0, genesis(stream).hex(), 0
            else:  # for the state, a gap declared in a header is a loss as a gap record is
                held_seq, held_head, held_gaps = held.last_seq, held.head, held.gaps + held.skips
            start = first_new_index(batch, held_seq, held_head)
            if start == len(batch.lines):
                return held_seq, held_head  # a repeat: idempotent
            gaps = sum(1 for seq in batch.gap_seqs if seq > held_seq)
            skip = None
            if header.first_seq > held_seq + 1:  # a declared gap (first_new_index allowed it)
                skip = Skip(held_seq + 1, header.first_seq - 1, header.prev_h)
            new = await self.store.append(
                stream,
                header.host,
                batch.lines[start:],
                last_seq=header.last_seq,
                head=batch.hashes[-1],
                state=stream_state(sealed=batch.sealed, gaps=held_gaps + gaps + (skip is not None)),
                gaps=gaps,
                client=client,
                skip=skip,
            )
            turn.notify_all()  # batches that came in ahead of this one may link now
            return new.last_seq, new.head

    async def _held_for(
        self, turn: asyncio.Condition, batch: Batch, token: _Token
    ) -> StreamHead | None:
        """The stream's head (``turn`` held), once ``batch`` may go on: an agent sends several
        batches at once (its ``concurrency``), and one may be read, decompressed and parsed
        before the one before it. Such a batch waits (at most ``reorder_wait`` seconds, while
        :meth:`_may_wait`) for the head to reach it, then goes on as any other: a 409 if it
        still does not link. 403 before any waiting if ``token`` may not write the stream's
        host (checked at every read of the head: the stream may be created meanwhile)."""
        header = batch.header
        stream = header.stream
        size = len(batch.data)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.reorder_wait
        while True:
            held = await self.store.head(stream)
            # A stream recovered without its head file has no known host (``{}``): the next
            # batch that links gives it one, whichever token (allowed for that batch's host)
            # sends it. Only a named owner restricts.
            owner = str(held.host.get("name", "")) if held is not None else ""
            if owner and not token.allows(owner):
                raise rejected(403, f"token {token.name!r} may not send for host {owner!r}")
            remaining = deadline - loop.time()
            if (
                not is_ahead(header, 0 if held is None else held.last_seq)
                or remaining <= 0
                or not self._may_wait(stream, size, token)
            ):
                return held
            self._waiting[stream] = self._waiting.get(stream, 0) + 1
            self._waiting_bytes += size
            try:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(turn.wait(), remaining)
            finally:
                self._waiting_bytes -= size
                self._waiting[stream] -= 1
                if not self._waiting[stream]:
                    del self._waiting[stream]

    def _may_wait(self, stream: str, size: int, token: _Token) -> bool:
        """Whether a batch of ``size`` decompressed bytes on ``stream`` may wait (again) for the
        batches before it. Not when alone (no other request of its token is being handled:
        nothing could fill the hole) or stopping; and within the bounds that keep what waiting
        batches hold in memory small: ``MAX_WAITING`` per stream, ``MAX_WAITING_ALL`` and
        ``max_decompressed_bytes`` (the bound of one request) in all."""
        return (
            self._sending.get(token.name, 0) > 1
            and not self._stopping
            and self._waiting.get(stream, 0) < MAX_WAITING
            and self.waiting < MAX_WAITING_ALL
            and self._waiting_bytes + size <= self.config.max_decompressed_bytes
        )

    async def _wake_waiting(self) -> None:
        """Wake the batches waiting on any stream to decide again whether they may wait."""
        for stream in list(self._waiting):
            turn = self._turns.get(stream)
            if turn is None:  # its last request ended while an earlier stream's turn was awaited
                continue
            async with turn:
                turn.notify_all()

    async def _get_streams(self, request: web.Request) -> web.Response:
        token = self._authenticate(request)
        heads = await self.store.list_streams()
        visible = [head for head in heads if token.allows(str(head.host.get("name", "")))]
        now = self._clock()
        views = [self._stream_view(head, now) for head in visible]
        return web.json_response({"streams": views})

    def _stream_view(self, head: StreamHead, now: float) -> dict[str, Any]:
        """A head as ``GET /v1/streams`` shows it; ``silent`` is decided here, at listing time."""
        state = head.state
        if state != "sealed" and now - parse_ts(head.updated) > self.config.silent_after:
            state = "silent"
        return {
            "stream": head.stream,
            "host": head.host,
            "last_seq": head.last_seq,
            "head": head.head,
            "state": state,
            "gaps": head.gaps,
            "skips": head.skips,
            "client": head.client,
            "updated": head.updated,
        }

    def _authenticate(self, request: web.Request) -> _Token:
        scheme, _, secret = request.headers.get("Authorization", "").partition(" ")
        try:
            presented = secret.strip().encode()
        except UnicodeEncodeError:  # bytes that are not UTF-8 (aiohttp keeps them as surrogates)
            raise _unauthorized("unknown token") from None
        if scheme.lower() != "bearer" or not presented:
            raise _unauthorized("missing bearer token")
        found = None
        for token in self._tokens:  # compare with all of them: timing says nothing
            if hmac.compare_digest(token.secret, presented):
                found = token
        if found is None:
            raise _unauthorized("unknown token")
        return found

    async def _read_body(self, request: web.Request) -> bytes:
        limit = self.config.max_body_bytes
        too_large = rejected(413, f"body exceeds {limit} bytes")
        if request.content_length is not None and request.content_length > limit:
            raise too_large
        parts: list[bytes] = []
        total = 0
        try:
            # One deadline for the whole body: a client trickling bytes cannot hold a request
            # (and a graceful stop) open for longer than ``body_timeout``.
            async with asyncio.timeout(self.config.body_timeout):
                async for chunk in request.content.iter_any():
                    total += len(chunk)
                    if total > limit:  # a chunked body has no Content-Length to check up front
                        raise too_large
                    parts.append(chunk)
        except TimeoutError:
            message = f"request body not received within {self.config.body_timeout:g} s"
            raise rejected(408, message) from None
        return b"".join(parts)


async def serve(config: CollectorConfig, stop: asyncio.Event) -> None:
    """Run the collector until ``stop`` is set, then shut down gracefully."""
    collector = Collector(config)
    await collector.start()
    try:
        await stop.wait()
    finally:
        await collector.stop()


@web.middleware
async def _replies(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn every refusal and failure into the protocol's JSON reply."""
    try:
        return await handler(request)
    except BatchError as exc:
        return web.json_response(exc.payload, status=exc.status, headers=exc.headers)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        allow = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else {}
        return web.json_response({"error": exc.reason}, status=exc.status, headers=allow)
    except Exception:
        log.exception("request failed", extra={"fields": {"path": request.path}})
        return web.json_response({"error": "internal error"}, status=500)


def _unauthorized(message: str) -> BatchError:
    return BatchError(401, {"error": message}, {"WWW-Authenticate": "Bearer"})


def client_identity(request: web.Request) -> dict[str, Any] | None:
    """The verified client certificate's subject CN and SANs (mTLS), or None without one."""
    transport = request.transport
    cert = transport.get_extra_info("peercert") if transport is not None else None
    if not cert:
        return None
    cn = [value for rdn in cert.get("subject", ()) for key, value in rdn if key == "commonName"]
    san = [f"{kind}:{value}" for kind, value in cert.get("subjectAltName", ())]
    return {"cn": cn[0] if cn else "", "san": san}


def load_tokens(configs: Iterable[TokenConfig]) -> list[_Token]:
    """Resolve literal and file tokens (blocking: file reads)."""
    tokens = []
    for i, config in enumerate(configs):
        secret = config.token
        if config.token_file:
            try:
                secret = Path(config.token_file).read_text(encoding="utf-8").strip()
            except (OSError, UnicodeDecodeError) as exc:
                raise ConfigError(f"tokens[{i}].token_file", f"cannot read: {exc}") from exc
        if not secret:
            raise ConfigError(f"tokens[{i}]", "token is empty")
        bucket = TokenBucket(config.rate_limit_batches_per_second, config.burst)
        tokens.append(_Token(config.name, secret.encode(), tuple(config.hosts), bucket))
    return tokens


def ssl_context(tls: TlsConfig) -> ssl.SSLContext:
    """Server TLS context; with ``client_ca_file`` clients must present a certificate (mTLS)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(tls.cert_file, tls.key_file)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError("tls.cert_file", f"cannot load certificate and key: {exc}") from exc
    if tls.client_ca_file:
        try:
            context.load_verify_locations(cafile=tls.client_ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError("tls.client_ca_file", f"cannot load: {exc}") from exc
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def _write_port_file(path: Path, port: int) -> None:
    write_atomic(path, f"{port}\n".encode(), mode=0o644)
