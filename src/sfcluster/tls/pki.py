"""The cluster's certificate authority, kept on the controller, and the node certificates it issues.

The CA lives in <state dir>/<cluster>/ca (sfcluster.state.state_dir(); 0700): `ca.key` (0600, PEM,
PKCS8, NOT encrypted) and `ca.pem`. The key never leaves the controller: nodes get only their own
key, their certificate and `ca.pem`. Whoever reads `ca.key` can join or impersonate any node of the
cluster, so guard and back it up like an SSH private key; losing it means a new CA and new
certificates for every node (`sfcluster down --purge`, then `sfcluster up`). A CA dir or key that is a link, another user's, or open to group
or others is refused, never used. A CA appears whole or not at all: it is written into a fresh
private directory that is then renamed into place, so concurrent `ensure_ca` calls agree on one.
A rotation (`up --rotate-certs`, replace_ca) is a NEW CA: the old one is moved aside and deleted, so
every certificate it issued (a leaked node key's too) stops verifying once the nodes hold the new
`ca.pem`. There is no revocation list: Ray's and SPU's TLS would not read one.
"""
from __future__ import annotations

import errno
import hashlib
import ipaddress
import os
import shutil
import stat
import tempfile
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import List, Optional, Sequence, Tuple, Union

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from sfcluster import state
from sfcluster.errors import SfclusterError
from sfcluster.inventory.model import SAFE_NAME

KEY_FILE, CERT_FILE = "ca.key", "ca.pem"
CA_DAYS = 3650
NODE_DAYS = 365
CLOCK_SKEW = timedelta(minutes=5)   # node certificates are valid from a little before they were made
FAIL_DAYS, WARN_DAYS = 7, 30        # verify_node_cert: fewer days left than this fails / warns
FAIL, WARN = "FAIL", "WARN"         # the levels of verify_node_cert (equal to doctor's Status values)
ROTATE = "`sfcluster up --rotate-certs`"   # a new CA, every node's certificate reissued from it
NEW_CA = "`sfcluster down --purge` (removes the CA and every node's certificates), then `sfcluster up`"

Finding = Tuple[str, str]           # (FAIL or WARN, one-line message)
SanName = Union[x509.DNSName, x509.IPAddress]


def ca_dir(cluster_name: str) -> Path:
    """Where the cluster's CA lives on the controller."""
    if not SAFE_NAME.match(cluster_name):
        raise SfclusterError(f"bad cluster name {cluster_name!r}: no CA directory for it")
    return state.state_dir() / cluster_name / "ca"


@dataclass(frozen=True)
class CA:
    """A loaded cluster CA: its key (in memory only) and its self-signed certificate."""

    cluster: str
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def issue(self, node_name: str, names: Sequence[str], days: int = NODE_DAYS) -> Tuple[bytes, bytes]:
        """A fresh key and certificate for one node, usable as TLS server AND client: (key PEM
        (PKCS8, unencrypted), cert PEM). `names` (host names, IP literals) go into the SAN."""
        if not node_name or len(node_name) > 64:
            raise SfclusterError(f"bad node name {node_name!r} for a certificate (1 to 64 characters)")
        if days < 1:
            raise SfclusterError(f"a node certificate must be valid for at least a day, not {days}")
        sans = san_entries(names)
        if not sans:
            raise SfclusterError(f"no host name or address to certify for node '{node_name}'")
        now = datetime.now(timezone.utc)
        ca_end = self.cert.not_valid_after_utc
        if ca_end <= now + CLOCK_SKEW:
            raise SfclusterError(f"the CA of cluster '{self.cluster}' expired on {ca_end:%Y-%m-%d}",
                                 f"start a new CA: {ROTATE}")
        key = ec.generate_private_key(ec.SECP256R1())
        not_after = min(now + timedelta(days=days), ca_end)  # never outlives the CA
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, node_name)]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - CLOCK_SKEW)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_agreement=True, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False, key_cert_sign=False,
                                         crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        return _key_pem(key), cert.public_bytes(serialization.Encoding.PEM)


