"""Certificate rotation under load: the certificate files are replaced while clients send requests over
keep-alive connections; no request fails, open connections carry on, new connections get the new certificate.

Two ways the files change in practice: ``spreadguard certs generate`` renewing in place (``ensure_certs``:
each file written to a temporary name and ``os.replace``d, the key first), and a Kubernetes Secret volume
(the kubelet writes a new timestamped directory and swaps the ``..data`` symlink the file symlinks go
through). Nothing here depends on timing beyond bounded polling: "new connection" means one whose connect
started after the rotation had finished.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import ssl
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import POLICIES_DIR, TLSFiles, admission_review, json_log_lines, metric, scrape, wait_for
from cryptography import x509

from webhook.certs.files import ensure_certs, load_not_after
from webhook.server import serve

MAX_REQUESTS_PER_CLIENT = 20000  # a bound on the load loop whatever happens
REQUESTS_PER_CONNECTION = 5
BODY = json.dumps(
    admission_review(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "trainer-0", "namespace": "ml"},
            "spec": {
                "containers": [
                    {"name": "main", "image": "pytorch/pytorch:2.4.0", "resources": {"limits": {"nvidia.com/gpu": "1"}}}
                ]
            },
        },
        "rotation",
    )
).encode()


def serial_of_file(path: Path) -> int:
    return x509.load_pem_x509_certificate(path.read_bytes()).serial_number


def peer_serial(conn: http.client.HTTPSConnection) -> int:
    der = conn.sock.getpeercert(binary_form=True)  # type: ignore[union-attr]
    return x509.load_der_x509_certificate(der).serial_number


class Load:
    """Clients sending /mutate requests until stopped: short-lived connections and one long-lived one."""

    def __init__(self, port: int, context: ssl.SSLContext) -> None:
        self.port = port
        self.context = context
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.failures: list[str] = []
        self.connections: list[tuple[float, int]] = []  # (monotonic time the connect started, peer serial)
        self.done = 0
        self.long_done = 0
        self.long_serial: int | None = None
        self.threads: list[threading.Thread] = []

    def _connect(self) -> tuple[http.client.HTTPSConnection, float, int]:
        started = time.monotonic()
        conn = http.client.HTTPSConnection("127.0.0.1", self.port, context=self.context, timeout=30)
        conn.connect()
        return conn, started, peer_serial(conn)

    def _request(self, conn: http.client.HTTPSConnection) -> None:
        conn.request("POST", "/mutate", body=BODY, headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        payload = resp.read()
        if resp.status != 200 or json.loads(payload)["response"]["uid"] != "rotation":
            raise AssertionError(f"HTTP {resp.status}: {payload[:200]!r}")
        if resp.will_close:
            raise AssertionError("the server closed the keep-alive connection")

    def short_lived(self) -> None:
        count = 0
        while not self.stop.is_set() and count < MAX_REQUESTS_PER_CLIENT:
            conn = None
            try:
                conn, started, serial = self._connect()
                with self.lock:
                    self.connections.append((started, serial))
                for _ in range(REQUESTS_PER_CONNECTION):
                    sock = conn.sock
                    self._request(conn)
                    if conn.sock is not sock:
                        raise AssertionError("http.client reconnected: the keep-alive connection was lost")
                    count += 1
                    with self.lock:
                        self.done += 1
            except Exception as exc:
                with self.lock:
                    self.failures.append(f"short-lived: {type(exc).__name__}: {exc}")
                return
            finally:
                if conn is not None:
                    conn.close()

    def long_lived(self) -> None:
        try:
            conn, _started, self.long_serial = self._connect()
        except Exception as exc:
            self.failures.append(f"long-lived connect: {type(exc).__name__}: {exc}")
            return
        sock = conn.sock
        try:
            while not self.stop.is_set() and self.long_done < MAX_REQUESTS_PER_CLIENT:
                self._request(conn)
                if conn.sock is not sock:
                    raise AssertionError("the long-lived connection was reopened")
                with self.lock:
                    self.long_done += 1
        except Exception as exc:
            with self.lock:
                self.failures.append(f"long-lived: {type(exc).__name__}: {exc}")
        finally:
            conn.close()

    def start(self, short_clients: int = 2) -> None:
        self.threads = [threading.Thread(target=self.long_lived, daemon=True)]
        self.threads += [threading.Thread(target=self.short_lived, daemon=True) for _ in range(short_clients)]
        for t in self.threads:
            t.start()

    def finish(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(60)
        assert not any(t.is_alive() for t in self.threads), "a client did not stop"

    def connections_after(self, moment: float) -> list[int]:
        with self.lock:
            return [serial for started, serial in self.connections if started > moment]


# ------------------------------------------------------------------------------ the two ways to rotate


def renew_in_place(ca_dir: Path, _served: Path, _load: Load) -> None:
    """``spreadguard certs generate`` on a certificate close to expiry: same CA, new key and certificate."""
    assert ensure_certs(ca_dir).action == "renewed"


def key_then_certificate(ca_dir: Path, served: Path, load: Load) -> None:
    """The order ensure_certs writes in, with new connections made between the key and the certificate.

    In between, the files on disk do not match: those connections must still succeed, with the old pair.
    """
    staging = served.parent / "staging"
    staging.mkdir()
    for name in ("ca.crt", "ca.key"):
        shutil.copy2(ca_dir / name, staging / name)
    assert ensure_certs(staging).action == "renewed"
    old_serial = serial_of_file(served / "tls.crt")
    shutil.copy2(staging / "tls.key", served / ".tls.key.new")
    os.replace(served / ".tls.key.new", served / "tls.key")
    replaced_at = time.monotonic()
    wait_for(
        lambda: load.failures or len(load.connections_after(replaced_at)) >= 6,
        120,
        "connections while only the key is new",
    )
    assert not load.failures, load.failures
    assert set(load.connections_after(replaced_at)) == {old_serial}
    shutil.copy2(staging / "tls.crt", served / ".tls.crt.new")
    os.replace(served / ".tls.crt.new", served / "tls.crt")


def secret_volume_layout(ca_dir: Path, mount: Path) -> None:
    """What the kubelet makes of a TLS Secret: files behind ``..data`` -> a timestamped directory."""
    mount.mkdir()
    version = mount / "..2025_01_01_00_00_00.000000001"
    version.mkdir()
    for name in ("tls.crt", "tls.key"):
        shutil.copy2(ca_dir / name, version / name)
        os.symlink(f"..data/{name}", mount / name)
    os.symlink(version.name, mount / "..data")


def secret_volume_update(ca_dir: Path, mount: Path, _load: Load) -> None:
    """The kubelet's atomic update of a Secret volume: new directory, ``..data`` swapped, old one removed."""
    assert ensure_certs(ca_dir).action == "renewed"
    old = mount / os.readlink(mount / "..data")
    version = mount / "..2025_02_01_00_00_00.000000002"
    version.mkdir()
    for name in ("tls.crt", "tls.key"):
        shutil.copy2(ca_dir / name, version / name)
    os.symlink(version.name, mount / "..data_tmp")
    os.replace(mount / "..data_tmp", mount / "..data")
    shutil.rmtree(old)


