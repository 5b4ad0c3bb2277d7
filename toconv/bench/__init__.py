"""The benchmark (``python -m toconv.bench``): methods, instruments, runner and report.

Importing it registers every method, the slots family's rows included.
"""

from toconv.bench import methods, slot_methods

__all__ = ["methods", "slot_methods"]
