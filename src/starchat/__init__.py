"""starchat: turn a code language model into a helpful coding assistant, and run it."""

__version__ = "0.1.0"