def san_entries(names: Sequence[str]) -> List[SanName]:
    """`names` as SAN entries, in order, without repeats: an IP literal as IPAddress, anything
    else as a (lower-case) DNSName."""
    out: List[SanName] = []
    for name in names:
        entry = _san_entry(name)
        if entry not in out:
            out.append(entry)
    return out


def _san_entry(name: str) -> SanName:
    if not isinstance(name, str) or not name.strip():
        raise SfclusterError(f"bad name {name!r} for a certificate: expected a host name or an IP address")
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        pass
    try:
        return x509.DNSName(name.lower())
    except ValueError as e:  # non-ASCII: cryptography wants the IDNA A-label
        raise SfclusterError(f"bad host name {name!r} for a certificate: {e}") from e


# --- the CA on disk ---------------------------------------------------------------------------

def load_ca(cluster_name: str) -> Optional[CA]:
    """The cluster's CA, or None when it has none yet. Raises SfclusterError for a CA dir or files
    that are unsafe (a link, not ours, open to others), incomplete or unreadable."""
    d = ca_dir(cluster_name)
    if not _check_dir(d):
        return None
    key_pem = _read(d / KEY_FILE, secret=True)
    cert_pem = _read(d / CERT_FILE, secret=False)
    if key_pem is None and cert_pem is None:
        return None  # an empty dir: nothing was ever committed here
    if key_pem is None or cert_pem is None:
        missing = d / (KEY_FILE if key_pem is None else CERT_FILE)
        raise SfclusterError(f"the CA of cluster '{cluster_name}' is incomplete: {missing} is missing",
                             f"restore it from your backup, or start a new CA: {NEW_CA}")
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
        cert = x509.load_pem_x509_certificate(cert_pem)
    except (ValueError, TypeError) as e:  # TypeError: an encrypted key
        raise SfclusterError(f"cannot read the CA of cluster '{cluster_name}' in {d}: {e}",
                             f"restore it from your backup, or start a new CA: {NEW_CA}") from e
    if not isinstance(key, ec.EllipticCurvePrivateKey) or _pub(key.public_key()) != _pub(cert.public_key()):
        raise SfclusterError(f"{d / KEY_FILE} is not the key of {d / CERT_FILE}",
                             f"restore both from your backup, or start a new CA: {NEW_CA}")
    return CA(cluster_name, key, cert)


def ensure_ca(cluster_name: str) -> CA:
    """The cluster's CA, created when it has none (EC P-256, self-signed, 10 years)."""
    ca = load_ca(cluster_name)
    if ca is not None:
        return ca
    d = ca_dir(cluster_name)
    _make_private_dirs(d.parent)
    fresh = new_ca(cluster_name)
    # Written whole into a private temp dir, then renamed to `ca`: rename(2) fails when `ca` exists
    # and is not empty, so a concurrent creator that got there first wins and we use its CA.
    tmp: Optional[str] = tempfile.mkdtemp(prefix=".ca.", suffix=".tmp", dir=d.parent)  # 0700
    try:
        _write_new(os.path.join(tmp, KEY_FILE), _key_pem(fresh.key))
        _write_new(os.path.join(tmp, CERT_FILE), fresh.cert_pem)
        _fsync(tmp)
        try:
            os.rename(tmp, d)
        except OSError as e:
            if e.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                raise SfclusterError(f"cannot create the CA of cluster '{cluster_name}' in {d}: {e}") from e
        else:
            tmp = None
            _fsync(str(d.parent))
            return fresh
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    ca = load_ca(cluster_name)
    if ca is None:
        raise SfclusterError(f"the CA of cluster '{cluster_name}' vanished while it was being created in {d}",
                             "another sfcluster removed it meanwhile: retry")
    return ca


