"""The manifest's schema: its tables (one file, readable by any DuckDB >= 1.1 client) and the columns
of the SQL views over the Parquet shards (`image_embeddings`, `text_embeddings`), called relations in
the code so that "views" keeps meaning cached augmented views."""

from __future__ import annotations

SCHEMA_VERSION = "2"
# Files written in this format open in every DuckDB client from 1.1 on (newer defaults do not).
STORAGE_VERSION = "v1.1.0"

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name VARCHAR PRIMARY KEY, value VARCHAR);
CREATE TABLE IF NOT EXISTS teachers (
    teacher_id INTEGER, arch VARCHAR, pretrained VARCHAR, fingerprint VARCHAR, embed_dim INTEGER,
    image_size INTEGER, context_length INTEGER, preprocess VARCHAR, normalized BOOLEAN, dtype VARCHAR,
    config VARCHAR, created_at TIMESTAMP);
CREATE TABLE IF NOT EXISTS sources (
    source_id INTEGER, modality VARCHAR, uri VARCHAR, format VARCHAR, fingerprint VARCHAR,
    options VARCHAR, files INTEGER, shard_size INTEGER, units INTEGER, duplicates BIGINT,
    added_at TIMESTAMP, run_id INTEGER, root VARCHAR, repeated_keys BIGINT, other_files VARCHAR);
CREATE TABLE IF NOT EXISTS source_files (
    source_id INTEGER, file_id INTEGER, path VARCHAR, size BIGINT, mtime_ns BIGINT);
CREATE TABLE IF NOT EXISTS source_moves (
    source_id INTEGER, old_root VARCHAR, new_root VARCHAR, files_checked BIGINT, items_checked BIGINT,
    run_id INTEGER, moved_at TIMESTAMP);
CREATE TABLE IF NOT EXISTS units (
    source INTEGER, unit INTEGER, state VARCHAR, items BIGINT, errors BIGINT, duplicates BIGINT,
    truncated BIGINT, rank INTEGER, run_id INTEGER, completed_at TIMESTAMP, pack_path VARCHAR,
    pack_checksum VARCHAR, pack_bytes BIGINT, pack_sample VARCHAR);
CREATE TABLE IF NOT EXISTS unit_records (source INTEGER, unit INTEGER, listed BIGINT);
CREATE TABLE IF NOT EXISTS shards (
    shard_id INTEGER, source INTEGER, unit INTEGER, part INTEGER, modality VARCHAR, path VARCHAR,
    parquet_path VARCHAR, rows INTEGER, dim INTEGER, dtype VARCHAR, checksum VARCHAR,
    parquet_checksum VARCHAR, bytes BIGINT, state VARCHAR, created_at TIMESTAMP, loc_path VARCHAR,
    loc_checksum VARCHAR, sample VARCHAR, loc_sample VARCHAR);
CREATE TABLE IF NOT EXISTS token_files (
    tokenizer VARCHAR, text_checksum VARCHAR, path VARCHAR, "rows" BIGINT, checksum VARCHAR, created_at TIMESTAMP);
CREATE TABLE IF NOT EXISTS items (
    item_id BIGINT, modality VARCHAR, source INTEGER, key VARCHAR, shard INTEGER, "row" INTEGER,
    text_hash BIGINT, file INTEGER, pos BIGINT, "view" SMALLINT);
CREATE TABLE IF NOT EXISTS errors (
    source INTEGER, key VARCHAR, stage VARCHAR, reason VARCHAR, run_id INTEGER, created_at TIMESTAMP, file INTEGER);
CREATE TABLE IF NOT EXISTS runs (
    run_id INTEGER, kind VARCHAR, command VARCHAR, config VARCHAR, versions VARCHAR, world_size INTEGER,
    started_at TIMESTAMP, ended_at TIMESTAMP, status VARCHAR, output VARCHAR, metrics VARCHAR);
CREATE TABLE IF NOT EXISTS minings (
    mining_id INTEGER, run_id INTEGER, k INTEGER, index_type VARCHAR, images BIGINT, texts BIGINT,
    created_at TIMESTAMP, state VARCHAR, image_block INTEGER);
CREATE TABLE IF NOT EXISTS pseudo_pairs (
    mining_id INTEGER, image_item BIGINT, "rank" INTEGER, text_item BIGINT, score FLOAT);
CREATE TABLE IF NOT EXISTS metrics (run_id INTEGER, step INTEGER, name VARCHAR, value DOUBLE);
CREATE TABLE IF NOT EXISTS imports (
    run_id INTEGER, modality VARCHAR, folder VARCHAR, layout VARCHAR, partitions INTEGER, "rows" BIGINT,
    checked INTEGER, min_cosine DOUBLE, created_at TIMESTAMP);
ALTER TABLE items ADD COLUMN IF NOT EXISTS imported BOOLEAN;
CREATE SEQUENCE IF NOT EXISTS item_seq START 1;
ALTER TABLE teachers ADD COLUMN IF NOT EXISTS name VARCHAR;
CREATE TABLE IF NOT EXISTS teacher_shards (
    teacher_id INTEGER, shard_id INTEGER, path VARCHAR, parquet_path VARCHAR, "rows" INTEGER, dim INTEGER,
    dtype VARCHAR, checksum VARCHAR, parquet_checksum VARCHAR, sample VARCHAR, bytes BIGINT, state VARCHAR,
    run_id INTEGER, created_at TIMESTAMP);
CREATE VIEW IF NOT EXISTS item_teachers AS
    SELECT i.item_id, i.modality, i.key, i."view", t.teacher_id, coalesce(t.name, t.arch) AS teacher, t.embed_dim
    FROM items i JOIN shards s ON s.shard_id = i.shard AND s.state = 'complete' JOIN teachers t ON t.teacher_id = 1
    UNION ALL
    SELECT i.item_id, i.modality, i.key, i."view", t.teacher_id, t.name AS teacher, t.embed_dim
    FROM items i JOIN teacher_shards c ON c.shard_id = i.shard AND c.state = 'complete'
    JOIN teachers t ON t.teacher_id = c.teacher_id;
"""

# Columns of the SQL views `image_embeddings` / `text_embeddings` (relations over the Parquet shards).
RELATION_COLUMNS = {
    "image": "p.key, f.path AS file, p.view, p.embedding, s.uri AS source, p.source_id, p.file AS file_id, p.pos, p.row, "
             "p.crop_x0, p.crop_y0, p.crop_x1, p.crop_y1, p.flip, p.packed, p.offset, p.length",
    "text": "p.key, f.path AS file, p.text, p.embedding, p.truncated, s.uri AS source, p.source_id, p.file AS file_id, p.pos, p.row",
}
