"""Pseudo-pair mining: the top-k cached sentences of every cached image."""
