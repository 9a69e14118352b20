"""``python -m crossformer_vision.cli``: the ``crossformer`` command (torchrun uses this form)."""
import sys

from . import main

sys.exit(main())
