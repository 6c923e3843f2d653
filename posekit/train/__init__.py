"""The shared training loop: atomic checkpoints, resume, progress, loss curves."""
