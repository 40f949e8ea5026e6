"""Deterministic random Hugging Face checkpoints of GLM-4.1V (AutoGLM-Phone-9B) at preset sizes.

``write_checkpoint(out, "tiny")`` writes a folder that ``Glm4vForConditionalGeneration.from_pretrained``
and ``AutoTokenizer.from_pretrained`` load offline::

    config.json  generation_config.json
    model.safetensors                      (or model-0000N-of-0000M.safetensors + model.safetensors.index.json)
    tokenizer.json  tokenizer_config.json  chat_template.jinja
    preprocessor_config.json               (Glm4vImageProcessorPil)
    trt_pipeline_checkpoint.json           how it was made (preset, seed, dtype, overrides, versions)

Same preset + seed + dtype + overrides -> byte-identical safetensors. The folder is built in a
hidden temporary sibling and renamed into place, so a failure never leaves a partial checkpoint.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from trt_pipeline.artifacts import atomic_output_dir, tool_versions, write_json_atomic
from trt_pipeline.errors import ConfigError, DiskSpaceError
from trt_pipeline.models.presets import DTYPES, Preset, build_config, generation_config_dict, get_preset

#: tiny (~5 MB fp32) stays one file; small (~440 MB fp32) gets an index and shards
DEFAULT_MAX_SHARD_SIZE = "200MB"
MANIFEST_NAME = "trt_pipeline_checkpoint.json"
_WEIGHT_PATTERNS = ("*.safetensors", "*.bin", "*.safetensors.index.json")


def _check_out_dir(out_dir: Path, overwrite: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"output path {out_dir} exists and is not a folder", path=out_dir)
    if out_dir.is_dir() and any(out_dir.iterdir()) and not overwrite:
        raise ConfigError(
            f"output folder {out_dir} exists and is not empty",
            path=out_dir,
            hint="choose another --out or pass --overwrite (overwrite=True) to replace it",
        )


def _parse_dtype(dtype: str) -> Any:
    import torch

    if dtype not in DTYPES:
        raise ConfigError(f"unknown dtype {dtype!r}; valid: {', '.join(DTYPES)}")
    return getattr(torch, dtype)


def _check_resources(out_dir: Path, n_params: int, dtype: str) -> None:
    """Refuse early when the weights cannot fit on disk or (fp32 init) in memory."""
    disk_bytes = n_params * DTYPES[dtype]
    probe = out_dir
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if disk_bytes * 1.05 > free:
        raise DiskSpaceError(
            f"writing {n_params / 1e9:.2f} B parameters as {dtype} needs ~{disk_bytes / 1e9:.1f} GB, "
            f"only {free / 1e9:.1f} GB free under {probe}",
            path=probe,
            hint="free space, choose another --out, or write --config-only",
        )
    try:
        import psutil
    except ImportError:  # pragma: no cover
        return
    ram_bytes = n_params * 4 + (disk_bytes if dtype != "float32" else 0)  # init is fp32, then cast
    available = psutil.virtual_memory().available
    if ram_bytes > available:
        raise ConfigError(
            f"initialising {n_params / 1e9:.2f} B parameters needs ~{ram_bytes / 1e9:.1f} GB of RAM, "
            f"{available / 1e9:.1f} GB available",
            hint="write --config-only, or use a smaller preset",
        )


@contextlib.contextmanager
def _status(enabled: bool, message: str) -> Iterator[Any]:
    if not enabled:
        yield None
        return
    from rich.console import Console

    console = Console(stderr=True)
    with console.status(message) as status:
        yield status


@contextlib.contextmanager
def _quiet_transformers_progress() -> Iterator[None]:
    """Silence transformers' own tqdm bars (we show one rich status line instead)."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def _update(status: Any, message: str) -> None:
    if status is not None:
        status.update(message)
        status.console.print(f"[dim]-[/dim] {message}", highlight=False)


def _image_processor(preset: Preset, vision: Mapping[str, Any]) -> Any:
    from transformers import Glm4vImageProcessorPil

    ip = preset.image_processor
    return Glm4vImageProcessorPil(
        size={"shortest_edge": int(ip["min_pixels"]), "longest_edge": int(ip["max_pixels"])},
        patch_size=int(vision["patch_size"]),
        temporal_patch_size=int(vision["temporal_patch_size"]),
        merge_size=int(vision["spatial_merge_size"]),
        image_mean=list(ip["image_mean"]),
        image_std=list(ip["image_std"]),
    )


