"""``mae plot OUTPUT/log.txt -o curve.png``: the loss and learning-rate curves of a training run, and the
validation accuracy of a fine-tuning or linear-probing run."""

from __future__ import annotations

from pathlib import Path

from .train.metrics import read_log


def plot_log(log: str | Path, output: str | Path) -> Path:
    """Draw ``train_loss`` and ``train_lr`` (and ``test_acc1`` / ``test_acc5`` where logged) against the epoch,
    one point per logged epoch; returns the file."""
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
    acc_epochs = [e for e in epochs if "test_acc1" in by_epoch[e]]
    fig, axes = plt.subplots(1, 3 if acc_epochs else 2, figsize=(15 if acc_epochs else 10, 3.6))
    ax_loss, ax_lr = axes[0], axes[1]
    ax_loss.plot(
        [e + 1 for e in epochs], [by_epoch[e]["train_loss"] for e in epochs], marker="." if len(epochs) < 50 else None
    )
    what = "classification" if acc_epochs else "masked patches"
    ax_loss.set(xlabel="epoch", ylabel=f"training loss ({what})", title="loss")
    ax_loss.grid(alpha=0.3)
    lr_epochs = [e for e in epochs if "train_lr" in by_epoch[e]]
    ax_lr.plot([e + 1 for e in lr_epochs], [by_epoch[e]["train_lr"] for e in lr_epochs], color="tab:orange")
    ax_lr.set(xlabel="epoch", ylabel="learning rate (epoch mean)", title="learning rate")
    ax_lr.ticklabel_format(axis="y", style="sci", scilimits=(0, 0))
    ax_lr.grid(alpha=0.3)
    if acc_epochs:
        ax_acc = axes[2]
        for key, label in (("test_acc1", "top-1"), ("test_acc5", "top-5")):
            shown = [e for e in acc_epochs if key in by_epoch[e]]
            ax_acc.plot([e + 1 for e in shown], [by_epoch[e][key] for e in shown], label=label)
        ax_acc.set(xlabel="epoch", ylabel="validation accuracy (%)", title="accuracy")
        ax_acc.legend()
        ax_acc.grid(alpha=0.3)
    for ax in axes:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
    fig.suptitle(f"{path} ({len(epochs)} epochs)", fontsize=9)
    fig.tight_layout()
    out = Path(output)
    tmp = out.with_name(f".{out.name}.tmp{out.suffix}")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(out)
    return out
