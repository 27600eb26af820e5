"""Draw the extractor's pictures in docs/ from a checkpoint and held-out writers.

    pip install matplotlib   # docs only, not a dependency of the library
    python docs/extractor_figures.py --data ../shared/data/cedar ../shared/data/dutch \
        --writers cedar:33-40,dutch:037-048 --checkpoint default

Writes ``docs/extractor_distances.png`` (per source: distance histograms of genuine–genuine,
genuine–skilled forgery and genuine–other writer pairs with the calibrated threshold; ROC and DET
curves of every source, the shipped operating point marked) and
``docs/extractor_preprocessing.png`` (raw scans and the canvases the network sees) and
``docs/extractor_synthetic_writers.png`` (synthetic writers of ``signver synthesize writers``: each row one writer's
genuine signatures, then imitations of it by other writers). ``--figures synthetic`` draws only that one, without data.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from signver_torch.data.signatures import discover_signatures, writer_split  # noqa: E402
from signver_torch.data.synthetic_writers import SyntheticWritersConfig, write_synthetic_writers  # noqa: E402
from signver_torch.extractor.api import MetricExtractor  # noqa: E402
from signver_torch.extractor.evaluation import embed_records  # noqa: E402
from signver_torch.io import load_image_tensor  # noqa: E402
from signver_torch.metrics import verification_metrics, writer_protocol_distances  # noqa: E402

DOCS = Path(__file__).resolve().parent


def error_curves(positive: torch.Tensor, negative: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    everything = torch.cat([positive, negative]).double()
    thresholds = torch.quantile(everything, torch.linspace(0, 1, 2001, dtype=torch.float64))
    far = (negative[None, :] <= thresholds[:, None]).double().mean(1)
    frr = (positive[None, :] > thresholds[:, None]).double().mean(1)
    return far, frr


def draw_distances(extractor: MetricExtractor, data: list[str], writers: str, out: Path) -> None:
    """Per source: the distance histograms, then ROC and DET curves of every source on shared axes,
    with the shipped threshold's operating point marked on the DET."""
    [records] = writer_split(discover_signatures(data if len(data) > 1 else data[0]), writers)
    sources = sorted({r.source for r in records})
    embeddings, _ = embed_records(extractor, records)
    figure, axes = plt.subplots(1, len(sources) + 2, figsize=(5.6 * (len(sources) + 2), 4.8))
    *hists, roc, det = axes
    for hist, source, colour in zip(hists, sources, plt.rcParams["axes.prop_cycle"].by_key()["color"]):
        chosen = [i for i, r in enumerate(records) if r.source == source]
        pairs = writer_protocol_distances(embeddings[chosen], [records[i].writer for i in chosen], [records[i].forged for i in chosen])
        bins = torch.linspace(0, float(max(p.max() for p in pairs.values())), 60).numpy()
        hist.hist(pairs["positive"].numpy(), bins, density=True, alpha=0.6, label="genuine – genuine (same writer)")
        hist.hist(pairs["skilled"].numpy(), bins, density=True, alpha=0.6, label="genuine – skilled forgery")
        hist.hist(pairs["random"].numpy(), bins, density=True, alpha=0.35, label="genuine – other writers")
        hist.axvline(extractor.threshold, color="black", linestyle="--", label=f"threshold {extractor.threshold:.3f}")
        n_writers = len({records[i].writer for i in chosen})
        hist.set(xlabel="cosine distance", ylabel="density", title=f"{source}: {n_writers} held-out writers")
        hist.legend(fontsize=8)
        for name, style in (("skilled", "-"), ("random", ":")):
            report = verification_metrics(pairs["positive"], pairs[name], extractor.threshold)
            far, frr = error_curves(pairs["positive"], pairs[name])
            roc.plot(far.numpy(), (1 - frr).numpy(), style, color=colour, label=f"{source}, {name}: AUC {report['auc']:.3f}")
            det.plot(far.clamp_min(1e-4).numpy(), frr.clamp_min(1e-4).numpy(), style, color=colour,
                     label=f"{source}, {name}: EER {report['eer']:.1%}")
            if name == "skilled":
                det.plot(max(report["far"], 1e-3), max(report["frr"], 1e-3), "o", color=colour,
                         label=f"{source} at the threshold: FAR {report['far']:.1%}, FRR {report['frr']:.1%}")
                print(f"{source}: skilled EER {report['eer']:.2%}, FAR {report['far']:.2%} / FRR {report['frr']:.2%} at "
                      f"{extractor.threshold:.4f}")
    roc.plot([0, 1], [0, 1], color="grey", linewidth=0.5)
    roc.set(xlabel="false accept rate", ylabel="true accept rate", title="ROC per source")
    roc.legend(fontsize=8)
    det.plot([1e-3, 1], [1e-3, 1], color="grey", linewidth=0.5, label="EER line")
    det.set(xscale="log", yscale="log", xlim=(1e-3, 1), ylim=(1e-3, 1), xlabel="false accept rate (FAR)",
            ylabel="false reject rate (FRR)", title="DET per source (dots: the shipped threshold)")
    det.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(out, dpi=100)
    print(f"wrote {out}")


