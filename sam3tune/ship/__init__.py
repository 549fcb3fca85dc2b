"""Shipping a tuned model: ONNX graphs run by onnxruntime, a Hugging Face Hub folder with its model card,
and the upload. See docs/ship.md."""
