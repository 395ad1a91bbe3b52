"""limits.nesting: JSON measured before it is parsed, without recursion and in linear time."""

import time

from localgg import limits


def test_nesting_counts_brackets_outside_strings():
    assert limits.nesting(b'{"a": "[[[[{{", "b": [1, [2, {"c": "\\"[["}]]}') == 4
    assert limits.nesting("[" * 100_000 + "]" * 100_000) == 100_000


def test_nesting_is_linear_on_an_unterminated_string():
    def cost(n):
        evil = b"[" * 80 + b'"' + b'\\"' * n
        started = time.perf_counter()
        limits.nesting(evil)
        return time.perf_counter() - started
    small, large = cost(4_000), cost(32_000)
    assert large < 30 * small + 0.05, f"{large:.3f} s for 8x the input of {small:.4f} s"
