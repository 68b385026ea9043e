"""Serving many callers from one warm model: uploads merged into batches, jobs run one at a time."""
