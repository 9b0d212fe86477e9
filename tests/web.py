"""A real HTTP server on loopback for collection tests: routes of (status, headers, body), counted."""

from __future__ import annotations

import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# collect's network settings for a test server on loopback: allowed, quick to give up
LOOPBACK = {"allow_hosts": ["127.0.0.1"], "timeout_s": 2, "retries": 1, "subtitles": []}


class Route:
    def __init__(
        self,
        body: bytes = b"",
        status: int = 200,
        content_type: str = "application/octet-stream",
        headers: dict | None = None,
        delay_s: float = 0,
        declared_length: int | None = None,
        fail_first: int = 0,
    ):
        self.body, self.status, self.content_type = body, status, content_type
        self.headers, self.delay_s, self.declared_length, self.fail_first = (
            headers or {},
            delay_s,
            declared_length,
            fail_first,
        )


class WebServer:
    def __init__(self):
        self.routes: dict[str, Route] = {}
        self.hits: Counter = Counter()
        self.times: dict[str, list[float]] = {}  # path -> [when its last request came, when it was answered]
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                path = self.path.split("?", 1)[0]
                server.hits[path] += 1
                server.times[path] = [time.monotonic()]
                route = server.routes.get(path)
                if route is None:
                    self.send_error(404)
                    return
                if route.delay_s:
                    time.sleep(route.delay_s)
                if server.hits[path] <= route.fail_first:
                    self.send_error(503)
                    return
                self.send_response(route.status)
                self.send_header("Content-Type", route.content_type)
                for k, v in route.headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(route.declared_length or len(route.body)))
                self.end_headers()
                self.wfile.write(route.body)
                server.times[path].append(time.monotonic())

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def add(self, path: str, **route) -> str:
        self.routes[path] = Route(**route)
        return self.url + path

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
