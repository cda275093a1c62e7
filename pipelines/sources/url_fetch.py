"""Fetching the images of a URL table on the worker that ingests the part (COYO, LAION, PixelProse, ...).

`fetch_urls(urls, config)` downloads one part's URLs with `config.concurrency` threads and returns, in
input order, the body bytes of each URL or a `FetchFailed(reason, detail)`. Every failure has a short,
stable reason that lands in the rejects table beside the URL:

- http_<status>        the server answered an error status (404, 403, 410, ...; 429 and 5xx after retries)
- timeout              no connection within `connect_timeout`, no byte for `read_timeout`, or a body still
                       arriving after `body_timeout` (a server trickling bytes)
- connection_error     refused, reset, DNS failure, TLS failure (after retries)
- too_many_redirects   more than `max_redirects` hops
- too_large            Content-Length or the streamed body over `max_bytes` (checked while streaming:
                       nothing past the cap is read)
- bad_url              not an http(s) URL, or one the HTTP library cannot parse
- tls_error            the server's TLS certificate did not verify (final: retrying cannot fix it)

Transient failures (timeouts, connection errors, 429, 5xx) are retried `retries` times with exponential
backoff from `backoff` seconds (a 429's or 503's Retry-After is honoured up to `max_retry_after`); a 4xx
other than 429 is final at once. Redirects are followed. Whether the body is an image at all (an HTML
error page served with 200, a truncated JPEG) is decided afterwards by the same validation as local
files (sources/image_checks.py: not_an_image, decode_error, too_small).

Why threads and urllib3: a part is a few hundred URLs and the work is waiting on sockets; a thread
pool per worker keeps `concurrency` requests in flight through one thread-safe urllib3 pool manager
(a connection pool per host, kept alive across the part's URLs), while the Ray task around it (one per
part, pipelines/runtime/units.py) is the unit of resume: a killed part is fetched again whole, a
committed one never. No row data passes through the driver. urllib3 is used directly rather than
through requests: requests' per-request work (environment proxies and .netrc looked up again for every
URL, hooks, cookie jars) cost 2.4 ms of CPU a URL against urllib3's 1.1 ms on the 2-core VM
(bench/results/peer_url_fetch.txt), and at a few hundred URLs a second that CPU is the bottleneck.
Proxies are still the environment's (`http_proxy`, `https_proxy`, `no_proxy`), read once per part, and
certificates are verified against `REQUESTS_CA_BUNDLE` or `SSL_CERT_FILE` when set, else certifi's bundle
(what requests used; the system store differs between images).
"""

from __future__ import annotations

import os
import ssl
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import certifi
import urllib3
from urllib3 import exceptions as http_errors

from onegen import __version__

TRANSIENT_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
REDIRECT_STATUS = frozenset({301, 302, 303, 307, 308})
CHUNK_BYTES = 256 << 10


@dataclass(frozen=True)
class FetchConfig:
    """How a worker downloads the URLs of one ingest part."""

    concurrency: int = 16  # requests in flight per part (threads)
    connect_timeout: float = 10.0  # seconds to open a connection
    read_timeout: float = 20.0  # seconds without a byte before giving up
    body_timeout: float = 120.0  # seconds for one attempt's whole body, however steadily it trickles
    retries: int = 2  # extra attempts after a transient failure
    backoff: float = 0.5  # seconds before the first retry, doubled each time
    max_retry_after: float = 10.0  # longest Retry-After honoured, seconds
    max_bytes: int = 64 << 20  # body size cap, checked while streaming
    max_redirects: int = 10
    user_agent: str = f"onegen/{__version__} (dataset builder; image ingest)"

    def __post_init__(self) -> None:
        if self.concurrency < 1 or self.retries < 0 or self.max_bytes < 1 or self.body_timeout <= 0:
            raise ValueError(f"FetchConfig: concurrency >= 1, retries >= 0, max_bytes >= 1, body_timeout > 0 "
                             f"(got {self})")


class FetchFailed(Exception):
    """One URL that gave no body; `reason` is a short code (module docstring), `detail` free text."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class _Transient(Exception):
    """A failure worth another attempt; carries the FetchFailed to report if none is left."""

    def __init__(self, failure: FetchFailed, wait: float | None = None):
        super().__init__(str(failure))
        self.failure = failure
        self.wait = wait


@dataclass(frozen=True)
class Checked:
    """A body and what `fetch_urls`' `check` made of it in the fetching thread."""

    data: bytes
    result: Any


def fetch_urls(urls: Sequence[str], config: FetchConfig,
               check: Callable[[bytes], Any] | None = None) -> Iterator[bytes | Checked | FetchFailed]:
    """The body of every URL, or its FetchFailed, in the order of `urls` (module docstring), each yielded as
    soon as it and those before it are done. `check` (e.g. ingest's image validation) runs on each body in
    the thread that fetched it, as soon as it arrives, and the body comes back as `Checked`: decoding then
    overlaps the other downloads (the decoders release the GIL) instead of waiting behind a slow URL that
    comes earlier in the order. `check` must not raise for bad data (return the reason instead)."""
    if not urls:
        return
    fetcher = Fetcher(config)

    def one(url: str) -> bytes | Checked | FetchFailed:
        body = fetcher.fetch(url)
        return Checked(body, check(body)) if check is not None and isinstance(body, bytes) else body

    try:
        with ThreadPoolExecutor(max_workers=min(config.concurrency, len(urls)), thread_name_prefix="fetch") as pool:
            yield from pool.map(one, urls)
    finally:
        fetcher.close()


