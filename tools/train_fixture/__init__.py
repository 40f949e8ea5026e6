"""Makes the ``trained`` fixture (``trt_pipeline/fixtures/trained/``): ``python -m tools.train_fixture``."""
