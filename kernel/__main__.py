"""`python -m kernel --run-dir DIR`: run the kernel process."""
import sys

from .server import main

sys.exit(main())
