"""Data: BOP datasets and results files, augmentation, training datasets."""
