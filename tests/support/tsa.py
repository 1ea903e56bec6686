"""A real RFC 3161 time-stamp authority on 127.0.0.1 for the tests: `openssl ts -reply` behind
a small HTTP handler, with a throwaway root CA and a TSA certificate (extendedKeyUsage
critical timeStamping) made here with `cryptography`.

`mode` switches what it answers: "up" (a signed TimeStampResp), "down" (the socket is closed:
connection refused), "slow" (waits `delay` seconds first), "garbage" (200 with bytes that are
no DER), "error" (503). `requests` counts the queries it answered.
"""

from __future__ import annotations

import datetime as dt
import subprocess
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

TS_CONFIG = """\
[ tsa ]
default_tsa = tsa_config1

[ tsa_config1 ]
dir = {dir}
serial = $dir/serial
crypto_device = builtin
signer_cert = $dir/tsa.pem
signer_key = $dir/tsa.key
signer_digest = sha256
default_policy = 1.3.6.1.4.1.99999.1
digests = sha256, sha384, sha512
accuracy = secs:1
ordering = yes
tsa_name = yes
ess_cert_id_chain = no
ess_cert_id_alg = sha256
"""


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "TR"),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Test Zaman Damgası"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _pem_key(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def make_pki(folder: Path, cn: str = "Test TSA") -> dict[str, Path]:
    """A root CA and a TSA certificate it issued, as PEM files in `folder`."""
    now = dt.datetime.now(dt.UTC) - dt.timedelta(days=1)
    root_key = ec.generate_private_key(ec.SECP256R1())
    root_name = _name(f"{cn} Root CA")
    root = (x509.CertificateBuilder().subject_name(root_name).issuer_name(root_name)
            .public_key(root_key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + dt.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False,
                                         False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(root_key.public_key()),
                           critical=False)
            .sign(root_key, hashes.SHA256()))
    tsa_key = ec.generate_private_key(ec.SECP256R1())
    tsa = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(root_name)
           .public_key(tsa_key.public_key()).serial_number(x509.random_serial_number())
           .not_valid_before(now).not_valid_after(now + dt.timedelta(days=365))
           .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
           .add_extension(x509.KeyUsage(True, True, False, False, False, False, False, False,
                                        False), critical=True)
           .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.TIME_STAMPING]),
                          critical=True)
           .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
               root_key.public_key()), critical=False)
           .sign(root_key, hashes.SHA256()))
    files = {"root": folder / "root.pem", "tsa": folder / "tsa.pem", "key": folder / "tsa.key"}
    files["root"].write_bytes(root.public_bytes(serialization.Encoding.PEM))
    files["tsa"].write_bytes(tsa.public_bytes(serialization.Encoding.PEM))
    files["key"].write_bytes(_pem_key(tsa_key))
    (folder / "serial").write_text("01\n")
    (folder / "ts.cnf").write_text(TS_CONFIG.format(dir=folder))
    return files


class TimeStampAuthority:
    """`openssl ts -reply` served over HTTP on 127.0.0.1 (port 0)."""

    def __init__(self, cn: str = "Test TSA"):
        self.folder = Path(tempfile.mkdtemp(prefix="ivr-tsa-"))
        self.files = make_pki(self.folder, cn)
        self.mode = "up"
        self.delay = 5.0
        self.requests = 0
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self.port = 0
        self.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/tsa"

    @property
    def ca_file(self) -> Path:
        return self.files["root"]

    def reply(self, query: bytes) -> bytes:
        """What `openssl ts -reply` answers to a DER TimeStampReq."""
        with self._lock, tempfile.TemporaryDirectory() as d:
            q, r = Path(d) / "q.tsq", Path(d) / "r.tsr"
            q.write_bytes(query)
            subprocess.run(["openssl", "ts", "-reply", "-config", str(self.folder / "ts.cnf"),
                            "-queryfile", str(q), "-out", str(r)],
                           check=True, capture_output=True)
            return r.read_bytes()

    def start(self) -> None:
        """Listen (again, on the same port once it had one)."""
        authority = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # the stdlib's name
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if authority.mode == "slow":
                    time.sleep(authority.delay)
                if authority.mode == "error":
                    self.send_response(503)
                    self.end_headers()
                    return
                if authority.mode == "garbage":
                    out = b"\x30\x03not a time-stamp response"
                elif self.headers.get("Content-Type") != "application/timestamp-query":
                    self.send_response(415)
                    self.end_headers()
                    return
                else:
                    out = authority.reply(body)
                    authority.requests += 1
                self.send_response(200)
                self.send_header("Content-Type", "application/timestamp-reply")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def log_message(self, *args):
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_port
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        self.mode = "up"

    def stop(self) -> None:
        """Close the socket: connections are refused until start()."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        self.mode = "down"
