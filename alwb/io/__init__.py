"""In and out: answers files, exports (dataset, model, ONNX), Label Studio, prediction with an exported model,
and text reports."""
