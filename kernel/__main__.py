"""`python -m kernel --run-dir DIR`: run the kernel process."""
import sys

from .core.kernel import main

sys.exit(main())
