"""Server metrics in the Prometheus text exposition format (``GET /metrics``).

A dependency-free subset of ``prometheus_client`` (counters, gauges, cumulative histograms with
``_bucket{le=...}``/``_sum``/``_count``), per the format spec
https://prometheus.io/docs/instrumenting/exposition_formats/. Names follow vLLM's
(``time_to_first_token_seconds``, ``inter_token_latency_seconds``, ``num_requests_waiting``) under the
``autoglm_`` prefix so existing dashboards map one to one. Thread-safe: the scheduler thread and the
request handlers both update it.
"""

from __future__ import annotations

import bisect
import threading
from collections import defaultdict

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Histogram:
    def __init__(self, buckets: tuple[float, ...] = LATENCY_BUCKETS) -> None:
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.sum += value
        self.count += 1

    def lines(self, name: str) -> list[str]:
        out, running = [], 0
        for bound, count in zip((*self.buckets, float("inf")), self.counts):
            running += count
            label = "+Inf" if bound == float("inf") else repr(bound)
            out.append(f'{name}_bucket{{le="{label}"}} {running}')
        out += [f"{name}_sum {self.sum}", f"{name}_count {self.count}"]
        return out


class ServeMetrics:
    """Everything ``/metrics`` reports; the scheduler and handlers call the ``record_*`` methods."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: dict[str, int] = defaultdict(int)  # by outcome: stop, length, error, cancelled
        self.prompt_tokens = 0
        self.generation_tokens = 0
        self.prefill_tokens_saved = 0
        self.queue_depth = 0
        self.running = 0
        self.ttft = Histogram()
        self.itl = Histogram()

    def record_request(self, outcome: str) -> None:
        with self._lock:
            self.requests[outcome] += 1

    def record_prefill(self, prompt_tokens: int, saved: int) -> None:
        with self._lock:
            self.prompt_tokens += prompt_tokens
            self.prefill_tokens_saved += saved

    def record_token(self, first: bool, seconds: float) -> None:
        with self._lock:
            self.generation_tokens += 1
            (self.ttft if first else self.itl).observe(seconds)

    def set_load(self, queue_depth: int, running: int) -> None:
        with self._lock:
            self.queue_depth, self.running = queue_depth, running

    def render(self) -> str:
        with self._lock:
            lines = ["# HELP autoglm_requests_total Finished chat completion requests by outcome.",
                     "# TYPE autoglm_requests_total counter"]
            lines += [f'autoglm_requests_total{{outcome="{k}"}} {v}' for k, v in sorted(self.requests.items())]
            for name, kind, value, help_ in (
                ("autoglm_prompt_tokens_total", "counter", self.prompt_tokens, "Prompt tokens admitted."),
                ("autoglm_generation_tokens_total", "counter", self.generation_tokens, "Tokens generated."),
                ("autoglm_prefix_cache_saved_tokens_total", "counter", self.prefill_tokens_saved,
                 "Prompt tokens not prefilled thanks to KV reuse across agent steps."),
                ("autoglm_num_requests_waiting", "gauge", self.queue_depth, "Requests queued for a batch slot."),
                ("autoglm_num_requests_running", "gauge", self.running, "Requests in the decode batch."),
            ):
                lines += [f"# HELP {name} {help_}", f"# TYPE {name} {kind}", f"{name} {value}"]
            for name, hist, help_ in (
                ("autoglm_time_to_first_token_seconds", self.ttft, "Arrival to first token."),
                ("autoglm_inter_token_latency_seconds", self.itl, "Time between consecutive tokens."),
            ):
                lines += [f"# HELP {name} {help_}", f"# TYPE {name} histogram", *hist.lines(name)]
        return "\n".join(lines) + "\n"
