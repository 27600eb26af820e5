"""Draw the extractor's pictures in docs/ from a checkpoint and held-out writers.

    pip install matplotlib   # docs only, not a dependency of the library
    python docs/extractor_figures.py --data ../shared/data/cedar --writers 33-40 --checkpoint default

Writes ``docs/extractor_distances.png`` (distance histograms of genuine–genuine, genuine–skilled
forgery and genuine–other writer pairs, with the calibrated threshold; ROC and DET curves) and
``docs/extractor_preprocessing.png`` (raw scans and the canvases the network sees).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from signver_torch.data.signatures import discover_signatures, writer_split  # noqa: E402
from signver_torch.extractor.api import MetricExtractor, embed_records  # noqa: E402
from signver_torch.io import load_image_tensor  # noqa: E402
from signver_torch.metrics import verification_metrics, writer_protocol_distances  # noqa: E402

DOCS = Path(__file__).resolve().parent


def error_curves(positive: torch.Tensor, negative: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    everything = torch.cat([positive, negative]).double()
    thresholds = torch.quantile(everything, torch.linspace(0, 1, 2001, dtype=torch.float64))
    far = (negative[None, :] <= thresholds[:, None]).double().mean(1)
    frr = (positive[None, :] > thresholds[:, None]).double().mean(1)
    return far, frr


def draw_distances(extractor: MetricExtractor, data: str, writers: str, out: Path) -> None:
    records = discover_signatures(data)
    [records] = writer_split(records, writers)
    embeddings, _ = embed_records(extractor, records)
    pairs = writer_protocol_distances(embeddings, [r.writer for r in records], [r.forged for r in records])
    skilled = verification_metrics(pairs["positive"], pairs["skilled"], extractor.threshold)
    random = verification_metrics(pairs["positive"], pairs["random"], extractor.threshold)

    figure, (hist, roc, det) = plt.subplots(1, 3, figsize=(17, 4.8))
    bins = torch.linspace(0, float(max(p.max() for p in pairs.values())), 60).numpy()
    hist.hist(pairs["positive"].numpy(), bins, density=True, alpha=0.6, label="genuine – genuine (same writer)")
    hist.hist(pairs["skilled"].numpy(), bins, density=True, alpha=0.6, label="genuine – skilled forgery")
    hist.hist(pairs["random"].numpy(), bins, density=True, alpha=0.35, label="genuine – other writers")
    hist.axvline(extractor.threshold, color="black", linestyle="--", label=f"threshold {extractor.threshold:.3f}")
    hist.set(xlabel="cosine distance", ylabel="density", title=f"CEDAR writers {writers} (never trained on)")
    hist.legend(fontsize=8)

    for name, negatives, report in (("skilled", pairs["skilled"], skilled), ("random", pairs["random"], random)):
        far, frr = error_curves(pairs["positive"], negatives)
        roc.plot(far.numpy(), (1 - frr).numpy(), label=f"{name} forgeries: AUC {report['auc']:.3f}")
        det.plot(far.clamp_min(1e-4).numpy(), frr.clamp_min(1e-4).numpy(), label=f"{name} forgeries: EER {report['eer']:.1%}")
    roc.plot([0, 1], [0, 1], color="grey", linewidth=0.5)
    roc.set(xlabel="false accept rate", ylabel="true accept rate", title="ROC")
    roc.legend(fontsize=8)
    det.plot([1e-4, 1], [1e-4, 1], color="grey", linewidth=0.5, label="EER line")
    det.set(xscale="log", yscale="log", xlim=(1e-3, 1), ylim=(1e-3, 1), xlabel="false accept rate (FAR)",
            ylabel="false reject rate (FRR)", title="DET")
    det.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(out, dpi=110)
    print(f"wrote {out}: skilled EER {skilled['eer']:.2%}, random EER {random['eer']:.2%}")


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/data/cedar")
    parser.add_argument("--writers", default="33-40")
    parser.add_argument("--checkpoint", default="default")
    args = parser.parse_args()
    extractor = MetricExtractor().load(args.checkpoint)
    draw_distances(extractor, args.data, args.writers, DOCS / "extractor_distances.png")
    draw_preprocessing(extractor, args.data, DOCS / "extractor_preprocessing.png")


if __name__ == "__main__":
    main()
