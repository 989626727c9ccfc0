"""The package version, in a leaf module so that any module can name it without a cycle."""

__version__ = "0.1.0"


def get_version() -> str:
    """Robyn's ``get_version()``: the framework's version string."""
    return __version__
