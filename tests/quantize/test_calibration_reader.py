"""CalibrationReader: real per-component feeds from calibration items, checked against the export's ranges."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from trt_pipeline.errors import CalibrationError
from trt_pipeline.quantize.calibration_reader import CalibrationReader, select_items
from trt_pipeline.quantize.dataset import CalibrationItem, default_root, load_split

CALIB = default_root() / "calib"


@pytest.fixture(scope="module")
def calib_items() -> list[CalibrationItem]:
    return load_split(CALIB)


@pytest.fixture(scope="module")
def reader(tiny_export: Path, calib_items: list[CalibrationItem]) -> CalibrationReader:
    r = CalibrationReader(tiny_export, calib_items, max_samples=5, decode_steps=1)
    r.build()
    return r


def _session_inputs(path: Path) -> dict[str, tuple[str, list]]:
    from trt_pipeline.runtime.onnxruntime_runner import session

    return {i.name: (i.type, i.shape) for i in session(path).get_inputs()}


def test_select_items_is_evenly_spaced_and_bounded(calib_items: list[CalibrationItem]) -> None:
    chosen = select_items(calib_items, 5)
    assert len(chosen) == 5
    assert chosen[0] is calib_items[0] and chosen[-1] is calib_items[-1]
    assert {item.lang for item in chosen} == {"en", "zh"}
    assert select_items(calib_items, None) == calib_items
    assert select_items(calib_items, 10_000) == calib_items
    with pytest.raises(CalibrationError):
        select_items(calib_items, 0)


def test_feeds_match_the_onnx_inputs(reader: CalibrationReader, tiny_export: Path) -> None:
    for component in ("vision_encoder", "decoder"):
        declared = _session_inputs(tiny_export / "onnx" / "fp32" / f"{component}.onnx")
        feeds = reader.feeds(component)
        assert feeds, component
        for feed in feeds:
            assert set(feed) == set(declared)
            for name, value in feed.items():
                kind, shape = declared[name]
                assert value.dtype == (np.int64 if kind == "tensor(int64)" else np.float32), name
                assert value.ndim == len(shape), name
                for dim, size in zip(shape, value.shape):
                    if isinstance(dim, int):
                        assert size == dim, (name, shape, value.shape)


def test_vision_feeds_come_from_the_image_processor(reader: CalibrationReader, tiny_export: Path) -> None:
    import json

    dims = json.loads((tiny_export / "export.json").read_text())["dims"]
    with_images = [s for s in reader.prepare() if s.item.image_path is not None]
    assert len(reader.vision_feeds) == len(with_images) > 0
    for sample, feed in zip(with_images, reader.vision_feeds):
        patches = feed["pixel_values"].shape[0]
        assert patches == sample.num_patches
        assert dims["num_patches"]["min"] <= patches <= dims["num_patches"]["max"]
        assert patches % 4 == 0  # whole merge blocks
        # normalised pixels (CLIP mean/std), not raw 0..255 values
        assert -3.0 < float(feed["pixel_values"].mean()) < 3.0
        # one image per feed, full attention: no mask input, every input linear in the patches
        assert "attention_bias" not in feed and all(value.shape[0] == patches for value in feed.values())


def test_prefill_and_decode_feeds(reader: CalibrationReader, tiny_export: Path) -> None:
    from trt_pipeline.runtime.onnxruntime_runner import session

    prefill, decode = reader.decoder_prefill_feeds, reader.decoder_decode_feeds
    assert len(prefill) == len(decode) == len(reader) == 5
    assert reader.decoder_feeds[: len(prefill)] == prefill  # prefill first (ModelOpt looks at feed 0)
    sess = session(tiny_export / "onnx" / "fp32" / "decoder.onnx")
    names = [o.name for o in sess.get_outputs()]
    for p, d in zip(prefill, decode):
        seq = p["inputs_embeds"].shape[1]
        assert seq > 1 and p["past_key_values.0.key"].shape[2] == 0
        assert p["attention_mask"].shape == (1, seq) and p["attention_mask"].all()
        assert d["inputs_embeds"].shape[1] == 1
        assert d["past_key_values.0.key"].shape[2] == seq  # a filled KV cache
        assert d["attention_mask"].shape == (1, seq + 1)
        out = dict(zip(names, sess.run(names, p)))
        np.testing.assert_array_equal(d["past_key_values.1.value"], out["present.1.value"])
    image_items = [s for s in reader.prepare() if s.num_patches]
    # image placeholders were replaced by image features: prefill embeddings differ from the text table
    assert image_items and any(np.abs(f["inputs_embeds"]).max() > 0 for f in prefill)


def test_summary_counts(reader: CalibrationReader) -> None:
    summary = reader.summary()
    assert summary["num_items"] == 5
    assert summary["feeds"]["decoder_prefill"] == 5 and summary["feeds"]["decoder_decode"] == 5
    assert summary["items"] == reader.item_ids


def test_empty_items_are_refused(tiny_export: Path) -> None:
    with pytest.raises(CalibrationError, match="no calibration items"):
        CalibrationReader(tiny_export, [], 4)


@pytest.fixture(scope="module")
def low_range_export(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An export whose ranges are too small for the calibration data (prompts <= 40, <= 16 image tokens)."""
    from trt_pipeline.config import ExportConfig
    from trt_pipeline.export.exporter import export

    cfg = ExportConfig(max_seq=40, max_kv=40, max_image_tokens=16, validate=False, simplify=False)
    return export(tiny_checkpoint, tmp_path_factory.mktemp("low") / "export", cfg, show_progress=False)


def test_image_above_num_patches_max_names_item_and_range(low_range_export: Path, calib_items: list) -> None:
    item = next(i for i in calib_items if i.image_path is not None)
    reader = CalibrationReader(low_range_export, [item], 1)
    with pytest.raises(CalibrationError) as info:
        reader.prepare()
    text = str(info.value)
    assert item.id in text and "num_patches in [16, 64]" in text and "--max-image-tokens" in text


def test_prompt_longer_than_sequence_length_max(low_range_export: Path, calib_items: list) -> None:
    item = CalibrationItem("long-001", "calib", "en", " ".join(["open the settings and"] * 20), None)
    with pytest.raises(CalibrationError) as info:
        CalibrationReader(low_range_export, [item], 1).build()
    assert "long-001" in str(info.value) and "sequence_length in [1, 40]" in str(info.value)


def test_decode_step_beyond_past_max(low_range_export: Path) -> None:
    # the prompt fits one prefill (<= 40 tokens), but enough decode steps push the KV cache past max_kv 40
    item = CalibrationItem("short-001", "calib", "en", "Open Settings and turn on Wi-Fi", None)
    seq = CalibrationReader(low_range_export, [item], 1, decode_steps=0).prepare()[0].sequence_length
    assert seq <= 40
    reader = CalibrationReader(low_range_export, [item], 1, decode_steps=40 - seq + 2)
    with pytest.raises(CalibrationError, match="short-001.*past_sequence_length in \\[0, 40\\]"):
        reader.prepare()
