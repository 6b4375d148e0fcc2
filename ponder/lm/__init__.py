"""Retrofitted recurrence for Hugging Face causal LMs: surgery, depth curriculum, GSM8K evaluation."""
