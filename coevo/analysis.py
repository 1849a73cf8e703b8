"""Latent analysis of a finished run (``coevo analyze``; needs ``coevo[analysis]``).

For the best pair it writes ``analysis.json`` and figures under ``plots/``:

- ``latent_alive``: latent neurons on a live path (the ones the compact export keeps, see
  :mod:`coevo.export`) that fire (code > 0) on at least 1% of the test rows: the Klazinga
  thesis's estimate of the data's intrinsic dimension;
- ``id_estimates``: the intrinsic dimension of the training split by scikit-dimension's
  ``TwoNN``, ``MLE`` and ``lPCA``, each ``.fit(X).dimension_`` with default settings (MLE's
  ``fit``, which averages the inverse pointwise estimates; lPCA is global PCA with the 'FO'
  rule, so it counts the linear span and overestimates a curved manifold);
- ``latent_needed``: how many of the alive latent neurons the decoder needs, after the fact:
  latent neurons are folded greedily into the others (each replaced by its least-squares
  prediction from the remaining ones, the fold ``latent_fold`` makes during a run), the cheapest
  first, while the test loss stays within ``fold_tolerance`` (default 20%) of the unfolded pair's; no
  retraining. ``latent_fold_losses`` is the test loss after each fold, for the figure;
- ``nmi`` and ``ari``: k-means (k = the number of labels in the test split, 10 restarts)
  on the test split's latent codes against the true labels, with ``nmi_inputs`` and
  ``ari_inputs`` of the same clustering on the raw inputs for comparison; null without labels.

Everything is computed before anything is written, and each file is written atomically.
"""

from __future__ import annotations

import copy
import io
import json
import warnings
from pathlib import Path

import numpy as np
import torch

from coevo.errors import UserError

FIRING = 0.01  # a latent neuron must fire on at least this fraction of test rows
MAX_ID_ROWS = 5000  # the estimators see at most this many training rows (a seeded subsample)
MIN_ID_ROWS = 3  # TwoNN needs three points (a point and its two nearest neighbours)
FOLD_TOLERANCE = 0.2  # latent_needed: folds may raise the test loss by at most this fraction in all


def _extras():
    try:
        import skdim
        import sklearn.cluster
        import sklearn.metrics
    except ImportError as exc:
        raise UserError(f"coevo analyze needs scikit-dimension and scikit-learn ({exc.name or exc} is missing): "
                        f"pip install 'coevo[analysis]'") from None
    return skdim, sklearn


def id_estimates(rows: np.ndarray, seed: int = 0) -> dict[str, float]:
    """TwoNN, MLE and lPCA estimates of the intrinsic dimension of ``rows``."""
    skdim, _ = _extras()
    x = np.asarray(rows, dtype=np.float64)
    if x.shape[0] > MAX_ID_ROWS:
        x = x[np.random.default_rng(seed).choice(x.shape[0], MAX_ID_ROWS, replace=False)]
    out = {}
    with warnings.catch_warnings():  # TwoNN warns when it drops duplicate rows
        warnings.simplefilter("ignore")
        for name, estimator in (("TwoNN", skdim.id.TwoNN()), ("MLE", skdim.id.MLE()), ("lPCA", skdim.id.lPCA())):
            out[name] = float(estimator.fit(x).dimension_)
    return out