@pytest.mark.parametrize("style", ["renew-in-place", "secret-volume", "key-then-certificate"])
def test_rotation_under_load(style: str, tmp_path: Path, dedicated_server: Any) -> None:
    ca_dir = tmp_path / "certs"
    ensure_certs(ca_dir, days=10)  # expires within the renewal window: the next ensure_certs renews it
    if style == "secret-volume":
        served = tmp_path / "secret"
        secret_volume_layout(ca_dir, served)
        rotate: Callable[[Path, Path, Load], None] = secret_volume_update
    else:
        served = ca_dir
        rotate = renew_in_place if style == "renew-in-place" else key_then_certificate
    tls = TLSFiles(dir=served, ca=ca_dir / "ca.crt", cert=served / "tls.crt", key=served / "tls.key")
    srv = dedicated_server(tls, POLICIES_DIR, name=style)
    old_serial = serial_of_file(tls.cert)
    context = ssl.create_default_context(cafile=str(tls.ca))

    load = Load(srv.port, context)
    load.start()
    try:
        wait_for(lambda: load.failures or (load.done >= 30 and load.long_done >= 10), 120, "requests before rotation")
        assert not load.failures, load.failures
        long_before = load.long_done
        rotate(ca_dir, served, load)
        rotated_at = time.monotonic()
        new_serial = serial_of_file(tls.cert)
        assert new_serial != old_serial
        wait_for(
            lambda: (
                load.failures or (len(load.connections_after(rotated_at)) >= 8 and load.long_done >= long_before + 20)
            ),
            120,
            "connections and requests after rotation",
        )
    finally:
        load.finish()

    assert not load.failures, load.failures
    assert any(serial == old_serial for _, serial in load.connections), "no connection before the rotation"
    after = load.connections_after(rotated_at)
    assert after and all(serial == new_serial for serial in after), (
        f"connections opened after the rotation presented {sorted(set(after))}, expected {new_serial}"
    )
    # the connection open across the rotation kept its certificate and kept working
    assert load.long_serial == old_serial and load.long_done >= long_before + 20

    # the expiry metric follows the file; the log says which certificate is now served
    expiry = load_not_after(tls.cert).timestamp()
    assert metric(scrape(srv), "spreadguard_certificate_expiry_timestamp_seconds") == expiry
    reloaded = [
        line
        for line in json_log_lines(srv.log_text())
        if line.get("msg") == "serving a new TLS certificate on new connections"
    ]
    assert reloaded and all(line["serial"] == format(new_serial, "x") for line in reloaded)
    if style == "key-then-certificate":
        assert any(
            "did not load" in line.get("msg", "") and line["level"] == "warning"
            for line in json_log_lines(srv.log_text())
        )


