"""Inference: posterior over (component, mechanism) from the evidence of each hypothesis."""

from latentcause.inference.engine import AnalysisResult, Ranking, analyze, rank

__all__ = ["AnalysisResult", "Ranking", "analyze", "rank"]
