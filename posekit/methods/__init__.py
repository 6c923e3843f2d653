"""Pose methods: aae (augmented autoencoder + codebook), refine (DeepIM-style)."""
