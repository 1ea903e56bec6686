"""A TCP proxy the tests control: put it between the app and PostgreSQL, then cut it
(every connection dropped, new ones refused), or freeze it (connections stay open and new
ones are accepted, but no byte gets through: a network partition or a hung server), and
restore it."""

from __future__ import annotations

import socket
import threading

from sqlalchemy.engine import make_url


class TcpProxy:
    """Forwards 127.0.0.1:<port> to a target until cut."""

    def __init__(self, target_host: str, target_port: int):
        # A host that is a path is PostgreSQL's socket directory (the embedded server).
        self.target = (target_host, target_port)
        self.port = 0
        self._listener: socket.socket | None = None
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._flowing = threading.Event()
        self._flowing.set()
        self._listen()

    def _listen(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        sock.listen(64)
        self.port = sock.getsockname()[1]
        self._listener = sock
        threading.Thread(target=self._accept, args=(sock,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            self._flowing.wait()  # frozen: the client is connected, and nothing answers
            try:
                upstream = self._connect()
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _connect(self) -> socket.socket:
        host, port = self.target
        if host.startswith("/"):
            upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            upstream.settimeout(5)
            try:
                upstream.connect(f"{host}/.s.PGSQL.{port}")
            except OSError:
                upstream.close()
                raise
        else:
            upstream = socket.create_connection(self.target, timeout=5)
        upstream.settimeout(None)
        return upstream

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                self._flowing.wait()  # frozen: the bytes are held back
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def cut(self) -> None:
        """The database becomes unreachable: connections drop, new ones are refused."""
        if self._listener:
            try:  # wakes the thread blocked in accept(); close() alone would not
                self._listener.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self._listener.close()
            self._listener = None
        with self._lock:
            conns, self._conns = self._conns, []
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            c.close()

    def freeze(self) -> None:
        """The database stops answering, without closing anything."""
        self._flowing.clear()

    def restore(self) -> None:
        """The database is reachable again, on the same port."""
        self._flowing.set()
        if self._listener is None:
            self._listen()

    def close(self) -> None:
        self._flowing.set()
        self.cut()


def proxied(url: str) -> tuple[TcpProxy, str]:
    """A proxy in front of the database `url` names, and the URL that goes through it."""
    parsed = make_url(url)
    proxy = TcpProxy(parsed.host or "127.0.0.1", parsed.port or 5432)
    through = parsed.set(host="127.0.0.1", port=proxy.port)
    return proxy, through.render_as_string(hide_password=False)