def cluster_scores(codes: np.ndarray, labels: np.ndarray, seed: int) -> tuple[float, float]:
    """NMI and ARI of k-means (k = number of distinct labels) on ``codes``."""
    _, sklearn = _extras()
    k = int(np.unique(labels).size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pred = sklearn.cluster.KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(codes)
    return (float(sklearn.metrics.normalized_mutual_info_score(labels, pred)),
            float(sklearn.metrics.adjusted_rand_score(labels, pred)))


def greedy_folds(codes: np.ndarray, alive: list[int], decode, loss_of) -> tuple[list[int], list[float]]:
    """Fold ``alive`` latent columns of ``codes`` (rows x latent) one at a time into the others,
    each replaced by its least-squares prediction (with an offset) from the columns still kept,
    choosing the fold that leaves the lowest loss; ``decode`` maps codes to reconstructions and
    ``loss_of`` reconstructions to a loss. Returns the order folded and the loss after each fold,
    until one column is left (the caller decides where to stop)."""
    from coevo.operators.latent_fold import fold_coefficients

    codes = np.array(codes, dtype=np.float64)
    kept, order, losses = list(alive), [], []
    while len(kept) > 1:
        best = None
        for j in kept:
            coefficients, offset = fold_coefficients(codes, j, np.array([k for k in kept if k != j]))
            trial = codes.copy()
            trial[:, j] = offset + codes @ coefficients
            value = loss_of(decode(trial))
            if best is None or value < best[0]:
                best = (value, j, trial)
        value, j, codes = best
        kept.remove(j)
        order.append(int(j))
        losses.append(float(value))
    return order, losses


def _pca2(codes: np.ndarray) -> np.ndarray:
    centred = codes - codes.mean(axis=0)
    if centred.shape[1] == 0 or not np.any(centred):
        return np.zeros((codes.shape[0], 2))
    u, s, _ = np.linalg.svd(centred, full_matrices=False)
    proj = u[:, :2] * s[:2]
    return np.pad(proj, ((0, 0), (0, 2 - proj.shape[1])))


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=110)
    return buf.getvalue()


class _Flat(torch.nn.Module):
    """A module of a module model on coevo's flat rows: inputs viewed as ``shape_in``, outputs flattened."""

    def __init__(self, net: torch.nn.Module, shape_in: tuple[int, ...]) -> None:
        super().__init__()
        self.net, self.shape_in = net, tuple(shape_in)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.reshape(x.shape[0], *self.shape_in)).reshape(x.shape[0], -1)


def _module_pair(run_dir: Path, cfg, dataset, best: dict, test: torch.Tensor):
    """The encoder and decoder of a module model's best pair on flat rows, and the latent units on
    a live path (those the decoder's first layer reads through an alive entry)."""
    from coevo.export import _factory_of, module_model
    from coevo.model import ref_of
    from coevo.model.graph import trace

    ref = ref_of(cfg, dataset.shape)
    model = module_model(best["encoder"], best["decoder"], ref, _factory_of(ref, run_dir), run_dir)
    with torch.no_grad():
        code_shape = tuple(model.encoder(test[:1].reshape(1, *ref.input_shape)).shape[1:])
    spec = trace(ref)[1].layers[0]
    mask = best["decoder"][f"{spec.name}.weight_mask"]
    if spec.transposed:
        mask = mask.transpose(0, 1)
    reads = spec.unit_mask(mask.reshape(spec.fan_out, spec.fan_in).numpy()).any(axis=0)  # per latent unit
    reads = reads.reshape(spec.halves, -1).any(axis=0)  # a VAE's unit: its mean and its log-variance
    per_unit = int(np.prod(code_shape)) // reads.size  # a code of (C, H, W): each channel's positions
    on_path = [int(j) for j in np.flatnonzero(np.repeat(reads, per_unit))]
    return _Flat(model.encoder, ref.input_shape), _Flat(model.decoder, code_shape), on_path


