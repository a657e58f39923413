"""Store layer: the cache on disk (shard files, memory-mapped tables, token ids) and the DuckDB
manifest that catalogs it. Builds on formats and core; knows nothing of the stages."""
