"""`python -m ivr`."""

from .cli import main

main()
