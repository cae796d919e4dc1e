"""``python3 -m crdsops.stack build ...``: what bin/bootstrap runs with a bare Debian python3."""

import sys

from crdsops.stack.build import main

sys.exit(main())
