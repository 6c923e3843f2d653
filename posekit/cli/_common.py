"""What every CLI verb shares: turning posekit's errors into one stderr line and exit code 2."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any

import typer

from posekit.errors import PosekitError


def fail(message: str, code: int = 2) -> None:
    """Print one line to stderr and exit with ``code``."""
    typer.echo(f"posekit: error: {message}", err=True)
    raise typer.Exit(code)


def guarded(func: Callable[..., Any]) -> Callable[..., Any]:
    """Decorator for a verb: posekit errors become one line on stderr and exit 2, with no traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except PosekitError as exc:
            fail(str(exc), exc.exit_code)
        except KeyboardInterrupt:
            typer.echo("posekit: interrupted", err=True)
            raise typer.Exit(130) from None

    return wrapper


def run_guarded(app: typer.Typer) -> None:
    """Run the app (used by `python -m posekit`)."""
    sys.exit(app())


def parse_size(text: str) -> tuple[int, int]:
    """Parse 'WxH' into (W, H), both positive."""
    from posekit.errors import InputError

    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise InputError(f"--size must look like 640x480, got {text!r}") from None
    if w <= 0 or h <= 0:
        raise InputError(f"--size must be positive, got {text!r}")
    return w, h
