"""``mae plot OUTPUT/log.txt -o curve.png``: the loss and learning-rate curves of a training run."""

from __future__ import annotations

from pathlib import Path

from .train.metrics import read_log


def plot_log(log: str | Path, output: str | Path) -> Path:
    """Draw ``train_loss`` and ``train_lr`` against the epoch (one point per logged epoch); returns the file."""
    path = Path(log)
    if path.is_dir():
        path = path / "log.txt"
    if not path.is_file():
        raise ValueError(f"{path} does not exist: give the log.txt of a run (OUTPUT/log.txt)")
    records = [r for r in read_log(path) if "epoch" in r and "train_loss" in r]
    if not records:
        raise ValueError(f"{path} has no records with 'epoch' and 'train_loss': is it a training log?")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    # Các epoch được huấn luyện lại sau khi resume: giữ bản ghi mới nhất của mỗi epoch.
    by_epoch = {r["epoch"]: r for r in records}
    epochs = sorted(by_epoch)
    fig, (ax_loss, ax_lr) = plt.subplots(1, 2, figsize=(10, 3.6))
    ax_loss.plot(
        [e + 1 for e in epochs], [by_epoch[e]["train_loss"] for e in epochs], marker="." if len(epochs) < 50 else None
    )
    ax_loss.set(xlabel="epoch", ylabel="training loss (masked patches)", title="loss")
    ax_loss.grid(alpha=0.3)
    lr_epochs = [e for e in epochs if "train_lr" in by_epoch[e]]
    ax_lr.plot([e + 1 for e in lr_epochs], [by_epoch[e]["train_lr"] for e in lr_epochs], color="tab:orange")
    ax_lr.set(xlabel="epoch", ylabel="learning rate (epoch mean)", title="learning rate")
    ax_lr.ticklabel_format(axis="y", style="sci", scilimits=(0, 0))
    ax_lr.grid(alpha=0.3)
    for ax in (ax_loss, ax_lr):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
    fig.suptitle(f"{path} ({len(epochs)} epochs)", fontsize=9)
    fig.tight_layout()
    out = Path(output)
    tmp = out.with_name(f".{out.name}.tmp{out.suffix}")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(out)
    return out
