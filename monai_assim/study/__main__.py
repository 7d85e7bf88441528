"""``python -m monai_assim.study``: see :mod:`monai_assim.study`."""

import sys

from monai_assim.errors import install_excepthook
from monai_assim.study.cli import main

if __name__ == "__main__":
    install_excepthook()  # a user error ends stderr with its message and hint
    sys.exit(main())
