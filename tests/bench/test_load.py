"""bench/load.py: the closed-loop client against a stub that refuses every request."""

from __future__ import annotations

import socketserver
import threading

from bench.load import run_load

REFUSAL = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
    b"Retry-After: 0.25\r\nContent-Length: 2\r\n\r\n{}"
)


class _Refuser(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        buf = b""
        while True:
            data = self.request.recv(65536)
            if not data:
                return
            buf += data
            while b"\r\n\r\n" in buf:  # bodiless requests (Content-Length: 0): one per head
                _, buf = buf.split(b"\r\n\r\n", 1)
                self.request.sendall(REFUSAL)


def _refused_count(honour: bool) -> int:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Refuser)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        port = server.server_address[1]
        r = run_load(port, "/x", b"", 1, 1.0, warmup_s=0.0, honour_retry_after=honour)
    finally:
        server.shutdown()
        server.server_close()
    assert r.ok == 0 and set(r.statuses) == {503}
    return r.statuses[503]


def test_refused_clients_wait_their_retry_after_only_when_asked():
    # 1 s, Retry-After 0.25 s: about four requests when waiting, far more when not
    assert 3 <= _refused_count(honour=True) <= 5
    assert _refused_count(honour=False) > 50
