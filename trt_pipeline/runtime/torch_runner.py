"""Polygraphy runner for the export-friendly torch components (the "torch" backend).

Runs exactly the modules that get exported, so comparing it with ONNX Runtime isolates export
problems from modelling problems (the transformers reference is compared separately).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Any

import numpy as np
import torch
from polygraphy.backend.base import BaseRunner
from polygraphy.common import TensorMetadata

from trt_pipeline.models.glm4v.io_spec import ComponentSpec


class TorchModuleRunner(BaseRunner):
    """Runs an ``nn.Module`` whose positional inputs/outputs follow a :class:`ComponentSpec`."""

    def __init__(self, module: torch.nn.Module, spec: ComponentSpec, name: str | None = None) -> None:
        super().__init__(name=name, prefix=f"torch-{spec.name}")
        self.module = module
        self.spec = spec
        #: the decoder module's KV-cache contract (its input metadata has no axis names to tell shared from concat)
        self.kv_cache: str | None = getattr(module, "kv_cache", None)

    def activate_impl(self) -> None:
        self.module.eval()

    def get_input_metadata_impl(self) -> TensorMetadata:
        meta = TensorMetadata()
        for tensor in self.spec.inputs:
            shape = [d if isinstance(d, int) else None for d in tensor.shape]
            # numpy has no bfloat16: a bf16 module is fed float32 (exact for bf16 values) and casts itself
            dtype = np.float32 if tensor.dtype == "bfloat16" else np.dtype(tensor.dtype)
            meta.add(tensor.name, dtype=dtype, shape=shape)
        return meta

    @torch.no_grad()
    def infer_impl(self, feed_dict: dict[str, Any]) -> OrderedDict:
        use_torch = any(isinstance(v, torch.Tensor) for v in feed_dict.values())
        args = [torch.as_tensor(feed_dict[name]) for name in self.spec.input_names]
        # each input in its declared dtype (host tables stay fp32 in a bf16/fp16 graph too)
        dtypes = [getattr(torch, t.dtype) for t in self.spec.inputs]
        args = [a.to(d) if a.is_floating_point() else a for a, d in zip(args, dtypes)]
        start = time.perf_counter()
        outputs = self.module(*args)
        self.inference_time = time.perf_counter() - start
        if isinstance(outputs, torch.Tensor):
            outputs = (outputs,)
        result = OrderedDict()
        for name, value in zip(self.spec.output_names, outputs):
            value = value.float()
            result[name] = value if use_torch else value.numpy()
        return result

    def deactivate_impl(self) -> None:
        pass


def torch_component_runners(model: Any) -> tuple[TorchModuleRunner, TorchModuleRunner]:
    """(vision, decoder) runners over a :class:`~trt_pipeline.models.glm4v.model.Glm4vExportModel`."""
    from trt_pipeline.models.glm4v.io_spec import decoder_spec, vision_spec

    return (
        TorchModuleRunner(model.vision_encoder, vision_spec(model.dims)),
        TorchModuleRunner(model.decoder, decoder_spec(model.dims, kv_cache=model.decoder.kv_cache)),
    )
