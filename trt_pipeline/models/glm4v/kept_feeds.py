"""Decoder feeds kept beyond the step they were made for (calibration sets, comparison inputs).

A :class:`~trt_pipeline.models.glm4v.stepper.DecoderStepper` feeds an ``inplace`` KV cache as views
of its :class:`~trt_pipeline.models.glm4v.kv_arena.KvArena`: the last ``sequence_length`` rows of
each cache array are free slots the graph writes, left uninitialized by the host (``np.empty``),
and an IO-bound runner writes them, and later steps' rows, into that same memory. A feed stored for
later (replayed by ModelOpt, ONNX Runtime sessions of every precision, Polygraphy's ``Comparator``)
must therefore own its arrays, and its free rows must hold defined values so calibration
statistics of the input never see garbage. A ``concat`` feed is copied too: its cache arrays are a
runner's pooled outputs, which a copy releases for reuse.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np


def kept_decoder_feed(feed: Mapping[str, Any], builder: Any) -> dict[str, np.ndarray]:
    """``feed`` with every array copied; an ``inplace`` cache's free rows (the step's new positions) zeroed.

    ``builder`` is the :class:`~trt_pipeline.models.glm4v.stepper.FeedBuilder` that made the feed
    (its ``kv_layout`` and ``past_names``).
    """
    layout = builder.kv_layout
    new = int(np.shape(feed["inputs_embeds"])[1])
    past = set(builder.past_names)
    kept = {}
    for name, value in feed.items():
        array = np.array(value, copy=True)
        if layout.inplace and name in past:
            layout.rows(array, layout.length(array) - new)[...] = 0
        kept[name] = array
    return kept


__all__ = ["kept_decoder_feed"]
