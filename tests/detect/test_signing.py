"""Ed25519 keys and signatures of run manifests: PEM and OpenSSH keys, passphrases, and a
signature that OpenSSL checks without sitewatch."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from detect.provenance import MANIFEST_NAME, SIGNATURE_NAME
from detect.signing import (
    EncryptedKeyError,
    check_signature,
    generate_keypair,
    key_fingerprint,
    load_private_key,
    load_public_key,
    sign_run,
)
from sitewatch.errors import InputError


def _fake_run(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / MANIFEST_NAME).write_text('{"format": "sitewatch-run/1"}\n')
    return run


def test_sign_and_check_with_generated_pem_keys(tmp_path):
    key, pub = generate_keypair(tmp_path / "k")
    assert key.stat().st_mode & 0o077 == 0 and pub.read_text().startswith("-----BEGIN PUBLIC KEY-----")
    run = _fake_run(tmp_path)
    sig = sign_run(run, load_private_key(key))
    assert sig == run / SIGNATURE_NAME and len(sig.read_bytes()) == 64
    assert check_signature(run, load_public_key(pub)) == ""
    (run / MANIFEST_NAME).write_text('{"format": "sitewatch-run/1", "x": 1}\n')
    assert "does not match manifest.json" in check_signature(run, load_public_key(pub))
    with pytest.raises(InputError, match="exists"):
        generate_keypair(tmp_path / "k")


def test_passphrase_protected_pem_key(tmp_path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    key = ed25519.Ed25519PrivateKey.generate()
    path = tmp_path / "enc.pem"
    path.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.BestAvailableEncryption(b"secret")))
    with pytest.raises(EncryptedKeyError, match="passphrase"):
        load_private_key(path)
    with pytest.raises(EncryptedKeyError, match="wrong passphrase"):
        load_private_key(path, b"nope")
    loaded = load_private_key(path, b"secret")
    assert key_fingerprint(loaded.public_key()) == key_fingerprint(key.public_key())


def test_wrong_kinds_of_key_files_are_named(tmp_path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key, pub = generate_keypair(tmp_path / "k")
    with pytest.raises(InputError, match="private key: give the public one"):
        load_public_key(key)
    with pytest.raises(InputError, match="not a PEM or OpenSSH private key"):
        load_private_key(pub)
    ecdsa = tmp_path / "ec.pem"
    ecdsa.write_bytes(ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    with pytest.raises(InputError, match="Ed25519 keys only"):
        load_private_key(ecdsa)
    with pytest.raises(InputError, match="cannot read"):
        load_private_key(tmp_path / "missing")


@pytest.mark.skipif(shutil.which("ssh-keygen") is None, reason="ssh-keygen not installed")
def test_openssh_keys_and_fingerprint_match_ssh_keygen(tmp_path):
    key = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    run = _fake_run(tmp_path)
    sign_run(run, load_private_key(key))
    public = load_public_key(key.with_name(key.name + ".pub"))
    assert check_signature(run, public) == ""
    listed = subprocess.run(["ssh-keygen", "-l", "-f", str(key) + ".pub"], capture_output=True, text=True, check=True).stdout
    assert key_fingerprint(public) == listed.split()[1]


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl not installed")
def test_openssl_checks_the_signature_without_sitewatch(tmp_path):
    key, pub = generate_keypair(tmp_path / "k")
    run = _fake_run(tmp_path)
    sign_run(run, load_private_key(key))
    cmd = ["openssl", "pkeyutl", "-verify", "-pubin", "-inkey", str(pub), "-rawin",
           "-in", str(run / MANIFEST_NAME), "-sigfile", str(run / SIGNATURE_NAME)]
    ok = subprocess.run(cmd, capture_output=True, text=True)
    assert ok.returncode == 0 and "Verified Successfully" in ok.stdout
    (run / MANIFEST_NAME).write_text("{}\n")
    assert subprocess.run(cmd, capture_output=True, text=True).returncode != 0
