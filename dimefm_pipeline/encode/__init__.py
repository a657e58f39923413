"""Stage one: the frozen teacher over image and sentence sources, into the cache."""
