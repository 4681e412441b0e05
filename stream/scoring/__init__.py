"""The scoring flow: events in, validated, featurised, scored by ONNX in micro-batches, predictions out."""
