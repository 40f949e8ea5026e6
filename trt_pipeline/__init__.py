"""autoglm-trt: AutoGLM-Phone-9B (GLM-4.1V) checkpoints -> validated ONNX, FP16/INT8 ONNX and TensorRT engines.

The package is library-first: every CLI command is one importable call. Heavy dependencies
(torch, transformers, onnxruntime, modelopt, tensorrt) are imported lazily inside the stage that
needs them so that ``autoglm-trt --help`` stays fast and works without them.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
