"""benchmarks/vision_attention.py: the vision attention's spellings and two exports' encoders, each in its own process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def test_spellings_and_encoders_are_timed_and_the_features_agree(tiny_export: Path, tiny_ort_export: Path,
                                                                  tmp_path: Path) -> None:
    """Small shapes, real runs: every spelling of one attention runs, the portable and the ONNX Runtime vision
    encoders of the same checkpoint give the same features, and each case records its own time and peak
    RSS (recorded, not asserted: they are the benchmark's figures)."""
    out = tmp_path / "vision_attention.json"
    done = subprocess.run([sys.executable, str(BENCHMARKS / "vision_attention.py"), "--patches", "256", "--heads", "4",
                           "--head-dim", "32", "--export", str(tiny_export), "--export", str(tiny_ort_export),
                           "--grid", "16x16", "--threads", "1", "--out", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(out.read_text())
    assert [r["flavour"] for r in result["attention"]] == ["portable", "onnxruntime", "opset23-attention"]
    assert all(r["patches"] == 256 and r["seconds"] > 0 and r["peak_rss_gb"] > 0 for r in result["attention"])
    portable, contrib = result["encoders"]
    assert (portable["vision_ops"], contrib["vision_ops"]) == ("portable", "onnxruntime")
    assert portable["patches"] == contrib["patches"] == 256 and contrib["image_tokens"] == 64
    assert contrib["vs_first"]["max_abs"] <= 1e-5 and contrib["vs_first"]["cosine"] > 0.9999999
