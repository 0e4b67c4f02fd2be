"""Pure geometry, no I/O: pixel grids, tiling with overlap, point sampling, the train/validation split
and test-time augmentation."""
