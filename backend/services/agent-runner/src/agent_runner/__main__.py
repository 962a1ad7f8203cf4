"""Process entry point (`python -m agent_runner`, the image's CMD): the reloading supervisor.

See `supervisor` for the process model. Exit codes: 0 after SIGTERM/SIGINT, 2 for a
bad configuration.
"""

from __future__ import annotations

import sys

from agent_runner.supervisor import main

if __name__ == "__main__":
    sys.exit(main())
