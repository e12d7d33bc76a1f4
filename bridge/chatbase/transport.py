"""HTTP to Chatbase over aiohttp: one attempt at a request, its timeouts and error translation."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from yarl import URL

from bridge.core.errors import ChatbaseAPIError, ChatbaseError, ChatbaseUnavailable

__all__ = ["Failure", "RequestHook", "Transport", "api_error"]

# (endpoint name, HTTP status or None when no answer came, Chatbase error code or None)
RequestHook = Callable[[str, int | None, str | None], None]


def api_error(
    status: int, raw: bytes, *, request_id: str | None, reason: str | None = None
) -> ChatbaseAPIError:
    """Turn an error answer into ``ChatbaseAPIError``; a body that is not Chatbase's envelope
    still gives a readable one (code ``HTTP_<status>``, message = the trimmed body)."""
    code = f"HTTP_{status}"
    message: str | None = None
    details: dict[str, Any] | None = None
    try:
        body = json.loads(raw) if raw else None
    except (ValueError, RecursionError):
        body = None
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict):
            if isinstance(error.get("code"), str) and error["code"]:
                code = error["code"]
            if isinstance(error.get("message"), str):
                message = error["message"]
            if isinstance(error.get("details"), dict):
                details = error["details"]
        elif isinstance(error, str):
            message = error
        elif isinstance(body.get("message"), str):
            message = body["message"]
    if message is None:
        text = " ".join(raw.decode("utf-8", errors="replace").split())
        if len(text) > 300:
            text = text[:299] + "…"
        message = text or reason or "no details given"
    return ChatbaseAPIError(
        code=code, message=message, status=status, details=details, request_id=request_id
    )


@dataclass(frozen=True, slots=True)
class Failure:
    """One attempt that brought no 2xx answer, described for the retry policy.

    ``reached`` is False only when the connection was refused: nothing reached Chatbase.
    ``status`` is None when no answer came (a timeout or a connection dropped before the
    headers). ``error`` is what the caller sees when this attempt is the last; ``cause`` is
    chained to it (the error itself for an error answer)."""

    error: ChatbaseError
    cause: BaseException
    reached: bool = True
    status: int | None = None
    code: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)


class Transport:
    """Sends one request to Chatbase and reads answers. The aiohttp session belongs to the
    caller."""

    def __init__(
        self,
        *,
        session: aiohttp.ClientSession,
        api_key: str,
        base_url: str,
        timeout: float,
        on_request: RequestHook | None = None,
    ) -> None:
        self._session = session
        self._api_key = api_key
        self._base = base_url.rstrip("/")
        self.timeout = timeout
        self._on_request = on_request
        # aiohttp's own timeouts are off: headers are awaited under ``timeout``, streamed
        # bodies under the stream's idle timeout per read (a long answer must not hit a
        # total cap).
        self._aiohttp_timeout = aiohttp.ClientTimeout(
            total=None, connect=None, sock_connect=timeout, sock_read=None
        )

    @property
    def base_url(self) -> str:
        """The base URL without any credentials it may carry, fit for messages."""
        try:
            return str(URL(self._base).with_user(None))
        except ValueError:
            return "the configured Chatbase URL"

    def hook(self, endpoint: str, status: int | None, code: str | None) -> None:
        if self._on_request is not None:
            self._on_request(endpoint, status, code)

    async def attempt(
        self,
        endpoint: str,
        method: str,
        path: str,
        *,
        body: Any,
        params: Mapping[str, str] | None,
        auth: bool,
        stream: bool,
        headers_timeout: float,
    ) -> tuple[aiohttp.ClientResponse, str | None] | Failure:
        """Send once; a 2xx answer's response (body unread) and request id, else a Failure.
        A request that can never succeed (bad URL, TLS) raises ``ChatbaseUnavailable``."""
        url = URL(self._base + path, encoded=True)
        try:
            async with asyncio.timeout(headers_timeout):
                response = await self._session.request(
                    method, url, json=body, params=params,
                    headers=self._headers(auth=auth, stream=stream),
                    timeout=self._aiohttp_timeout, allow_redirects=False,
                )
        except (aiohttp.ClientSSLError, aiohttp.InvalidURL) as exc:
            self.hook(endpoint, None, None)
            raise ChatbaseUnavailable(
                f"Chatbase at {self.base_url} cannot be used: {type(exc).__name__}"
            ) from exc
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            self.hook(endpoint, None, None)
            return self._no_answer(endpoint, exc, headers_timeout)
        request_id = response.headers.get("x-request-id")
        if 200 <= response.status < 300:
            self.hook(endpoint, response.status, None)
            return response, request_id
        error = await self._read_error(response, request_id)
        self.hook(endpoint, response.status, error.code)
        return Failure(error, error, status=response.status, code=error.code,
                       headers=response.headers)

    def _no_answer(self, endpoint: str, exc: BaseException, waited: float) -> Failure:
        """A request that got no answer: refused (nothing reached Chatbase), timed out, or
        dropped before the headers."""
        if isinstance(exc, aiohttp.ClientConnectorError | aiohttp.ConnectionTimeoutError):
            return Failure(ChatbaseUnavailable(
                f"Chatbase at {self.base_url} could not be reached ({_describe(exc)})"
            ), exc, reached=False)
        if isinstance(exc, TimeoutError):
            return Failure(ChatbaseUnavailable(
                f"Chatbase at {self.base_url} did not answer {endpoint} within {waited:g}s"
            ), exc)
        return Failure(ChatbaseUnavailable(
            f"Chatbase at {self.base_url} dropped the connection before answering "
            f"{endpoint} ({_describe(exc)})"
        ), exc)

    async def read_json(
        self, endpoint: str, response: aiohttp.ClientResponse, request_id: str | None
    ) -> dict[str, Any]:
        """Read a non-streamed answer's JSON object, releasing the connection."""
        try:
            async with asyncio.timeout(self.timeout):
                raw = await response.read()
        except TimeoutError as exc:
            raise ChatbaseUnavailable(
                f"Chatbase at {self.base_url} stopped sending its answer to {endpoint}",
                request_id=request_id,
            ) from exc
        except aiohttp.ClientError as exc:
            raise ChatbaseUnavailable(
                f"Chatbase at {self.base_url} dropped the connection during {endpoint} "
                f"({type(exc).__name__})",
                request_id=request_id,
            ) from exc
        finally:
            response.release()
        try:
            value = json.loads(raw) if raw.strip() else {}
        except (ValueError, RecursionError) as exc:
            raise ChatbaseAPIError(
                code="INVALID_RESPONSE", message="the answer is not JSON",
                status=response.status, request_id=request_id,
            ) from exc
        if not isinstance(value, dict):
            raise ChatbaseAPIError(
                code="INVALID_RESPONSE", message="the answer is not a JSON object",
                status=response.status, request_id=request_id,
            )
        return value

    def _headers(self, *, auth: bool, stream: bool) -> dict[str, str]:
        headers = {
            "Accept": "text/event-stream" if stream else "application/json",
            "User-Agent": "chatbase-bridge",
        }
        if auth:
            headers["Authorization"] = f"Bearer {self._api_key}"
        return headers

    async def _read_error(
        self, response: aiohttp.ClientResponse, request_id: str | None
    ) -> ChatbaseAPIError:
        raw = b""
        try:
            async with asyncio.timeout(self.timeout):
                raw = await response.read()
        except (TimeoutError, aiohttp.ClientError):
            pass  # the status alone still makes a readable error
        finally:
            response.release()
        return api_error(response.status, raw, request_id=request_id, reason=response.reason)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, aiohttp.ClientConnectorError):
        return exc.strerror or type(exc).__name__
    return type(exc).__name__
