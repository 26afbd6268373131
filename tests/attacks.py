"""What an attacker sends at the HTTP front, as functions of a host and port.

Used by the e2e tests of the production stack (gunicorn behind nginx on loopback) and by
the container tests (the compose stack). Also a command, for the figures in
docs/operations.md against any server::

    python -m tests.attacks slow-clients http://127.0.0.1:8000 --token KEY [--idle 1000 --slowloris 100 --seconds 20]
"""

from __future__ import annotations

import argparse
import http.client
import json
import selectors
import socket
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

# --- raw HTTP ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    status: int
    content_type: str
    body: bytes

    def json(self):  # noqa: ANN201 - whatever the body holds
        return json.loads(self.body)


def _read_reply(sock: socket.socket) -> Reply:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    if not lines or not lines[0].startswith("HTTP/"):
        return Reply(0, "", data)
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if "content-length" in headers:
        want = int(headers["content-length"])
        while len(body) < want:
            chunk = sock.recv(65536)
            if not chunk:
                break
            body += chunk
    elif headers.get("transfer-encoding", "").lower() == "chunked":
        while not body.endswith(b"0\r\n\r\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            body += chunk
        body = _dechunk(body)
    return Reply(status, headers.get("content-type", "").split(";")[0].strip(), body)


def _dechunk(data: bytes) -> bytes:
    out = b""
    while data:
        size_line, _, rest = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out += rest[:size]
        data = rest[size + 2:]
    return out


def raw(host: str, port: int, request: bytes, timeout: float = 15) -> Reply:
    """Send ``request`` bytes as they are; the reply, or status 0 if the server closed without one."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        try:
            sock.sendall(request)
        except (BrokenPipeError, ConnectionResetError):
            pass  # a server may answer and close before reading everything
        try:
            return _read_reply(sock)
        except ConnectionResetError:
            return Reply(0, "", b"")


def chunked(host: str, port: int, method: str, path: str, chunks: list[bytes], *,
            content_type: str | None = "application/json", token: str | None = None) -> Reply:
    """A request whose body is sent with ``Transfer-Encoding: chunked``, one chunk per item."""
    head = f"{method} {path} HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n"
    if content_type:
        head += f"Content-Type: {content_type}\r\n"
    if token:
        head += f"Authorization: Bearer {token}\r\n"
    body = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks if c) + b"0\r\n\r\n"
    return raw(host, port, head.encode() + b"\r\n" + body)


#: Requests that no HTTP parser should accept, by what is wrong with them: each must be
#: answered 4xx (400, 414 or 431) as application/problem+json.
MALFORMED: dict[str, bytes] = {
    "CR in a header value": b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: a\rb\r\n\r\n",
    "NUL in a header value": b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n",
    "NUL in the path": b"GET /heal\x00thz HTTP/1.1\r\nHost: x\r\n\r\n",
    "header line folding": b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: a\r\n  folded\r\n\r\n",
    "space before the colon": b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A : a\r\n\r\n",
    "no HTTP version": b"GET /healthz HTTX/1.1\r\nHost: x\r\n\r\n",
    "garbage request line": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",
    "request line of 9 KiB": b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    "header line of 9 KiB": b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: " + b"a" * 9000 + b"\r\n\r\n",
    "200 header fields": b"GET /healthz HTTP/1.1\r\nHost: x\r\n"
                         + b"".join(b"X-H%d: a\r\n" % i for i in range(200)) + b"\r\n",
    "bad chunk size": b"POST /v1/repositories HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                      b"Content-Type: application/json\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
    "Content-Length and chunked together": b"POST /v1/repositories HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
                                           b"Transfer-Encoding: chunked\r\nContent-Type: application/json\r\n\r\n"
                                           b"0\r\n\r\n",
    "two Content-Lengths": b"POST /v1/repositories HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
                           b"Content-Length: 3\r\nContent-Type: application/json\r\n\r\n{}",
}


def chunked_body_failures(host: str, port: int, token: str) -> list[str]:
    """Chunked bodies against ``POST /v1/repositories`` as ``token``'s tenant (which must have
    no repository with github_repo_id 7): each must meet the rules a body with a
    Content-Length meets. What came back otherwise, one line each; afterwards the tenant
    has exactly one repository, named ``chunked``."""
    small = json.dumps({"github_repo_id": 7, "owner": "octo", "name": "chunked"}).encode()
    big = json.dumps({"github_repo_id": 8, "owner": "octo", "name": "x", "pad": "a" * (3 << 20)}).encode()
    path = "/v1/repositories"
    cases = [
        # A valid JSON body padded with 2 MiB of whitespace: too large, however little of it is JSON.
        ("53 bytes of JSON + 2 MiB of whitespace", [small] + [b" " * 65536] * 32, "application/json", 413),
        ("3 MiB of JSON", [big[i:i + 65536] for i in range(0, len(big), 65536)], "application/json", 413),
        ("text/plain", [b"hello"], "text/plain", 415),
        ("no content type", [small], None, 415),
        ("not JSON", [b"{nope"], "application/json", 400),
        # Nothing above was stored; a chunked body within the rules is accepted like any other.
        ("valid JSON in two chunks", [small[:20], small[20:]], "application/json", 201),
    ]
    failures = []
    for what, chunks, content_type, status in cases:
        reply = chunked(host, port, "POST", path, chunks, content_type=content_type, token=token)
        if reply.status != status or (status >= 400 and reply.content_type != "application/problem+json"):
            failures.append(f"{what}: {reply.status} {reply.content_type} {reply.body[:200]!r}")
    return failures


def malformed_failures(host: str, port: int) -> list[str]:
    """Each of :data:`MALFORMED`: what came back that is not a 4xx problem+json, one line each."""
    failures = []
    for what, request in MALFORMED.items():
        reply = raw(host, port, request)
        ok = 400 <= reply.status < 500 and reply.content_type == "application/problem+json"
        if ok:
            problem = reply.json()
            ok = problem["status"] == reply.status and problem["type"].startswith("https://tenantry.dev/problems/")
        if not ok:
            failures.append(f"{what}: {reply.status} {reply.content_type!r} {reply.body[:120]!r}")
    return failures


# --- slow and idle clients -------------------------------------------------------------------


@dataclass
class SlowClientRun:
    idle: int
    slowloris: int
    seconds: float
    latencies: list[float] = field(default_factory=list)  # of the control requests, seconds
    failures: list[str] = field(default_factory=list)
    #: Attack connections the server closed during the run (each is opened again at once).
    closed_by_server: int = 0
    held_at_end: int = 0

    def quantile(self, q: float) -> float:
        if not self.latencies:
            return float("inf")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    @property
    def p50_ms(self) -> float:
        return statistics.median(self.latencies) * 1000 if self.latencies else float("inf")

    @property
    def p99_ms(self) -> float:
        return self.quantile(0.99) * 1000

    def summary(self) -> str:
        return (f"{self.idle} idle + {self.slowloris} slowloris for {self.seconds:.0f} s: "
                f"{len(self.latencies)} control requests, {len(self.failures)} failed, "
                f"p50 {self.p50_ms:.1f} ms, p99 {self.p99_ms:.1f} ms, "
                f"{self.closed_by_server} attack connections closed by the server and reopened")


class _Attacker(threading.Thread):
    """Holds ``idle`` connections that send nothing and ``slowloris`` ones that send a
    header line every ``interval`` seconds, never finishing; opens each again when the
    server closes it, as a real attacker would."""

    def __init__(self, host: str, port: int, idle: int, slowloris: int, interval: float = 4.0) -> None:
        super().__init__(daemon=True)
        self.host, self.port, self.interval = host, port, interval
        self.want = {"idle": idle, "slow": slowloris}
        self.selector = selectors.DefaultSelector()
        self.sockets: dict[socket.socket, list] = {}  # socket -> [kind, next header at]
        self.stop = threading.Event()
        self.ready = threading.Event()
        self.closed_by_server = 0
        self.error: BaseException | None = None

    def _open(self, kind: str) -> None:
        sock = socket.create_connection((self.host, self.port), timeout=10)
        sock.setblocking(False)
        now = time.monotonic()
        if kind == "slow":
            sock.send(b"GET /v1/repositories HTTP/1.1\r\nHost: attacker\r\n")
        self.sockets[sock] = [kind, now + self.interval]
        self.selector.register(sock, selectors.EVENT_READ)

    def _close(self, sock: socket.socket) -> str:
        kind = self.sockets.pop(sock)[0]
        self.selector.unregister(sock)
        sock.close()
        return kind

    def run(self) -> None:
        try:
            for kind, count in self.want.items():
                for _ in range(count):
                    self._open(kind)
            self.ready.set()
            n = 0
            while not self.stop.is_set():
                for key, _ in self.selector.select(timeout=0.2):
                    sock = key.fileobj
                    try:
                        data = sock.recv(65536)
                    except (BlockingIOError, InterruptedError):
                        continue
                    except OSError:
                        data = b""
                    if not data:  # closed (or answered and closed) by the server: come back
                        self.closed_by_server += 1
                        self._open(self._close(sock))
                now = time.monotonic()
                for sock, state in list(self.sockets.items()):
                    if state[0] == "slow" and state[1] <= now:
                        n += 1
                        state[1] = now + self.interval
                        try:
                            sock.send(b"X-Slow-%d: %d\r\n" % (n, n))
                        except (BlockingIOError, InterruptedError):
                            pass
                        except OSError:
                            self.closed_by_server += 1
                            self._open(self._close(sock))
        except BaseException as exc:  # reported by hold_slow_clients
            self.error = exc
            self.ready.set()
        finally:
            for sock in list(self.sockets):
                self._close(sock)

    def held(self) -> int:
        return len(self.sockets)


def hold_slow_clients(host: str, port: int, control: Callable[[], int], *, idle: int = 1000,
                      slowloris: int = 100, seconds: float = 20.0) -> SlowClientRun:
    """Hold the attack for ``seconds`` while calling ``control`` (which returns an HTTP
    status and raises on a timeout) back to back; every non-200 or exception is a failure."""
    run = SlowClientRun(idle, slowloris, seconds)
    attacker = _Attacker(host, port, idle, slowloris)
    attacker.start()
    attacker.ready.wait(120)
    if attacker.error:
        raise RuntimeError(f"could not open the attack connections: {attacker.error!r}") from attacker.error
    try:
        time.sleep(1.0)  # every connection is in the server's hands before the first control request
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            started = time.monotonic()
            try:
                status = control()
                if status != 200:
                    run.failures.append(f"status {status}")
            except Exception as exc:  # noqa: BLE001 - a timeout or reset is what is measured
                run.failures.append(f"{type(exc).__name__}: {exc}")
            run.latencies.append(time.monotonic() - started)
            time.sleep(0.02)
        run.held_at_end = attacker.held()
    finally:
        attacker.stop.set()
        attacker.join(30)
    run.closed_by_server = attacker.closed_by_server
    if attacker.error:
        raise RuntimeError(f"the attacker failed: {attacker.error!r}") from attacker.error
    return run


def control_request(host: str, port: int, token: str, path: str = "/v1/repositories",
                    timeout: float = 10) -> Callable[[], int]:
    """A tenant's ``GET path``, over a new connection each time, with a client timeout."""

    def call() -> int:
        conn = http.client.HTTPConnection(host, port, timeout=timeout)
        try:
            conn.request("GET", path, headers={"Authorization": f"Bearer {token}"})
            response = conn.getresponse()
            response.read()
            return response.status
        finally:
            conn.close()

    return call


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.attacks")
    sub = parser.add_subparsers(dest="command", required=True)
    slow = sub.add_parser("slow-clients", help="control latency while idle and slowloris connections are held")
    slow.add_argument("url")
    slow.add_argument("--token", required=True, help="a tenant API key for the control requests")
    slow.add_argument("--idle", type=int, default=1000)
    slow.add_argument("--slowloris", type=int, default=100)
    slow.add_argument("--seconds", type=float, default=20)
    args = parser.parse_args(argv)
    url = urlsplit(args.url)
    host, port = url.hostname or "127.0.0.1", url.port or 80
    run = hold_slow_clients(host, port, control_request(host, port, args.token), idle=args.idle,
                            slowloris=args.slowloris, seconds=args.seconds)
    print(run.summary())
    for failure in sorted(set(run.failures))[:5]:
        print("  failure:", failure)
    return 0 if not run.failures else 1


if __name__ == "__main__":
    raise SystemExit(main())
