"""``sitewatch verify``: check a run folder against its manifest, digest, signature and verdict chain."""

from __future__ import annotations

import argparse

from sitewatch.commands._common import info

NAME = "verify"
HELP = "check a run folder (hashes, consistency, digest, signature, verdict chain) or a dossier folder"
DESCRIPTION = """\
Check that a run folder is what `sitewatch detect` wrote and nothing else:

- re-hash every output file, and the sites file, rasters (with their JSON sidecars) and model files
  at the paths recorded in manifest.json;
- check the manifest's own consistency: every required section present and non-empty, the run
  fingerprint re-computed from the recorded inputs, model and config, the model hash equal to the
  checkpoint's, the threshold re-derived from the config and the model, counts, per-site scenes,
  ranks, flags and chips equal to what scores.csv holds;
- fail on any file in the folder the manifest does not list;
- with --digest, check manifest.json is the one whose run digest you recorded when detect finished;
- with --public-key, check manifest.json.sig (`detect --sign`) is a valid Ed25519 signature of it;
- when the folder holds review.sqlite, check the verdicts' hash chain and print its head.

Exit code 0 when everything checks, 1 when anything differs (each finding names the file and the
field).

A dossier folder (`sitewatch dossier --out DIR`) is recognised by its manifest and checked too:
every file's SHA-256, files added, and that the run digest it quotes is still the run's.

examples:
  sitewatch verify RUN
  sitewatch verify RUN --digest sha256:3f1c...   # the digest detect printed, recorded elsewhere
  sitewatch verify RUN --public-key alice.pub    # who produced the run
  sitewatch verify DOSSIER
  sitewatch verify RUN --outputs-only            # the inputs are not on this machine
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", metavar="RUN", help="a finished run folder")
    parser.add_argument(
        "--outputs-only", action="store_true", help="check only the run folder's files, not the inputs and model"
    )
    parser.add_argument(
        "--digest", metavar="sha256:HEX", help="the run digest `sitewatch detect` printed; fail unless manifest.json has it"
    )
    parser.add_argument(
        "--public-key", metavar="KEY.pub", help="Ed25519 public key (PEM or OpenSSH); fail unless the run is signed with it"
    )


def _verify_dossier(args: argparse.Namespace) -> int:
    from review.dossier.verify import verify_dossier

    report = verify_dossier(args.run_dir, check_run=not args.outputs_only)
    for finding in report.findings:
        print(finding.describe())
    if report.ok:
        run_note = ("run manifest re-hashed: digest matches" if report.run_checked
                    else "run not re-checked (--outputs-only)" if args.outputs_only
                    else "run folder not here: digest not re-checked")
        info(f"verified dossier: {report.checked} files match {args.run_dir}/manifest.json "
             f"(sha256 {report.manifest_sha256}); run digest {report.run_digest} ({run_note})", args)
        return 0
    print(f"{len(report.findings)} difference(s) from {args.run_dir}/manifest.json; this dossier no longer matches what was written")
    return 1


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from review.dossier.verify import is_dossier

    if is_dossier(args.run_dir):  # a dossier folder (sitewatch dossier) carries its own manifest kind
        return _verify_dossier(args)

    from detect.verify import parse_digest, verify_run
    from sitewatch.errors import InputError, UsageError

    run_dir = Path(args.run_dir)
    digest = None
    if args.digest is not None:
        try:
            digest = parse_digest(args.digest)
        except UsageError as exc:
            raise UsageError(f"--digest: {exc}") from None
    public_key = None
    if args.public_key is not None:
        from detect.signing import load_public_key

        try:
            public_key = load_public_key(args.public_key)
        except InputError as exc:
            raise UsageError(f"--public-key {args.public_key}: {exc}") from None

    report = verify_run(run_dir, check_inputs=not args.outputs_only, digest=digest, public_key=public_key)
    lines = [diff.describe() for diff in report.differences]
    chain_line = ""
    store = run_dir / "review.sqlite"
    if store.is_file():
        chain_ok, chain_line, problems = _verdict_chain(store)
        lines += [f"verdicts broken: {p}" for p in problems]
    else:
        chain_ok = True
    for line in lines:
        print(line)
    if report.ok and chain_ok:
        info(
            f"verified: {report.checked} files match {run_dir}/manifest.json and its "
            f"{report.consistency_checks} consistency checks pass",
            args,
        )
        info(f"run digest: sha256:{report.manifest_sha256}" + (" (as recorded)" if digest else ""), args)
        if report.signature == "valid":
            info(f"signature: valid, signed by key {report.signer}", args)
        elif report.signature == "unchecked":
            info("signature: manifest.json.sig present, not checked (pass --public-key KEY.pub)", args)
        if chain_line:
            info(chain_line, args)
        return 0
    if chain_line:
        print(chain_line)
    print(
        f"{len(lines)} finding(s) in {run_dir}: this run folder no longer matches what the run produced "
        f"(run digest now sha256:{report.manifest_sha256})"
    )
    return 1


def _verdict_chain(store) -> tuple[bool, str, tuple[str, ...]]:
    """Check ``review.sqlite``'s hash chain: ``(ok, summary line, problems)``."""
    import sqlite3

    from review.verdict_chain import verify_verdict_chain

    try:
        chain = verify_verdict_chain(store)
    except (OSError, sqlite3.DatabaseError) as exc:
        return False, f"verdicts: {store} cannot be checked ({exc})", ()
    if chain.ok:
        return True, f"verdicts: {chain.verdicts}, hash chain intact, head {chain.head}", ()
    return False, f"verdicts: {chain.verdicts}, hash chain BROKEN (first broken verdict {chain.first_broken})", chain.problems
