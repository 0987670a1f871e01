"""What the default's classifier FID measures: FID of 2,000 real training images, left as they are (the floor)
and with one degradation each (mirroring, blur, noise, contrast), against the test images; and, for sample
folders, the FID per class and the classes the extractor's classifier gives the samples.

    python benchmarks/extractor_sensitivity.py --extractor results/extractor/fashion_mnist_28/classifier.pt \\
        --raw /usr/share/datasets/fashion-mnist [--samples results/samples/ucgm/steps16 ...]

Prints markdown tables (recorded in benchmarks/README.md, "Why the default's FID stalled").
"""

from __future__ import annotations

import argparse
import glob
from typing import Callable, Dict

import numpy as np
import torch
import torch.nn.functional as F

from ucgm_core.metrics.classifier import classifier_features, load_classifier, load_idx_dataset
from ucgm_core.metrics.frechet import fid_from_features

Images = torch.Tensor  # uint8 [N, 1, H, W]


def statistics(features: torch.Tensor) -> Dict[str, np.ndarray]:
    """Mean and covariance of features [N, D] (float64), the reference side of an FID."""
    f = features.double().numpy()
    return {"mu": f.mean(0), "sigma": np.cov(f, rowvar=False)}


def to_uint8(x: torch.Tensor) -> Images:
    return (x.clamp(0, 1) * 255).round().to(torch.uint8)


def gaussian_blur(x: Images, sigma: float) -> Images:
    """Separable 5-tap Gaussian blur of standard deviation ``sigma`` pixels (replicated borders)."""
    k = torch.exp(-(torch.arange(-2, 3, dtype=torch.float32) ** 2) / (2 * sigma**2))
    k = k / k.sum()
    v = F.conv2d(F.pad(x.float() / 255, (2, 2, 0, 0), mode="replicate"), k.view(1, 1, 1, 5))
    return to_uint8(F.conv2d(F.pad(v, (0, 0, 2, 2), mode="replicate"), k.view(1, 1, 5, 1)))


def degradations(seed: int) -> Dict[str, Callable[[Images], Images]]:
    def mirror_half(x: Images) -> Images:
        flip = torch.rand(len(x), generator=torch.Generator().manual_seed(seed)) < 0.5
        return torch.where(flip[:, None, None, None], x.flip(-1), x)

    def noise(std: float) -> Callable[[Images], Images]:
        g = torch.Generator().manual_seed(seed)
        return lambda x: to_uint8(x.float() / 255 + std * torch.randn(x.shape, generator=g))

    return {
        "none (the floor)": lambda x: x,
        "mirrored with probability 1/2 (what hflip trains on)": mirror_half,
        "all mirrored": lambda x: x.flip(-1),
        **{f"Gaussian blur, sigma {s} px": (lambda x, s=s: gaussian_blur(x, s)) for s in (0.4, 0.5, 0.7)},
        **{f"Gaussian noise, std {s}": noise(s) for s in (0.02, 0.05)},
        "contrast x 0.9": lambda x: to_uint8(x.float() / 255 * 0.9),
    }


def load_samples(folder: str) -> tuple[Images, torch.Tensor]:
    """Images (first channel) and labels of a folder of sample shards (``shard-*.npz``)."""
    files = sorted(glob.glob(f"{folder}/shard-*.npz"))
    if not files:
        raise FileNotFoundError(f"{folder}: no shard-*.npz files (a sample folder, e.g. results/samples/ucgm/steps16)")
    images = np.concatenate([np.load(f)["images"] for f in files])
    labels = np.concatenate([np.load(f)["labels"] for f in files])
    x = torch.from_numpy(images)
    x = x.permute(0, 3, 1, 2) if x.shape[-1] in (1, 3) else x
    return x[:, :1].contiguous(), torch.from_numpy(labels).long()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--extractor", required=True, help="classifier.pt of the extractor stage")
    p.add_argument("--raw", default="/usr/share/datasets/fashion-mnist", help="folder of the idx(.gz) files")
    p.add_argument("--samples", nargs="*", default=[], help="sample folders to break down by class")
    p.add_argument("--num", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()

    model, _ = load_classifier(a.extractor)
    model.eval()
    x_train, _ = load_idx_dataset(a.raw, "train")
    x_test, y_test = load_idx_dataset(a.raw, "t10k")
    f_test = classifier_features(model, x_test)
    ref = statistics(f_test)
    real = x_train[torch.randperm(len(x_train), generator=torch.Generator().manual_seed(a.seed))[: a.num]]
    print(f"| real training images ({a.num}) | FID against the {len(x_test)} test images |\n|---|---|")
    with torch.no_grad():
        for name, fn in degradations(a.seed).items():
            print(f"| {name} | {fid_from_features(classifier_features(model, fn(real)), ref)[0]:.1f} |")

        for folder in a.samples:
            x, y = load_samples(folder)
            feats = classifier_features(model, x)
            pred = model.head(feats).argmax(1)
            print(
                f"\n{folder}: FID {fid_from_features(feats, ref)[0]:.1f}, accuracy on the conditioning labels "
                f"{(pred == y).float().mean():.3f} (test images: "
                f"{(model.head(f_test).argmax(1) == y_test).float().mean():.3f})"
            )
            print("| class | samples | FID of the class | accuracy | most frequent other class (share) |")
            print("|---|---|---|---|---|")
            for c in range(int(y.max()) + 1):
                mine, wrong = y == c, pred[y == c][pred[y == c] != c]
                top = int(wrong.mode().values) if len(wrong) else None
                other = f"{top} ({int((wrong == top).sum()) / int(mine.sum()):.2f})" if len(wrong) else "-"
                fid_c = fid_from_features(feats[mine], statistics(f_test[y_test == c]))[0]
                print(f"| {c} | {int(mine.sum())} | {fid_c:.0f} | {(pred[mine] == c).float().mean():.2f} | {other} |")


if __name__ == "__main__":
    main()
