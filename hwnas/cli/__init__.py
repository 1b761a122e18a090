"""The ``hwnas`` command line (click). Each command group lives in its own module."""
