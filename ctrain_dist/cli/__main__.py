"""``python -m ctrain_dist.cli``: the ``ctrain`` command."""

import sys

from ctrain_dist.cli.main import main

sys.exit(main())