def ca_cert_problem(data: bytes, now: Optional[datetime] = None) -> Optional[str]:
    """Why `data` is not exactly one usable CA certificate in PEM (a peer organisation's, as its
    `sfcluster ca` printed it); None when it is."""
    if b"PRIVATE KEY" in data:
        return ("holds a private key: a party's CA key never leaves its own controller; put only the "
                "certificate here (what that party's `sfcluster ca` prints)")
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError:
        return "not a PEM certificate (expected what that party's `sfcluster ca` prints)"
    if len(certs) != 1:
        return f"{len(certs)} certificates: expected exactly one, that party's CA"
    cert = certs[0]
    try:
        ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        ca = False
    if not ca:
        return "not a CA certificate (no basicConstraints CA:TRUE): a node's certificate, not its party's CA?"
    if cert.not_valid_after_utc <= _utc(now):
        return f"expired on {cert.not_valid_after_utc:%Y-%m-%d}: ask that party for its current CA certificate"
    return None


def trust_bundle(own: bytes, peers: Sequence[bytes]) -> bytes:
    """A node's `ca.pem` in a federation: its own CA first, then each peer organisation's, each
    once (OpenSSL, under brpc and SPU, verifies a peer against any certificate of the file)."""
    out: List[bytes] = []
    for pem in (own, *peers):
        pem = pem.strip() + b"\n"
        if pem not in out:
            out.append(pem)
    return b"".join(out)


def purge_ca(cluster_name: str) -> None:
    """Remove the cluster's CA (a link there is removed, never followed). Moved aside first, so a
    concurrent reader sees the whole CA or none."""
    d = ca_dir(cluster_name)
    _remove(_move_aside(d))
    _remove_old(d.parent)


def replace_ca(cluster_name: str, fresh: Optional[CA] = None) -> CA:
    """A NEW CA for the cluster in place of the old one (`up --rotate-certs`): `fresh` (new_ca), or
    one made here. The old CA is moved aside and deleted (whatever is there: a link is removed, never
    followed; an incomplete or unreadable CA goes too), so nothing it issued can be reissued or
    trusted by this controller again. A reader sees the old CA, then none, then the new one."""
    fresh = fresh or new_ca(cluster_name)
    if fresh.cluster != cluster_name:
        raise SfclusterError(f"a CA of cluster '{fresh.cluster}' cannot replace the CA of cluster '{cluster_name}'")
    d = ca_dir(cluster_name)
    _make_private_dirs(d.parent)
    tmp: Optional[str] = tempfile.mkdtemp(prefix=".ca.", suffix=".tmp", dir=d.parent)  # 0700
    old: Optional[str] = None
    try:
        _write_new(os.path.join(tmp, KEY_FILE), _key_pem(fresh.key))
        _write_new(os.path.join(tmp, CERT_FILE), fresh.cert_pem)
        _fsync(tmp)
        old = _move_aside(d)
        try:
            os.rename(tmp, d)
        except OSError as e:
            raise SfclusterError(f"cannot put the new CA of cluster '{cluster_name}' in place at {d}: {e}",
                                 "another sfcluster made a CA there meanwhile; run `sfcluster up --rotate-certs` "
                                 "again when nothing else runs for this cluster on this controller") from e
        tmp = None
        _fsync(str(d.parent))
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        _remove(old)
    _remove_old(d.parent)
    return fresh


def _move_aside(d: Path) -> Optional[str]:
    """Rename whatever is at `d` (a dir, a link, a file) to a hidden `.ca.*.old` beside it; its new
    path, or None when nothing was there."""
    if not os.path.lexists(d):
        return None
    gone = f"{d.parent / '.ca'}.{os.getpid()}.{os.urandom(4).hex()}.old"
    os.rename(d, gone)
    return gone


def _remove(path: Optional[str]) -> None:
    """Delete `path` (a dir with what it holds; a link itself, never what it points at)."""
    if path is None:
        return
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(path)
    else:
        os.unlink(path)


def _remove_old(parent: Path) -> None:
    """Old CAs that an interrupted rotation or purge left beside `ca` (`.ca.*.old`): they hold
    keys that must not survive it."""
    try:
        names = os.listdir(parent)
    except FileNotFoundError:
        return
    for name in names:
        if name.startswith(".ca.") and name.endswith(".old"):
            try:
                _remove(str(parent / name))
            except OSError:
                pass  # a concurrent purge removing it too


