"""Development TLS certificates: a small CA and a serving certificate signed by it.

``ensure_certs`` writes ``ca.crt``, ``ca.key``, ``tls.crt`` and ``tls.key`` into a directory and is safe to re-run:
valid certificates are kept, a serving certificate close to expiry (or missing a requested SAN) is re-issued by the
same CA so existing ``caBundle``s stay valid, and unusable files are replaced. Every file is written atomically
(temporary file in the same directory, then ``os.replace``) so a server watching them never reads half a file.
"""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import os
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
    CertificatePublicKeyTypes,
    PrivateKeyTypes,
)
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_CERT = "ca.crt"
CA_KEY = "ca.key"
TLS_CERT = "tls.crt"
TLS_KEY = "tls.key"

RENEW_BEFORE = dt.timedelta(days=30)  # keep nothing that expires sooner than this
CA_DAYS = 3650  # the CA outlives many serving certificates, so renewals keep the same caBundle
MAX_DAYS = 36500
CLOCK_SKEW = dt.timedelta(minutes=5)  # backdate notBefore a little for peers with slow clocks
DEFAULT_CN = "spreadguard"
CA_CN = "spreadguard development CA"
ALWAYS_DNS = ("localhost",)
ALWAYS_IPS = ("127.0.0.1",)

IPAddr = ipaddress.IPv4Address | ipaddress.IPv6Address


class CertError(Exception):
    """Bad input or a filesystem problem; the message is one line, fit for the CLI."""


@dataclass
class CertResult:
    """What ``ensure_certs`` did and where the files are.

    ``action`` is ``created`` (nothing was there), ``kept`` (existing files are fine), ``renewed`` (new serving
    certificate from the existing CA) or ``replaced`` (``force``, unreadable files, or an unusable CA).
    ``ca_bundle_b64`` is the base64 of ``ca.crt``'s PEM, for a webhook configuration's ``caBundle``.
    """

    action: str
    ca_path: Path
    cert_path: Path
    key_path: Path
    not_after: dt.datetime
    ca_bundle_b64: str


@dataclass
class _Existing:
    """Parsed files from a previous run; ``None`` where missing or unreadable."""

    ca_cert: x509.Certificate | None = None
    ca_key: CertificateIssuerPrivateKeyTypes | None = None
    cert: x509.Certificate | None = None
    key: PrivateKeyTypes | None = None
    corrupt: tuple[str, ...] = ()
    any_present: bool = False


def ensure_certs(
    out: str | Path,
    dns: Sequence[str] = (),
    ips: Sequence[str] = (),
    days: int = 365,
    force: bool = False,
) -> CertResult:
    """Create, keep, renew or replace the CA and serving certificate in ``out``.

    SANs always include ``localhost`` and ``127.0.0.1`` plus every name in ``dns`` and address in ``ips``.
    Raises ``CertError`` for invalid input or when the directory cannot be written.
    """
    dns_names = _check_dns(dns)
    ip_addrs = _check_ips(ips)
    if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= MAX_DAYS:
        raise CertError(f"days must be a whole number from 1 to {MAX_DAYS}, got {days!r}")

    out_dir = Path(out)
    _make_dir(out_dir)
    paths = {name: out_dir / name for name in (CA_CERT, CA_KEY, TLS_CERT, TLS_KEY)}
    now = _now()
    existing = _load_existing(paths)

    if force or not existing.any_present:
        action = "replaced" if existing.any_present else "created"
        ca_cert, ca_key = None, None
    elif _keepable(existing, dns_names, ip_addrs, now):
        assert existing.cert is not None
        return _result("kept", paths, existing.cert)
    else:
        ca_ok = _ca_reusable(existing, now)
        ca_cert, ca_key = (existing.ca_cert, existing.ca_key) if ca_ok else (None, None)
        action = "renewed" if ca_ok and not existing.corrupt else "replaced"

    if ca_cert is None or ca_key is None:
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_cert = _make_ca(ca_key, now, max(CA_DAYS, days))
        _write(paths[CA_KEY], _key_pem(ca_key), secret=True)
        _write(paths[CA_CERT], ca_cert.public_bytes(serialization.Encoding.PEM), secret=False)

    key = ec.generate_private_key(ec.SECP256R1())
    cert = _make_serving(key, ca_cert, ca_key, dns_names, ip_addrs, now, days)
    # key before certificate: servers that reload on a changed tls.crt then find the matching key already there
    _write(paths[TLS_KEY], _key_pem(key), secret=True)
    _write(paths[TLS_CERT], cert.public_bytes(serialization.Encoding.PEM), secret=False)
    return _result(action, paths, cert)


