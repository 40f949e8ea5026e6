"""Runners: one Polygraphy ``BaseRunner`` protocol for torch, ONNX Runtime and TensorRT."""
