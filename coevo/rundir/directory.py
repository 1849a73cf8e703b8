"""A run directory's integrity: the newest good checkpoint is the one truth.

A checkpoint records what a run needs to go on (see :mod:`coevo.rundir.checkpoint`): the logbook's text
up to it, the configuration in effect and the data's fingerprint. Before ``resume`` writes
anything it checks the run directory against them here: a changed key of ``config.toml``, a data
file that moved or changed, a checkpoint that does not fit the network are each refused with one
line naming what changed. A logbook that is short, damaged or missing is rebuilt from the
checkpoint, so it ends with every generation exactly once.

Files derived from the best pair after a run (``coevo export``'s models, ``coevo analyze``'s
analysis.json and figures) are listed in ``derived.json`` with the id of the pair they came
from (:func:`pair_id`); when a resume changes the best pair they are reported as stale.

Also here: the memory estimate a run is checked against before its data are loaded.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch

from coevo import config as config_module
from coevo.config import Config
from coevo.data import check_file, file_format, idx_header
from coevo.errors import ConfigError, DataError, UserError

BUILTIN_SOURCES = ("binary_clustering", "manifold", "digits")

RESUMABLE_KEYS = frozenset({
    "run.generations", "run.threads", "run.tensorboard", "run.save_centres", "run.checkpoint_every",
    "run.device", "run.engine", "run.ray_address", "run.ray_workers", "run.plugin_timeout",
})
"""Keys of config.toml that may differ from the checkpoint's on resume: where and how fast the
run goes on, and how far, not what it computes. ``data.source`` may name another path when the
file there has the recorded fingerprint (``coevo resume --data``)."""

DERIVED = "derived.json"
"""Lists each file derived from the best pair (relative to the run directory) with the id of
that pair."""

LEGACY_DERIVED = ("model.pt", "model.onnx", "analysis.json", "plots/latent_pca.png", "plots/latent_alive.png",
                  "plots/latent_folds.png", "plots/reconstructions.png")
"""Derived files written before derived.json existed: adopted with the previous pair's id."""


# ---------------------------------------------------------------------------------- data

def is_file_source(source: str) -> bool:
    """Whether ``data.source`` names a file (.npy, .csv, .npz, IDX, or any other path, which the
    loader then refuses): anything but a built-in source."""
    return source not in BUILTIN_SOURCES


def with_absolute_source(config: Config) -> Config:
    """``config`` with a relative data file (and a factory file, ``model.factory``) made
    absolute, so that the run directory can be resumed, exported and analysed from any working directory."""
    source = config.data.source
    if is_file_source(source) and not Path(source).is_absolute():
        config = config.replace(data__source=str(Path(source).resolve()))
    target, sep, function = config.model.factory.rpartition(":")  # a factory file, likewise
    if sep and target.endswith(".py") and not Path(target).is_absolute() and Path(target).is_file():
        config = config.replace(model__factory=f"{Path(target).resolve()}:{function}")
    return config


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def data_fingerprint(config: Config, dataset: Any) -> dict:
    """What identifies a run's data: for a file, its absolute path, size and SHA-256; for any
    source, the shape of all its rows and a SHA-256 of the three splits as loaded."""
    digest = hashlib.sha256()
    for split in (dataset.train, dataset.validation, dataset.test):
        digest.update(np.ascontiguousarray(split, dtype=np.float32).tobytes())
    rows = int(dataset.train.shape[0] + dataset.validation.shape[0] + dataset.test.shape[0])
    fp: dict[str, Any] = {"source": config.data.source, "shape": [rows, int(dataset.n_dims)],
                          "splits_sha256": digest.hexdigest()}
    if is_file_source(config.data.source):
        path = Path(config.data.source).resolve()
        size, sha = source_digest(path)
        fp.update(path=str(path), size=size, sha256=sha)
    return fp


def source_digest(path: Path) -> tuple[int, str]:
    """Size and SHA-256 of a data file; of a folder in MNIST's layout, of the files it is read from
    (the sizes summed, the SHA-256 over their names and SHA-256s)."""
    if not path.is_dir():
        return path.stat().st_size, file_sha256(path)
    from coevo.data import mnist_files

    used = sorted(p for p in mnist_files(path).values() if p is not None)
    digest = hashlib.sha256()
    for p in used:
        digest.update(f"{p.name}:{file_sha256(p)}\n".encode())
    return sum(p.stat().st_size for p in used), digest.hexdigest()


