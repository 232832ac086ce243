"""The EC2, GCP and Azure termination notice watchers (see the package docstring).

Each ``check()`` returns a notice (a dict of details) or None; ``watch`` runs one watcher's
poll loop and hands the first notice to ``on_notice``. A watcher's token and etag state belong
to its own task.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import aiohttp
import orjson

from agent.config import TerminationConfig

log = logging.getLogger(__name__)

OnNotice = Callable[[str, dict[str, Any]], Awaitable[None]]
DMI = Path("/sys/class/dmi/id")
EC2_TOKEN_TTL = 21600
AZURE_API = "2020-07-01"
GCP_WAIT = 60  # seconds a GCP wait-for-change request may be held open
# A metadata answer is a few hundred bytes (Azure: a few KB with many events). More is not an
# answer, and must not be read whole into an agent with a memory limit.
MAX_ANSWER_BYTES = 64 * 1024
EC2_ACTION_KEYS = ("action", "time", "raw")  # of spot/instance-action, and a non-JSON body
AZURE_EVENT_KEYS = ("EventId", "EventType", "NotBefore", "Resources")


class Unreachable(Exception):  # noqa: N818 (a state of the service, not a bug)
    """The metadata service did not answer (not there, or not now)."""


class BadAnswer(Exception):  # noqa: N818 (a state of the service, not a bug)
    """The metadata service answered something that is not an answer (too big, wrong shape)."""


class Answer(NamedTuple):
    status: int
    body: str
    etag: str


class Watcher(Protocol):
    kind: str

    async def check(self, session: aiohttp.ClientSession) -> dict[str, Any] | None: ...


class Ec2Watcher:
    kind = "ec2"

    def __init__(self, endpoint: str, timeout: float) -> None:
        self.endpoint = endpoint.rstrip("/")
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self._token = ""
        self._token_expires = 0.0

    async def check(self, session: aiohttp.ClientSession) -> dict[str, Any] | None:
        spot = await self._get(session, "/latest/meta-data/spot/instance-action")
        if spot is not None:
            # Only the documented keys: the detail becomes the notice record's fields, where a
            # key such as "event" or "msg" would overwrite (or collide with) the notice's own.
            action = _json(spot)
            detail = {key: action[key] for key in EC2_ACTION_KEYS if key in action}
            return {"platform": "ec2", "event": "spot-interruption"} | detail
        state = await self._get(session, "/latest/meta-data/autoscaling/target-lifecycle-state")
        if state is not None and state.strip() == "Terminated":
            return {"platform": "ec2", "event": "asg-lifecycle", "state": state.strip()}
        return None

    async def _get(self, session: aiohttp.ClientSession, path: str) -> str | None:
        for _ in range(2):  # a 401 means the token expired early: get a new one, once
            headers = {"X-aws-ec2-metadata-token": await self._token_for(session)}
            status, body, _ = await _request(
                session, "GET", self.endpoint + path, headers, self.timeout
            )
            if status == 401:
                self._token_expires = 0
                continue
            return body if status == 200 else None
        return None

    async def _token_for(self, session: aiohttp.ClientSession) -> str:
        if time.monotonic() < self._token_expires:
            return self._token
        headers = {"X-aws-ec2-metadata-token-ttl-seconds": str(EC2_TOKEN_TTL)}
        url = self.endpoint + "/latest/api/token"
        status, body, _ = await _request(session, "PUT", url, headers, self.timeout)
        if status != 200:
            raise Unreachable(f"IMDSv2 token request answered {status}")
        self._token = body.strip()
        self._token_expires = time.monotonic() + EC2_TOKEN_TTL - 60
        return self._token


class GcpWatcher:
    kind = "gcp"

    def __init__(self, endpoint: str, timeout: float) -> None:
        self.url = endpoint.rstrip("/") + "/computeMetadata/v1/instance/preempted"
        self.timeout = timeout
        self._etag = ""

    async def check(self, session: aiohttp.ClientSession) -> dict[str, Any] | None:
        params = {}
        timeout = aiohttp.ClientTimeout(total=self.timeout)
        if self._etag:  # after the first answer: hold the request until the value changes
            params = {
                "wait_for_change": "true",
                "last_etag": self._etag,
                "timeout_sec": str(GCP_WAIT),
            }
            timeout = aiohttp.ClientTimeout(total=GCP_WAIT + self.timeout)
        headers = {"Metadata-Flavor": "Google"}
        status, body, etag = await _request(
            session, "GET", self.url, headers, timeout, params=params
        )
        self._etag = etag or self._etag
        if status == 200 and body.strip().upper() == "TRUE":
            return {"platform": "gcp", "event": "preempted"}
        return None


class AzureWatcher:
    kind = "azure"

    def __init__(self, endpoint: str, timeout: float) -> None:
        self.endpoint = endpoint.rstrip("/")
        self.url = f"{self.endpoint}/metadata/scheduledevents?api-version={AZURE_API}"
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self._name: str | None = None  # this VM's, once asked

    async def check(self, session: aiohttp.ClientSession) -> dict[str, Any] | None:
        headers = {"Metadata": "true"}
        status, body, _ = await _request(session, "GET", self.url, headers, self.timeout)
        if status != 200:
            return None
        events = _json(body).get("Events", [])
        if not isinstance(events, list):
            raise BadAnswer(f"scheduled events: Events is not a list: {body[:200]!r}")
        for event in events:
            if not isinstance(event, dict):
                continue
            if event.get("EventType") not in ("Preempt", "Terminate"):
                continue
            # Events of every VM of an availability set or scale-set placement group reach each
            # of them: one that names its resources and not this VM is another VM's.
            resources = event.get("Resources")
            if isinstance(resources, list) and resources:
                name = await self._vm_name(session)
                if name and name not in resources:
                    continue
            return {"platform": "azure", "event": event["EventType"].lower()} | {
                k: event[k] for k in AZURE_EVENT_KEYS if k in event
            }
        return None

    async def _vm_name(self, session: aiohttp.ClientSession) -> str:
        """This VM's name as Scheduled Events name it (``compute.name``); "" if unknown, and
        then every event counts: a missed notice costs more than a needless drain."""
        if self._name is None:
            url = f"{self.endpoint}/metadata/instance?api-version={AZURE_API}"
            headers = {"Metadata": "true"}
            status, body, _ = await _request(session, "GET", url, headers, self.timeout)
            compute = _json(body).get("compute") if status == 200 else None
            name = compute.get("name") if isinstance(compute, dict) else None
            self._name = name if isinstance(name, str) else ""
        return self._name


async def _request(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    headers: dict[str, str],
    limit: aiohttp.ClientTimeout,
    *,
    params: dict[str, str] | None = None,
) -> Answer:
    """One request to the metadata service, its answer read up to ``MAX_ANSWER_BYTES``.
    Redirects are not followed: the service never sends one, and following it would hand the
    IMDSv2 token to, and take a notice from, whatever it points at."""
    try:
        async with session.request(
            method, url, headers=headers, params=params, timeout=limit, allow_redirects=False
        ) as resp:
            data = await resp.content.read(MAX_ANSWER_BYTES + 1)
            if len(data) > MAX_ANSWER_BYTES:
                raise BadAnswer(f"{method} {url}: answer over {MAX_ANSWER_BYTES} bytes")
            body = data.decode("utf-8", errors="replace")
            return Answer(resp.status, body, resp.headers.get("ETag", ""))
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        raise Unreachable(repr(exc)) from exc


def _json(text: str) -> dict[str, Any]:
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return {"raw": text[:200]}
    return value if isinstance(value, dict) else {"raw": text[:200]}


def detect(dmi: Path = DMI) -> set[str]:
    """The platforms this host's DMI data names (no network)."""
    seen = " ".join(
        _read(dmi / name)
        for name in (
            "sys_vendor",
            "product_name",
            "chassis_asset_tag",
            "board_asset_tag",
            "bios_vendor",
        )
    )
    found = set()
    if "Amazon EC2" in seen or "amazon" in seen.lower():
        found.add("ec2")
    if "Google" in seen:
        found.add("gcp")
    if "7783-7084-3265-9085-8269-3286-77" in seen or "Microsoft Corporation" in seen:
        found.add("azure")
    return found


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace").strip()
    except OSError:
        return ""