def new_ca(cluster_name: str) -> CA:
    """A fresh CA (EC P-256, self-signed, CA_DAYS), in memory only: ensure_ca or replace_ca stores it."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"sfcluster CA {cluster_name}")])
    now = datetime.now(timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return CA(cluster_name, key, cert)


def _check_dir(d: Path) -> bool:
    """False when `d` is absent; raises when it is not a private directory of ours."""
    try:
        st = os.lstat(d)
    except FileNotFoundError:
        return False
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        raise _unsafe(d, "is not a directory (a link or a file is there)", f"remove {d} after checking what it is")
    if st.st_uid != os.getuid():
        raise _unsafe(d, f"belongs to uid {st.st_uid}, not to us (uid {os.getuid()})", f"remove {d}")
    if st.st_mode & 0o077:
        raise _unsafe(d, f"has mode {stat.S_IMODE(st.st_mode):o}: others can get in",
                      f"chmod 700 {d} after checking its contents")
    return True


def _read(path: Path, secret: bool) -> Optional[bytes]:
    """A regular file of ours (never through a link); None when absent. A secret must be 0600
    or stricter; any file must not be writable by others."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise _unsafe(path, "is a symbolic link", "remove the link and restore the file from your backup") from e
        raise SfclusterError(f"cannot read {path}: {e}") from e
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise _unsafe(path, "is not a regular file", "remove it and restore the file from your backup")
        if st.st_uid != os.getuid():
            raise _unsafe(path, f"belongs to uid {st.st_uid}, not to us (uid {os.getuid()})",
                          "restore the file from your backup as your own user")
        mode = stat.S_IMODE(st.st_mode)
        if mode & (0o077 if secret else 0o022):
            fix = f"chmod 600 {path}" + (f", and consider the key leaked: start a new CA: {NEW_CA}"
                                         if secret and mode & 0o044 else "")
            raise _unsafe(path, f"has mode {mode:o}: " + ("others can read or change the CA's private key"
                                                          if secret else "others can change it"), fix)
        return f.read()


def _unsafe(path: Union[Path, str], what: str, fix: str) -> SfclusterError:
    return SfclusterError(f"refusing the cluster CA: {path} {what}", fix)


def _make_private_dirs(path: Path) -> None:
    """Create `path` and its missing parents, each 0700; existing ones are left as they are."""
    missing = []
    p = path
    while not os.path.lexists(p) and p != p.parent:
        missing.append(p)
        p = p.parent
    for p in reversed(missing):
        try:
            os.mkdir(p, 0o700)
        except FileExistsError:
            pass


