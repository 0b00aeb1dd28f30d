"""Mechanisms: Bayesian generative models, one per failure mechanism."""
