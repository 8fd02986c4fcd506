"""Hypothesis strategies shared by the suite."""

from __future__ import annotations

from hypothesis import strategies as st

#: Every character but the lone surrogates: the same intervals as ``st.text()``'s default
#: alphabet, ``characters(codec="utf-8")``, so the same examples. Asked by codec, Hypothesis
#: (6.170) finds them by encoding each of the 1,114,112 code points: 1.3 s of CPU in each
#: process that draws text, until a run has cached the table in .hypothesis/ (a clean clone
#: has none). By category, it reads its table of categories (0.15 s once). Schemathesis still
#: asks by codec, in the process that runs tests/server/test_openapi.py.
UNICODE = st.characters(exclude_categories=["Cs"])


def text(*, min_size: int = 0, max_size: int | None = None) -> st.SearchStrategy[str]:
    """``st.text()``, its alphabet asked by category (see :data:`UNICODE`)."""
    return st.text(UNICODE, min_size=min_size, max_size=max_size)
