"""bench/load.py: the closed-loop client against a stub that refuses every request."""

from __future__ import annotations

import socketserver
import threading

from bench.load import run_load


def _answer(status: bytes, retry_after: bytes) -> bytes:
    return (
        b"HTTP/1.1 " + status + b"\r\nContent-Type: application/json\r\n"
        b"Retry-After: " + retry_after + b"\r\nContent-Length: 2\r\n\r\n{}"
    )


class _Stub(socketserver.BaseRequestHandler):
    answer = b""

    def handle(self) -> None:
        buf = b""
        while True:
            data = self.request.recv(65536)
            if not data:
                return
            buf += data
            while b"\r\n\r\n" in buf:  # bodiless requests (Content-Length: 0): one per head
                _, buf = buf.split(b"\r\n\r\n", 1)
                self.request.sendall(self.answer)


def _answers(honour: bool, answer: bytes) -> dict[int, int]:
    """Statuses of 1 s of one client against a stub that always gives `answer`."""
    handler = type("Handler", (_Stub,), {"answer": answer})
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        port = server.server_address[1]
        r = run_load(port, "/x", b"", 1, 1.0, warmup_s=0.0, honour_retry_after=honour)
    finally:
        server.shutdown()
        server.server_close()
    return r.statuses


def test_refused_clients_wait_their_retry_after_only_when_asked():
    # 1 s, Retry-After 0.25 s: about four requests when waiting, far more when not
    refusal = _answers(honour=True, answer=_answer(b"503 Service Unavailable", b"0.25"))
    assert set(refusal) == {503} and 3 <= refusal[503] <= 5
    assert _answers(honour=False, answer=_answer(b"503 Service Unavailable", b"0.25"))[503] > 50


def test_retry_after_dates_and_other_statuses_do_not_hold_the_client():
    # an HTTP date cannot be read as seconds: no wait, and no crash of the run
    date = b"Fri, 31 Dec 1999 23:59:59 GMT"
    assert _answers(honour=True, answer=_answer(b"503 Service Unavailable", date))[503] > 50
    # only a refusal is waited on
    assert _answers(honour=True, answer=_answer(b"200 OK", b"0.25"))[200] > 50