def write_checkpoint(
    out_dir: Path | str,
    preset: str | Preset = "tiny",
    seed: int = 0,
    config_only: bool | None = None,
    dtype: str | None = None,
    max_shard_size: str | int | None = None,
    overrides: Mapping[str, Any] | None = None,
    *,
    overwrite: bool = False,
    progress: bool | None = None,
) -> Path:
    """Write a deterministic random GLM-4.1V checkpoint and return its folder.

    Args:
        out_dir: folder to create (must not exist or be empty unless ``overwrite``).
        preset: ``tiny``, ``small`` or ``phone-9b`` (or a :class:`Preset`).
        seed: ``torch.manual_seed`` before the model is built: same seed -> identical weights.
        config_only: write config, generation config, tokenizer and image processor but no
            weights; ``None`` -> the preset's default (``phone-9b``: True).
        dtype: ``float32`` / ``float16`` / ``bfloat16``; ``None`` -> the preset's default
            (``float32``; ``phone-9b``: ``bfloat16``).
        max_shard_size: ``save_pretrained`` shard threshold; default ``200MB`` (tiny: one file,
            small: shards + ``model.safetensors.index.json``).
        overrides: :func:`~trt_pipeline.models.presets.build_config` overrides, e.g.
            ``{"text_num_key_value_heads": 1, "mrope_section": [4, 2, 2]}``.
        overwrite: replace an existing non-empty ``out_dir`` (atomically, on success only).
        progress: show a rich status line on stderr; default: for every preset but ``tiny``.

    Raises:
        ConfigError: unknown preset/dtype/override, inconsistent dims, non-empty ``out_dir``
            without ``overwrite``, or not enough RAM for the fp32 initialisation.
        DiskSpaceError: not enough free disk for the weights.
    """
    p = get_preset(preset)
    out = Path(out_dir)
    dtype = dtype or p.default_dtype
    if dtype not in DTYPES:
        raise ConfigError(f"unknown dtype {dtype!r}; valid: {', '.join(DTYPES)}")
    config_only = p.config_only_default if config_only is None else bool(config_only)
    overrides = dict(overrides or {})
    max_shard_size = DEFAULT_MAX_SHARD_SIZE if max_shard_size is None else max_shard_size
    progress = (p.name != "tiny") if progress is None else progress
    _check_out_dir(out, overwrite)

    from trt_pipeline.models.tokenizer_factory import tokenizer_spec, write_tokenizer

    spec = tokenizer_spec(p)
    # validate dims (and the overrides) before touching the disk
    config = build_config(p, vocab_size=None, special_token_ids=spec.special_token_ids, **overrides)
    if not config_only:
        from trt_pipeline.models.info import count_parameters_from_config

        _check_resources(out, count_parameters_from_config(config.to_dict())["total"], dtype)

    with _status(progress, f"writing {p.name} checkpoint to {out}") as status:
        with atomic_output_dir(out, overwrite=True) as tmp:
            _update(status, "tokenizer: training byte-level BPE + GLM special tokens")
            written_spec = write_tokenizer(tmp, p)
            if written_spec.special_token_ids != spec.special_token_ids:  # pragma: no cover - sanity
                raise ConfigError("tokenizer special-token ids changed between builds")

            from transformers import GenerationConfig

            generation_config = GenerationConfig(**generation_config_dict(spec.special_token_ids))
            if config_only:
                config.dtype = dtype
                config.save_pretrained(str(tmp))
                generation_config.save_pretrained(str(tmp))
            else:
                import torch
                from transformers import Glm4vForConditionalGeneration

                torch_dtype = _parse_dtype(dtype)
                n = count_parameters_from_config(config.to_dict())["total"]
                _update(status, f"model: initialising {n / 1e6:.1f} M parameters (seed {seed})")
                torch.manual_seed(seed)
                model = Glm4vForConditionalGeneration(config)
                model.eval()
                if torch_dtype != torch.float32:
                    _update(status, f"model: casting to {dtype}")
                    model = model.to(torch_dtype)
                model.generation_config = generation_config
                _update(status, f"model: writing safetensors (max shard {max_shard_size})")
                with _quiet_transformers_progress():
                    model.save_pretrained(str(tmp), max_shard_size=max_shard_size)
                del model

            _update(status, "image processor: preprocessor_config.json")
            vision = config.vision_config
            _image_processor(
                p,
                {
                    "patch_size": vision.patch_size,
                    "temporal_patch_size": vision.temporal_patch_size,
                    "spatial_merge_size": vision.spatial_merge_size,
                },
            ).save_pretrained(str(tmp))

            write_json_atomic(
                tmp / MANIFEST_NAME,
                {
                    "format_version": 1,
                    "generator": "trt_pipeline.models.checkpoint_factory.write_checkpoint",
                    "preset": p.name,
                    "seed": seed,
                    "dtype": dtype,
                    "config_only": config_only,
                    "max_shard_size": max_shard_size,
                    "overrides": overrides,
                    "tokenizer": spec.to_dict(),
                    "tool_versions": tool_versions("torch", "transformers", "tokenizers", "safetensors"),
                },
            )
        _update(status, f"done: {out}")
    return out


def has_weights(checkpoint: Path | str) -> bool:
    folder = Path(checkpoint)
    return any(any(folder.glob(pattern)) for pattern in _WEIGHT_PATTERNS)


__all__ = ["DEFAULT_MAX_SHARD_SIZE", "MANIFEST_NAME", "has_weights", "write_checkpoint"]
