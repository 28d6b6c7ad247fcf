"""One exception tree for the whole project.

Every class also inherits the matching builtin, so callers that catch ``ValueError`` or
``OSError`` keep working. Messages name the file, the row or the flag and say what to do.
The CLI maps :class:`UsageError` (and :class:`ConfigError`) to exit code 2 and every other
:class:`SitewatchError` to exit code 1.
"""

from __future__ import annotations


class SitewatchError(Exception):
    """Base class of every error sitewatch raises on purpose.

    Library code never names command-line flags: an error about a setting names the dotted
    setting at the start of its message (``"detect.operating_point: 'x' is not ..."``) and passes
    ``setting="detect.operating_point"``. The CLI knows which flag set which setting and shows
    the flag instead (:func:`sitewatch.commands._common.describe_error`).

    Attributes:
        setting: the dotted setting the error is about, or None.
    """

    def __init__(self, *args: object, setting: str | None = None) -> None:
        super().__init__(*args)
        self.setting = setting


class UsageError(SitewatchError, ValueError):
    """A command-line flag or argument is wrong (exit code 2)."""


class ConfigError(UsageError):
    """A config file or a ``--set`` override is wrong: unknown key, wrong type, bad value."""


class InputError(SitewatchError, ValueError):
    """An input file (sites, dataset, labels) cannot be used as a whole."""


class RasterError(SitewatchError, OSError):
    """A raster cannot be opened or read, or no usable raster was given."""


class ModelError(SitewatchError, ValueError):
    """A model checkpoint is missing, corrupt or does not match the code."""


class RunFolderError(SitewatchError, ValueError):
    """A run folder is inconsistent: different inputs or model, or changed files."""
