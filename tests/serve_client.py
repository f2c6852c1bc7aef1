"""A synchronous httpx client for the dashboard's ASGI app (not a conftest).

Requests go through :class:`httpx.ASGITransport` into the real app; the app's
lifespan (the first snapshot of the store) runs as it does under uvicorn.
"""

from __future__ import annotations

import functools
from typing import Any

import anyio.from_thread
import httpx


class Client:
    def __init__(self, app: Any, base_url: str = "http://127.0.0.1") -> None:
        self._portal_cm = anyio.from_thread.start_blocking_portal()
        self.portal = self._portal_cm.__enter__()
        self._life = app.router.lifespan_context(app)
        try:
            self.portal.call(self._life.__aenter__)
        except BaseException:
            self._portal_cm.__exit__(None, None, None)
            raise
        self.app = app
        self._client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=base_url)

    def get(
        self,
        url: str,
        *,
        params: Any = None,
        headers: dict[str, str] | None = None,
        follow_redirects: bool = True,
    ) -> httpx.Response:
        call = functools.partial(
            self._client.get, url, params=params, headers=headers, follow_redirects=follow_redirects
        )
        return self.portal.call(call)

    def close(self) -> None:
        try:
            self.portal.call(self._client.aclose)
            self.portal.call(self._life.__aexit__, None, None, None)
        finally:
            self._portal_cm.__exit__(None, None, None)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
