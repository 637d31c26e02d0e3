"""curator: safety-aware data curation for LLM fine-tuning and pre-training data."""

__version__ = "0.1.0"
