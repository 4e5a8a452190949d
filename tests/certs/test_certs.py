"""Tests for webhook.certs: files, SANs, chain, a real TLS handshake, keep/renew/replace, and the CLI."""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import os
import socket
import ssl
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.verification import PolicyBuilder, Store

from webhook.certs import files as certs
from webhook.certs.files import CertError, ensure_certs

ROOT = Path(__file__).resolve().parents[2]


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def _sans(path: Path) -> tuple[set[str], set[str]]:
    san = _cert(path).extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return set(san.get_values_for_type(x509.DNSName)), {str(a) for a in san.get_values_for_type(x509.IPAddress)}


def _snapshot(out: Path) -> dict[str, bytes]:
    return {name: (out / name).read_bytes() for name in ("ca.crt", "ca.key", "tls.crt", "tls.key")}


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_creates_files_with_private_keys_0600(tmp_path: Path) -> None:
    out = tmp_path / "nested" / "certs"
    result = ensure_certs(out)
    assert result.action == "created"
    assert (result.ca_path, result.cert_path, result.key_path) == (out / "ca.crt", out / "tls.crt", out / "tls.key")
    for name in ("ca.key", "tls.key"):
        assert _mode(out / name) == 0o600, name
    umask = os.umask(0)
    os.umask(umask)
    for name in ("ca.crt", "tls.crt"):
        assert _mode(out / name) == 0o644 & ~umask, name
    assert sorted(p.name for p in out.iterdir()) == ["ca.crt", "ca.key", "tls.crt", "tls.key"]  # no temp files left
    assert base64.b64decode(result.ca_bundle_b64) == (out / "ca.crt").read_bytes()
    assert result.not_after == certs.load_not_after(out / "tls.crt")
    remaining = result.not_after - dt.datetime.now(dt.UTC)
    assert dt.timedelta(days=364) < remaining <= dt.timedelta(days=365)


def test_sans_cn_and_extensions(tmp_path: Path) -> None:
    ensure_certs(
        tmp_path,
        dns=["spreadguard.spreadguard.svc", "spreadguard.spreadguard.svc.cluster.local"],
        ips=["10.0.0.5", "fd00::5"],
    )
    dns, ips = _sans(tmp_path / "tls.crt")
    assert dns == {"localhost", "spreadguard.spreadguard.svc", "spreadguard.spreadguard.svc.cluster.local"}
    assert ips == {"127.0.0.1", "10.0.0.5", "fd00::5"}
    leaf, ca = _cert(tmp_path / "tls.crt"), _cert(tmp_path / "ca.crt")
    cn = leaf.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value
    assert cn == "spreadguard.spreadguard.svc"
    assert leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert x509.ExtendedKeyUsageOID.SERVER_AUTH in eku
    leaf.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    ku = ca.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.key_cert_sign and ku.crl_sign
    ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)


def test_default_cn(tmp_path: Path) -> None:
    ensure_certs(tmp_path)
    leaf = _cert(tmp_path / "tls.crt")
    assert leaf.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value == "spreadguard"
    assert _sans(tmp_path / "tls.crt") == ({"localhost"}, {"127.0.0.1"})


def test_chain_verifies(tmp_path: Path) -> None:
    ensure_certs(tmp_path, dns=["svc.ns.svc"], ips=["::1"])
    leaf, ca = _cert(tmp_path / "tls.crt"), _cert(tmp_path / "ca.crt")
    leaf.verify_directly_issued_by(ca)
    certs.verify_chain(tmp_path / "ca.crt", tmp_path / "tls.crt")
    # the strict RFC 5280 / CA-Browser-Forum profile of cryptography's verifier accepts it for every SAN
    store = Store([ca])
    for subject in (
        x509.DNSName("localhost"),
        x509.DNSName("svc.ns.svc"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("::1")),
    ):
        PolicyBuilder().store(store).build_server_verifier(subject).verify(leaf, [])


def test_verify_chain_rejects_other_ca(tmp_path: Path) -> None:
    ensure_certs(tmp_path / "a")
    ensure_certs(tmp_path / "b")
    with pytest.raises(CertError, match="not signed by"):
        certs.verify_chain(tmp_path / "a" / "ca.crt", tmp_path / "b" / "tls.crt")
    with pytest.raises(CertError, match="does not exist"):
        certs.load_not_after(tmp_path / "missing.crt")


