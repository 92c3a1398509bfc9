"""The Satchel stack on one machine, without Docker (`make run`, the end-to-end tests)."""
from .stack import Stack, StackConfig, StackError

__all__ = ["Stack", "StackConfig", "StackError"]
