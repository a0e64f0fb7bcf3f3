"""spotfleet's sub-commands, one module each (their shells live in :mod:`spotfleet_cli.app`)."""
