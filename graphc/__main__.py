"""``python -m graphc ...`` runs the command line (same as the ``graphc`` script)."""
import sys

from .cli import main

sys.exit(main())
