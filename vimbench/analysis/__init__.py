"""Analysis without measuring: analytic FLOPs and bytes of a forward, roofline floors of the kernels, profiler
trace parsing."""
