"""The shipped, trained models (package data): one self-describing .onnx file each."""
