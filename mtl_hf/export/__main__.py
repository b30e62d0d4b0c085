"""``python -m mtl_hf.export MODEL_DIR TASK OUTPUT_DIR``: see :func:`mtl_hf.export.main`."""

import sys

from . import main

sys.exit(main())
