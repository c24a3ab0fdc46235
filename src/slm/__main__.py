"""``python -m slm``: the same command line as ``slm``."""

from slm.cli import app

if __name__ == "__main__":
    app(prog_name="slm")
