"""dimefm: distil a large CLIP-style teacher into a small student from unpaired images and sentences."""

__version__ = "0.1.0"
