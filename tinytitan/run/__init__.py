"""A run folder (``--job.dump_folder``): its layout, written once (``RunFolder``)."""
