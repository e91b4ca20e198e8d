"""The data mixture: configuration, streaming loader, prepared token shards, validation.

Importing this package is cheap (no torch); ``tinytitan.data.loader`` pulls in torch.
"""
