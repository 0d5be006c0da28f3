"""The kernel process (`python -m kernel`). The module map, bottom up, is in kernel/__init__.py."""
