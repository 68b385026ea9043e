import sys

from cliplabel_pipeline.cli import main

sys.exit(main())
