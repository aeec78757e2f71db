"""Export (torch): wrap a trained model, convert it with torch.onnx, validate against PyTorch."""
