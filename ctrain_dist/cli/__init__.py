"""The ``ctrain`` command. Its store, report and status commands import neither torch nor Ray."""
