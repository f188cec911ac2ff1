"""`python -m netgraft.nas ...` = `netgraft search ...`."""
import sys

from .cli import main

sys.exit(main())
