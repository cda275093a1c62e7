"""Fetching the images of a URL table on the worker that ingests the part (COYO, LAION, PixelProse, ...).

`fetch_urls(urls, config)` downloads one part's URLs with `config.concurrency` threads and returns, in
input order, the body bytes of each URL or a `FetchFailed(reason, detail)`. Every failure has a short,
stable reason that lands in the rejects table beside the URL:

- http_<status>        the server answered an error status (404, 403, 410, ...; 429 and 5xx after retries)
- timeout              no connection within `connect_timeout`, or no byte for `read_timeout`
- connection_error     refused, reset, DNS failure, TLS failure (after retries)
- too_many_redirects   more than `max_redirects` hops
- too_large            Content-Length or the streamed body over `max_bytes` (checked while streaming:
                       nothing past the cap is read)
- bad_url              not an http(s) URL, or one the HTTP library cannot parse

Transient failures (timeouts, connection errors, 429, 5xx) are retried `retries` times with exponential
backoff from `backoff` seconds (a 429's or 503's Retry-After is honoured up to `max_retry_after`); a 4xx
other than 429 is final at once. Redirects are followed. Whether the body is an image at all (an HTML
error page served with 200, a truncated JPEG) is decided afterwards by the same validation as local
files (sources/image_checks.py: not_an_image, decode_error, too_small).

Why threads and requests: a part is a few hundred URLs and the work is waiting on sockets; a thread pool
per worker keeps `concurrency` requests in flight with a connection pool per host, while the Ray task
around it (one per part, pipelines/runtime/units.py) is the unit of resume: a killed part is fetched
again whole, a committed one never. No row data passes through the driver.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import requests
import urllib3

from onegen import __version__

TRANSIENT_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})


@dataclass(frozen=True)
class FetchConfig:
    """How a worker downloads the URLs of one ingest part."""

    concurrency: int = 16  # requests in flight per part (threads)
    connect_timeout: float = 10.0  # seconds to open a connection
    read_timeout: float = 20.0  # seconds without a byte before giving up
    retries: int = 2  # extra attempts after a transient failure
    backoff: float = 0.5  # seconds before the first retry, doubled each time
    max_retry_after: float = 10.0  # longest Retry-After honoured, seconds
    max_bytes: int = 64 << 20  # body size cap, checked while streaming
    max_redirects: int = 10
    user_agent: str = f"onegen/{__version__} (dataset builder; image ingest)"

    def __post_init__(self) -> None:
        if self.concurrency < 1 or self.retries < 0 or self.max_bytes < 1:
            raise ValueError(f"FetchConfig: concurrency >= 1, retries >= 0, max_bytes >= 1 (got {self})")


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
    local = threading.local()  # one Session (connection pool) per thread: Session is not thread-safe

    def session() -> requests.Session:
        if not hasattr(local, "session"):
            local.session = requests.Session()
            local.session.headers["User-Agent"] = config.user_agent
            local.session.max_redirects = config.max_redirects
        return local.session

    def one(url: str) -> bytes | Checked | FetchFailed:
        body = fetch_one(url, config, session())
        return Checked(body, check(body)) if check is not None and isinstance(body, bytes) else body

    with ThreadPoolExecutor(max_workers=min(config.concurrency, len(urls)), thread_name_prefix="fetch") as pool:
        yield from pool.map(one, urls)


def fetch_one(url: str, config: FetchConfig, session: requests.Session) -> bytes | FetchFailed:
    """One URL with retries of its transient failures; never raises for what the network or server does."""
    if not isinstance(url, str) or not url.lower().startswith(("http://", "https://")):
        return FetchFailed("bad_url", repr(url)[:200])
    delay = config.backoff
    for attempt in range(config.retries + 1):
        try:
            return _attempt(url, config, session)
        except FetchFailed as failure:
            return failure
        except _Transient as transient:
            if attempt == config.retries:
                return transient.failure
            time.sleep(transient.wait if transient.wait is not None else delay)
            delay *= 2
    raise AssertionError("unreachable: the loop returns on its last attempt")


def _attempt(url: str, config: FetchConfig, session: requests.Session) -> bytes:
    """One GET, streamed under the size cap; raises FetchFailed (final) or _Transient (retry)."""
    try:
        with session.get(url, stream=True, timeout=(config.connect_timeout, config.read_timeout)) as response:
            if response.status_code in TRANSIENT_STATUS:
                raise _Transient(FetchFailed(f"http_{response.status_code}", url), _retry_after(response, config))
            if response.status_code >= 400:
                raise FetchFailed(f"http_{response.status_code}", url)
            declared = response.headers.get("Content-Length", "")
            if declared.isdigit() and int(declared) > config.max_bytes:
                raise FetchFailed("too_large", f"Content-Length {declared} > {config.max_bytes}")
            body = bytearray()
            for chunk in response.iter_content(chunk_size=64 << 10):
                body += chunk
                if len(body) > config.max_bytes:
                    raise FetchFailed("too_large", f"body over {config.max_bytes} bytes")
            return bytes(body)
    except requests.TooManyRedirects as error:
        raise FetchFailed("too_many_redirects", str(error)[:200]) from None
    except (requests.Timeout, requests.exceptions.ChunkedEncodingError) as error:
        # ChunkedEncodingError wraps a read that stalled or broke mid-body
        raise _Transient(FetchFailed("timeout" if isinstance(error, requests.Timeout) else "connection_error",
                                     str(error)[:200])) from None
    except requests.ConnectionError as error:
        # a read that stalls inside iter_content arrives as ConnectionError(ReadTimeoutError)
        stalled = bool(error.args) and isinstance(error.args[0], urllib3.exceptions.ReadTimeoutError)
        raise _Transient(FetchFailed("timeout" if stalled else "connection_error", str(error)[:200])) from None
    except (requests.exceptions.InvalidURL, requests.exceptions.MissingSchema,
            requests.exceptions.InvalidSchema) as error:
        raise FetchFailed("bad_url", str(error)[:200]) from None


def _retry_after(response: requests.Response, config: FetchConfig) -> float | None:
    """Seconds a 429 / 503 asks us to wait (Retry-After in seconds), capped; None: our own backoff."""
    value = response.headers.get("Retry-After", "")
    return min(float(value), config.max_retry_after) if value.isdigit() else None