def check_data_file(recorded: dict | None, config: Config, checkpoint_name: str, moved: bool) -> None:
    """Before the data are loaded: the data file ``config`` names is the one the checkpoint
    recorded (same size and SHA-256), wherever it now lies."""
    if not recorded or "sha256" not in recorded or not is_file_source(config.data.source):
        return
    path = Path(config.data.source)
    was = recorded["path"]
    fix = ("restore it, or start a new run on the new data" if not moved else
           "give --data the file the run was started on")
    if not (path.is_file() or path.is_dir()):
        raise DataError(f"data file {path} (recorded in {checkpoint_name}) does not exist; if it moved, "
                        f"`coevo resume DIR --data NEW_PATH` continues with it there")
    size, sha = source_digest(path)
    if size != recorded["size"] or sha != recorded["sha256"]:
        what = f"{size} bytes, was {recorded['size']}" if size != recorded["size"] else "same size, other contents"
        where = f"data file {path}" + ("" if str(path.resolve()) == was else f" (the run was started on {was})")
        raise DataError(f"{where} is not the data the run was started on ({what}; {checkpoint_name} recorded "
                        f"its SHA-256); {fix}")


def check_dataset(recorded: dict | None, fingerprint: dict, checkpoint_name: str) -> None:
    """After the data are loaded: the same rows in the same splits as the checkpoint recorded
    (this also catches a generated source that now generates other rows)."""
    if not recorded or "splits_sha256" not in recorded:
        return
    if recorded["shape"] != fingerprint["shape"]:
        raise DataError(f"the data of this run now have shape {fingerprint['shape']} (rows, columns), but "
                        f"{checkpoint_name} was written with {recorded['shape']}; restore the run's data, "
                        f"or start a new run")
    if recorded["splits_sha256"] != fingerprint["splits_sha256"]:
        raise DataError(f"the data of this run ({fingerprint['source']}) are not the rows {checkpoint_name} was "
                        f"trained on (their SHA-256 differs: another file, or another numpy generating them); "
                        f"restore the run's data, or start a new run")


# -------------------------------------------------------------------------------- config

