"""Run directories: their integrity on resume, checkpoints, one writer per directory, processes
that die with their driver, and the provenance of a run.

The module that used to be ``coevo.rundir`` is now :mod:`coevo.rundir.directory`; its names are
not re-exported here, and reaching for one says where it went."""

from __future__ import annotations

_DIRECTORY_NAMES = frozenset({
    "BUILTIN_SOURCES", "RESUMABLE_KEYS", "DERIVED", "LEGACY_DERIVED", "BYTES_PER_PARAMETER", "is_file_source",
    "with_absolute_source", "file_sha256", "data_fingerprint", "check_data_file", "check_dataset", "check_config",
    "check_layout", "restore_logbook", "remove_stale_temporaries", "pair_id", "read_derived", "record_derived",
    "adopt_legacy_derived", "stale_derived", "available_memory", "data_shape", "memory_estimate", "check_memory",
    "torch_load",
})


def __getattr__(name: str):
    if name in _DIRECTORY_NAMES:  # ImportError, so `from coevo.rundir import check_layout` says it too
        raise ImportError(f"coevo.rundir.{name} moved to coevo.rundir.directory.{name}", name=__name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
