"""Kernel tooling: the microbenchmark, the timed regression check and the static sm_90 compile check."""
