"""Semantic vs activation similarity of prompts (RSA) for the `similarity` stage."""
from agmask.similarity.rsa import cosine_matrix, layer_rsa, mantel_p, rsa, summarize_matrix, upper

__all__ = ["cosine_matrix", "layer_rsa", "mantel_p", "rsa", "summarize_matrix", "upper"]
