"""The second half of the golden full tier (see test_golden.py): the same check, other cases."""

import pytest
from test_golden import TAIL, cases, check_case
from test_golden import golden as golden  # noqa: F401  (the module fixture, re-used here)


@pytest.mark.slow
@pytest.mark.parametrize("case", [c for c in cases.CASES if c in TAIL])
def test_golden_tail(golden, case):  # noqa: F811
    check_case(golden, case)


def test_the_two_files_cover_every_case():
    from test_golden import FULL

    assert set(FULL) == set(FULL[0::2]) | TAIL and not set(FULL[0::2]) & TAIL
    assert len(TAIL) == len(FULL) // 2
