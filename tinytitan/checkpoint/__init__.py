"""Reading, inspecting and upgrading torchtitan DCP checkpoints (``tinytitan checkpoint``)."""
