"""`python -m ivr`."""

from .cli.main import main

main()
