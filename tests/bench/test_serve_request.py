"""benchmarks/serve_request.py: one phone-agent step through a real `autoglm-trt serve` process, timed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def test_two_identical_steps_the_second_from_the_prefix_cache(tiny_ort_export: Path, tmp_path: Path) -> None:
    """The script starts the server on 127.0.0.1, sends the same screenshot step twice through the OpenAI
    client, and stops it. The tiny export's numbers are real: the step's prompt holds the screenshot's
    image tokens, the replies are the same greedy tokens, and the second step's prompt comes from the
    prefix cache (all but the last prompt token). Times are recorded, not asserted (they are the
    benchmark's figures)."""
    out = tmp_path / "serve_request.json"
    done = subprocess.run([sys.executable, str(BENCHMARKS / "serve_request.py"), str(tiny_ort_export), "--threads", "1",
                           "--width", "112", "--height", "224", "--max-tokens", "4", "--timeout", "300",
                           "--json-out", str(out)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(out.read_text())
    cold, warm = result["requests"]
    image_tokens = (112 // 28) * (224 // 28)  # 14-pixel patches merged 2x2
    assert cold["prompt_tokens"] > image_tokens and cold["prompt_tokens"] == warm["prompt_tokens"]
    assert cold["completion_tokens"] == warm["completion_tokens"] == 4
    assert warm["reply_chars"] == cold["reply_chars"]
    assert warm["cached_tokens"] == warm["prompt_tokens"] - 1 and not cold["cached_tokens"]
    assert 0 < warm["ttft_s"] <= warm["total_s"] and 0 < cold["ttft_s"] <= cold["total_s"]
    assert result["server_peak_rss_bytes"] > 0 and result["server_load_s"] > 0
