"""Docker HEALTHCHECK probe: exit 0 when `/healthz` answers 200 within 2 s, else 1.

Stdlib only and no package imports beyond `config`, so a probe every few seconds
costs one short-lived interpreter.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request

from agent_runner.config import Config, ConfigError

TIMEOUT_SECONDS = 2.0


def main() -> int:
    try:
        port = Config.from_env(os.environ).health_port
    except ConfigError as error:
        print(f"unhealthy: {error}", file=sys.stderr)
        return 1
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=TIMEOUT_SECONDS) as response:
            return 0 if response.status == 200 else 1
    except (OSError, urllib.error.URLError) as error:
        print(f"unhealthy: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
