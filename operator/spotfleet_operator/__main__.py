"""``python -m spotfleet_operator``: the same as ``spotfleet``."""

from spotfleet_operator import main

main.main()
