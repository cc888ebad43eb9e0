"""``python -m hal0`` runs the CLI."""

import sys

from hal0.cli import main

sys.exit(main())
