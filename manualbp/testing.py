"""Assertions for a test suite: ``assert_verified`` runs ``manualbp.verify`` and fails the test with the rows
that failed.

    def test_my_function_backward():
        assert_verified(MyFunction.apply, reference, (x, weight))
"""

from manualbp.verify import verify

__all__ = ["assert_verified"]


def assert_verified(function, reference, inputs, **options):
    """``manualbp.verify(function, reference, inputs, **options)``; raise AssertionError naming each failed row
    and why, followed by the whole table. Returns the report when every row passes (or does not apply)."""
    report = verify(function, reference, inputs, **options)
    if not report.ok:
        failed = "\n".join(f"  {row.name} (sample {row.sample}): {row.why}" for row in report.failed)
        raise AssertionError(f"{len(report.failed)} of {len(report.rows)} rows failed:\n{failed}\n\n{report}")
    return report
