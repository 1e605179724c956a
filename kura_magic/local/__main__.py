"""The server process: `python -m kura_magic.local SETTINGS_JSON` (see `server_command`)."""

from __future__ import annotations

import json
import sys

from kura_magic.local.server import serve

if __name__ == "__main__":
    serve(json.loads(sys.argv[1]))
