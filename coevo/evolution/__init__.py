"""The spatial coevolution itself: the generation loop and canonical mode, the per-cell
variation and the pruning context an operator is handed, selection on one or two objectives, the
grid's topology, stacked populations, the problem a run is set up from, and the run state the
loop advances."""
