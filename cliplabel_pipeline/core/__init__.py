"""The labelling core: plain functions and small classes, no Dagster imports."""
