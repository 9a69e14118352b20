"""Old import path, kept for one release: this module is :mod:`crossformer_vision.tools.bench` (the same module
object, so attributes read or patched through either name are the same). ``python -m crossformer_vision.bench``
still runs its worker."""
import sys

from .tools import bench as _moved

if __name__ == "__main__":
    sys.exit(_moved.main(sys.argv[1:]))
sys.modules[__name__] = _moved
