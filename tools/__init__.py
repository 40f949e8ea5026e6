"""Developer tools of the repository (not part of the installed ``trt_pipeline`` package)."""
