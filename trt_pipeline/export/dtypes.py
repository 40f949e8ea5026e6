"""Which dtype an export computes in, and where its files go.

``--dtype auto`` keeps the checkpoint's own dtype: a bf16 checkpoint exports bf16 weights, byte for
byte, so the export never holds a widened fp32 copy (41 GB for the real 9B instead of 20.6 GB).
The dtype of a checkpoint is read from its safetensors headers (what the bytes are), falling back
to ``config.json``'s ``dtype`` / ``torch_dtype`` for a config-only folder.

Inside the graph the same fp32 islands as transformers' ``modeling_glm4v`` remain whatever the
dtype: RMSNorm variance, softmax, vision rotary in fp32; text rotary tables computed in fp32 on
the host and cast to the model dtype (as ``Glm4vTextRotaryEmbedding`` returns them).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from trt_pipeline.errors import ConfigError

EXPORT_DTYPES = ("auto", "bfloat16", "float16", "float32")
#: dtype -> the precision folder under OUT/onnx (fp16 is the same folder AutoCast writes)
PRECISION_FOLDERS = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16"}
_SAFETENSORS_DTYPES = {"F32": "float32", "F16": "float16", "BF16": "bfloat16"}
_ALIASES = {"fp32": "float32", "fp16": "float16", "half": "float16", "bf16": "bfloat16"}


def normalize_dtype(name: str) -> str:
    """'bf16' -> 'bfloat16' etc.; refuses anything but :data:`EXPORT_DTYPES`."""
    name = _ALIASES.get(name, name)
    if name not in EXPORT_DTYPES:
        raise ConfigError(f"unknown export dtype {name!r}; choose one of {', '.join(EXPORT_DTYPES)}.")
    return name


def dominant_float_dtype(bytes_by_dtype: Mapping[str, int]) -> str | None:
    """The floating safetensors dtype holding most bytes, as a torch dtype name."""
    floats = {k: v for k, v in bytes_by_dtype.items() if k in _SAFETENSORS_DTYPES}
    if not floats:
        return None
    return _SAFETENSORS_DTYPES[max(floats, key=floats.__getitem__)]


def checkpoint_dtype(checkpoint: Path) -> str:
    """The checkpoint's dtype: safetensors headers first, then config.json, else float32."""
    from trt_pipeline.models.glm4v.config import load_dims
    from trt_pipeline.models.glm4v.weights import scan_checkpoint

    checkpoint = Path(checkpoint)
    if any(checkpoint.glob("*.safetensors")):
        sizes: dict[str, int] = {}
        for entry in scan_checkpoint(checkpoint).values():
            sizes[entry.dtype] = sizes.get(entry.dtype, 0) + entry.nbytes
        found = dominant_float_dtype(sizes)
        if found:
            return found
    declared = load_dims(checkpoint).torch_dtype
    return declared if declared in PRECISION_FOLDERS else "float32"


def resolve_export_dtype(requested: str, checkpoint: Path) -> str:
    """``auto`` -> :func:`checkpoint_dtype`; an explicit dtype is returned normalized."""
    requested = normalize_dtype(requested)
    return checkpoint_dtype(checkpoint) if requested == "auto" else requested


def precision_folder(dtype: str) -> str:
    """``float32`` -> ``fp32``: the folder name under ``OUT/onnx``."""
    return PRECISION_FOLDERS[normalize_dtype(dtype)]
