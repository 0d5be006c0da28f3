"""`python -m hal ARGS`: the HAL process (an L4 task: needs L4_KERNEL/L4_SECRET set)."""
import sys

from .main import main

sys.exit(main())
