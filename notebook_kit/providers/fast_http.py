"""The lean request path: a plain JSON POST straight through the SDK client's own aiohttp
session, without the SDK's per-request machinery (option models, header merging, httpx
request and response objects), which costs most of a request's CPU.

The SDK still does everything but the hot, plain case: it builds the client, the URL and
every header (auth included) once per run, turns an error reply into its own exception,
and sends whatever the lean path does not take (`Exotic`) the usual way. A streamed
reply is opened here (`open`) and read by `fast_stream`.
"""

from __future__ import annotations

import importlib
import json
import logging
from collections.abc import Mapping
from typing import Any

import aiohttp
from multidict import CIMultiDict

from .replies import ReplyHeaders
from .signatures import keyword_params

log = logging.getLogger("notebook_kit")

# Parameters of create() the SDK does not send as body fields (it sends Anthropic's
# user_profile_id and workspace_id as headers); extra_body and extra_headers are merged.
NOT_BODY = frozenset(
    {"self", "extra_query", "timeout", "stream", "betas", "user_profile_id", "workspace_id"}
)
MERGED = ("extra_body", "extra_headers")
# Headers aiohttp writes itself (the length of each body, the host, what it can decode).
OWN_HEADERS = frozenset({"content-length", "host", "accept-encoding", "transfer-encoding"})
# Of an error reply: the body read here is decoded already.
DECODED = (b"content-encoding", b"content-length", b"transfer-encoding")


class Exotic(Exception):
    """Not for the lean path (an unusual parameter or value): the SDK sends this request."""


def _exotic(value: object) -> Any:
    raise Exotic(type(value).__name__)


# The SDK's own JSON settings (httpx's): no NaN, UTF-8; anything beyond JSON's own types
# (a datetime, a pydantic model, an Omit) is left to the SDK, which knows how to send it.
_ENCODE = json.JSONEncoder(
    ensure_ascii=False, separators=(",", ":"), allow_nan=False, default=_exotic
).encode