def load_not_after(cert_path: str | Path) -> dt.datetime:
    """The (UTC, timezone-aware) expiry of the first certificate in a PEM file."""
    return _load_cert_or_raise(Path(cert_path)).not_valid_after_utc


def verify_chain(ca_path: str | Path, cert_path: str | Path) -> None:
    """Raise ``CertError`` unless ``cert_path`` is signed by ``ca_path`` and both are currently valid."""
    ca = _load_cert_or_raise(Path(ca_path))
    cert = _load_cert_or_raise(Path(cert_path))
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature) as exc:
        raise CertError(f"{cert_path} is not signed by {ca_path}: {_one_line(exc) or 'bad signature'}") from None
    now = _now()
    for path, c in ((ca_path, ca), (cert_path, cert)):
        if not c.not_valid_before_utc <= now <= c.not_valid_after_utc:
            raise CertError(
                f"{path} is not valid now (valid {c.not_valid_before_utc:%Y-%m-%d %H:%M} to "
                f"{c.not_valid_after_utc:%Y-%m-%d %H:%M} UTC)"
            )


# --- input checks -------------------------------------------------------------------------------------------------


def _check_dns(names: Sequence[str]) -> list[str]:
    result: list[str] = []
    for name in [*ALWAYS_DNS, *names]:
        if not isinstance(name, str):
            raise CertError(f"DNS name must be a string, got {name!r}")
        if _parse_ip(name) is not None:
            raise CertError(f"DNS name {name!r} is an IP address; give it as an IP SAN (--ip) instead")
        if not name.isascii():
            raise CertError(f"DNS name {name!r} is not ASCII; give internationalised names in punycode (xn--...)")
        labels = name.split(".")
        if len(name) > 253 or not all(_valid_label(label, first=i == 0) for i, label in enumerate(labels)):
            raise CertError(f"invalid DNS name {name!r}")
        if name.lower() not in {n.lower() for n in result}:
            result.append(name)
    return result


def _valid_label(label: str, first: bool) -> bool:
    if first and label == "*":
        return True
    if not 1 <= len(label) <= 63 or label[0] == "-" or label[-1] == "-":
        return False
    return all(c.isalnum() or c in "-_" for c in label)


def _check_ips(values: Sequence[str]) -> list[IPAddr]:
    result: list[IPAddr] = []
    for value in [*ALWAYS_IPS, *values]:
        addr = _parse_ip(value) if isinstance(value, str) else None
        if addr is None:
            raise CertError(f"invalid IP address {value!r} (expected e.g. 10.0.0.5 or fd00::5)")
        if addr not in result:
            result.append(addr)
    return result


def _parse_ip(value: str) -> IPAddr | None:
    try:
        addr = ipaddress.ip_address(value)
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.scope_id:
        return None  # a zone index ("%eth0") has no place in a certificate
    return addr


# --- reading what is there ----------------------------------------------------------------------------------------


def _load_existing(paths: dict[str, Path]) -> _Existing:
    found = _Existing()
    corrupt: list[str] = []
    for name, loader in (
        (CA_CERT, x509.load_pem_x509_certificate),
        (TLS_CERT, x509.load_pem_x509_certificate),
        (CA_KEY, _load_key),
        (TLS_KEY, _load_key),
    ):
        data = _read(paths[name])
        if data is None:
            continue
        if name != CA_KEY:
            found.any_present = True  # a lone ca.key (no ca.crt) cannot be used and counts as nothing
        try:
            obj = loader(data)
        except (ValueError, TypeError, UnsupportedAlgorithm):
            corrupt.append(name)
            continue
        if name == CA_CERT:
            found.ca_cert = obj  # type: ignore[assignment]
        elif name == TLS_CERT:
            found.cert = obj  # type: ignore[assignment]
        elif name == CA_KEY:
            # only keys we know how to sign with (ours are EC; an RSA CA brought along also works)
            found.ca_key = obj if isinstance(obj, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) else None
        else:
            found.key = obj  # type: ignore[assignment]
    found.corrupt = tuple(corrupt)
    return found


