from __future__ import annotations

import subprocess
import sys

from sitewatch.cli import main


def test_help_lists_commands(capsys):
    try:
        main(["--help"])
    except SystemExit as exc:
        assert exc.code == 0
    out = capsys.readouterr().out
    assert "sitewatch" in out and "Exit codes" in out


def test_no_command_is_usage_error(capsys):
    assert main([]) == 2


def test_unknown_command_exits_2():
    proc = subprocess.run([sys.executable, "-m", "sitewatch", "nonsense"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "invalid choice" in proc.stderr


def test_before_and_after_are_repeatable_in_tiles_and_detect():
    from sitewatch.cli import build_parser

    parser = build_parser()
    for cmd in ("tiles", "detect"):
        args = parser.parse_args(
            [cmd, "--sites", "s.csv", "--before", "b1/", "--before", "b2.tif", "b3.tif", "--after", "a/", "--out", "o"]
        )
        assert args.before == ["b1/", "b2.tif", "b3.tif"], cmd
        assert args.after == ["a/"], cmd


def test_library_errors_name_the_flag_that_set_the_setting():
    import argparse

    from sitewatch.commands._common import describe_error, record_flag
    from sitewatch.errors import UsageError

    exc = UsageError("detect.operating_point: 'nope' is not a known operating point", setting="detect.operating_point")
    plain = argparse.Namespace()
    assert describe_error(exc, plain) == str(exc)  # set by --set or a config file: the dotted name stays
    given = argparse.Namespace()
    record_flag(given, "detect.operating_point", "--operating-point")
    assert describe_error(exc, given) == "--operating-point (detect.operating_point): 'nope' is not a known operating point"
    other = UsageError("no setting here")
    assert describe_error(other, given) == "no setting here"


def test_third_party_info_logs_are_kept_out_of_the_users_output():
    """`detect` wrote 'INFO pyogrio._io: Created 40 records' between its own lines."""
    import logging

    from sitewatch.cli import configure_logging

    configure_logging(0, 0)
    for name in ("pyogrio._io", "rasterio._env"):
        assert not logging.getLogger(name).isEnabledFor(logging.INFO), name
    assert logging.getLogger("sitewatch").isEnabledFor(logging.INFO)
    configure_logging(1, 0)  # -v: our debug lines, still not theirs below WARNING
    assert logging.getLogger("detect.run").isEnabledFor(logging.DEBUG)
    assert not logging.getLogger("pyogrio._io").isEnabledFor(logging.INFO)
