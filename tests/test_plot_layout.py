"""Figures are readable (issue 14): whole-epoch ticks, legends that hide no line, no label drawn
across a curve."""
import pytest

from ocspruner.reporting import plots

METRICS = [{"epoch": e, "stage": s, "train_loss": 1.0 / (e + 1), "val_loss": 1.2 / (e + 1), "train_acc": 50 + 10 * e,
            "val_acc": 60 + 10 * e, "similarity": 0.8 + 0.05 * e, "similarity_avg": 0.8 + 0.04 * e,
            "lambda": 0.1 * e, "flops_reduction": 0.5,
            "group_norms": {"q": [0.05, 0.25, 0.5, 0.75, 0.95], "pruning": [0.1, 0.2, 0.3, 0.4, 0.5],
                            "kept": [1.0, 1.1, 1.2, 1.3, 1.4]}}
           for e, s in enumerate(["search", "sparsity", "pruned"])]


@pytest.fixture
def figures(monkeypatch, tmp_path):
    kept = []

    def save(fig, path):
        fig.canvas.draw()
        kept.append(fig)
        return str(path)

    monkeypatch.setattr(plots, "_save", save)
    plots.plot_cost(METRICS, tmp_path / "c.png", target=0.5)
    plots.plot_group_norms(METRICS, 1, 2, tmp_path / "g.png")
    plots.plot_curves(METRICS, tmp_path / "u.png")
    plots.plot_stability(METRICS, 1, 2, tmp_path / "s.png")
    yield kept
    for fig in kept:
        plots.plt.close(fig)


def test_whole_epoch_ticks_legends_outside_no_text_on_curves(figures):
    assert len(figures) == 4
    for fig in figures:
        renderer = fig.canvas.get_renderer()
        for ax in fig.axes:
            if ax.get_xlabel() == "epoch":
                ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
                assert ticks and all(float(t).is_integer() for t in ticks), ticks
            legend = ax.get_legend()
            if legend is not None:   # the legend box lies outside the plotting area
                box, area = legend.get_window_extent(renderer), ax.get_window_extent(renderer)
                assert box.y1 <= area.y0 + 1, (fig.axes[0].get_title(), box, area)
            assert not ax.texts, [t.get_text() for t in ax.texts]
