"""Old import path, kept for one release: this module is :mod:`crossformer_vision.runtime.onednn` (the same module
object, so attributes read or patched through either name are the same)."""
import sys

from .runtime import onednn as _moved

sys.modules[__name__] = _moved
