"""tinytitan: pretrain small Llama 3 models on a pinned torchtitan."""

__version__ = "0.1.0"
