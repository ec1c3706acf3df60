"""Widget figures lay out their text without mathtext.

ipykernel 7 may run a widget's callback on a thread beside the main one, and matplotlib's
mathtext parser is shared and not thread-safe: a log axis labelled ``$10^{-2}$`` while another
figure draws can fail with a ParseException (the browser test met it in chapter 05).  Every
widget therefore draws plain-text tick labels.  This test moves each widget through every
option of every control, renders each figure, and records any string given to mathtext.
"""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")

import ipywidgets as widgets  # after choosing the Agg backend
import matplotlib.mathtext as mathtext
import pytest

from gqlearn.io import fetch_model, open_checkpoint
from gqlearn.lessons import display, encoder, group_scales, measuring_error, single_scale


def _values(control: widgets.Widget) -> list[object]:
    if isinstance(control, (widgets.Dropdown, widgets.ToggleButtons)):
        return [v for _, v in control.options] if isinstance(control.options[0], tuple) \
            else list(control.options)
    if isinstance(control, (widgets.IntSlider, widgets.FloatSlider, widgets.FloatLogSlider)):
        return [control.min, control.max]
    return []


WIDGETS = {
    "01 magnitude explorer": lambda: single_scale.magnitude_explorer(),
    "02 group-size explorer": lambda: group_scales.group_size_explorer(),
    "03 explore": lambda: measuring_error.explore(),
    "05 tensor explorer": lambda: encoder.tensor_explorer(
        open_checkpoint(fetch_model("minilm", quiet=True))),
}


@pytest.mark.parametrize("name", list(WIDGETS))
def test_widget_figures_use_no_mathtext(name, monkeypatch) -> None:
    parsed: list[str] = []
    original = mathtext.MathTextParser.parse

    def spy(self, s, *args, **kwargs):
        parsed.append(s)
        return original(self, s, *args, **kwargs)

    def render(fig) -> None:
        fig.savefig(io.BytesIO(), format="png")
        display.plt().close(fig)

    monkeypatch.setattr(mathtext.MathTextParser, "parse", spy)
    for module in (single_scale, group_scales, measuring_error, encoder):
        monkeypatch.setattr(module, "show_figure", render)
    widget = WIDGETS[name]()
    moves = 0
    for control in widget.children:
        for value in _values(control):
            if getattr(control, "disabled", False):
                continue
            control.value = value
            moves += 1
    assert moves >= 2, f"{name}: no control was moved"
    assert not parsed, f"{name}: mathtext was asked to lay out {sorted(set(parsed))[:5]}"
