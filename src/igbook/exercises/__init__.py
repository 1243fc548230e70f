"""Self-checks for the book's exercises.

Each chapter has a module here (``igbook.exercises.fisher_metric``, ...). A check takes the
reader's answer (a number, a tensor or a function), compares it with the reference at a stated
tolerance on several test points, and returns a :class:`Feedback`: truthy when right, and when
wrong a message saying *what* is wrong (wrong at which point, by how much, or a wrong shape).
"""

from igbook.exercises._core import Feedback, compare

__all__ = ["Feedback", "compare"]
