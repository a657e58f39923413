"""Core layer: what every other layer builds on and that imports nothing of them (errors, the model
factory and its configs, checkpoints, losses, torch.distributed, progress display)."""
