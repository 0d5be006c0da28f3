"""`python -m launcher ...` is `l4run ...`."""
from .cli import main

main()
