"""onegen: the One-Gen data engine (pipelines, annotators, manifests) and the OneDiffusion trainer/sampler."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("onegen")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+source"
