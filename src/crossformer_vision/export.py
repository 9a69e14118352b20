"""Old import path, kept for one release: this module is :mod:`crossformer_vision.tools.export` (the same module
object, so attributes read or patched through either name are the same)."""
import sys

from .tools import export as _moved

sys.modules[__name__] = _moved
