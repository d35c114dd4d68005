"""avatar: talk to a photo. Speech in, a talking-head video reply out."""

import os as _os
import re as _re

__version__ = "0.1.0"


def _openmp_loaded() -> bool:
    """Whether a shareable OpenMP runtime (soname ``libgomp.so.1``) is in the process already."""
    try:
        with open("/proc/self/maps") as maps:
            return any(_re.search(r"/libgomp\.so\.1(\.\d+)*$", line.rstrip()) for line in maps)
    except OSError:
        return False


# OpenMP's workers spin while they wait for each other unless told otherwise, and on a busy machine a
# spinning worker keeps the core its descheduled partner needs (the first reply token 3-5 s instead of
# 0.2-0.3 s, docs/models.md). libgomp reads the variable once, when it loads; llama.cpp in the xllamacpp
# wheel shares whichever libgomp.so.1 loads first, and torch (imported to ask whether there is CUDA, when
# installed) brings its own: so it is set here, before anything in the package can load either. A value
# the user set wins. OPENMP_WAIT_POLICY is what the loaded runtime read (avatar/cores.py decides by it).
OMP_WAIT_POLICY_AT_START = _os.environ.get("OMP_WAIT_POLICY")
OPENMP_LOADED_BEFORE = _openmp_loaded()
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
OPENMP_WAIT_POLICY = (OMP_WAIT_POLICY_AT_START or "default") if OPENMP_LOADED_BEFORE else _os.environ["OMP_WAIT_POLICY"]
