"""Stage two: train a small student against cached teacher embeddings with the DIME-FM losses."""
