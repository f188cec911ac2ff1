"""`python -m netgraft ...` runs the command line, like the `netgraft` script."""
import sys

from .cli import main

sys.exit(main())
