"""Training, twice: the Numba kernels for the CPU and torch ops batched over networks for other
devices, side by side, with the trainer terms and masked Adam they share, and the compile
bookkeeping (watching Numba compile, warming its cache at install)."""
