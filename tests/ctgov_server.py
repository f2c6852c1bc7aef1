"""A local stand-in for the ClinicalTrials.gov API v2, for tests.

Serves real study objects on 127.0.0.1 (a :class:`ThreadingHTTPServer` in a
thread) with the contract celltrials relies on:

* ``GET /api/v2/studies?format=json&pageSize=N&pageToken=T&countTotal=true``
  → ``{"studies": [...], "nextPageToken": "...", "totalCount": n}``
  (``totalCount`` on the first page when ``countTotal=true``; no
  ``nextPageToken`` on the last page). Honours ``filter.overallStatus``,
  ``filter.ids`` and ``AREA[LastUpdatePostDate]RANGE[YYYY-MM-DD,MAX]`` inside
  ``filter.advanced``; other query text is recorded but not interpreted
  (the served set is the query's result). A page token from another query
  or an unknown one is a 400, as on the real API.
* ``GET /api/v2/studies/{nctId}`` → the study, or 404.

Faults are queued with :meth:`CtgovServer.add_fault` and consumed by the
next matching request: ``status`` (e.g. 429 with ``Retry-After``, 500, 503),
``close_mid_body`` (half the body, then the connection drops), ``slow``
(sleeps before answering), ``bad_json``, ``no_studies``, ``bad_study``.
:meth:`CtgovServer.block_page` makes a request for a given page wait until
released (to kill a client between pages). ``requests`` records every
request's path and query parameters.

Usage::

    with CtgovServer(studies) as srv:
        fetch(store, query, client=CtgovClient(srv.base_url, rate=0))
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
EXTRA = DATA.parent / "data-extra"
CAR_FILES = sorted((DATA / "ctgov-v2-json" / "reconstructed").glob("car_cell_therapy*.json"))
GENERAL_FILE = DATA / "ctgov-v2-json" / "ctg-studies-50-general.json"

_RANGE = re.compile(r"AREA\[LastUpdatePostDate\]RANGE\[(\d{4}-\d{2}-\d{2}),\s*MAX\]", re.I)


def load_studies(*paths: Path) -> list[dict[str, Any]]:
    """Study objects from JSON arrays (the shared reconstructed/general files)."""
    out: list[dict[str, Any]] = []
    for p in paths:
        data = json.loads(p.read_text(encoding="utf-8"))
        out.extend(data if isinstance(data, list) else [data])
    return out


def real_studies() -> list[dict[str, Any]]:
    """The 2,587 reconstructed CAR studies plus the 50 general ones."""
    return load_studies(*CAR_FILES, GENERAL_FILE)


def nct_id(study: dict[str, Any]) -> str:
    return str(study["protocolSection"]["identificationModule"]["nctId"])


def last_update(study: dict[str, Any]) -> str:
    status = study.get("protocolSection", {}).get("statusModule", {})
    return str((status.get("lastUpdatePostDateStruct") or {}).get("date") or "")


@dataclass
class Fault:
    kind: str
    path: str = "/studies"  # which endpoint ("/studies" or "/studies/{id}" prefix)
    page: int | None = None  # only for this page number (1-based); None: next request
    status: int = 500
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    times: int = 1


@dataclass
class Request:
    path: str
    params: dict[str, str]
    page: int | None = None


class CtgovServer:
    def __init__(
        self,
        studies: Iterable[dict[str, Any]],
        *,
        max_page_size: int = 1000,
        prefix: str = "/api/v2",
    ) -> None:
        self.studies = list(studies)
        self.max_page_size = max_page_size
        self.prefix = prefix
        self.requests: list[Request] = []
        self.faults: list[Fault] = []
        self._blocks: dict[int, tuple[threading.Event, threading.Event]] = {}
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------ lifecycle
    def start(self) -> CtgovServer:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                server._handle(self)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, args=(0.05,), name="ctgov-server", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        for _, release in self._blocks.values():
            release.set()
        if self._httpd:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread:
            self._thread.join(timeout=5)

    def __enter__(self) -> CtgovServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        assert self._httpd is not None
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}{self.prefix}"

    # --------------------------------------------------------------- control
    def add_fault(self, kind: str, **kw: Any) -> Fault:
        fault = Fault(kind, **kw)
        with self._lock:
            self.faults.append(fault)
        return fault

    def block_page(self, page: int) -> tuple[threading.Event, threading.Event]:
        """(reached, release): a request for ``page`` sets ``reached`` and waits for ``release``."""
        events = (threading.Event(), threading.Event())
        self._blocks[page] = events
        return events

    def page_requests(self) -> list[Request]:
        return [r for r in self.requests if r.path == "/studies"]

    def served_ids(self, params: dict[str, str] | None = None) -> set[str]:
        return {nct_id(s) for s in self._select(params or {})}

    # ------------------------------------------------------------- internals
    def _select(self, params: dict[str, str]) -> list[dict[str, Any]]:
        out = self.studies
        status = params.get("filter.overallStatus")
        if status:
            wanted = set(status.split(","))
            out = [
                s
                for s in out
                if s["protocolSection"].get("statusModule", {}).get("overallStatus") in wanted
            ]
        ids = params.get("filter.ids")
        if ids:
            wanted = {i.strip() for i in re.split(r"[,|\s]+", ids) if i.strip()}
            out = [s for s in out if nct_id(s) in wanted]
        m = _RANGE.search(params.get("filter.advanced", ""))
        if m:
            since = m.group(1)
            out = [s for s in out if last_update(s) >= since]
        return out

    @staticmethod
    def _query_key(params: dict[str, str]) -> str:
        q = {
            k: v
            for k, v in params.items()
            if k not in ("pageToken", "pageSize", "countTotal", "format")
        }
        return hashlib.sha256(json.dumps(q, sort_keys=True).encode()).hexdigest()[:12]

    def _take_fault(self, path: str, page: int | None) -> Fault | None:
        with self._lock:
            for f in self.faults:
                if path.startswith(f.path) and (f.page is None or f.page == page) and f.times > 0:
                    f.times -= 1
                    if f.times == 0:
                        self.faults.remove(f)
                    return f
        return None

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        url = urlsplit(h.path)
        params = dict(parse_qsl(url.query, keep_blank_values=True))
        if not url.path.startswith(self.prefix):
            return self._send(h, 404, b"not found", "text/plain")
        path = url.path[len(self.prefix) :]
        if path == "/studies":
            return self._studies(h, params)
        m = re.fullmatch(r"/studies/(NCT\d{8})", path)
        if m:
            self.requests.append(Request(path, params))
            fault = self._take_fault(path, None)
            if fault and self._apply(h, fault, b""):
                return
            for s in self.studies:
                if nct_id(s) == m.group(1):
                    return self._send(h, 200, json.dumps(s).encode())
            return self._send(h, 404, b'{"message":"not found"}')
        return self._send(h, 404, b"not found", "text/plain")

    def _studies(self, h: BaseHTTPRequestHandler, params: dict[str, str]) -> None:
        key = self._query_key(params)
        try:
            size = min(int(params.get("pageSize", "10")), self.max_page_size)
        except ValueError:
            return self._send(h, 400, b"pageSize must be an integer", "text/plain")
        offset = 0
        token = params.get("pageToken")
        if token:
            try:
                tkey, off = base64.urlsafe_b64decode(token.encode()).decode().split(":")
                offset = int(off)
            except (ValueError, UnicodeDecodeError):
                return self._send(h, 400, b"invalid pageToken", "text/plain")
            if tkey != key:
                return self._send(h, 400, b"pageToken does not belong to this query", "text/plain")
        page = offset // size + 1 if size else 1
        self.requests.append(Request("/studies", params, page))
        if page in self._blocks:
            reached, release = self._blocks[page]
            reached.set()
            release.wait(timeout=60)
        rows = self._select(params)
        chunk = rows[offset : offset + size]
        body: dict[str, Any] = {"studies": chunk}
        if offset + size < len(rows):
            body["nextPageToken"] = base64.urlsafe_b64encode(
                f"{key}:{offset + size}".encode()
            ).decode()
        if params.get("countTotal") == "true" and not token:
            body["totalCount"] = len(rows)
        data = json.dumps(body).encode()
        fault = self._take_fault("/studies", page)
        if fault and self._apply(h, fault, data, body):
            return
        self._send(h, 200, data)

    def _apply(
        self, h: BaseHTTPRequestHandler, f: Fault, data: bytes, body: dict[str, Any] | None = None
    ) -> bool:
        """Act out a fault; True when the response was handled."""
        if f.kind == "status":
            self._send(h, f.status, b'{"message":"fault"}', headers=f.headers)
            return True
        if f.kind == "slow":
            time.sleep(f.delay)
            return False  # then answer normally (the client has given up by then)
        if f.kind == "close_mid_body":
            h.send_response(200)
            h.send_header("Content-Type", "application/json")
            h.send_header("Content-Length", str(len(data)))
            h.end_headers()
            h.wfile.write(data[: len(data) // 2])
            h.wfile.flush()
            h.close_connection = True
            return True
        if f.kind == "bad_json":
            self._send(h, 200, data[: len(data) // 3])
            return True
        if f.kind == "no_studies":
            self._send(h, 200, b'{"nextPageToken": null, "items": []}')
            return True
        if f.kind == "bad_study" and body is not None:
            broken = dict(body)
            broken["studies"] = list(body["studies"])
            victim = json.loads(json.dumps(broken["studies"][1]))
            victim["protocolSection"]["identificationModule"]["nctId"] = "NOT-AN-ID"
            broken["studies"][1] = victim
            self._send(h, 200, json.dumps(broken).encode())
            return True
        raise ValueError(f"unknown fault {f.kind!r}")

    @staticmethod
    def _send(
        h: BaseHTTPRequestHandler,
        status: int,
        data: bytes,
        ctype: str = "application/json",
        headers: dict[str, str] | None = None,
    ) -> None:
        try:
            h.send_response(status)
            h.send_header("Content-Type", ctype)
            h.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                h.send_header(k, v)
            h.end_headers()
            h.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass
