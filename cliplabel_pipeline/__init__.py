"""cliplabel: zero-shot CLIP auto-labelling of segmentation jobs, as a library, a CLI and a Dagster project."""
