"""Inference: posterior over (component, mechanism) from the evidence of each hypothesis."""
