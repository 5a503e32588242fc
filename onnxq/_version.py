"""The installed package version, in a leaf module.

Modules inside onnxq that need the version (the collector stamps it into ranges files, the CLI
prints it) import it from here rather than from the root package: importing ``onnxq`` itself
would pull the whole public API (pass framework, passes) into their import graph and close a cycle.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

__all__ = ["__version__"]

try:
    __version__ = version("onnxq")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+local"
