"""The version, kept here alone: a leaf that the package, the build and the wheel all read."""

__version__ = "0.1.0"
