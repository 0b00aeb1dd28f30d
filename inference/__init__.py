"""Inference: posterior over (component, mechanism) from the evidence of each hypothesis."""

from latentcause.inference.engine import AnalysisResult, analyze

__all__ = ["AnalysisResult", "analyze"]
