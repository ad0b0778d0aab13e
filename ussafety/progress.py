"""Progress bars for the steps that can take more than about ten seconds, under one rule.

Shown when stderr is a terminal, hidden otherwise, so log files, CI output, papermill's
executed notebooks and records of a run's console stay free of carriage-return noise;
``USSAFETY_PROGRESS=0`` hides them on a terminal too, ``USSAFETY_PROGRESS=1`` shows them
where stderr is not one (a log file someone tails, a Jupyter notebook). Every bar of the
package goes through :func:`progress`, and the two bars that other libraries draw (the
Hugging Face ``Trainer``'s, papermill's per-cell one) are switched by
:func:`progress_enabled`, so one variable governs them all.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from typing import Any

ENV = "USSAFETY_PROGRESS"
OFF = ("0", "false", "no", "off")
ON = ("1", "true", "yes", "on")


def progress_enabled() -> bool:
    """Whether bars are drawn: :data:`ENV` if set to one of :data:`ON` / :data:`OFF`, else
    whether stderr is a terminal."""
    value = os.environ.get(ENV, "").strip().lower()
    if value in OFF:
        return False
    if value in ON:
        return True
    isatty = getattr(sys.stderr, "isatty", None)
    return bool(isatty and isatty())


def progress(
    iterable: Iterable[Any] | None = None,
    *,
    total: int | None = None,
    desc: str | None = None,
    unit: str = "it",
    **kw: Any,
) -> Any:
    """A ``tqdm`` bar (``tqdm.auto``: a widget in a notebook), disabled unless
    :func:`progress_enabled`; a disabled bar takes the same calls (iteration, ``update``,
    ``with``), so callers need no branch.
    ``mininterval`` is one second unless given: these steps are long, their bars need not
    redraw more often."""
    from tqdm.auto import tqdm

    kw.setdefault("mininterval", 1.0)
    return tqdm(iterable, total=total, desc=desc, unit=unit, disable=not progress_enabled(), **kw)
