"""``autoglm-trt pipeline``: every stage from a checkpoint to a report, resumable and incremental.

- :mod:`~trt_pipeline.pipeline.stages`: the stage registry (what each stage reads, writes, runs);
- :mod:`~trt_pipeline.pipeline.state`: the state file, the lock and the skip decision;
- :mod:`~trt_pipeline.pipeline.hashing`: stat-keyed sha256 cache;
- :mod:`~trt_pipeline.pipeline.runner`: the run loop, :func:`run_pipeline`.
"""

from __future__ import annotations

from trt_pipeline.config import PIPELINE_STAGES
from trt_pipeline.pipeline.hashing import HashCache
from trt_pipeline.pipeline.runner import run_pipeline
from trt_pipeline.pipeline.stages import RunContext, Stage, default_stages
from trt_pipeline.pipeline.state import STATE_NAME, PipelineSummary, StageResult, load_state

__all__ = [
    "PIPELINE_STAGES",
    "STATE_NAME",
    "HashCache",
    "PipelineSummary",
    "RunContext",
    "Stage",
    "StageResult",
    "default_stages",
    "load_state",
    "run_pipeline",
]
