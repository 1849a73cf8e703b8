"""User-facing errors: the CLI turns these into a one-line message and exit code 2."""


class UserError(Exception):
    """A mistake the user can fix (bad config, missing file, bad data); never a bug in coevo."""


class ConfigError(UserError):
    """A configuration key or value is wrong; the message names the key and what is allowed."""


class DataError(UserError):
    """A data file is missing, unreadable or holds values coevo cannot train on."""


class OperatorError(UserError):
    """A pruning operator or schedule raised or broke the mask contract; the message names it."""


def user_frame(tb) -> str | None:
    """``FILE:LINE in FUNCTION`` of the innermost frame of traceback ``tb`` that is the user's
    code (not coevo's, not the standard library's or an installed package's); None if none is."""
    import traceback

    return user_frame_of(traceback.extract_tb(tb))


def user_frame_of(frames) -> str | None:
    """:func:`user_frame` of a list of ``traceback.FrameSummary`` (a traceback's or a live stack's)."""
    import sysconfig
    from pathlib import Path

    skip = {Path(__file__).resolve().parent}
    try:
        from coevo import operators

        skip.add(Path(operators.__file__).resolve().parent)
    except Exception:  # pragma: no cover - a broken installation; the frames still help
        pass
    paths = sysconfig.get_paths()
    for key in ("stdlib", "platstdlib", "purelib", "platlib"):
        if paths.get(key):
            skip.add(Path(paths[key]).resolve())
    found = None
    for frame in frames:
        if not frame.filename or frame.filename.startswith("<"):
            continue
        path = Path(frame.filename).resolve()
        if not any(path.is_relative_to(root) for root in skip):
            found = f"{frame.filename}:{frame.lineno} in {frame.name}"
    return found
