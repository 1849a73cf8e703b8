"""What produced a run: coevo's version, the git commit of the working directory, the versions
of the libraries whose arithmetic decides the numbers, and the BLAS doing the matrix products.
Stored in summary.json, so a result can be traced to the code and libraries that made it."""

from __future__ import annotations

import platform
import subprocess
from importlib import metadata
from pathlib import Path

LIBRARIES = ("numpy", "torch", "numba", "deap", "scipy")


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


COEVO_VERSION = _version("coevo") or "0+unknown"  # a source tree that was never installed
"""coevo's version, read once at import from its installed metadata, not from the ``coevo``
package object: in a directory holding a folder named ``coevo``, ``import coevo`` can give that
folder (an empty namespace package) while coevo's submodules still load from the install."""


def collect(cwd: str | Path | None = None) -> dict:
    """The provenance record of a run started in ``cwd`` (default: the current directory)."""
    commit, dirty = git_commit(cwd)
    record: dict = {"coevo": COEVO_VERSION, "git_commit": commit, "git_dirty": dirty,
                    "python": platform.python_version()}
    record.update({name: _version(name) for name in LIBRARIES})
    record["platform"] = platform.platform()
    record["blas"] = blas()
    return record


def git_commit(cwd: str | Path | None = None) -> tuple[str | None, bool | None]:
    """(HEAD commit, whether tracked files differ from it) of the git repository holding
    ``cwd``; (None, None) when git is absent, fails, or ``cwd`` is not in a repository."""
    def git(*args: str) -> subprocess.CompletedProcess | None:
        try:
            return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=20)
        except (OSError, subprocess.SubprocessError):  # no git executable, a hung repository, ...
            return None

    head = git("rev-parse", "--verify", "HEAD")
    if head is None or head.returncode != 0:
        return None, None
    status = git("status", "--porcelain", "--untracked-files=no")
    dirty = None if status is None or status.returncode != 0 else bool(status.stdout.strip())
    return head.stdout.strip(), dirty


def blas() -> list[dict]:
    """The BLAS libraries loaded in this process (numpy's, and SciPy's, which coevo's CPU kernels
    call), as threadpoolctl reports them."""
    import scipy.linalg.cython_blas  # noqa: F401  (load the kernels' BLAS so that it is listed)
    from threadpoolctl import threadpool_info

    return [{"internal_api": lib.get("internal_api"), "version": lib.get("version"),
             "threading_layer": lib.get("threading_layer"), "architecture": lib.get("architecture"),
             "filename": Path(lib["filepath"]).name if lib.get("filepath") else None}
            for lib in threadpool_info() if lib.get("user_api") == "blas"]
