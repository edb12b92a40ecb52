"""graphc.data -- datasets, splits and mini-batches."""
