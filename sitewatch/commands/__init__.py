"""One module per ``sitewatch`` subcommand (see :mod:`sitewatch.cli` for the module contract)."""
