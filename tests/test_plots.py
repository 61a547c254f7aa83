"""The figures a scientist reads: axes that say what they show, in readable numbers."""

from __future__ import annotations

import numpy as np
import pytest

from fitnet import plots


@pytest.fixture
def figures(monkeypatch):
    """The figures the plot functions make (drawn, not closed), instead of their PNG files."""
    made = []

    def keep(fig, png, dpi=100):
        fig.canvas.draw()
        made.append(fig)
        return png

    monkeypatch.setattr(plots, "save_figure", keep)
    return made


def tick_texts(axis) -> list[str]:
    return [t.get_text() for t in axis.get_ticklabels() if t.get_text()]


def test_the_loss_curve_names_its_loss_in_plain_numbers(figures, tmp_path):
    history = [
        {"epoch": e, "train_loss": 0.9 - 0.01 * e, "val_loss": 0.86 - 0.01 * e} for e in range(1, 6)
    ]
    plots.plot_history(history, tmp_path / "loss.png", "gaussian_nll")
    ax = figures[0].axes[0]
    assert ax.get_ylabel() == "Gaussian NLL per stamp"
    assert "Gaussian negative log-likelihood" in ax.get_title()
    labels = tick_texts(ax.yaxis)
    assert labels and not any("10^" in t or "times" in t or "\\" in t for t in labels), labels
    assert all(t.isdigit() for t in tick_texts(ax.xaxis))  # whole epochs


def test_residual_panels_carry_colour_bars_and_n_ticks_beyond_one(figures, tmp_path):
    rng = np.random.default_rng(0)
    true = np.exp(rng.uniform(np.log(0.3), np.log(6.0), 2000))
    pred = true * np.exp(rng.normal(0, 0.05, true.size))
    mag = rng.uniform(18, 25, true.size)
    plots.plot_residuals("n", true, pred, np.log10(pred / true), mag, np.arange(18, 26),
                         tmp_path / "n.png")  # fmt: skip
    fig = figures[0]
    colourbars = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
    assert len(colourbars) == 2
    labels = tick_texts(fig.axes[0].xaxis)
    assert {"0.5", "1", "2", "5"} <= set(labels), labels


def test_the_gallery_gives_re_with_its_unit(figures, tmp_path):
    from fitnet.evaluation import _labels_text

    caption = _labels_text({"mag": [21.2], "re": [0.45]}, 0, ["mag", "re"])
    assert caption == 'mag=21.2 re=0.45"'
    plots.plot_gallery(np.zeros((2, 16, 16)), [caption, caption], 1.0, tmp_path / "g.png")
    assert figures[0].axes[0].get_title() == caption
