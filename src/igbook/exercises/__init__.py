"""Self-checks for the book's exercises.

Each chapter has a module here (``igbook.exercises.fisher_metric``, ...). A check takes the
reader's answer (a number, a tensor or a function), compares it with the reference at a stated
tolerance on several test points, and returns a :class:`Feedback`: truthy when right, and when
wrong a message saying *what* is wrong: at which test point, which typical mistake it looks like
(the exercise's own list, then a sign, a factor of 2, variance for standard deviation, a
transposed or inverted matrix, float32 rounding), or which way it is off; never the expected
value. Any answer gets a Feedback, never a traceback: None, ``...``, text, NaN, a wrong shape,
or a function that raises (reported by its exception type, message and line).

New checks use the helpers of ``igbook.exercises._core`` (``need_function``, ``run_reader``,
``as_number``, and ``compare`` with ``mistakes=`` and ``hint=``), and get a case in
``tests/test_exercises.py``, which covers every public check of every module here.
"""

from igbook.exercises._core import Feedback, compare

__all__ = ["Feedback", "compare"]
