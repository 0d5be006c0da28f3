"""`python -m kernel --run-dir DIR`: run the kernel process (kernel/core/transport.py)."""
import sys

from .core.transport import main

sys.exit(main())