def analyze(run_dir: str | Path, fold_tolerance: float = FOLD_TOLERANCE) -> dict:
    """Analyse a finished run's best pair; writes ``analysis.json`` and figures, returns the dict.
    ``fold_tolerance`` is ``latent_needed``'s allowance (a fraction of the test loss)."""
    from coevo import config as config_module
    from coevo import data as data_module
    from coevo.export import compact_pair, is_module_model, masked_pair
    from coevo.report import read_logbook, read_summary, subplots
    from coevo.rundir.checkpoint import atomic_write_bytes
    from coevo.rundir.directory import record_derived, remove_dead_temporaries, torch_load

    run_dir = Path(run_dir)
    _extras()
    read_summary(run_dir)  # a finished run, or a one-line UserError
    remove_dead_temporaries(run_dir)  # a killed analysis's plots/.latent_pca.png.tmpPID
    if not (run_dir / "best.pt").exists():
        raise UserError(f"{run_dir} has no best.pt")
    cfg = config_module.load(run_dir / "config.toml")
    dataset = data_module.load(cfg.data, cfg.run.seed)
    if dataset.train.shape[0] < MIN_ID_ROWS:
        raise UserError(f"coevo analyze needs at least {MIN_ID_ROWS} training rows to estimate an intrinsic "
                        f"dimension; the data of {run_dir} ({cfg.data.source}) leave {dataset.train.shape[0]}")
    best = torch_load(run_dir / "best.pt", "saved by the run", run_dir,
                      f"`coevo resume {run_dir}` writes it again from the newest checkpoint", weights_only=True)
    with torch.no_grad():
        test = torch.as_tensor(dataset.test)
    if is_module_model(cfg.model):  # a conv model or a factory's: its own modules, masks applied
        enc, dec, on_path = _module_pair(run_dir, cfg, dataset, best, test)
    else:
        enc, dec = masked_pair(best["encoder"], best["decoder"])
        model = compact_pair(best["encoder"], best["decoder"])
        first = model.decoder[0].weight  # a kept latent neuron has an outgoing weight; checked all the same
        on_path = [int(j) for pos, j in enumerate(model.latent_index) if np.any(first[:, pos] != 0)]

    with torch.no_grad():
        codes = enc(test).numpy()
        recon = dec(enc(test)).numpy()
    firing = (codes > 0).mean(axis=0)
    alive = [j for j in on_path if firing[j] >= FIRING]
    result: dict = {
        "latent_alive": len(alive),
        "latent_alive_index": alive,
        "latent_on_path": len(on_path),
        "latent_width": int(codes.shape[1]),
        "latent_firing_fraction": [float(f) for f in firing],
        "id_estimates": id_estimates(dataset.train, cfg.run.seed),
        "id_rows": int(min(dataset.train.shape[0], MAX_ID_ROWS)),
        "data": cfg.data.source,
        "n_dims": dataset.n_dims,
        "intrinsic_dim": cfg.data.intrinsic_dim if cfg.data.source == "manifold" else None,
        "nmi": None, "ari": None, "nmi_inputs": None, "ari_inputs": None, "clusters": None,
    }
    loss_fn = {"l1": torch.nn.functional.l1_loss, "mse": torch.nn.functional.mse_loss,
               "bce": torch.nn.functional.binary_cross_entropy}[cfg.model.loss]
    target = test.double()
    dec64 = copy.deepcopy(dec).double()

    def decode(z: np.ndarray) -> torch.Tensor:
        with torch.no_grad():
            return dec64(torch.as_tensor(z, dtype=torch.float64))

    def loss_of(out: torch.Tensor) -> float:
        return float(loss_fn(out.clamp(1e-7, 1 - 1e-7) if cfg.model.loss == "bce" else out, target))

    unfolded = loss_of(decode(codes))
    order, fold_losses = greedy_folds(codes, alive, decode, loss_of)
    affordable = 0  # folds in a row that keep the loss within the tolerance of the unfolded pair's
    while affordable < len(fold_losses) and fold_losses[affordable] <= unfolded * (1 + fold_tolerance):
        affordable += 1
    result["latent_needed"] = len(alive) - affordable
    result["latent_fold_tolerance"] = fold_tolerance
    result["latent_fold_order"] = order
    result["latent_fold_losses"] = [unfolded] + fold_losses
    labels = dataset.test_labels
    if labels is not None:
        result["clusters"] = int(np.unique(labels).size)
        result["nmi"], result["ari"] = cluster_scores(codes, labels, cfg.run.seed)
        result["nmi_inputs"], result["ari_inputs"] = cluster_scores(dataset.test, labels, cfg.run.seed)

    figures: dict[str, bytes] = {}
    fig, ax = subplots(figsize=(6, 5))
    xy = _pca2(codes)
    if labels is not None:
        points = ax.scatter(xy[:, 0], xy[:, 1], c=labels, cmap="tab10", s=8)
        fig.colorbar(points, ax=ax, label="label")
    else:
        ax.scatter(xy[:, 0], xy[:, 1], s=8)
    ax.set(xlabel="PC 1", ylabel="PC 2",
           title=f"Test latent codes (PCA), {len(alive)} of {codes.shape[1]} latent neurons alive")
    figures["latent_pca.png"] = _png(fig)

    if cfg.data.source == "digits":
        n = 10
        fig, axes = subplots(2, n, figsize=(n * 1.1, 2.6))
        for i in range(n):
            for row, img in ((0, dataset.test[i]), (1, recon[i])):
                axes[row, i].imshow(img.reshape(8, 8), cmap="gray_r", vmin=0, vmax=1)
                axes[row, i].set_xticks([])
                axes[row, i].set_yticks([])
        axes[0, 0].set_ylabel("input")
        axes[1, 0].set_ylabel("output")
        figures["reconstructions.png"] = _png(fig)

    if fold_losses:
        fig, ax = subplots(figsize=(7, 4))
        counts = list(range(len(alive), 0, -1))
        ax.plot(counts, result["latent_fold_losses"], "o-", label="test loss, greedy least-squares folds")
        ax.axhline(unfolded * (1 + fold_tolerance), color="grey", ls=":",
                   label=f"unfolded loss + {fold_tolerance:.0%} (--fold-tolerance)")
        ax.axvline(result["latent_needed"], color="C1", ls="--", label=f"latent_needed = {result['latent_needed']}")
        if result["intrinsic_dim"] is not None:
            ax.axvline(result["intrinsic_dim"], color="k", ls="--", label=f"true d = {result['intrinsic_dim']}")
        ax.set(xlabel="latent neurons kept", ylabel=f"test loss ({cfg.model.loss})",
               title="How many latent neurons the decoder needs (no retraining)")
        ax.invert_xaxis()
        ax.grid(alpha=0.3)
        ax.legend()
        figures["latent_folds.png"] = _png(fig)

    log = read_logbook(run_dir)
    if "latent_alive_best" in log:
        fig, ax = subplots(figsize=(7, 4))
        ax.plot(log["generation"], log["latent_alive_best"], label="best pair: latent neurons on a live path")
        if result["intrinsic_dim"] is not None:
            ax.axhline(result["intrinsic_dim"], color="k", ls="--", label=f"true d = {result['intrinsic_dim']}")
        ax.set(xlabel="generation", ylabel="latent neurons", title="Alive latent neurons",
               ylim=(0, codes.shape[1] + 0.5))
        ax.grid(alpha=0.3)
        ax.legend()
        figures["latent_alive.png"] = _png(fig)

    result["figures"] = [f"plots/{name}" for name in figures]
    (run_dir / "plots").mkdir(exist_ok=True)
    for name, payload in figures.items():
        atomic_write_bytes(run_dir / "plots" / name, payload)
    atomic_write_bytes(run_dir / "analysis.json", (json.dumps(result, indent=2) + "\n").encode())
    pair = read_summary(run_dir).get("best_pair")
    if isinstance(pair, str):  # which best pair these files describe (coevo.rundir.directory)
        record_derived(run_dir, [run_dir / "analysis.json", *(run_dir / f for f in result["figures"])], pair)
    return result


def format_analysis(result: dict) -> str:
    est = result["id_estimates"]
    lines = [f"latent_alive    {result['latent_alive']} of {result['latent_width']} "
             f"({result['latent_on_path']} on a live path; firing on >= {FIRING:.0%} of test rows)",
             "id_estimates    " + ", ".join(f"{k} {v:.2f}" for k, v in est.items())
             + (f"  (true d = {result['intrinsic_dim']})" if result["intrinsic_dim"] is not None else "")]
    lines.append(f"latent_needed   {result['latent_needed']} (folding more latent neurons into the others "
                 f"costs over {result['latent_fold_tolerance']:.0%} of the test loss; plots/latent_folds.png)")
    if result["nmi"] is not None:
        lines.append(f"nmi, ari        {result['nmi']:.3f}, {result['ari']:.3f}  (k-means, k = {result['clusters']}, "
                     f"on latent codes; on raw inputs {result['nmi_inputs']:.3f}, {result['ari_inputs']:.3f})")
    lines.append("figures         " + ", ".join(result["figures"]))
    return "\n".join(lines)
