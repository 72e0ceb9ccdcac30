"""Shared setup for the core's unit tests."""

from __future__ import annotations

import contextlib
import warnings

# When a property test fails, Hypothesis imports its patch writer, which imports libcst, which uses the
# deprecated mypy_extensions.TypedDict. Under filterwarnings=error that warning surfaces as a pytest
# INTERNALERROR that buries the falsifying example; importing it here, with the warning ignored, keeps
# failure reports readable.
with warnings.catch_warnings(), contextlib.suppress(ImportError):
    warnings.simplefilter("ignore", DeprecationWarning)
    import hypothesis.extra._patching  # noqa: F401