def _handshake(out: Path, server_hostname: str) -> bytes:
    """Serve one TLS connection with tls.crt/tls.key; connect trusting only ca.crt; return what was read."""
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(out / "tls.crt", out / "tls.key")
    client_ctx = ssl.create_default_context(cafile=str(out / "ca.crt"))  # trusts only our CA
    client_ctx.verify_flags |= ssl.VERIFY_X509_STRICT  # the default from Python 3.13 on
    assert client_ctx.check_hostname and client_ctx.verify_mode == ssl.CERT_REQUIRED

    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(5)
    port = listener.getsockname()[1]
    errors: list[BaseException] = []

    def serve() -> None:
        try:
            conn, _ = listener.accept()
            with server_ctx.wrap_socket(conn, server_side=True) as tls:
                tls.sendall(b"ok")
        except (OSError, ssl.SSLError) as exc:
            errors.append(exc)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
            with client_ctx.wrap_socket(raw, server_hostname=server_hostname) as tls:
                return tls.recv(2)
    finally:
        thread.join(5)
        listener.close()


@pytest.mark.parametrize("hostname", ["localhost", "127.0.0.1", "spreadguard.spreadguard.svc", "::1"])
def test_tls_handshake(tmp_path: Path, hostname: str) -> None:
    ensure_certs(tmp_path, dns=["spreadguard.spreadguard.svc"], ips=["::1"])
    assert _handshake(tmp_path, hostname) == b"ok"


def test_tls_handshake_rejects_unlisted_name(tmp_path: Path) -> None:
    ensure_certs(tmp_path)
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(tmp_path, "other.example")


def test_rerun_keeps_same_bytes(tmp_path: Path) -> None:
    ensure_certs(tmp_path, dns=["a.example"], ips=["10.1.2.3"])
    before = _snapshot(tmp_path)
    result = ensure_certs(tmp_path, dns=["A.example"], ips=["10.1.2.3"])  # DNS names compare case-insensitively
    assert result.action == "kept"
    assert _snapshot(tmp_path) == before
    assert base64.b64decode(result.ca_bundle_b64) == before["ca.crt"]
    assert ensure_certs(tmp_path).action == "kept"  # asking for fewer SANs than present is fine


def test_expiring_cert_is_renewed_with_same_ca(tmp_path: Path) -> None:
    first = ensure_certs(tmp_path, days=10)
    before = _snapshot(tmp_path)
    result = ensure_certs(tmp_path)
    assert result.action == "renewed"
    after = _snapshot(tmp_path)
    assert after["ca.crt"] == before["ca.crt"] and after["ca.key"] == before["ca.key"]
    assert after["tls.crt"] != before["tls.crt"] and after["tls.key"] != before["tls.key"]
    assert result.ca_bundle_b64 == first.ca_bundle_b64
    assert result.not_after - dt.datetime.now(dt.UTC) > dt.timedelta(days=300)
    certs.verify_chain(tmp_path / "ca.crt", tmp_path / "tls.crt")
    assert _mode(tmp_path / "tls.key") == 0o600
    assert ensure_certs(tmp_path).action == "kept"


def test_new_san_triggers_renewal(tmp_path: Path) -> None:
    ensure_certs(tmp_path)
    ca_before = (tmp_path / "ca.crt").read_bytes()
    result = ensure_certs(tmp_path, dns=["spreadguard.spreadguard.svc"], ips=["192.168.1.10"])
    assert result.action == "renewed"
    assert (tmp_path / "ca.crt").read_bytes() == ca_before
    dns, ips = _sans(tmp_path / "tls.crt")
    assert "spreadguard.spreadguard.svc" in dns and "192.168.1.10" in ips
    assert ensure_certs(tmp_path, ips=["192.168.1.10"]).action == "kept"


def test_force_replaces_everything(tmp_path: Path) -> None:
    ensure_certs(tmp_path)
    before = _snapshot(tmp_path)
    result = ensure_certs(tmp_path, force=True)
    assert result.action == "replaced"
    after = _snapshot(tmp_path)
    assert all(after[name] != before[name] for name in before)
    assert _mode(tmp_path / "ca.key") == 0o600 and _mode(tmp_path / "tls.key") == 0o600
    certs.verify_chain(tmp_path / "ca.crt", tmp_path / "tls.crt")