def draw_preprocessing(extractor: MetricExtractor, data: str, out: Path) -> None:
    records = [r for r in discover_signatures(data) if r.writer in ("33", "36", "39")]
    chosen = [r for r in records if not r.forged][:1] + [r for r in records if r.forged][:1]
    chosen += [r for r in records if r.writer == "36"][:1] + [r for r in records if r.writer == "36" and r.forged][:1]
    images = [load_image_tensor(r.path) for r in chosen]
    canvases = extractor.preprocessor(images).cpu()
    figure, axes = plt.subplots(2, len(chosen), figsize=(3.6 * len(chosen), 4))
    for column, (record, image, canvas) in enumerate(zip(chosen, images, canvases)):
        axes[0, column].imshow(image[0].numpy(), cmap="gray", vmin=0, vmax=1)
        axes[0, column].set_title(f"{record.path.name}", fontsize=8)
        axes[1, column].imshow(canvas[0].numpy(), cmap="gray", vmin=0, vmax=1)
        axes[1, column].set_title("network input", fontsize=8)
        for row in (0, 1):
            axes[row, column].axis("off")
    figure.tight_layout()
    figure.savefig(out, dpi=110)
    print(f"wrote {out}")


def draw_synthetic_writers(out: Path, writers: int = 6, genuine: int = 4, forged: int = 3) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        root = write_synthetic_writers(Path(scratch) / "synthetic", SyntheticWritersConfig(writers, genuine, forged, names=4),
                                       progress=False)
        folders = sorted(p for p in root.iterdir() if p.is_dir())
        figure, axes = plt.subplots(len(folders), genuine + forged, figsize=(2.2 * (genuine + forged), 0.95 * len(folders)))
        for row, folder in enumerate(folders):
            paths = sorted((folder / "genuine").iterdir()) + sorted((folder / "forged").iterdir())
            for column, path in enumerate(paths):
                axes[row, column].imshow(load_image_tensor(path)[0].numpy(), cmap="gray", vmin=0, vmax=1)
                axes[row, column].set_xticks([])
                axes[row, column].set_yticks([])
                if row == 0:
                    axes[row, column].set_title("genuine" if column < genuine else "imitation", fontsize=9)
            axes[row, 0].set_ylabel(f"{folder.name}\n{paths[0].name.split('_')[0]}", fontsize=8, rotation=0, labelpad=22)
    figure.tight_layout()
    figure.savefig(out, dpi=100)
    print(f"wrote {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", nargs="+", default=["../shared/data/cedar", "../shared/data/dutch"])
    parser.add_argument("--writers", default="cedar:33-40,dutch:037-048")
    parser.add_argument("--checkpoint", default="default")
    parser.add_argument("--figures", choices=("all", "synthetic"), default="all")
    args = parser.parse_args()
    draw_synthetic_writers(DOCS / "extractor_synthetic_writers.png")
    if args.figures == "synthetic":
        return
    extractor = MetricExtractor().load(args.checkpoint)
    draw_distances(extractor, args.data, args.writers, DOCS / "extractor_distances.png")
    draw_preprocessing(extractor, args.data[0], DOCS / "extractor_preprocessing.png")


if __name__ == "__main__":
    main()
