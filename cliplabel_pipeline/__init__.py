"""cliplabel: zero-shot CLIP auto-labelling of segmentation jobs, as a library, a CLI and a Dagster project.

``OMP_WAIT_POLICY=PASSIVE`` (unless the environment says otherwise) makes the model's OpenMP threads sleep
between operations instead of spinning: the same forward-pass speed measured on 2 cores (71-77 img/s either
way, ViT-B/32 bf16 at batch 32), with 87-92% of the cores busy instead of 94-97%, the rest left to the
background decoding processes (``core/encoding/embedding.py``). OpenMP reads it once, when torch loads it, so
it is set here, before any module of the package can import torch.
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
