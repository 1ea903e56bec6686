"""A TCP proxy in front of PostgreSQL that speaks just enough of its wire protocol to fail
the way a server or a network does.

Besides TcpProxy's cut (refused), freeze (no answer) and restore, it can:

- reset every connection whose client sends a query (Query, Parse, Execute or a function
  call) while `reset_on_query` is on. The query reaches the server and runs to its end
  (the proxy waits for the server's ReadyForQuery), then the client's socket is reset
  (SO_LINGER 0: an RST, not a FIN) and the answer is thrown away: the statement was sent,
  perhaps committed, and the client never learns how it ended.
- refuse new connections as a server at max_connections does (`too_many`): the startup
  packet is read and answered with a FATAL ErrorResponse, SQLSTATE 53300, then closed.

The proxy answers SSLRequest and GSSENCRequest with 'N' itself, so the stream stays plain
and its messages can be read (the server never sees the request).
"""

from __future__ import annotations

import socket
import struct
import threading

from tests.support.tcp_proxy import TcpProxy

SSL_REQUEST = 80877103
GSSENC_REQUEST = 80877104
QUERY_TYPES = frozenset(b"QPEF")  # Query, Parse, Execute, FunctionCall
READY_FOR_QUERY = ord("Z")


def error_response(sqlstate: str, message: str, severity: str = "FATAL") -> bytes:
    """A backend ErrorResponse message, as the server sends it."""
    fields = b"".join(code + value.encode() + b"\0" for code, value in (
        (b"S", severity), (b"V", severity), (b"C", sqlstate), (b"M", message)))
    body = fields + b"\0"
    return b"E" + struct.pack("!i", len(body) + 4) + body


TOO_MANY = error_response("53300", "sorry, too many clients already")


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return data


def _startup(client: socket.socket) -> bytes:
    """Read the client's startup packet, answering SSL/GSS encryption requests with 'N';
    returns the startup packet's bytes."""
    while True:
        length = struct.unpack("!i", _recv_exact(client, 4))[0]
        body = _recv_exact(client, length - 4)
        code = struct.unpack("!i", body[:4])[0]
        if code in (SSL_REQUEST, GSSENC_REQUEST):
            client.sendall(b"N")
            continue
        return struct.pack("!i", length) + body


def reset(sock: socket.socket) -> None:
    """Close with an RST (SO_LINGER 0), as a crashed peer or a middlebox does."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        # Wake a thread blocked in recv() on it (SHUT_RD sends nothing): a close() alone
        # would wait for that call to return before the RST goes out.
        sock.shutdown(socket.SHUT_RD)
    except OSError:
        pass
    sock.close()


class _Messages:
    """Splits a typed message stream (1 type byte, then a length) into messages."""

    def __init__(self):
        self.buf = b""

    def feed(self, data: bytes) -> list[int]:
        """The types of the messages completed by `data`."""
        self.buf += data
        types = []
        while len(self.buf) >= 5:
            length = struct.unpack("!i", self.buf[1:5])[0]
            if len(self.buf) < 1 + length:
                break
            types.append(self.buf[0])
            self.buf = self.buf[1 + length:]
        return types


class FaultProxy(TcpProxy):
    """TcpProxy, plus `reset_on_query` and `too_many` (see the module's docstring)."""

    def __init__(self, target_host: str, target_port: int):
        self.resetting = False
        self.refusing_startup = False
        self.resets = 0  # connections reset by reset_on_query
        self.refused = 0  # startups answered with 53300
        super().__init__(target_host, target_port)

    def reset_on_query(self, on: bool = True) -> None:
        """While on: each connection that sends a query is reset once the server answered."""
        self.resetting = on

    def too_many(self, on: bool = True) -> None:
        """While on: new connections get FATAL 53300 (existing ones go on working)."""
        self.refusing_startup = on

    def restore(self) -> None:
        self.resetting = self.refusing_startup = False
        super().restore()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        self._flowing.wait()  # frozen: the client is connected, and nothing answers
        try:
            startup = _startup(client)
        except (OSError, ConnectionError, struct.error):
            client.close()
            return
        if self.refusing_startup:
            self.refused += 1
            try:
                client.sendall(TOO_MANY)
            except OSError:
                pass
            client.close()
            return
        try:
            upstream = self._connect()
            upstream.sendall(startup)
        except OSError:
            client.close()
            return
        with self._lock:
            self._conns += [client, upstream]
        pair = {"doomed": False}
        threading.Thread(target=self._pump_client, args=(client, upstream, pair),
                         daemon=True).start()
        threading.Thread(target=self._pump_server, args=(upstream, client, pair),
                         daemon=True).start()

    def _pump_client(self, client: socket.socket, upstream: socket.socket, pair) -> None:
        messages = _Messages()
        try:
            while data := client.recv(65536):
                self._flowing.wait()
                types = messages.feed(data)
                if self.resetting and QUERY_TYPES.intersection(types):
                    pair["doomed"] = True  # the server answers; the client will not hear it
                upstream.sendall(data)
        except OSError:
            pass
        finally:
            if not pair.get("reset"):  # else a FIN could beat the RST
                _shutdown(client)
            _shutdown(upstream)

    def _pump_server(self, upstream: socket.socket, client: socket.socket, pair) -> None:
        messages = _Messages()
        try:
            while data := upstream.recv(65536):
                self._flowing.wait()
                types = messages.feed(data)
                if pair["doomed"]:
                    if READY_FOR_QUERY in types:  # the statement has ended on the server
                        self.resets += 1
                        pair["reset"] = True
                        reset(client)
                        break
                    continue
                client.sendall(data)
        except OSError:
            pass
        finally:
            _shutdown(upstream)
            if not pair.get("reset"):
                _shutdown(client)


def _shutdown(*socks: socket.socket) -> None:
    for s in socks:
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