def _load_key(data: bytes) -> PrivateKeyTypes:
    return serialization.load_pem_private_key(data, password=None)


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise CertError(f"cannot read {path}: {exc.strerror or exc}") from None


def _load_cert_or_raise(path: Path) -> x509.Certificate:
    data = _read(path)
    if data is None:
        raise CertError(f"{path} does not exist")
    try:
        return x509.load_pem_x509_certificate(data)
    except ValueError:
        raise CertError(f"{path} is not a PEM certificate") from None


def _keepable(found: _Existing, dns_names: list[str], ip_addrs: list[IPAddr], now: dt.datetime) -> bool:
    cert, key, ca = found.cert, found.key, found.ca_cert
    if cert is None or key is None or ca is None:
        return False
    if not _valid_for(cert, now) or not _valid_for(ca, now):
        return False
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    if _spki(cert.public_key()) != _spki(key.public_key()):  # type: ignore[arg-type]
        return False
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    have_dns = {n.lower() for n in san.get_values_for_type(x509.DNSName)}
    have_ips = set(san.get_values_for_type(x509.IPAddress))
    return {n.lower() for n in dns_names} <= have_dns and set(ip_addrs) <= have_ips


def _ca_reusable(found: _Existing, now: dt.datetime) -> bool:
    ca, key = found.ca_cert, found.ca_key
    if ca is None or key is None or not _valid_for(ca, now):
        return False
    try:
        if not ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca:
            return False
    except x509.ExtensionNotFound:
        return False
    return _spki(ca.public_key()) == _spki(key.public_key())


def _valid_for(cert: x509.Certificate, now: dt.datetime) -> bool:
    """Valid now and for more than ``RENEW_BEFORE`` to come."""
    return cert.not_valid_before_utc <= now + CLOCK_SKEW and cert.not_valid_after_utc - now > RENEW_BEFORE


def _spki(public_key: CertificatePublicKeyTypes) -> bytes:
    return public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


# --- making certificates ------------------------------------------------------------------------------------------


def _make_ca(key: ec.EllipticCurvePrivateKey, now: dt.datetime, days: int) -> x509.Certificate:
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "spreadguard"),
            x509.NameAttribute(NameOID.COMMON_NAME, CA_CN),
        ]
    )
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
        .sign(key, hashes.SHA256())
    )


def _make_serving(
    key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    ca_key: CertificateIssuerPrivateKeyTypes,
    dns_names: list[str],
    ip_addrs: list[IPAddr],
    now: dt.datetime,
    days: int,
) -> x509.Certificate:
    given = [n for n in dns_names if n not in ALWAYS_DNS]
    cn = given[0] if given and len(given[0]) <= 64 else DEFAULT_CN
    # a certificate must not outlive its issuer, or the chain breaks before the leaf expires
    not_after = min(now + dt.timedelta(days=days), ca_cert.not_valid_after_utc)
    try:
        ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        aki = x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski)
    except x509.ExtensionNotFound:
        aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key())  # type: ignore[arg-type]
    san = [x509.DNSName(n) for n in dns_names] + [x509.IPAddress(a) for a in ip_addrs]
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(san), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(aki, critical=False)
        .sign(ca_key, hashes.SHA256())
    )


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


# --- writing ------------------------------------------------------------------------------------------------------


def _make_dir(out_dir: Path) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise CertError(f"{out_dir} exists and is not a directory")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CertError(f"cannot create directory {out_dir}: {exc.strerror or exc}") from None
    if not os.access(out_dir, os.W_OK | os.X_OK):
        raise CertError(f"directory {out_dir} is not writable")


def _write(path: Path, data: bytes, secret: bool) -> None:
    """Atomically replace ``path``; secrets are created with mode 0600 from the start."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        fd = os.open(
            tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o600 if secret else 0o644
        )
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    except OSError as exc:
        raise CertError(f"cannot write {path}: {exc.strerror or exc}") from None
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # not supported everywhere; the rename is still atomic
    finally:
        os.close(fd)


def _result(action: str, paths: dict[str, Path], cert: x509.Certificate) -> CertResult:
    ca_pem = _read(paths[CA_CERT]) or b""
    return CertResult(
        action=action,
        ca_path=paths[CA_CERT],
        cert_path=paths[TLS_CERT],
        key_path=paths[TLS_KEY],
        not_after=cert.not_valid_after_utc,
        ca_bundle_b64=base64.b64encode(ca_pem).decode("ascii"),
    )


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())
