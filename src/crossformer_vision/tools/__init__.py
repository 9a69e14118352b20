"""Tools around the model: speed benchmarks (:mod:`.bench`), parameter and MAC counts (:mod:`.flops`), and the
``torch.export``/ONNX writers (:mod:`.export`). Imported on demand; nothing in the model depends on them."""
