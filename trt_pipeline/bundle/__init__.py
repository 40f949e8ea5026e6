"""Bundles: everything a board needs to build its TensorRT engines, or a phone to run the graphs on ONNX Runtime.

Jetson users do not export on the board; they copy ONNX made on a workstation and build engines
there (as TensorRT Edge-LLM does). :func:`~trt_pipeline.bundle.make.make_bundle` shapes that trip:
ONNX + external data of one precision, export manifest, embeddings, tokenizer / chat template /
image processor config, a constraints file for the target's TensorRT, ``build.sh`` (``autoglm-trt
build``, falling back to generated ``trtexec`` commands), a sha256 manifest and a README.
:func:`~trt_pipeline.bundle.verify.verify_bundle` checks it on arrival.

An Android phone builds nothing: ``--target android-arm64`` ships the graphs for ONNX Runtime with reference
calls recorded on the workstation, which the phone replays (``onnxruntime_bundle.py``, ``golden.py``), and the
operator list of a reduced ONNX Runtime build (``operators.py``). See docs/android.md.
"""
