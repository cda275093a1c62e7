"""URL fetching on the worker (pipelines/sources/url_fetch.py) against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import io
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from PIL import Image

from onegen.pipelines.sources.url_fetch import FetchConfig, Fetcher, FetchFailed, fetch_urls


def _jpeg() -> bytes:
    out = io.BytesIO()
    Image.fromarray(np.full((80, 96, 3), 120, np.uint8)).save(out, "JPEG")
    return out.getvalue()


JPEG = _jpeg()


class _Handler(BaseHTTPRequestHandler):
    hits: dict[str, int] = {}
    user_agents: list[str] = []
    in_flight = 0
    peak = 0
    lock = threading.Lock()

    def log_message(self, *args) -> None:  # quiet test output
        pass

    def _send(self, status: int, body: bytes = b"", headers: dict | None = None) -> None:
        self.send_response(status)
        for name, value in (headers or {"Content-Length": str(len(body))}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        path = self.path
        _Handler.hits[path] = _Handler.hits.get(path, 0) + 1
        _Handler.user_agents.append(self.headers.get("User-Agent", ""))
        if path == "/ok.jpg":
            self._send(200, JPEG)
        elif path.startswith("/slow?"):  # held long enough for the others to arrive
            with _Handler.lock:
                _Handler.in_flight += 1
                _Handler.peak = max(_Handler.peak, _Handler.in_flight)
            time.sleep(0.3)
            with _Handler.lock:
                _Handler.in_flight -= 1
            self._send(200, JPEG)
        elif path == "/missing":
            self._send(404, b"no")
        elif path == "/flaky":  # 500 first, then the image
            self._send(500, b"oops") if _Handler.hits[path] == 1 else self._send(200, JPEG)
        elif path == "/busy":  # 429 with Retry-After 0 first, then the image
            self._send(429, b"", {"Retry-After": "0", "Content-Length": "0"}) if _Handler.hits[path] == 1 \
                else self._send(200, JPEG)
        elif path == "/always500":
            self._send(503, b"down")
        elif path == "/redirect":
            self._send(302, b"", {"Location": "/ok.jpg", "Content-Length": "0"})
        elif path == "/loop":
            self._send(302, b"", {"Location": "/loop", "Content-Length": "0"})
        elif path == "/stall":  # headers, a few bytes, then nothing past the read timeout
            self.send_response(200)
            self.send_header("Content-Length", str(len(JPEG)))
            self.end_headers()
            self.wfile.write(JPEG[:100])
            self.wfile.flush()
            time.sleep(2.0)
        elif path == "/cut":  # a body shorter than its Content-Length, then the connection closes
            self.send_response(200)
            self.send_header("Content-Length", str(len(JPEG)))
            self.end_headers()
            self.wfile.write(JPEG[:100])
            self.close_connection = True
        elif path == "/trickle":  # a byte every 50 ms: never a read timeout, never done
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            try:
                for _ in range(1000):
                    self.wfile.write(b"x")
                    self.wfile.flush()
                    time.sleep(0.05)
            except (ConnectionResetError, BrokenPipeError):  # the client gave up: expected
                return
        elif path.startswith("http://"):  # absolute-form: we were asked as a proxy
            self._send(200, JPEG)
        elif path == "/declared-huge":
            self._send(200, b"x" * 10, {"Content-Length": str(10 << 20)})
        elif path == "/streamed-huge":  # no Content-Length: only the streamed count can stop it
            self.send_response(200)
            self.send_header("Connection", "close")
            self.end_headers()
            try:
                for _ in range(64):
                    self.wfile.write(b"y" * 65536)
            except (ConnectionResetError, BrokenPipeError):  # the client stops reading at its cap: expected
                return
        elif path == "/page.html":
            self._send(200, b"<html><body>not found</body></html>", None)
        else:
            self._send(404)


@pytest.fixture()
def server():
    _Handler.hits, _Handler.user_agents, _Handler.in_flight, _Handler.peak = {}, [], 0, 0
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


FAST = FetchConfig(concurrency=4, connect_timeout=2.0, read_timeout=0.5, retries=2, backoff=0.01,
                   max_bytes=1 << 20)


def _reason(result) -> str:
    return result.reason if isinstance(result, FetchFailed) else "ok"


def test_every_url_gets_its_body_or_its_reason_in_input_order(server):
    paths = ["/ok.jpg", "/missing", "/flaky", "/busy", "/always500", "/redirect", "/loop", "/stall",
             "/declared-huge", "/streamed-huge", "/page.html"]
    results = list(fetch_urls([server + p for p in paths] + ["ftp://example/x.jpg"], FAST))
    assert [_reason(r) for r in results] == [
        "ok", "http_404", "ok", "ok", "http_503", "ok", "too_many_redirects", "timeout", "too_large",
        "too_large", "ok", "bad_url"]
    assert _reason(list(fetch_urls([server + "/cut"], FAST))[0]) == "connection_error"  # short body, retried
    assert results[0] == JPEG and results[2] == JPEG and results[3] == JPEG and results[5] == JPEG
    assert results[10].startswith(b"<html>")  # the image checks, not the fetcher, refuse a page


def test_retries_only_what_is_transient(server):
    list(fetch_urls([server + p for p in ("/missing", "/flaky", "/always500")], FAST))
    assert _Handler.hits["/missing"] == 1  # a 404 is final
    assert _Handler.hits["/flaky"] == 2  # 500, then 200
    assert _Handler.hits["/always500"] == 1 + FAST.retries


def test_no_retries_when_asked(server):
    result = list(fetch_urls([server + "/flaky"], FetchConfig(retries=0, backoff=0.01)))
    assert _reason(result[0]) == "http_500" and _Handler.hits["/flaky"] == 1


def test_requests_name_onegen_in_the_user_agent(server):
    list(fetch_urls([server + "/ok.jpg"], FAST))
    assert _Handler.user_agents and all(ua.startswith("onegen/") for ua in _Handler.user_agents)


def test_the_size_cap_stops_reading_early(server):
    result = Fetcher(FetchConfig(max_bytes=200_000, read_timeout=5.0)).fetch(server + "/streamed-huge")
    assert _reason(result) == "too_large" and "200000" in result.detail


def test_a_refused_connection_is_a_reason_after_its_retries():
    import socket

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = list(fetch_urls([f"http://127.0.0.1:{port}/x.jpg"], FAST))
    assert _reason(result[0]) == "connection_error"


def test_concurrency_bounds_the_requests_in_flight(server):
    """Eight slow URLs with concurrency 3: exactly three are in flight at the peak, never more."""
    results = list(fetch_urls([f"{server}/slow?{n}" for n in range(8)], FetchConfig(concurrency=3, retries=0)))
    assert all(r == JPEG for r in results)
    assert _Handler.peak == 3


def test_the_environment_proxy_is_used_and_no_proxy_bypasses_it(server, monkeypatch):
    """As on clusters behind a proxy: http_proxy carries the request (asked in absolute form), except for
    the hosts no_proxy names."""
    monkeypatch.setenv("http_proxy", server)
    monkeypatch.setenv("no_proxy", "localhost")
    monkeypatch.delenv("HTTP_PROXY", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    results = list(fetch_urls(["http://images.example.invalid/a.jpg"], FAST))
    assert results == [JPEG] and "http://images.example.invalid/a.jpg" in _Handler.hits
    direct = server.replace("127.0.0.1", "localhost") + "/ok.jpg"
    assert list(fetch_urls([direct], FAST)) == [JPEG] and _Handler.hits["/ok.jpg"] == 1


@pytest.fixture()
def tls_server(tmp_path):
    """An HTTPS server on 127.0.0.1 with a self-signed certificate (made by the openssl command line)."""
    import ssl
    import subprocess

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    _Handler.hits = {}
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"https://127.0.0.1:{httpd.server_address[1]}", cert
    httpd.shutdown()
    httpd.server_close()


def test_an_unverified_certificate_is_final_and_a_trusted_one_fetches(tls_server, monkeypatch):
    url, cert = tls_server
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    (result,) = fetch_urls([url + "/ok.jpg"], FAST)
    assert _reason(result) == "tls_error" and "ok.jpg" not in str(_Handler.hits)  # refused before any request
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # the operator's CA bundle, as requests honours it
    assert list(fetch_urls([url + "/ok.jpg"], FAST)) == [JPEG]


def test_a_trickling_body_is_a_timeout_after_body_timeout(server):
    config = FetchConfig(read_timeout=5.0, body_timeout=0.4, retries=1, backoff=0.01)
    started = time.monotonic()
    (result,) = fetch_urls([server + "/trickle"], config)
    assert _reason(result) == "timeout" and "body not complete" in result.detail
    assert _Handler.hits["/trickle"] == 2  # retried once, like any timeout
    assert time.monotonic() - started < 3.0  # not the 50 s the server would take