# --------------------------------------------------------------------------------- the cache itself


def test_context_cache_serves_the_last_good_pair_while_files_are_replaced(tmp_path: Path) -> None:
    served = tmp_path / "served"
    ensure_certs(served, days=10)
    staging = tmp_path / "staging"
    ensure_certs(staging)  # another pair, to copy in one file at a time

    class Conf:
        certfile = str(served / "tls.crt")
        keyfile = str(served / "tls.key")

    built: list[ssl.SSLContext] = []

    def factory() -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(Conf.certfile, Conf.keyfile)
        built.append(context)
        return context

    cache = serve._ContextCache()
    first = cache.get(Conf, factory)
    assert cache.get(Conf, factory) is first

    # the key is replaced first (as ensure_certs does): the pair does not match yet, the old context serves
    shutil.copy(staging / "tls.key", served / ".tls.key.tmp")
    os.replace(served / ".tls.key.tmp", served / "tls.key")
    assert cache.get(Conf, factory) is first
    assert cache.get(Conf, factory) is first

    # then the certificate: a new context
    shutil.copy(staging / "tls.crt", served / ".tls.crt.tmp")
    os.replace(served / ".tls.crt.tmp", served / "tls.crt")
    second = cache.get(Conf, factory)
    assert second is not first and second.minimum_version == ssl.TLSVersion.TLSv1_2

    # a file missing for a moment: the context in use stays
    os.rename(served / "tls.crt", served / "tls.crt.moved")
    assert cache.get(Conf, factory) is second
    os.rename(served / "tls.crt.moved", served / "tls.crt")
    assert cache.get(Conf, factory) is second


def test_context_cache_raises_when_nothing_loaded_yet(tmp_path: Path) -> None:
    served = tmp_path / "served"
    ensure_certs(served)
    other = tmp_path / "other"
    ensure_certs(other)

    class Conf:
        certfile = str(served / "tls.crt")
        keyfile = str(other / "tls.key")

    def factory() -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(Conf.certfile, Conf.keyfile)
        return context

    with pytest.raises(ssl.SSLError):
        serve._ContextCache().get(Conf, factory)
