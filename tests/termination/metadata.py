"""A local cloud metadata service for tests: EC2 IMDSv2, GCP and Azure Scheduled Events.

It implements the parts the watchers use, including their rules (an IMDSv2 token obtained by
PUT with a TTL header and required on every GET; GCP's Metadata-Flavor header, ETag and
wait_for_change long poll; Azure's Metadata header), so a watcher that skips a step fails here
as it would on the real service. Runs in its own thread; tests flip its state.
"""

from __future__ import annotations

import json
import secrets
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


class MetadataState:
    def __init__(self) -> None:
        self.tokens: set[str] = set()
        self.spot_action: dict[str, str] | None = None
        self.lifecycle = "InService"
        self.preempted = False
        self.azure_events: list[dict[str, Any]] = []
        self.ec2_identity = {
            "instanceId": "i-0abc123",
            "imageId": "ami-0def456",
            "instanceType": "m7g.large",
            "region": "eu-west-1",
            "availabilityZone": "eu-west-1b",
            "accountId": "123456789012",
        }
        self.gcp_recursive = {
            "instance": {
                "id": 4242,
                "name": "web-1",
                "zone": "projects/77/zones/europe-west4-a",
                "machineType": "projects/77/machineTypes/e2-small",
                "image": "projects/debian-cloud/global/images/debian-12-v1",
            },
            "project": {"projectId": "acme-prod"},
        }
        self.azure_instance = {
            "compute": {
                "vmId": "9f3c",
                "name": "vm1",
                "vmSize": "Standard_B2s",
                "location": "westeurope",
                "subscriptionId": "sub-1",
                "storageProfile": {"imageReference": {"sku": "12-gen2"}},
            }
        }
        self.changed = threading.Condition()
        self.requests: list[str] = []
        # path -> (status, body, headers): answered as is, before any rule (hostile answers)
        self.raw: dict[str, tuple[int, bytes, dict[str, str]]] = {}

    def preempt(self) -> None:
        with self.changed:
            self.preempted = True
            self.changed.notify_all()


class _Handler(BaseHTTPRequestHandler):
    server: MetadataServer

    def log_message(self, format: str, *args: Any) -> None:
        return

    def _raw(self, path: str) -> bool:
        found = self.server.state.raw.get(path)
        if found is None:
            return False
        status, data, headers = found
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        return True

    def _send(self, status: int, body: str, headers: dict[str, str] | None = None) -> None:
        data = body.encode()
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_PUT(self) -> None:
        state = self.server.state
        state.requests.append(f"PUT {self.path}")
        if self.path == "/latest/api/token" and self.headers.get(
            "X-aws-ec2-metadata-token-ttl-seconds"
        ):
            token = secrets.token_hex(8)
            state.tokens.add(token)
            self._send(200, token)
        else:
            self._send(400, "missing TTL header")

    def do_GET(self) -> None:
        state = self.server.state
        url = urlsplit(self.path)
        state.requests.append(f"GET {url.path}")
        if self._raw(url.path):
            return
        if url.path.startswith("/latest/"):
            self._ec2(state, url.path)
        elif url.path == "/computeMetadata/v1/instance/preempted":
            self._gcp(state, parse_qs(url.query))
        elif url.path == "/computeMetadata/v1/":
            if self.headers.get("Metadata-Flavor") != "Google":
                self._send(403, "Metadata-Flavor header required")
                return
            self._send(200, json.dumps(state.gcp_recursive))
        elif url.path == "/metadata/instance":
            if self.headers.get("Metadata") != "true":
                self._send(400, "Metadata header required")
                return
            self._send(200, json.dumps(state.azure_instance))
        elif url.path == "/metadata/scheduledevents":
            if self.headers.get("Metadata") != "true":
                self._send(400, "Metadata header required")
                return
            body = {"DocumentIncarnation": len(state.azure_events), "Events": state.azure_events}
            self._send(200, json.dumps(body))
        else:
            self._send(404, "not found")

    def _ec2(self, state: MetadataState, path: str) -> None:
        if self.headers.get("X-aws-ec2-metadata-token") not in state.tokens:
            self._send(401, "")
        elif path == "/latest/meta-data/spot/instance-action" and state.spot_action:
            self._send(200, json.dumps(state.spot_action))
        elif path == "/latest/dynamic/instance-identity/document":
            self._send(200, json.dumps(state.ec2_identity))
        elif path == "/latest/meta-data/autoscaling/target-lifecycle-state":
            self._send(200, state.lifecycle)
        else:
            self._send(404, "")

    def _gcp(self, state: MetadataState, query: dict[str, list[str]]) -> None:
        if self.headers.get("Metadata-Flavor") != "Google":
            self._send(403, "Metadata-Flavor header required")
            return
        etag = "e1" if state.preempted else "e0"
        if query.get("wait_for_change") == ["true"] and query.get("last_etag") == [etag]:
            wait = float(query.get("timeout_sec", ["60"])[0])
            with state.changed:
                state.changed.wait_for(lambda: state.preempted, timeout=wait)
            etag = "e1" if state.preempted else "e0"
        self._send(200, "TRUE" if state.preempted else "FALSE", {"ETag": etag})


class MetadataServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.state = MetadataState()
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def __enter__(self) -> MetadataServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.state.preempt()  # release held GCP long polls
        self.shutdown()
        self.server_close()
