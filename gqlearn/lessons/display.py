"""Display code every chapter shares: a printable :class:`Table`, the figure helper and a
widget wrapper whose plain-text form is a friendly placeholder.

Chapter modules (``gqlearn.lessons.<chapter>``) import from here and from
:mod:`~gqlearn.lessons.exercises`, never from each other.
"""

from __future__ import annotations

import html
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    import ipywidgets

__all__ = ["Table", "plt", "show_figure", "live_widget", "PLACEHOLDER"]

# What a widget shows where no kernel runs it (a stored notebook, a rendered page, a test).
PLACEHOLDER = "[{name}: an interactive widget; run the cells above in Jupyter to use it]"


def _fmt(x: Any, spec: str) -> str:
    if isinstance(x, (bool, np.bool_)):
        return "yes" if x else "no"
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    if isinstance(x, (float, np.floating)):
        value = float(x)
        return "0" if value == 0 else format(value, spec)
    if isinstance(x, np.ndarray):
        x = x.tolist()
    if isinstance(x, (list, tuple)):
        return "[" + ", ".join(_fmt(v, spec) for v in x) + "]"
    return str(x)


@dataclass(frozen=True)
class Table:
    """Rows of numbers with column names; prints as aligned text.

    Attributes
    ----------
    columns : tuple of str
    rows : tuple of tuple
        One tuple per row, in column order; cells keep their numeric types.
    notes : tuple of str
        Lines printed above the table (the steps that lead to it).
    formats : mapping of str to str
        Format spec per column for floats (default ``".6g"``).

    Examples
    --------
    >>> Table(("x", "x / 3"), ((1, 1 / 3), (2, 2 / 3)), notes=("thirds",))
    thirds
    x     x / 3
    -  --------
    1  0.333333
    2  0.666667
    """

    columns: tuple[str, ...]
    rows: tuple[tuple[Any, ...], ...]
    notes: tuple[str, ...] = ()
    formats: Mapping[str, str] = field(default_factory=dict)

    def column(self, name: str) -> list[Any]:
        """The cells of column ``name``, top to bottom."""
        try:
            i = self.columns.index(name)
        except ValueError:
            raise KeyError(f"no column {name!r}; columns are {list(self.columns)}") from None
        return [row[i] for row in self.rows]

    def _cells(self) -> list[list[str]]:
        specs = [self.formats.get(c, ".6g") for c in self.columns]
        return [[_fmt(v, s) for v, s in zip(row, specs, strict=True)] for row in self.rows]

    def __len__(self) -> int:
        return len(self.rows)

    def __repr__(self) -> str:
        cells = self._cells()
        widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(self.columns)]
        lines = list(self.notes)
        lines.append("  ".join(c.rjust(w)
                               for c, w in zip(self.columns, widths, strict=True)).rstrip())
        lines.append("  ".join("-" * w for w in widths))
        lines += ["  ".join(v.rjust(w) for v, w in zip(r, widths, strict=True)).rstrip()
                  for r in cells]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        notes = "".join(f"<p>{html.escape(n)}</p>" for n in self.notes)
        head = "".join(f"<th>{html.escape(c)}</th>" for c in self.columns)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in r) + "</tr>"
                       for r in self._cells())
        return f"{notes}<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def plt() -> Any:
    """``matplotlib.pyplot``, imported on first use (the library itself never needs it)."""
    import matplotlib.pyplot as pyplot

    return pyplot


# ipykernel 7 may run widget callbacks on a thread beside the main one, and matplotlib's text
# layout (its mathtext parser above all) is not safe to run from two threads at once: widget
# drawing takes this lock, and figures leave pyplot before they are drawn (show_figure).
_DRAW_LOCK = threading.RLock()


def plain_log_labels(*axes: Any) -> None:
    """Label log axes in plain numbers (``0.01``, ``0.0625``, ``5,600``), not mathtext (``10^-2``).

    Matplotlib writes log ticks, minor ones too, as mathtext, whose parser is shared and not
    thread-safe; a widget may draw on a thread beside the main one, so widget figures keep to
    plain labels (``tests/test_lessons_widget_text.py`` checks every widget).  Which ticks get a
    label is still matplotlib's choice.
    """
    from matplotlib.ticker import LogFormatter

    class PlainLogFormatter(LogFormatter):
        def __call__(self, x: float, pos: int | None = None) -> str:
            if not super().__call__(x, pos):
                return ""
            return f"{x:,.0f}" if 1 <= x < 1e7 and x == round(x) else f"{x:.3g}"

    for axis in axes:
        axis.set_major_formatter(PlainLogFormatter())
        axis.set_minor_formatter(PlainLogFormatter(labelOnlyBase=False))


def show_figure(fig: Any) -> None:
    """Display ``fig`` once: closed in pyplot first, so nothing but this call draws it."""
    from IPython.display import display

    plt().close(fig)
    display(fig)


def live_widget(update: Callable[..., Any], name: str, **controls: Any) -> ipywidgets.Widget:
    """``ipywidgets.interactive(update, **controls)`` whose text form is a placeholder.

    Where no kernel runs the widget (a stored notebook opened before Run All, a rendered page,
    nbval), Jupyter shows a widget's ``repr``; this one says what the widget is and how to use
    it instead of dumping ``interactive(children=(...))``. Each control is given a layout wide
    enough to drag precisely.

    Examples
    --------
    >>> import contextlib, io
    >>> import ipywidgets as widgets
    >>> with contextlib.redirect_stdout(io.StringIO()):  # outside Jupyter, widgets print escapes
    ...     w = live_widget(lambda x: None, "demo", x=widgets.IntSlider(value=1, min=0, max=3))
    >>> w
    [demo: an interactive widget; run the cells above in Jupyter to use it]
    """
    import ipywidgets as widgets

    label = PLACEHOLDER.format(name=name)

    class _Live(widgets.interactive):
        def __repr__(self) -> str:
            return label

    for control in controls.values():
        if isinstance(control, widgets.Widget) and hasattr(control, "layout"):
            if not control.layout.width:
                control.layout.width = "480px"
            style = getattr(control, "style", None)
            if style is not None and hasattr(style, "description_width"):
                style.description_width = "initial"
    def drawn_alone(**values: Any) -> Any:
        with _DRAW_LOCK:
            return update(**values)

    return _Live(drawn_alone, **controls)