def _flat(values: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and prefix.count(".") < 1:
            out.update(_flat(value, f"{name}."))
        else:
            out[name] = list(value) if isinstance(value, tuple) else value
    return out


def check_config(recorded: dict | None, config: Config, checkpoint_name: str, run_dir: Path) -> None:
    """``config`` (config.toml, with --generations and --data) computes what the checkpoint's
    configuration computed; otherwise a ConfigError naming the first key that changed."""
    if not recorded:
        return
    was, now = _flat(recorded), _flat(config_module.to_dict(config))
    for key in sorted(set(was) | set(now)):
        if key in RESUMABLE_KEYS or (key == "data.source" and is_file_source(str(was.get(key)))
                                     and is_file_source(str(now.get(key)))):
            continue
        if was.get(key) != now.get(key):
            old = config_module._toml_value(was[key]) if key in was else "(absent)"
            new = config_module._toml_value(now[key]) if key in now else "(absent)"
            raise ConfigError(f"{run_dir / 'config.toml'} sets {key} = {new}, but {checkpoint_name} was written with "
                              f"{key} = {old}: config.toml was edited after the run started, or the checkpoint comes "
                              f"from another run; put back {key} = {old} to resume (a changed setting is a new run: "
                              f"`coevo run --config ...`)")


def check_layout(saved: dict, layout: Any, role: str, checkpoint_name: str) -> None:
    """The checkpoint's stacks fit this run's network (else it belongs to another run)."""
    params = saved.get("params")
    if params is None or params.ndim != 2 or params.shape[1] != layout.size:
        got = "?" if params is None else "x".join(map(str, params.shape))
        raise UserError(f"{checkpoint_name} holds {role}s of another shape ({got} parameters per cell set, "
                        f"this run's {role} has {layout.size}): it comes from another run or config.toml was "
                        f"edited; put the run's own checkpoints and config.toml back")


# ------------------------------------------------------------------------------- logbook

def restore_logbook(path: Path, text: str | None, rows: int, checkpoint_name: str) -> str | None:
    """Make ``logbook.csv`` hold exactly the checkpoint's rows, so the run goes on from there.

    ``text`` is the logbook the checkpoint recorded (header and ``rows`` rows). The file is cut
    back to it when it starts with it; anything else (shorter, damaged, missing, another header)
    is replaced by it, and the returned message says so. Checkpoints written before they held
    the logbook (``text`` None) only allow cutting a file that holds every row back to ``rows``.
    Returns a message for the user, or None when the file only lost rows past the checkpoint."""
    from coevo.rundir.checkpoint import atomic_write_bytes

    try:
        current = path.read_bytes()
    except FileNotFoundError:
        current = None
    if text is not None:
        want = text.encode()
        if current is not None and current.startswith(want):
            if len(current) != len(want):
                atomic_write_bytes(path, want)
            return None
        atomic_write_bytes(path, want)
        why = "missing" if current is None else "shorter than the checkpoint or damaged"
        return f"{path.name} was {why}: rebuilt its {rows} rows from {checkpoint_name}"
    lines = (current or b"").decode(errors="replace").splitlines(keepends=True)
    complete = [line for line in lines[: 1 + rows] if line.endswith("\n")]
    header_ok = bool(lines) and lines[0].startswith("generation,")
    if not header_ok or len(complete) < 1 + rows or any(
            line.count(",") != lines[0].count(",") for line in complete):
        raise UserError(f"{path} does not hold the {rows} complete rows {checkpoint_name} continues from, and "
                        f"that checkpoint (written by an older coevo) does not hold them itself; the run cannot "
                        f"be continued with a complete logbook: start it again")
    atomic_write_bytes(path, "".join(complete).encode())
    return None


def remove_stale_temporaries(run_dir: Path) -> None:
    """Remove the temporary files (``.NAME.tmpPID``) that killed writers left in a run directory
    (the caller holds its lock, so no live process is writing them)."""
    mine = f".tmp{os.getpid()}"
    for folder in (run_dir, run_dir / "plots", run_dir / "checkpoints"):
        for path in folder.glob(".*.tmp*") if folder.is_dir() else ():
            if not path.name.endswith(mine):
                path.unlink(missing_ok=True)


def remove_dead_temporaries(run_dir: Path, *others: Path) -> None:
    """Remove the temporary files (``.NAME.tmpPID``) in a run directory, and those of the files
    ``others``, that processes no longer alive left: ``coevo export`` and ``coevo analyze`` hold
    no lock, so a live writer's (a run's, another export's) are left alone."""
    found = [path for folder in (run_dir, run_dir / "plots", run_dir / "checkpoints") if folder.is_dir()
             for path in folder.glob(".*.tmp*")]
    found += [path for other in others if other.parent.is_dir() for path in other.parent.glob(f".{other.name}.tmp*")]
    for path in found:
        pid = path.name.rpartition(".tmp")[2]
        if pid.isdigit() and not _alive(int(pid)):
            path.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's
        return True
    return True


# ------------------------------------------------------------------------- derived files

def pair_id(model: dict) -> str:
    """An id of a saved pair (best.pt's contents): SHA-256 of its tensors, first 16 hex digits."""
    digest = hashlib.sha256()
    for net in ("encoder", "decoder"):
        for name in sorted(model[net]):
            tensor = model[net][name].detach().cpu().contiguous()
            digest.update(f"{net}.{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
            digest.update(tensor.numpy().tobytes())
    return digest.hexdigest()[:16]


def read_derived(run_dir: Path) -> dict[str, str]:
    try:
        entries = json.loads((Path(run_dir) / DERIVED).read_text())
    except (OSError, ValueError):
        return {}
    return {str(k): str(v) for k, v in entries.items()} if isinstance(entries, dict) else {}


def record_derived(run_dir: Path, files: Iterable[Path], pair: str) -> None:
    """Note that ``files`` (those inside ``run_dir``) were made from the pair ``pair``."""
    from coevo.rundir.checkpoint import atomic_write_bytes

    run_dir = Path(run_dir)
    entries = read_derived(run_dir)
    added = False
    for f in files:
        try:
            rel = Path(f).resolve().relative_to(run_dir.resolve())
        except ValueError:
            continue
        entries[rel.as_posix()] = pair
        added = True
    if added:
        atomic_write_bytes(run_dir / DERIVED, (json.dumps(entries, indent=2, sort_keys=True) + "\n").encode())


def adopt_legacy_derived(run_dir: Path, previous_pair: str) -> None:
    """Derived files that derived.json does not list yet (written before it existed) are noted
    as made from ``previous_pair``, the best pair before this run's end."""
    run_dir = Path(run_dir)
    listed = read_derived(run_dir)
    found = [run_dir / name for name in LEGACY_DERIVED if name not in listed and (run_dir / name).exists()]
    found += [p for p in run_dir.glob("model-cell*.*") if p.name not in listed]
    record_derived(run_dir, found, previous_pair)


def stale_derived(run_dir: Path, pair: str | None) -> list[str]:
    """Derived files that exist and were made from another pair than ``pair`` (the current best)."""
    if pair is None:
        return []
    return sorted(name for name, made_from in read_derived(run_dir).items()
                  if made_from != pair and (Path(run_dir) / name).exists())


# -------------------------------------------------------------------------------- memory

def available_memory() -> int | None:
    """Bytes this process may still allocate: MemAvailable, capped by a cgroup (v2) limit."""
    found = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                found.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        pass
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit != "max":
            used = int(Path("/sys/fs/cgroup/memory.current").read_text())
            found.append(int(limit) - used)
    except (OSError, ValueError):
        pass
    return min(found) if found else None


def data_shape(config: Config) -> tuple[int, int] | None:
    """(rows, columns) of a run's data without loading it; None where it cannot be told cheaply."""
    d = config.data
    if d.source == "binary_clustering":
        return 3 * d.n_clusters * d.rows_per_cluster, d.n_dims
    if d.source == "manifold":
        return 3 * d.n_rows, d.n_dims
    if d.source == "digits":
        return 1797, 64
    path = Path(d.source)
    try:
        check_file(path)  # never open a FIFO or a device
    except DataError:
        return None  # the loader refuses it, before opening it
    try:
        if path.suffix.lower() == ".npy":
            with open(path, "rb") as fh:
                version = np.lib.format.read_magic(fh)
                read = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
                    np.lib.format.read_array_header_2_0
                shape = read(fh)[0]
            return (int(shape[0]), int(shape[1])) if len(shape) == 2 else None
        if path.suffix.lower() == ".csv":
            with open(path, "rb") as fh:
                first = fh.readline()
                rows = 1 + sum(block.count(b"\n") for block in iter(lambda: fh.read(1 << 20), b""))
            return rows, first.count(b",") + 1
        if file_format(path) == "idx":  # the 16-byte header; a .npz is the loader's to size
            header = idx_header(path)
            return (int(header[0]), int(header[1]) * int(header[2])) if header else None
    except (OSError, ValueError, EOFError):
        return None  # the loader reports it
    return None


BYTES_PER_PARAMETER = 3 * 14
"""A cell's pair held as the centre, a trained child and a working copy, each as float32
parameters, Adam's two float32 moments, a bool mask and a little more for operator state."""


def memory_estimate(config: Config) -> tuple[int, str] | None:
    """About how many bytes a run needs (data as loaded, and the grid) and how that divides."""
    from coevo.evolution.problem import layouts_for
    from coevo.evolution.topology import neighbourhoods

    shape = data_shape(config)
    if shape is None:
        return None
    rows, cols = shape
    data = rows * cols * (8 + 4 + 4 + 4)  # parsed as float64, float32 copy, splits, torch tensors
    sample = tuple(config.data.sample_shape) or ((1, 8, 8) if config.data.source == "digits" else (cols,))
    try:
        enc, dec = layouts_for(config, sample)  # the model's own layers (a conv model traced on two samples)
    except UserError:
        return None  # a model that does not fit the data: the run's preparation says why, in its own words
    cells = 1 if config.run.mode == "canonical" else len(neighbourhoods(config.grid))
    grid = cells * (enc.size + dec.size) * BYTES_PER_PARAMETER
    what = (f"data {rows:,} x {cols:,} values: {data / 1e9:.2f} GB; {cells} cell(s) x "
            f"{enc.size + dec.size:,} parameters: {grid / 1e9:.2f} GB")
    return data + grid, what


LATER_IMPORTS = 32 << 20
"""Memory the libraries a run imports after the check take (matplotlib for the plots), measured
with torch 2.13 and Python 3.11 on Linux; :data:`SKLEARN_IMPORT` for scikit-learn's digits."""
SKLEARN_IMPORT = 74 << 20


def resident_bytes() -> int | None:
    """This process's resident memory now (what the interpreter, torch and numba already hold)."""
    try:
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def peak_resident_bytes() -> int:
    """This process's peak resident memory so far (Linux reports kB)."""
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def check_memory(config: Config) -> int | None:
    """Refuse, before anything is loaded or allocated, a run that cannot fit in memory
    (``COEVO_SKIP_MEMORY_CHECK=1`` turns the check off). Returns the peak the run is expected to
    reach (what the process holds now plus :func:`memory_estimate`), or None where it cannot tell;
    the summary sets it beside the peak measured (``summary["memory"]``)."""
    estimate, now = memory_estimate(config), resident_bytes()
    later = LATER_IMPORTS + (SKLEARN_IMPORT if config.data.source == "digits" else 0)
    expected = None if estimate is None or now is None else now + estimate[0] + later
    if os.environ.get("COEVO_SKIP_MEMORY_CHECK") == "1":
        return expected
    available = available_memory()
    if estimate is None or available is None or estimate[0] <= available:
        return expected
    raise UserError(f"this run needs about {estimate[0] / 1e9:.1f} GB of memory ({estimate[1]}) but about "
                    f"{max(available, 0) / 1e9:.1f} GB is available; use less data, fewer cells or a narrower "
                    f"network (COEVO_SKIP_MEMORY_CHECK=1 runs it anyway)")


def torch_load(path: Path, what: str, run_dir: Path, fix: str, **kwargs: Any) -> Any:
    """``torch.load(path)`` where a damaged file is a one-line UserError naming it and the fix."""
    try:
        return torch.load(path, **kwargs)
    except OSError:
        raise
    except Exception as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UserError(f"{path} ({what}) is damaged: {reason}; {fix}") from None
