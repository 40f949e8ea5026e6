"""Accuracy: the metrics (max abs, cosine, p99 relative error), the gate table and token agreement.

One definition of each, used by ``validate``, ``precision``, ``compare`` and the GPU tests:
:mod:`.metrics` (tensor metrics), :mod:`.gates` (the per-precision gate table and its overrides),
:mod:`.tokens` (greedy-sequence agreement).
"""
