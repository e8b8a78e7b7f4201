"""`python -m weft_workflows ARGS` runs this package's `weft` binary with
ARGS: the unambiguous name where another package's `weft` command (PyPI's
unrelated `weft` project has one) shadows this one."""

from __future__ import annotations

import os
import sys

from weft_workflows import find_weft_bin


def main() -> None:
    weft = find_weft_bin()
    if sys.platform == "win32":  # pragma: no cover - weft runs on Unix only
        import subprocess

        sys.exit(subprocess.call([weft, *sys.argv[1:]]))
    os.execv(weft, [weft, *sys.argv[1:]])


if __name__ == "__main__":
    main()
