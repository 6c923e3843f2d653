"""What every CLI verb shares: turning posekit's errors into one stderr line and exit code 2."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any

import typer

from posekit.errors import PosekitError

_GC_PAUSED = {"by_startup": False}


def pause_gc_for_startup() -> None:
    """Python's cyclic garbage collector off while a verb imports its modules and opens its stages: torch's import
    alone makes enough objects to run it many times over (the import of torch and trimesh took 14 % less wall time
    without it, measured on 2 shared cores). :func:`startup_done` turns it on again."""
    import gc

    if gc.isenabled():
        gc.disable()
        _GC_PAUSED["by_startup"] = True


def startup_done() -> None:
    """The end of a verb's start-up: the objects made so far are frozen (the collector never scans them again) and
    the collector is on again, if :func:`pause_gc_for_startup` turned it off."""
    import gc

    if _GC_PAUSED["by_startup"]:
        _GC_PAUSED["by_startup"] = False
        gc.freeze()
        gc.enable()


def fail(message: str, code: int = 2) -> None:
    """Print one line to stderr and exit with ``code``."""
    typer.echo(f"posekit: error: {message}", err=True)
    raise typer.Exit(code)


CENTER_HELP = ("Move the CAD's bounding-box centre to the origin (what `posekit inspect` advises for off-centre "
               "parts); recorded in the workspace, and needed again wherever that workspace is used.")


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings as one `posekit: warning: ...` line on stderr (Python's default prints the source line too)."""
    text = str(message).strip().splitlines()[0] if str(message).strip() else category.__name__
    typer.echo(f"posekit: warning: {text}", err=True)


def guarded(func: Callable[..., Any]) -> Callable[..., Any]:
    """Decorator for a verb: posekit errors become one line on stderr and exit 2, with no traceback; warnings
    print as one line each."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        import warnings

        warnings.showwarning = _one_line_warning
        try:
            return func(*args, **kwargs)
        except PosekitError as exc:
            fail(str(exc), exc.exit_code)
        except KeyboardInterrupt:
            typer.echo("posekit: interrupted", err=True)
            raise typer.Exit(130) from None

    return wrapper


def run_guarded(app: typer.Typer) -> None:
    """Run the app as the process (`python -m posekit`, the `posekit` command) and end the process with its exit
    status through :func:`exit_process`."""
    try:
        app()
        code = 0
    except SystemExit as exc:
        code = exc.code
    exit_process(code)


def exit_process(code: int | str | None = 0) -> None:
    """End the process with ``code`` (SystemExit's meaning: None is 0, a string is printed to stderr and is 1) as a
    normal exit does -- the atexit handlers run, stdout and stderr are flushed -- but without the interpreter's
    teardown, which frees every module's objects one by one: once torch is imported that takes about 0.5 s (2 cores,
    shared; 0.03 s without it), a sixth of a one-photo `posekit estimate`. Files are closed by then (posekit writes
    each atomically). While a thread other than the main one still runs, the normal exit (which waits for it) is
    taken instead."""
    import atexit
    import os
    import threading

    if isinstance(code, str):
        print(code, file=sys.stderr)
        code = 1
    code = 0 if code is None else int(code)
    if any(t.is_alive() and not t.daemon for t in threading.enumerate() if t is not threading.main_thread()):
        sys.exit(code)
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe or stream: nothing more can reach it
            pass
    os._exit(code)


def store_out(method: str, mesh_hashes):
    """The model store's folder for this method and part(s), for a `train` command run without --out."""
    from posekit.data.store import workspace_path

    out = workspace_path(method, mesh_hashes)
    out.parent.mkdir(parents=True, exist_ok=True)
    return out


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


def saved_preset(workspace, resume: bool, from_config, read=None):
    """The preset a workspace was trained with (``from_config``: the method's preset class's reader of the
    config's "preset" entry) when resuming one that has a config.json; None otherwise.

    ``read``: the config reader (default :func:`posekit.data.store.workspace_config`, None where there is no
    config); a method passes its own to check in the same read that the workspace is one of its kind."""
    from posekit.data.store import workspace_config
    from posekit.errors import InputError

    cfg = (read or workspace_config)(workspace) if resume and workspace is not None else None
    if cfg is None:
        return None
    try:
        return from_config(cfg["preset"])
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"{workspace}/config.json: unreadable workspace config ({exc})") from None


def choose_preset(name: str | None, device: str, get_preset, saved=None, workspace=None):
    """The preset a `train` command runs with.

    ``saved``: the workspace's own preset when resuming (:func:`saved_preset`; it wins, naming another one is
    an error); otherwise ``--preset``, where 'auto' (or None) means 'paper' on CUDA and 'cpu' elsewhere.
    ``get_preset`` is the method's lookup (it raises InputError for an unknown name).
    """
    from posekit.errors import InputError

    if name not in (None, "auto"):
        try:
            get_preset(name)
        except InputError as exc:  # the method's list of presets, and auto
            raise InputError(str(exc).replace("must be one of ", "must be auto or one of ")) from None
    if saved is not None:
        if name not in (None, "auto") and get_preset(name).name != saved.name:
            raise InputError(f"{workspace} was trained with --preset {saved.name}; resume it with that preset")
        return saved
    if name in (None, "auto"):
        import torch

        cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
        name = "paper" if cuda else "cpu"
    return get_preset(name)


def recent_loss(losses: list[float], n: int = 50) -> float:
    """Mean of the last ``n`` losses (what a finished `train` command reports)."""
    tail = losses[-min(n, len(losses)):]
    return sum(tail) / len(tail)


def parse_range(text: str | None, name: str, cast=float) -> tuple | None:
    """A range option's text: 'a,b' or 'a' -> (a, b) / (a, a); None stays None; InputError names the option."""
    from posekit.errors import InputError

    if text is None:
        return None
    try:
        parts = [cast(v) for v in str(text).split(",")]
    except ValueError:
        raise InputError(f"{name} must be a number or a range MIN,MAX, got {text!r}") from None
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2 or parts[0] > parts[1] or parts[0] < 0:
        raise InputError(f"{name} must be MIN,MAX with 0 <= MIN <= MAX, got {text!r}")
    return tuple(parts)
