"""Ed25519 signatures of run manifests: who produced a run, checkable by a third party.

``sitewatch detect --sign KEY`` signs the final ``manifest.json`` bytes and writes the raw
64-byte Ed25519 signature to ``manifest.json.sig`` beside it; ``sitewatch verify RUN
--public-key KEY.pub`` checks it. Since the manifest holds the SHA-256 of every input and output,
the signature covers the whole run. The signature is over the file's exact bytes, so it can also
be checked without sitewatch::

    openssl pkeyutl -verify -pubin -inkey KEY.pub -rawin -in RUN/manifest.json -sigfile RUN/manifest.json.sig

Keys: PEM (PKCS#8 private / SubjectPublicKeyInfo public, as ``openssl genpkey -algorithm ed25519``
and ``sitewatch keygen`` write them) or OpenSSH (``ssh-keygen -t ed25519``: the private key file
and its ``.pub`` line). Passphrase-protected private keys need the passphrase.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
from pathlib import Path
from typing import Any

from detect.provenance import MANIFEST_NAME, SIGNATURE_NAME
from sitewatch.errors import InputError, RunFolderError

log = logging.getLogger(__name__)

#: length of a raw Ed25519 signature in bytes.
SIGNATURE_BYTES = 64


def _crypto() -> Any:
    try:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError:  # pragma: no cover - a declared dependency
        raise InputError(
            "signing needs the 'cryptography' package (pip install 'cryptography>=3.0')"
        ) from None
    return serialization, ed25519


class EncryptedKeyError(InputError):
    """The private key is protected by a passphrase and none (or a wrong one) was given."""


def load_private_key(path: str | Path, passphrase: bytes | None = None) -> Any:
    """An Ed25519 private key from a PEM or OpenSSH key file.

    Raises:
        EncryptedKeyError: the key needs a passphrase (none given, or a wrong one).
        InputError: the file is missing, unreadable, not a private key, or not Ed25519.
    """
    from cryptography.exceptions import UnsupportedAlgorithm

    serialization, ed25519 = _crypto()
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"{path}: cannot read the signing key ({exc.strerror or exc})") from None
    loaders = [serialization.load_ssh_private_key] if b"OPENSSH PRIVATE KEY" in data else []
    loaders.append(serialization.load_pem_private_key)
    key = None
    last: Exception | None = None
    for loader in loaders:
        try:
            key = loader(data, password=passphrase)
            break
        except TypeError as exc:  # encrypted without a passphrase, or a passphrase for a plain key
            if passphrase is None:
                raise EncryptedKeyError(f"{path}: the signing key is protected by a passphrase; give it") from None
            last = exc
        except UnsupportedAlgorithm as exc:
            raise InputError(
                f"{path}: cannot open this passphrase-protected OpenSSH key ({exc}); install the 'bcrypt' "
                "package, or use a PEM key (`sitewatch keygen KEY`)"
            ) from None
        except ValueError as exc:
            last = exc
    if key is None:
        if passphrase is not None and last is not None and "password" in str(last).lower():
            raise EncryptedKeyError(f"{path}: wrong passphrase for the signing key") from None
        raise InputError(
            f"{path}: not a PEM or OpenSSH private key ({last}); make one with `sitewatch keygen KEY` "
            "or `openssl genpkey -algorithm ed25519 -out KEY`"
        ) from None
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise InputError(f"{path}: a {type(key).__name__.removesuffix('PrivateKey')} key; sitewatch signs with Ed25519 keys only")
    return key


def load_public_key(path: str | Path) -> Any:
    """An Ed25519 public key from a PEM file or an OpenSSH ``.pub`` line.

    Raises:
        InputError: the file is missing, unreadable, not a public key, or not Ed25519.
    """
    serialization, ed25519 = _crypto()
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"{path}: cannot read the public key ({exc.strerror or exc})") from None
    try:
        if data.lstrip().startswith(b"ssh-"):
            key = serialization.load_ssh_public_key(data.strip())
        else:
            key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        hint = " (this is a private key: give the public one, KEY.pub)" if b"PRIVATE KEY" in data else ""
        raise InputError(f"{path}: not a PEM or OpenSSH public key{hint} ({exc})") from None
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise InputError(f"{path}: a {type(key).__name__.removesuffix('PublicKey')} key; sitewatch checks Ed25519 signatures only")
    return key


def key_fingerprint(public_key: Any) -> str:
    """``SHA256:<base64>``, the same fingerprint ``ssh-keygen -l -f KEY.pub`` prints."""
    serialization, _ = _crypto()
    line = public_key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    blob = base64.b64decode(line.split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode("ascii").rstrip("=")


def sign_run(run_dir: str | Path, private_key: Any) -> Path:
    """Sign ``RUN/manifest.json`` and write ``RUN/manifest.json.sig`` (raw 64 bytes); returns its path.

    Raises:
        RunFolderError: the run folder has no manifest.
    """
    run_dir = Path(run_dir)
    manifest = run_dir / MANIFEST_NAME
    if not manifest.is_file():
        raise RunFolderError(f"{manifest}: missing; sign a finished run folder")
    signature = private_key.sign(manifest.read_bytes())
    out = run_dir / SIGNATURE_NAME
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_bytes(signature)
    os.replace(tmp, out)
    log.info("signed %s with key %s", manifest, key_fingerprint(private_key.public_key()))
    return out


def check_signature(run_dir: str | Path, public_key: Any) -> str:
    """Check ``RUN/manifest.json.sig`` against ``RUN/manifest.json`` with ``public_key``.

    Returns:
        ``""`` when the signature is valid, else what is wrong, in words.
    """
    from cryptography.exceptions import InvalidSignature

    run_dir = Path(run_dir)
    sig_path = run_dir / SIGNATURE_NAME
    if not sig_path.is_file():
        return f"no signature ({SIGNATURE_NAME}): the run was not signed (sitewatch detect --sign KEY)"
    signature = sig_path.read_bytes()
    if len(signature) != SIGNATURE_BYTES:
        return f"{SIGNATURE_NAME} holds {len(signature)} bytes, not a {SIGNATURE_BYTES}-byte Ed25519 signature"
    try:
        public_key.verify(signature, (run_dir / MANIFEST_NAME).read_bytes())
    except InvalidSignature:
        return (
            f"the signature does not match manifest.json under key {key_fingerprint(public_key)}: "
            "either the manifest changed after signing or it was signed with another key"
        )
    return ""


def generate_keypair(path: str | Path, *, overwrite: bool = False) -> tuple[Path, Path]:
    """Write a new Ed25519 key pair: ``path`` (PEM PKCS#8 private key, mode 0600) and ``path.pub``
    (PEM public key, to give to whoever checks your runs).

    Raises:
        InputError: ``path`` or ``path.pub`` exists and ``overwrite`` is False.
    """
    serialization, ed25519 = _crypto()
    private_path = Path(path)
    public_path = private_path.with_name(private_path.name + ".pub")
    for p in (private_path, public_path):
        if p.exists() and not overwrite:
            raise InputError(f"{p}: exists; pick another name (a key is never overwritten silently)")
    key = ed25519.Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public_pem = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    private_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(private_pem)
    os.chmod(private_path, 0o600)
    public_path.write_bytes(public_pem)
    return private_path, public_path
