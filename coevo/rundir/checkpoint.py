"""Checkpoints: everything needed to continue a run exactly (the run state itself is
:class:`coevo.evolution.state.RunState`).

Random draws inside a generation come from generators derived from (seed, generation, cell,
purpose), so the state needs no per-cell generator, and Numba kernels are handed such a
generator rather than using Numba's own global one. Python's ``random`` (DEAP's selection) is
re-seeded every generation. The global states of python's ``random``, numpy's legacy generator
and torch are stored and restored anyway, so that a user's operator or observer that reaches
for them continues as if the run had never stopped. Writes are atomic: a temporary file in the
same directory, fsync, then a rename. Each file carries a SHA-256 of its payload, so a
truncated or corrupted checkpoint is detected and the previous good one is used.
"""

from __future__ import annotations

import hashlib
import io
import os
import random
from pathlib import Path

import numpy as np
import torch

from coevo.errors import UserError
from coevo.evolution.front import Front
from coevo.population import FIELDS, Stack
from coevo.evolution.state import RunState
from coevo.genome import Layout

CHECKPOINT_DIR = "checkpoints"
KEEP = 3


def _stack_dict(stack: Stack) -> dict[str, torch.Tensor]:
    return {f: getattr(stack, f).cpu() for f in FIELDS}


def _stack_from(d: dict[str, torch.Tensor], layout: Layout, device: str) -> Stack:
    return Stack(layout, *(d[f].to(device) if f in d else None for f in FIELDS))  # older files: no optional fields


def atomic_write_bytes(path: Path, payload: bytes) -> None:
    """Write ``payload`` to ``path`` so that readers see the old file or the new one, never half.
    A failed write (a full disk, say) removes its temporary file and raises the OSError."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            fh.write(payload)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            tmp.unlink()
        except OSError:
            pass
        if isinstance(exc, OSError) and exc.filename is None:  # a full disk's write and fsync name no file
            raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from exc
        raise


def save(run_dir: Path, state: RunState, logbook_rows: int, logbook: str | None = None,
         meta: dict | None = None) -> Path:
    """Write ``checkpoints/gen_XXXXXX.pt`` atomically and keep the newest few.

    ``logbook`` is the logbook's text up to this generation (header and ``logbook_rows`` rows),
    from which a resume rebuilds a short or damaged logbook.csv; ``meta`` what the run directory
    is checked against on resume (:mod:`coevo.rundir.directory`: the configuration and the data's
    fingerprint)."""
    folder = Path(run_dir) / CHECKPOINT_DIR
    folder.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    torch.save({
        "generation": state.generation,
        "encoders": _stack_dict(state.encoders),
        "decoders": _stack_dict(state.decoders),
        "lr": torch.as_tensor(state.lr),
        "wall_seconds": state.wall_seconds,
        "events": dict(state.events),
        "front": None if state.front is None else state.front.to_dict(),
        "logbook_rows": logbook_rows,
        "logbook": logbook,
        "meta": dict(meta or {}),
        "python_random": random.getstate(),
        "numpy_random": np.random.get_state(),
        "torch_random": torch.get_rng_state(),
    }, buf)
    payload = buf.getvalue()
    digest = hashlib.sha256(payload).hexdigest().encode()
    path = folder / f"gen_{state.generation:06d}.pt"
    atomic_write_bytes(path, digest + b"\n" + payload)
    for old in checkpoint_files(folder)[:-KEEP]:
        old.unlink()
    for stale in folder.glob(".gen_*.pt.tmp*"):  # left by a process killed while writing
        if not stale.name.endswith(f".tmp{os.getpid()}"):
            stale.unlink(missing_ok=True)
    return path


def checkpoint_files(folder: Path) -> list[Path]:
    """The checkpoint files in ``folder``, oldest first; anything else named gen_*.pt (a
    directory, say) is not one."""
    return sorted(p for p in folder.glob("gen_*.pt") if p.is_file())


def _read(path: Path) -> dict:
    blob = path.read_bytes()
    digest, sep, payload = blob.partition(b"\n")
    if not sep or hashlib.sha256(payload).hexdigest().encode() != digest:
        raise ValueError("checksum mismatch (truncated or corrupted)")
    return torch.load(io.BytesIO(payload), weights_only=False)


def read_latest(run_dir: Path) -> tuple[Path, dict, list[str]]:
    """The newest good checkpoint as (its path, its contents, warnings about bad newer ones);
    changes nothing (see :func:`state_from`)."""
    folder = Path(run_dir) / CHECKPOINT_DIR
    candidates = checkpoint_files(folder)[::-1]
    if not candidates:
        raise UserError(f"{run_dir} has no checkpoints to resume from (run.checkpoint_every = 0, or it stopped "
                        f"before its first one); start it again with `coevo run --out {run_dir} ...` "
                        f"(a directory without checkpoints is reused)")
    warnings = []
    for path in candidates:
        try:
            d = _read(path)
            if not isinstance(d, dict) or not {"generation", "encoders", "decoders", "lr"} <= d.keys():
                raise ValueError("not a coevo checkpoint")
        except OSError:
            raise
        except Exception as exc:  # any unreadable checkpoint: fall back to an older one
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            warnings.append(f"skipping checkpoint {path.name}: {reason}")
            continue
        return path, d, warnings
    raise UserError(f"every checkpoint in {folder} is damaged ({'; '.join(warnings)}); the run cannot be resumed")


def state_from(d: dict, enc_layout: Layout, dec_layout: Layout, device: str, name: str = "the checkpoint") -> RunState:
    """The run state a checkpoint holds; restores the global random states it stored. A
    checkpoint whose networks do not fit the layouts is a UserError (it is another run's)."""
    from coevo.rundir.directory import check_layout

    check_layout(d["encoders"], enc_layout, "encoder", name)
    check_layout(d["decoders"], dec_layout, "decoder", name)
    random.setstate(d["python_random"])
    if "numpy_random" in d:  # absent from checkpoints written before they were stored
        np.random.set_state(d["numpy_random"])
        torch.set_rng_state(d["torch_random"])
    return RunState(int(d["generation"]), _stack_from(d["encoders"], enc_layout, device),
                    _stack_from(d["decoders"], dec_layout, device), d["lr"].numpy().copy(),
                    float(d["wall_seconds"]), dict(d.get("events", {})),
                    None if d.get("front") is None else Front.from_dict(d["front"]))


def load_latest(run_dir: Path, enc_layout: Layout, dec_layout: Layout, device: str) -> tuple[RunState, int, list[str]]:
    """The newest good checkpoint as (state, logbook rows, warnings about bad newer ones)."""
    path, d, warnings = read_latest(run_dir)
    return state_from(d, enc_layout, dec_layout, device, path.name), int(d["logbook_rows"]), warnings