def build(config: TerminationConfig, dmi: Path = DMI) -> list[Watcher]:
    detected = detect(dmi) if "auto" in (config.ec2, config.gcp, config.azure) else set()
    wanted = {
        kind
        for kind in ("ec2", "gcp", "azure")
        if getattr(config, kind) == "on" or (getattr(config, kind) == "auto" and kind in detected)
    }
    watchers: list[Watcher] = []
    if "ec2" in wanted:
        watchers.append(Ec2Watcher(config.ec2_endpoint, config.timeout))
    if "gcp" in wanted:
        watchers.append(GcpWatcher(config.gcp_endpoint, config.timeout))
    if "azure" in wanted:
        watchers.append(AzureWatcher(config.azure_endpoint, config.timeout))
    return watchers


async def watch(watcher: Watcher, interval: float, on_notice: OnNotice) -> None:
    """Poll until the first notice (reported once) or until the service proves absent. Whatever
    else goes wrong in a poll (an answer that is not one, a bug) is logged and the next poll
    tried: the watchers run beside the pipeline, and must never end it."""
    async with aiohttp.ClientSession() as session:
        first = True
        while True:
            try:
                notice = await watcher.check(session)
            except Unreachable as exc:
                if first:
                    log.info("no %s metadata service (%s): watcher off", watcher.kind, exc)
                    return
                log.warning("%s metadata service did not answer: %s", watcher.kind, exc)
                notice = None
            except BadAnswer as exc:
                log.warning("%s metadata service: %s", watcher.kind, exc)
                notice = None
            except Exception:
                log.exception("%s termination watcher failed a poll", watcher.kind)
                notice = None
            first = False
            if notice is not None:
                log.warning("termination notice: %s", notice)
                await on_notice(f"{notice['platform']}-{notice['event']}", notice)
                return
            await asyncio.sleep(interval)