class FastPost:
    """POSTs JSON bodies to one SDK endpoint, through the SDK client's aiohttp session."""

    __slots__ = ("_client", "_headers", "_http", "_probe", "_sdk", "_send", "_url", "body_params")

    def __init__(
        self,
        client: Any,
        sdk: Any,
        http: aiohttp.ClientSession,
        probe: Any,
        send: dict[str, Any],
        body_params: frozenset[str],
    ) -> None:
        self._client = client
        self._sdk = sdk  # the SDK module: its exception classes
        self._http = http
        self._probe = probe  # the SDK's request for this endpoint: its URL and headers
        self._url = str(probe.url)
        own = [(k, v) for k, v in probe.headers.items() if k.lower() not in OWN_HEADERS]
        self._headers = CIMultiDict(own)  # as aiohttp takes them without copying them again
        self._send = send  # the SDK transport's own settings: timeouts, proxy
        self.body_params = body_params

    @classmethod
    async def build(
        cls,
        client: Any,
        sdk: Any,
        path: str,
        create: Any,
        security: Mapping[str, bool] | None = None,
    ) -> FastPost | None:
        """The lean path to `path` for an SDK `client` on its aiohttp transport, or None
        (another transport, per-request auth): then every request goes through the SDK."""
        try:
            from httpx2 import Timeout

            if getattr(client, "custom_auth", None) is not None or client._idempotency_header:
                return None  # per-request auth (a token cache, a signer) or idempotency keys
            options = _options(sdk, path, security)
            options = await client._prepare_options(options)
            probe = client._build_request(options)
            await client._prepare_request(probe)
            http_client = client._client
            transport = http_client._transport_for_url(probe.url)
            if type(transport).__name__ != "AiohttpTransport":
                return None
            if not isinstance(transport.client, aiohttp.ClientSession):
                transport.client = transport.get_client()  # as the transport does on first use
            timeout = Timeout(client.timeout)
            send: dict[str, Any] = {
                "allow_redirects": False,
                "timeout": aiohttp.ClientTimeout(
                    sock_connect=timeout.connect, sock_read=timeout.read, connect=timeout.pool
                ),
            }
            proxy = transport.proxy
            if proxy is not None:
                auth = aiohttp.BasicAuth(*proxy.auth) if proxy.auth else None
                send.update(proxy=str(proxy.url), proxy_auth=auth, proxy_headers=proxy.headers)
            return cls(client, sdk, transport.client, probe, send, body_params(create))
        except Exception as exc:  # an SDK whose insides moved: it sends everything itself
            log.debug("no lean request path, the SDK sends every request: %r", exc)
            return None

    def takes(self, params: Mapping[str, Any]) -> bool:
        """Whether these parameters are all body fields (or extra_body, extra_headers)."""
        body = self.body_params
        return all(name in body or name in MERGED for name in params)

    async def post(self, body: dict[str, Any]) -> tuple[bytes, ReplyHeaders]:
        """Send `body`; its reply's bytes and headers, or the SDK's exception for an error
        reply or a failed connection. `Exotic`: nothing was sent, use the SDK."""
        data, headers = self._encode(body)
        try:
            async with self._http.post(self._url, data=data, headers=headers, **self._send) as r:
                content = await r.read()
                status = r.status
        except Exception as exc:  # as the SDK: every failure to get a reply
            raise self.failure(exc) from exc
        if 200 <= status < 300:
            return content, ReplyHeaders(r.headers)
        if status < 400:  # a redirect: the SDK's client follows it
            raise Exotic("redirect")
        raise self.status_error(status, r.raw_headers, content)

    async def open(self, body: dict[str, Any]) -> aiohttp.ClientResponse:
        """Send `body` and return its 2xx reply unread (the caller releases it); the SDK's
        exception for an error reply or a failed connection; `Exotic` as for `post`."""
        data, headers = self._encode(body)
        try:
            response = await self._http.post(self._url, data=data, headers=headers, **self._send)
        except Exception as exc:
            raise self.failure(exc) from exc
        status = response.status
        if 200 <= status < 300:
            return response
        try:
            content = await response.read()
        except Exception as exc:
            raise self.failure(exc) from exc
        finally:
            response.release()
        if status < 400:
            raise Exotic("redirect")
        raise self.status_error(status, response.raw_headers, content)

    def _encode(self, body: dict[str, Any]) -> tuple[bytes, CIMultiDict[str]]:
        """The JSON of `body` and the headers to send it with (extra_body and extra_headers
        merged in); `Exotic` for what only the SDK knows how to send."""
        headers = self._headers
        extra_headers = body.pop("extra_headers", None)
        if extra_headers is not None:
            if not isinstance(extra_headers, dict) or not all(
                isinstance(v, str) for v in extra_headers.values()
            ):
                raise Exotic("extra_headers")  # an Omit, a number: the SDK's rules
            headers = headers.copy()
            headers.update(extra_headers)  # replaces a header of the same name, in any case
        extra_body = body.pop("extra_body", None)
        if extra_body is not None:
            if not isinstance(extra_body, dict):
                raise Exotic("extra_body")
            body.update(extra_body)
        try:
            return _ENCODE(body).encode(), headers
        except (Exotic, ValueError, TypeError, RecursionError):  # UnicodeEncodeError too
            raise Exotic("body") from None

    def failure(self, exc: Exception) -> BaseException:
        """The SDK's exception for a failure to get or read a reply (a timeout, a cut)."""
        timeout = isinstance(exc, TimeoutError)
        kind = self._sdk.APITimeoutError if timeout else self._sdk.APIConnectionError
        error: BaseException = kind(request=self._probe)
        return error

    def status_error(self, status: int, raw_headers: Any, content: bytes) -> BaseException:
        """The SDK's exception for an error reply, made by the SDK from the same reply."""
        response = self._response(status, raw_headers, content)
        error: BaseException = self._client._make_status_error_from_response(response)
        return error

    def api_error(self, message: str, body: object) -> BaseException:
        """openai's exception for an error record inside a stream."""
        error: BaseException = self._sdk.APIError(message, self._probe, body=body)
        return error

    def event_error(self, message: str, body: object, reply: Any) -> BaseException:
        """anthropic's exception for an error event inside a stream: its status error, made
        from the stream's (aiohttp) reply."""
        response = self._response(reply.status, reply.raw_headers, b"")
        make = self._client._make_status_error
        error: BaseException = make(message, body=body, response=response)
        return error

    def _response(self, status: int, raw_headers: Any, content: bytes) -> Any:
        """A reply as the SDK's own response object."""
        import httpx2

        headers = [(k, v) for k, v in raw_headers if k.lower() not in DECODED]
        return httpx2.Response(status, headers=headers, content=content, request=self._probe)


def body_params(create: Any) -> frozenset[str]:
    """The parameters of an SDK's `create` that it sends as fields of the JSON body (none
    when it takes any keyword: then the SDK sends every request)."""
    return (keyword_params(create) or frozenset()) - NOT_BODY - frozenset(MERGED)


def _options(sdk: Any, path: str, security: Mapping[str, bool] | None) -> Any:
    """The SDK's request options for a POST to `path`, as its create() builds them."""
    module = importlib.import_module(sdk.__name__ + "._models")
    extra = {"security": dict(security)} if security is not None else {}
    return module.FinalRequestOptions.construct(method="post", url=path, json_data={}, **extra)
