"""``python -m lightning_tts COMMAND [--config FILE]... [dotted.key=value]...``"""
import sys

from lightning_tts.cli import main

if __name__ == "__main__":
    sys.exit(main())
