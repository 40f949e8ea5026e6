# GPU image: NVIDIA's TensorRT container + autoglm-trt installed with the `gpu` and `dev` extras.
#
#   docker build -t autoglm-trt:gpu .
#   docker run --rm --gpus all autoglm-trt:gpu                       # GPU test suite (pytest -m gpu tests/gpu)
#   docker run --rm --gpus all -v "$PWD/engines:/workspace/autoglm-trt/engines" autoglm-trt:gpu \
#       autoglm-trt build engines/demo --fp16 --workspace 4GiB
#
# TRT_IMAGE selects the TensorRT release: the default tag carries TensorRT 10.x; pass a newer
# nvcr.io/nvidia/tensorrt:<yy.mm>-py3 tag for TensorRT 11 (see the NGC TensorRT release notes for
# the TensorRT version of each tag). Engines are only valid for the TensorRT version and GPU
# architecture they were built with (see docs/gpu.md).
ARG TRT_IMAGE=nvcr.io/nvidia/tensorrt:25.11-py3
FROM ${TRT_IMAGE}
# CUDA major of TRT_IMAGE (25.11: CUDA 13.0; 25.01 and older: CUDA 12): selects the cuda-python extra.
ARG CUDA_EXTRA=cuda13

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
WORKDIR /workspace/autoglm-trt

# Keep the TensorRT that ships with the image: only cuda-python of the image's CUDA major is added
# (the `cuda12`/`cuda13` extra, not `gpu-cu*`, which would pull a second TensorRT from PyPI).
RUN python3 -c "import tensorrt; print('TensorRT', tensorrt.__version__)" \
 && python3 -c "import tensorrt; print('tensorrt==' + tensorrt.__version__)" > /tmp/tensorrt-constraints.txt

# Dependencies first (cached layer), then the sources. The Makefile's CPU-only torch pin does not
# apply here: pip resolves the default (CUDA) torch wheel, which the runner uses for device buffers.
COPY pyproject.toml README.md ./
COPY trt_pipeline ./trt_pipeline
RUN python3 -m pip install --upgrade pip \
 && python3 -m pip install -c /tmp/tensorrt-constraints.txt -e ".[${CUDA_EXTRA},dev]" \
 && python3 -c "import tensorrt, torch; print('tensorrt', tensorrt.__version__, '| torch', torch.__version__, 'cuda', torch.version.cuda)"

COPY tests ./tests
COPY calibration ./calibration
COPY docs ./docs
COPY benchmarks ./benchmarks
COPY Makefile ./

CMD ["python3", "-m", "pytest", "-q", "-m", "gpu", "tests/gpu"]
