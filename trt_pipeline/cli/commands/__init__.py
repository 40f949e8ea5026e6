"""One module per command group; :mod:`trt_pipeline.cli.app` registers them by name."""
