"""weft for Python: the `weft` binary this wheel installed, and a pytest
fixture (`weft_dev`, in `weft_workflows.pytest_plugin`) that runs an app's
tasks on a `weft dev` of its own."""

from __future__ import annotations

import os
import sys
import sysconfig

__all__ = ["find_weft_bin"]


def find_weft_bin() -> str:
    """The path of the `weft` binary installed with this package.

    Looked for where pip put it (the scripts folder of this interpreter's
    scheme, or of the user scheme), not on PATH, so the binary is this
    wheel's even where another `weft` comes first on PATH."""
    exe = "weft" + (sysconfig.get_config_var("EXE") or "")
    schemes = [sysconfig.get_default_scheme()]
    if sys.version_info >= (3, 10):
        schemes.append(sysconfig.get_preferred_scheme("user"))
    folders = [sysconfig.get_path("scripts", scheme=s) for s in schemes]
    # A venv's bin folder, whichever scheme the interpreter reports.
    folders.append(os.path.dirname(sys.executable))
    for folder in folders:
        path = os.path.join(folder, exe)
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    raise FileNotFoundError(
        f"the weft binary of weft-workflows is not in {', '.join(folders)}: "
        "reinstall it with `pip install --force-reinstall weft-workflows`"
    )
