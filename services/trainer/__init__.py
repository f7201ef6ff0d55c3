"""trainer: config -> data version -> model -> ONNX (features inside) -> metrics by running the ONNX -> registry."""
