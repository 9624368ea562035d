"""``python -m fedloom ...``: the same command line as ``fedloom ...``."""

from fedloom.cli import main

if __name__ == "__main__":
    main()
