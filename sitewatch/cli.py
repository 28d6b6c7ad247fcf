"""The ``sitewatch`` command: subcommands dispatch to the stages.

Each subcommand is a module in :mod:`sitewatch.commands` with ``NAME``, ``HELP``, ``DESCRIPTION``,
``add_arguments(parser)`` and ``run(args) -> int``. Command modules import their stage lazily in
``run`` so ``sitewatch --help`` stays fast. Exit codes: 0 ok, 1 failure, 2 usage error,
130 interrupted.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys
from types import ModuleType

from sitewatch import __version__
from sitewatch.commands._common import describe_error
from sitewatch.errors import SitewatchError, UsageError

log = logging.getLogger("sitewatch")

#: the order subcommands are listed in ``--help``; modules not listed come after, by name.
ORDER = ("demo", "tiles", "synth", "train", "evaluate", "detect", "calibrate", "verify", "keygen", "dossier", "review")

EPILOG = """\
typical session:
  sitewatch demo                                   # synthetic scene, default model, report
  sitewatch detect --sites S.csv --before B/ --after A/ --out RUN   # S.csv: site_id,lon,lat
  sitewatch review RUN                             # verify sites in the browser (and the
                                                   # 'validation' queue: a random sample)
  sitewatch calibrate RUN                          # refit scores on that verified sample
  sitewatch verify RUN --digest sha256:...         # the digest detect (or calibrate) printed
  sitewatch dossier RUN --verified --out DOSSIER   # evidence pages of confirmed sites

Every command but verify and keygen takes --config FILE.yaml (see configs/) and
--set SECTION.KEY=VALUE overrides.
Exit codes: 0 ok, 1 failure, 2 usage error, 130 interrupted.
"""


def _command_modules() -> list[ModuleType]:
    import sitewatch.commands as pkg

    names = [m.name for m in pkgutil.iter_modules(pkg.__path__) if not m.name.startswith("_")]
    names.sort(key=lambda n: (ORDER.index(n) if n in ORDER else len(ORDER), n))
    return [importlib.import_module(f"sitewatch.commands.{n}") for n in names]


def _common_options() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    g = common.add_argument_group("output verbosity")
    g.add_argument("-v", "--verbose", action="count", default=0, help="debug log output (the default shows info)")
    g.add_argument("-q", "--quiet", action="count", default=0, help="less output: warnings only, no progress bars")
    return common


def build_parser() -> argparse.ArgumentParser:
    common = _common_options()
    parser = argparse.ArgumentParser(
        prog="sitewatch",
        description="Find likely destroyed facilities in before/after satellite imagery: cut a "
        "before/after pair around each known site, score it with a Siamese change-detection CNN "
        "and write a ranked, calibrated list for people to verify.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[common],
    )
    parser.add_argument("--version", action="version", version=f"sitewatch {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    for mod in _command_modules():
        p = sub.add_parser(
            mod.NAME,
            help=mod.HELP,
            description=getattr(mod, "DESCRIPTION", mod.HELP),
            formatter_class=argparse.RawDescriptionHelpFormatter,
            parents=[common],
        )
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def configure_logging(verbose: int, quiet: int) -> None:
    level = logging.INFO
    if quiet:
        level = logging.WARNING if quiet == 1 else logging.ERROR
    elif verbose:
        level = logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr, force=True)
    for noisy in ("rasterio", "pyogrio", "distributed", "asyncio", "PIL", "matplotlib", "urllib3", "httpx", "fontTools", "fpdf"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    configure_logging(args.verbose, args.quiet)
    try:
        return int(args._run(args) or 0)
    except UsageError as exc:
        print(f"sitewatch {args.command}: error: {describe_error(exc, args)}", file=sys.stderr)
        return 2
    except SitewatchError as exc:
        print(f"sitewatch {args.command}: error: {describe_error(exc, args)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"sitewatch {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
