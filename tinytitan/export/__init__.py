"""Checkpoint -> verified Hugging Face / Meta folders (``tinytitan export``)."""
