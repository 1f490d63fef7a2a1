"""Bucket-event ingestion: a merchant's uploaded photo becomes a classified, searchable product."""