class Fetcher:
    """Fetches single URLs as `FetchConfig` says, from any number of threads: one urllib3 pool manager
    (a keep-alive connection pool per host) and one proxy manager per proxy the environment names."""

    def __init__(self, config: FetchConfig):
        self.config = config
        options = {"num_pools": max(10, 4 * config.concurrency), "maxsize": config.concurrency,
                   "headers": {"User-Agent": config.user_agent}, "retries": False,
                   "timeout": urllib3.Timeout(connect=config.connect_timeout, read=config.read_timeout),
                   "ca_certs": os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("SSL_CERT_FILE") or certifi.where()}
        self._direct = urllib3.PoolManager(**options)
        # the environment's proxies, as urllib and requests read them (http_proxy, https_proxy, no_proxy)
        proxies = urllib.request.getproxies()
        self._proxied = {scheme: urllib3.ProxyManager(proxies[scheme], **options)
                         for scheme in ("http", "https") if proxies.get(scheme)}

    def fetch(self, url: str) -> bytes | FetchFailed:
        """One URL with retries of its transient failures; never raises for what the network or server does."""
        config = self.config
        if not isinstance(url, str) or not url.lower().startswith(("http://", "https://")):
            return FetchFailed("bad_url", repr(url)[:200])
        delay = config.backoff
        for attempt in range(config.retries + 1):
            try:
                return self._attempt(url)
            except FetchFailed as failure:
                return failure
            except _Transient as transient:
                if attempt == config.retries:
                    return transient.failure
                time.sleep(transient.wait if transient.wait is not None else delay)
                delay *= 2
        raise AssertionError("unreachable: the loop returns on its last attempt")

    def close(self) -> None:
        for manager in (self._direct, *self._proxied.values()):
            manager.clear()

    def _manager(self, url: str) -> urllib3.PoolManager:
        parts = urllib.parse.urlsplit(url)
        proxied = self._proxied.get(parts.scheme.lower())
        return proxied if proxied is not None and not urllib.request.proxy_bypass(parts.hostname or "") else self._direct

    def _attempt(self, url: str) -> bytes:
        """One GET, its redirects followed, streamed under the size cap; raises FetchFailed (final) or
        _Transient (retry)."""
        config, target, started = self.config, url, time.monotonic()
        try:
            for _hop in range(config.max_redirects + 1):
                response = self._manager(target).request("GET", target, preload_content=False, redirect=False)
                try:
                    location = response.headers.get("Location")
                    if response.status in REDIRECT_STATUS and location:
                        _discard(response)
                        target = urllib.parse.urljoin(target, location)
                        continue
                    body = self._body(response, target, started)
                except BaseException:
                    _discard(response)
                    raise
                response.release_conn()  # the whole body was read: the connection serves the next URL
                return body
            raise FetchFailed("too_many_redirects", f"more than {config.max_redirects} redirects from {url}")
        except http_errors.NewConnectionError as error:  # refused, unreachable, DNS (a ConnectTimeoutError subclass)
            raise _Transient(FetchFailed("connection_error", str(error)[:200])) from None
        except http_errors.TimeoutError as error:  # no connection within connect_timeout, or a read that stalled
            raise _Transient(FetchFailed("timeout", str(error)[:200])) from None
        except http_errors.SSLError as error:
            if _certificate_failed(error):
                raise FetchFailed("tls_error", str(error)[:200]) from None
            raise _Transient(FetchFailed("connection_error", f"SSLError: {error}"[:200])) from None
        except http_errors.LocationValueError as error:
            raise FetchFailed("bad_url", str(error)[:200]) from None
        except (http_errors.HTTPError, OSError) as error:  # reset, broken mid-body, TLS, proxy refused
            raise _Transient(FetchFailed("connection_error", f"{type(error).__name__}: {error}"[:200])) from None

    def _body(self, response: urllib3.BaseHTTPResponse, url: str, started: float) -> bytes:
        """The body of a final (non-redirect) response, or the failure its status or size is."""
        config = self.config
        if response.status in TRANSIENT_STATUS:
            raise _Transient(FetchFailed(f"http_{response.status}", url), _retry_after(response, config))
        if response.status >= 400:
            raise FetchFailed(f"http_{response.status}", url)
        declared = response.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > config.max_bytes:
            raise FetchFailed("too_large", f"Content-Length {declared} > {config.max_bytes}")
        body = bytearray()
        while chunk := response.read1(CHUNK_BYTES):  # what one read gives: a trickle is seen between reads
            body += chunk
            if len(body) > config.max_bytes:
                raise FetchFailed("too_large", f"body over {config.max_bytes} bytes")
            if time.monotonic() - started > config.body_timeout:
                raise _Transient(FetchFailed("timeout", f"body not complete after {config.body_timeout} s: {url}"))
        return bytes(body)


def _certificate_failed(error: BaseException) -> bool:
    """Whether a TLS failure is the certificate's (final) rather than the connection's (worth a retry)."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, ssl.SSLCertVerificationError):
            return True
        error = next((a for a in error.args if isinstance(a, BaseException)), None) or error.__cause__ or error.__context__
    return False


def _discard(response: urllib3.BaseHTTPResponse) -> None:
    """Give back the connection of a response whose body is not read to its end (a redirect, a failure):
    closed, since a connection with unread bytes cannot serve the next request (and reading them could
    be unbounded), then returned to its pool, which reconnects it when next used."""
    response.close()
    response.release_conn()


def _retry_after(response: urllib3.BaseHTTPResponse, config: FetchConfig) -> float | None:
    """Seconds a 429 / 503 asks us to wait (Retry-After in seconds), capped; None: our own backoff."""
    value = response.headers.get("Retry-After", "")
    return min(float(value), config.max_retry_after) if value.isdigit() else None