def _write_new(path: str, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _fsync(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _pub(public_key: CertificatePublicKeyTypes) -> bytes:
    return public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


# --- checking a node's certificate ------------------------------------------------------------

def cert_expiry(cert_pem: bytes) -> datetime:
    """When the certificate stops being valid (UTC)."""
    return x509.load_pem_x509_certificate(cert_pem).not_valid_after_utc


def days_left(cert_pem: bytes, now: Optional[datetime] = None) -> float:
    """Days until the certificate expires (negative once it has)."""
    return (cert_expiry(cert_pem) - _utc(now)).total_seconds() / 86400


def fingerprint(cert_pem: bytes) -> str:
    """SHA-256 of the certificate (DER), lower-case hex: what status and logs show."""
    der = x509.load_pem_x509_certificate(cert_pem).public_bytes(serialization.Encoding.DER)
    return hashlib.sha256(der).hexdigest()


def verify_node_cert(ca_pem: bytes, cert_pem: bytes, names: Sequence[str],
                     now: Optional[datetime] = None) -> List[Finding]:
    """What is wrong with a node's certificate, as (FAIL or WARN, message); empty when nothing is:
    it must be signed by this CA, usable as TLS server and client, name every one of `names` in its
    SAN, and be valid for more than FAIL_DAYS (WARN under WARN_DAYS)."""
    now = _utc(now)
    try:
        ca = x509.load_pem_x509_certificate(ca_pem)
    except ValueError as e:
        return [(FAIL, f"the cluster CA certificate cannot be read: {e}")]
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
    except ValueError as e:
        return [(FAIL, f"the node certificate cannot be read: {e}; issue a new one: {ROTATE}")]
    found: List[Finding] = []
    if cert.issuer != ca.subject:
        found.append((FAIL, f"the node certificate was issued by '{cert.issuer.rfc4514_string()}', not by this "
                            f"cluster's CA '{ca.subject.rfc4514_string()}'; issue a new one: {ROTATE}"))
    else:
        try:
            cert.verify_directly_issued_by(ca)
        except (InvalidSignature, ValueError, TypeError) as e:
            found.append((FAIL, f"the node certificate's signature does not verify with this cluster's CA key "
                                f"(an earlier CA of this cluster, replaced by a rotation, or another controller's "
                                f"CA issued it{': ' + str(e) if str(e) else ''}); "
                                f"issue a new one: {ROTATE}"))
    found += _usage_findings(cert)
    found += _name_findings(cert, names)
    found += _validity_findings(cert, "the node certificate", now, ROTATE)
    found += _validity_findings(ca, "the cluster CA certificate", now, ROTATE)
    return found


def _usage_findings(cert: x509.Certificate) -> List[Finding]:
    try:
        usages = set(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    except x509.ExtensionNotFound:
        usages = set()
    lacking = [n for oid, n in ((ExtendedKeyUsageOID.SERVER_AUTH, "serverAuth"),
                                (ExtendedKeyUsageOID.CLIENT_AUTH, "clientAuth")) if oid not in usages]
    if not lacking:
        return []
    return [(FAIL, f"the node certificate is not usable for mutual TLS: its extendedKeyUsage lacks "
                   f"{' and '.join(lacking)}; issue a new one: {ROTATE}")]


def _name_findings(cert: x509.Certificate, names: Sequence[str]) -> List[Finding]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        ips = set(san.get_values_for_type(x509.IPAddress))
        dns = {d.lower() for d in san.get_values_for_type(x509.DNSName)}
    except x509.ExtensionNotFound:
        ips, dns = set(), set()
    missing = []
    for name in names:
        try:
            entry = _san_entry(name)
        except SfclusterError:  # no certificate can name it: missing, not a crash of the check
            missing.append(repr(name))
            continue
        if (entry.value not in ips) if isinstance(entry, x509.IPAddress) else (entry.value not in dns):
            missing.append(name)
    if not missing:
        return []
    return [(FAIL, f"the node certificate does not name {', '.join(missing)} (its SAN: "
                   f"{', '.join([str(i) for i in ips] + sorted(dns)) or 'none'}); peers connecting there will "
                   f"refuse it; issue a new one: {ROTATE}")]


def _validity_findings(cert: x509.Certificate, what: str, now: datetime, fix: str) -> List[Finding]:
    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    left = (end - now).total_seconds() / 86400
    when = f"{end:%Y-%m-%d %H:%M} UTC"
    if now < start:
        return [(FAIL, f"{what} is not valid before {start:%Y-%m-%d %H:%M} UTC (now it is {now:%Y-%m-%d %H:%M} "
                       f"UTC): is a clock wrong? Fix the clock, or start afresh: {fix}")]
    if left <= 0:
        return [(FAIL, f"{what} expired {-left:.1f} days ago ({when}); renew it: {fix}")]
    if left < FAIL_DAYS:
        return [(FAIL, f"{what} expires in {left:.1f} days ({when}), under {FAIL_DAYS} days left; "
                       f"renew it now: {fix}")]
    if left < WARN_DAYS:
        return [(WARN, f"{what} expires in {left:.0f} days ({when}); renew it soon: {fix}")]
    return []


def _utc(now: Optional[datetime]) -> datetime:
    if now is None:
        return datetime.now(timezone.utc)
    return now if now.tzinfo is not None else now.replace(tzinfo=timezone.utc)
