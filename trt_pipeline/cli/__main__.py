"""``python -m trt_pipeline.cli``: the same entry point as the ``autoglm-trt`` script."""

from trt_pipeline.cli import app

app(prog_name="autoglm-trt")
