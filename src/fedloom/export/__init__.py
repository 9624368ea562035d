"""Deployment to devices: a trained model as an ONNX file (float or int8), verified in
onnxruntime against the PyTorch model, and predictions with it (``fedloom export``,
``fedloom predict``, ``fedloom.export_model``)."""
