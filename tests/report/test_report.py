"""The library behind the thin report and figure tools (issue 12 item 1): ``ucgm_core.report`` (results table,
metric series, manifest), the shard figures of ``ucgm_core.figures``, the figure registry and the
``pretrained`` stage (``ucgm_core.models.pretrained.import_pretrained``), called directly, without the scripts.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from ucgm_core.figures import shard_grid, shard_rows_grid
from ucgm_core.figures_paper.registry import FIGURES, UnknownFigureError, figure_function
from ucgm_core.figures_paper.toy_stage import plot_toy_figure
from ucgm_core.report import (
    COLUMNS,
    ReportError,
    labels_from_json,
    metric_series,
    results_table,
    write_csv,
    write_manifest,
)


def _eval(path: Path, sampler: str, steps: int, fid: float, method: str = "ucgm") -> str:
    """A minimal evaluation JSON (the fields the table reads; the rest stay empty cells)."""
    path.write_text(
        json.dumps(
            {
                "fid": fid,
                "is_mean": 10.0,
                "kid_mean": 0.5,
                "num_samples": 100,
                "context": {
                    "sampler": sampler,
                    "model": "m",
                    "experiment": "e",
                    "samples": {
                        "steps": steps,
                        "nfe": 2 * steps,
                        "method": method,
                        "seed": 3,
                        "options": {"b": 1, "a": 2},
                    },
                },
            }
        )
    )
    return str(path)


def test_results_table_rows_paper_numbers_and_csv_precision(tmp_path):
    evals = [
        _eval(tmp_path / "a.json", "few", 1, 3.123456789),
        _eval(tmp_path / "b.json", "few", 2, 2.0),
        _eval(tmp_path / "c.json", "other", 4, 1.5),
    ]
    rows = {"few": {"label": "UCGM-S", "paper": [{"steps": 2, "nfe": 2, "fid": 2.17, "source": "Table 7"}]}}
    df = results_table(evals, rows)
    assert list(df.columns) == COLUMNS and list(df["sampler"]) == ["few", "few", "other"]
    assert list(df["label"]) == ["UCGM-S", "UCGM-S", "other"]  # a sampler without a label keeps its name
    # the paper's number only on the row with its step count
    assert pd.isna(df.loc[0, "paper_fid"]) and df.loc[1, "paper_fid"] == 2.17 and df.loc[1, "paper_source"] == "Table 7"
    assert list(df["nfe"]) == [2, 4, 8] and df.loc[0, "options"] == '{"a": 2, "b": 1}'  # keys sorted
    out = tmp_path / "sub" / "t.csv"
    write_csv(df, out)
    text = out.read_text()
    assert text.splitlines()[0] == ",".join(COLUMNS)
    assert ",3.12346," in text.splitlines()[1]  # 6 significant digits, like the README tables
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temporary left


def test_metric_series_groups_by_sampler_method_and_model(tmp_path):
    evals = [
        _eval(tmp_path / "a.json", "s", 1, 5.0),
        _eval(tmp_path / "b.json", "s", 4, 2.0),
        _eval(tmp_path / "c.json", "t", 4, 3.0, method="euler"),
    ]
    series = metric_series(evals, "fid")
    assert series == {"s (ucgm, m)": [(2, 5.0), (8, 2.0)], "t (euler, m)": [(8, 3.0)]}
    assert metric_series(evals[:1], "kid") == {"s (ucgm, m)": [(2, 0.5)]}


def test_labels_json_refusals_name_the_option():
    assert labels_from_json('["-a", "$b$"]') == ["-a", "$b$"]
    with pytest.raises(ReportError, match=r"--labels-json: not valid JSON .*expected a list of strings"):
        labels_from_json("[oops")
    with pytest.raises(ReportError, match=r"--labels-json: '\[1\]' is not a list of strings"):
        labels_from_json("[1]")
    assert issubclass(ReportError, ValueError)


def test_manifest_refuses_missing_files_and_lists_sizes_and_hashes(tmp_path):
    a = tmp_path / "a.bin"
    a.write_bytes(b"abc")
    out = tmp_path / "m.tsv"
    with pytest.raises(ReportError, match=r"m.tsv: expected files are missing: \[.*absent.png'\]"):
        write_manifest(out, [str(a), str(tmp_path / "absent.png")])
    assert not out.exists()
    write_manifest(out, [str(a)])
    assert out.read_text() == f"path\tbytes\tsha256\n{a}\t3\t{hashlib.sha256(b'abc').hexdigest()}\n"


def _shard(path: Path, n: int, channels: int, classes: int) -> Path:
    """A sample shard whose image i is filled with the value i (labels cycle through ``classes``)."""
    images = np.broadcast_to(np.arange(n, dtype=np.uint8)[:, None, None, None], (n, channels, 2, 2)).copy()
    np.savez(path, images=images, labels=np.arange(n) % classes)
    return path


def test_shard_grid_puts_one_class_per_row(tmp_path):
    """Labels cycling through 3 classes on a 3 x 3 grid: row r holds images r, r + 3, r + 6 (all class r)."""
    png = shard_grid(_shard(tmp_path / "s.npz", 9, 1, 3), 3, tmp_path / "g.png")
    grid = np.asarray(Image.open(png))  # 2x upscaled, 1-pixel white padding before the upscale
    tile = lambda r, c: grid[2 * (1 + 3 * r), 2 * (1 + 3 * c)]  # noqa: E731 - top-left pixel of tile (r, c)
    assert [[int(tile(r, c)) for c in range(3)] for r in range(3)] == [[0, 3, 6], [1, 4, 7], [2, 5, 8]]
    # when the labels do not cycle through `size` classes the order stays row-major
    png = shard_grid(_shard(tmp_path / "t.npz", 9, 1, 2), 3, tmp_path / "h.png")
    grid = np.asarray(Image.open(png))
    assert [int(tile(0, c)) for c in range(3)] == [0, 1, 2]


def test_shard_rows_grid_needs_one_label_per_shard(tmp_path):
    shards = [_shard(tmp_path / "a.npz", 4, 1, 2), _shard(tmp_path / "b.npz", 4, 3, 2)]
    with pytest.raises(ValueError, match="2 shards but 1 labels; expected one label per shard"):
        shard_rows_grid(shards, ["A"], 4, tmp_path / "r.png")
    out = shard_rows_grid(shards, ["$A$", "-B"], 4, tmp_path / "r.png")  # grey and RGB rows stack
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_figure_registry_and_toy_plots_refuse_unknown_names():
    assert callable(figure_function("fig8_beta"))
    with pytest.raises(
        UnknownFigureError,
        match=rf"unknown figure 'fig9': expected one of {sorted(FIGURES)}".replace("[", r"\[").replace("]", r"\]"),
    ):
        figure_function("fig9")
    with pytest.raises(ValueError, match=r"unknown toy figure 'fig5'; expected one of \['fig2a'"):
        plot_toy_figure("fig5", "x.csv", "x.png")


def test_import_pretrained_writes_the_checkpoint_and_names_bad_inputs(tmp_path):
    from ucgm_core.checkpoint import build_network, checkpoint_normalizer, load_checkpoint
    from ucgm_core.models.pretrained import import_pretrained, model_kwargs_for
    from ucgm_core.models.registry import MODELS

    torch.manual_seed(0)
    net = MODELS["TiT-Tiny/2"].builder(**model_kwargs_for("TiT-Tiny/2", input_size=28, in_channels=1, num_classes=10))
    weights = tmp_path / "w.pt"
    torch.save({"model": net.state_dict(), "ema": net.state_dict()}, weights)
    kw = dict(
        architecture="TiT-Tiny/2",
        overrides={},
        dataset="fashion_mnist",
        resolution=28,
        num_classes=None,
        autoencoder="identity",
        ae_kwargs={},
        normalize=True,
        latent_stats={"mean": [0.5], "std": [0.25]},
        stats=None,
        multiplier=0.5,
        sha256=hashlib.sha256(weights.read_bytes()).hexdigest(),
        allow_unsafe_pickle=False,
    )
    done = import_pretrained(str(weights), str(tmp_path / "ck.pt"), **kw)
    assert done["latent_shape"] == [1, 28, 28] and done["transport"] == MODELS["TiT-Tiny/2"].transport
    ckpt = load_checkpoint(tmp_path / "ck.pt")
    assert (ckpt["step"], ckpt["num_classes"], ckpt["autoencoder"]) == (0, 10, "identity")
    loaded = build_network(ckpt, "ema").state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in net.state_dict().items())
    norm = checkpoint_normalizer(ckpt)
    assert norm.mean.flatten().tolist() == [0.5] and norm.std.flatten().tolist() == [0.25] and norm.multiplier == 0.5
    with pytest.raises(ValueError, match=r"w.pt: sha256 [0-9a-f]{64} differs from the configured abc"):
        import_pretrained(str(weights), str(tmp_path / "x.pt"), **{**kw, "sha256": "abc"})
    with pytest.raises(ValueError, match=r"--architecture 'TiT-Nope': unknown; known: "):
        import_pretrained(str(weights), str(tmp_path / "x.pt"), **{**kw, "architecture": "TiT-Nope"})
    with pytest.raises(ValueError, match="--latent-stats has 2 channels, the identity latents 1"):
        import_pretrained(
            str(weights), str(tmp_path / "x.pt"), **{**kw, "latent_stats": {"mean": [0.0, 0.0], "std": [1.0, 1.0]}}
        )
    with pytest.raises(ValueError, match=r"cannot import .*w.pt as TiT-Tiny/2: .*mis-shaped"):
        import_pretrained(
            str(weights), str(tmp_path / "x.pt"), **{**kw, "dataset": "cifar10", "resolution": 32, "normalize": False}
        )
    assert not (tmp_path / "x.pt").exists()