def test_corrupt_tls_crt_is_replaced(tmp_path: Path) -> None:
    ensure_certs(tmp_path)
    ca_before = (tmp_path / "ca.crt").read_bytes()
    (tmp_path / "tls.crt").write_text("-----BEGIN CERTIFICATE-----\ngarbage\n")
    result = ensure_certs(tmp_path)
    assert result.action == "replaced"
    assert (tmp_path / "ca.crt").read_bytes() == ca_before  # an intact CA is re-used: caBundles stay valid
    certs.verify_chain(tmp_path / "ca.crt", tmp_path / "tls.crt")
    assert _handshake(tmp_path, "localhost") == b"ok"


def test_corrupt_ca_replaces_everything(tmp_path: Path) -> None:
    ensure_certs(tmp_path)
    before = _snapshot(tmp_path)
    (tmp_path / "ca.crt").write_bytes(b"")
    result = ensure_certs(tmp_path)
    assert result.action == "replaced"
    assert (tmp_path / "ca.key").read_bytes() != before["ca.key"]
    certs.verify_chain(tmp_path / "ca.crt", tmp_path / "tls.crt")


def test_mismatched_key_or_missing_ca_key(tmp_path: Path) -> None:
    ensure_certs(tmp_path / "a")
    ensure_certs(tmp_path / "b")
    (tmp_path / "a" / "tls.key").write_bytes((tmp_path / "b" / "tls.key").read_bytes())
    assert ensure_certs(tmp_path / "a").action == "renewed"  # key does not match tls.crt
    certs.verify_chain(tmp_path / "a" / "ca.crt", tmp_path / "a" / "tls.crt")

    (tmp_path / "b" / "ca.key").unlink()
    assert ensure_certs(tmp_path / "b").action == "kept"  # the serving pair is fine; ca.key only matters later
    assert ensure_certs(tmp_path / "b", dns=["new.example"]).action == "replaced"  # cannot sign without ca.key
    certs.verify_chain(tmp_path / "b" / "ca.crt", tmp_path / "b" / "tls.crt")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"ips": ["nonsense"]}, "invalid IP address 'nonsense'"),
        ({"ips": ["10.0.0.0/8"]}, "invalid IP address"),
        ({"days": 0}, "days must be"),
        ({"dns": ["bad name"]}, "invalid DNS name"),
        ({"dns": ["-bad.example"]}, "invalid DNS name"),
        ({"dns": ["10.0.0.1"]}, "is an IP address"),
    ],
)
def test_invalid_input(tmp_path: Path, kwargs: dict, message: str) -> None:
    with pytest.raises(CertError, match=message) as info:
        ensure_certs(tmp_path / "out", **kwargs)
    assert "\n" not in str(info.value)
    assert not (tmp_path / "out").exists()  # nothing written for bad input


def test_unwritable_directory(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(CertError, match="not a directory"):
        ensure_certs(blocker)
    with pytest.raises(CertError, match="cannot create directory"):
        ensure_certs(blocker / "sub")


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root ignores directory permissions")
def test_read_only_directory(tmp_path: Path) -> None:
    out = tmp_path / "ro"
    out.mkdir()
    out.chmod(0o500)
    try:
        with pytest.raises(CertError, match="not writable"):
            ensure_certs(out)
    finally:
        out.chmod(0o700)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "webhook.cli", "certs", "generate", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_cli_generate(tmp_path: Path) -> None:
    proc = _cli("--out", str(tmp_path), "--dns", "spreadguard.spreadguard.svc", "--ip", "10.0.0.7")
    assert proc.returncode == 0, proc.stderr
    assert base64.b64decode(proc.stdout.strip(), validate=True) == (tmp_path / "ca.crt").read_bytes()
    assert proc.stderr.startswith("created: ")
    assert "10.0.0.7" in _sans(tmp_path / "tls.crt")[1]


def test_cli_bad_ip(tmp_path: Path) -> None:
    proc = _cli("--out", str(tmp_path / "out"), "--ip", "nonsense")
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("spreadguard: error: ") and "nonsense" in lines[0]
    assert "Traceback" not in proc.stderr
