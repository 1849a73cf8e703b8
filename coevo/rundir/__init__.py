"""Run directories: their integrity on resume, checkpoints, one writer per directory, processes
that die with their driver, and the provenance of a run."""
