"""``python -m kura_magic.testing [--port N] [--latency S] [--port-file PATH]``: see ``cli``."""

from kura_magic.testing.cli import main

if __name__ == "__main__":
    main()
