"""Speed and memory measurements (``python -m benchmarks.index_scale``)."""
