"""The one base class of every error a user can cause: the `kvasir` command prints its message, without a
traceback, and exits with status 2. `KVASIR_DEBUG=1` (or `kvasir --debug ...`) shows the traceback as well."""

from __future__ import annotations


class UserError(Exception):
    """Bad input, a missing file, incomparable runs ...: the message says what was wrong, which file, what to do."""

    exit_code = 2
