"""Loss and metric curves as a PNG (matplotlib, the optional ``plot`` extra)."""
from __future__ import annotations

from ..ir import GraphcError


def _pyplot():
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise GraphcError("plotting needs matplotlib: pip install 'graphc[plot]' "
                          "(or pip install matplotlib)") from None
    return plt


def plot_history(history: list[dict], path: str, title: str = ""):
    """Train/val loss on the left, val accuracy (or R²) on the right."""
    plt = _pyplot()
    epochs = [h["epoch"] for h in history]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    a.plot(epochs, [h["train_loss"] for h in history], label="train loss")
    a.plot(epochs, [h["val_loss"] for h in history], label="val loss")
    a.set_xlabel("epoch")
    a.set_ylabel("loss")
    a.set_yscale("log")
    a.legend()
    key = "val_accuracy" if history and "val_accuracy" in history[0] else "val_r2"
    b.plot(epochs, [h.get(key, float("nan")) for h in history], color="C2")
    b.set_xlabel("epoch")
    b.set_ylabel(key.replace("_", " "))
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
