"""``sitewatch keygen``: make an Ed25519 key pair for signing run folders."""

from __future__ import annotations

import argparse

from sitewatch.commands._common import info

NAME = "keygen"
HELP = "make an Ed25519 key pair for `detect --sign` / `verify --public-key`"
DESCRIPTION = """\
Write a new Ed25519 key pair: KEY (the private key, PEM PKCS#8, readable only by you: keep it
secret, it signs runs in your name) and KEY.pub (the public key, PEM: give it to whoever checks
your runs). The same keys can be made with OpenSSL, and OpenSSH ed25519 keys work too:

  openssl genpkey -algorithm ed25519 -out KEY && openssl pkey -in KEY -pubout -out KEY.pub
  ssh-keygen -t ed25519 -f KEY      # KEY.pub is then an OpenSSH public key line

examples:
  sitewatch keygen ~/.sitewatch/alice.key
  sitewatch detect ... --out RUN --sign ~/.sitewatch/alice.key
  sitewatch verify RUN --public-key alice.key.pub
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("key", metavar="KEY", help="private key file to write (the public key goes to KEY.pub)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing KEY and KEY.pub")


def run(args: argparse.Namespace) -> int:
    from detect.signing import generate_keypair, key_fingerprint, load_public_key

    private_path, public_path = generate_keypair(args.key, overwrite=args.overwrite)
    info(f"private key: {private_path} (keep it secret)", args)
    info(f"public key:  {public_path} (fingerprint {key_fingerprint(load_public_key(public_path))})", args)
    return 0
