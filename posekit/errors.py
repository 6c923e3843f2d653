"""Errors that the CLI turns into one line on stderr and exit code 2.

Library code raises :class:`InputError` (or a subclass) for bad user input: an
unreadable mesh, a malformed file, a missing camera. The message must name the
file (and key or line) and the problem, because it is all the user will see.
"""

from __future__ import annotations


class PosekitError(Exception):
    """Base class of posekit's own errors."""

    exit_code = 2


class InputError(PosekitError):
    """Bad input from the user: a file that cannot be read or has wrong content."""


class CadError(InputError):
    """A CAD file that fails intake (unreadable, empty, not a mesh, NaN vertices, degenerate)."""


class BopFormatError(InputError):
    """A BOP dataset or results file whose content is wrong (names the file and key/line)."""
