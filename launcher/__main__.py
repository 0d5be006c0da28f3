"""`python -m launcher ...` is `l4run ...` (the command line; the root task itself is
`python -m launcher.root`, launcher/root.py)."""
from .cli import main

main()
