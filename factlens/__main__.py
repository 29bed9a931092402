"""``python -m factlens ...`` is the ``factlens`` command."""

from factlens.runner.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
