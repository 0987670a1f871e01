"""The UCGM-T objective: one training loss for multi-step, few-step and tuning (method doc, Sec. 1.2).

Per mini-batch (x [B,C,H,W] clean latents, labels [B]):

1. t ~ clamp(s * Beta(a, b), 0, 1) and z ~ N(0, I)                          (Sec. 1.2, steps 1-2)
2. the last round(p * B) labels become the null class                       (step 3)
3. F = F_theta(x_t, t, c) with x_t = alpha z + gamma x                      (steps 4-5)
4. enhanced ("self-boosting") endpoints x~, z~ and target F~                (step 8)
5. for lambda > 0 the consistency target built from df/dt along the path    (step 9)
6. pseudo-Huber per-sample RMSE (+ channel cosine term), cosine time weight (step 10)

Unlike the original, the caller's tensors are never modified in place; the original's aliasing
(its consistency path uses the *enhanced* endpoints) is reproduced explicitly. When a label
dropout count rounds to zero, no label is dropped (the original would drop every label).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field, fields
from typing import Any, Callable, Mapping, Optional, Sequence

import torch
import torch.nn.functional as Fn
from torch import Tensor, nn

from ..transports import HALF_PI_APPROX, OrientedTransport, orient
from .ema import unwrap
from .teacher import Teacher

ENHANCED_STYLES = ("ft-vs-fe", "fc-vs-xz", "fc-vs-fe")
WEIGHTINGS = (None, "Cosine")
LOSSES = ("pseudo_huber", "mse")
CENTRAL_DIFFERENCE_EPS = 0.005
CENTRAL_DIFFERENCE_SCALE = 100.0  # 1 / (2 * eps)


@dataclass
class UCGMConfig:
    """Objective hyper-parameters, named after the original's YAML ``transport`` keys.

    Attributes:
        transport: transport name (``Linear``, ``ReLinear``, ``TrigFlow``, ``TrigLinear``, ``EDM``).
        consistency_ratio: lambda in [0, 1] (``consistc_ratio``); 0 multi-step, 1 few-step.
        enhanced_ratio: zeta (``enhanced_ratio``); 0 disables the enhanced target.
        enhanced_style: ``ft-vs-fe``, ``fc-vs-xz`` or ``fc-vs-fe`` (needed when zeta != 0).
        enhanced_range: (lo, hi): enhancement applies where lo < t < hi.
        label_drop_ratio: fraction of each batch whose labels become the null class.
        huber_c: c of the pseudo-Huber loss (``scaled_cbl_eps``).
        teacher_decay: delta (``ema_decay_rate``): 0 online, (0,1) EMA, 1 frozen.
        time_dist: (a, b, s): t = clamp(s * Beta(a, b), 0, 1) (``time_dist_ctrl``).
        weighting: ``Cosine`` (w = cos(1.57 t)) or None (``weight_funcion``).
        cosine_loss: add the channel-cosine term (``wt_cosine_loss``).
        loss: ``pseudo_huber`` (the original's: pseudo-Huber of the per-sample RMSE, c = ``huber_c``) or
            ``mse`` (the per-sample mean squared error of flow matching and EDM; not in the original). With
            zeta = 0, lambda = 0, ``weighting`` None and no cosine term, ``mse`` is plain conditional flow
            matching: the standard recipe the plug-and-play rows start from.
        num_classes: the null label is ``num_classes``.
    """

    transport: str = "Linear"
    consistency_ratio: float = 0.0
    enhanced_ratio: float = 0.0
    enhanced_style: Optional[str] = None
    enhanced_range: Sequence[float] = (0.0, 0.75)
    label_drop_ratio: float = 0.1
    huber_c: float = 0.0
    teacher_decay: float = 0.999
    time_dist: Sequence[float] = (1.0, 1.0, 1.0)
    weighting: Optional[str] = "Cosine"
    cosine_loss: bool = True
    loss: str = "pseudo_huber"
    num_classes: int = 1000

    @classmethod
    def from_dict(cls, objective: Mapping[str, Any], num_classes: int) -> "UCGMConfig":
        """From a config's ``objective`` section (absent keys: the field defaults, which
        tests/core/test_defaults.py checks against the schema's) and the data's ``num_classes``; values are
        kept as given (lists stay lists). Unknown keys are refused, naming the known ones."""
        allowed = {f.name for f in fields(cls)} - {"num_classes"}
        unknown = sorted(set(objective) - allowed)
        if unknown:
            raise ValueError(
                f"objective: unknown keys {unknown}; expected some of {sorted(allowed)} "
                "(num_classes comes from the data)"
            )
        return cls(**objective, num_classes=num_classes)

    @classmethod
    def from_original(cls, cfg: dict, num_classes: int) -> "UCGMConfig":
        """Build from the original's ``transport:`` YAML section (its key names and typo)."""
        return cls(
            transport=cfg["transport_type"] if "transport_type" in cfg else cfg["type"],
            consistency_ratio=cfg["consistc_ratio"],
            enhanced_ratio=cfg["enhanced_ratio"],
            enhanced_style=cfg.get("enhanced_style"),
            enhanced_range=tuple(cfg["enhanced_range"]),
            label_drop_ratio=cfg["lab_drop_ratio"],
            huber_c=cfg["scaled_cbl_eps"],
            teacher_decay=cfg["ema_decay_rate"],
            time_dist=tuple(cfg["time_dist_ctrl"]),
            weighting=cfg["weight_funcion"],
            cosine_loss=cfg["wt_cosine_loss"],
            num_classes=num_classes,
        )

    def validate(self) -> None:
        def bad(key, value, expected):
            raise ValueError(f"objective config: {key}={value!r} is invalid; expected {expected}")

        if not 0.0 <= self.consistency_ratio <= 1.0:
            bad("consistency_ratio", self.consistency_ratio, "a value in [0, 1]")
        if self.enhanced_ratio != 0 and self.enhanced_style not in ENHANCED_STYLES:
            bad("enhanced_style", self.enhanced_style, f"one of {ENHANCED_STYLES} when enhanced_ratio != 0")
        if self.enhanced_style is not None and self.enhanced_style not in ENHANCED_STYLES:
            bad("enhanced_style", self.enhanced_style, f"one of {ENHANCED_STYLES} or None")
        if len(self.time_dist) != 3 or min(self.time_dist) <= 0:
            bad("time_dist", list(self.time_dist), "three positive numbers [a, b, scale]")
        if len(self.enhanced_range) != 2 or self.enhanced_range[0] > self.enhanced_range[1]:
            bad("enhanced_range", list(self.enhanced_range), "[lo, hi] with lo <= hi")
        if not 0.0 <= self.label_drop_ratio < 1.0:
            bad("label_drop_ratio", self.label_drop_ratio, "a value in [0, 1)")
        if self.huber_c < 0:
            bad("huber_c", self.huber_c, "a value >= 0")
        if not 0.0 <= self.teacher_decay <= 1.0:
            bad("teacher_decay", self.teacher_decay, "a value in [0, 1]")
        if self.weighting not in WEIGHTINGS:
            bad("weighting", self.weighting, f"one of {WEIGHTINGS}")
        if self.loss not in LOSSES:
            bad("loss", self.loss, f"one of {LOSSES}")
        if self.loss == "mse" and self.huber_c != 0:
            bad("huber_c", self.huber_c, "0 with loss 'mse' (c belongs to the pseudo-Huber loss)")
        if self.num_classes < 1:
            bad("num_classes", self.num_classes, "an integer >= 1")


@dataclass
class ObjectiveOutput:
    """Everything a training step produced. Shapes: B = batch, D = data dims."""

    loss: Tensor  # [] weighted batch mean, differentiable
    per_sample: Tensor  # [B] loss before the time weight
    weight: Tensor  # [B] time weight
    prediction: Tensor  # [B,*D] F (internal convention)
    target: Tensor  # [B,*D] F~ (no grad)
    t: Tensor  # [B,1,...] internal time
    z: Tensor  # [B,*D] noise drawn
    labels: Tensor  # [B] labels after dropout
    x_enhanced: Tensor  # [B,*D] x~
    z_enhanced: Tensor  # [B,*D] z~
    nfe: int = 1
    extras: dict = field(default_factory=dict)


def sample_time(batch: int, time_dist: Sequence[float], device=None) -> Tensor:
    """t = clamp(s * Beta(a, b), 0, 1), shape [batch] (method doc, Sec. 1.2 step 1)."""
    a, b, scale = (float(v) for v in time_dist)
    if a == 1.0 and b == 1.0:
        raw = torch.rand(batch, device=device)
    else:
        raw = torch.distributions.Beta(torch.tensor(a), torch.tensor(b)).sample((batch,)).to(device)
    return (raw * scale).clamp(0.0, 1.0)


def label_drop_count(ratio: float, batch: int) -> int:
    """round(ratio * B), the number of trailing labels set to the null class."""
    return int(round(ratio * batch))


def pseudo_huber_rmse(pred: Tensor, target: Tensor, c: float) -> Tensor:
    """sqrt(mean_{CHW}((F - F~)^2) + c^2) - c per sample; the plain RMSE for c = 0 (Sec. 1.2 step 10)."""
    return torch.sqrt(mean_squared_error(pred, target) + c * c) - c


def mean_squared_error(pred: Tensor, target: Tensor) -> Tensor:
    """mean_{CHW}((F - F~)^2) per sample: the flow-matching (and EDM) loss before its time weight."""
    return (pred - target).pow(2).flatten(1).mean(1)


def channel_cosine_distance(pred: Tensor, target: Tensor) -> Tensor:
    """mean over positions of 1 - cos_sim along channels, per sample (``wt_cosine_loss``)."""
    return (1 - Fn.cosine_similarity(pred, target, dim=1)).flatten(1).mean(1)


def _has_stochastic_layers(module: nn.Module) -> bool:
    if getattr(module, "stochastic_forward", False) and module.training:
        return True
    return any(isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0 and m.training for m in module.modules())


class _RngReplay:
    """Replays the RNG state of the online forward before each extra forward (same dropout masks)."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.device = device
        self.state = self._get()

    def _get(self):
        return torch.cuda.get_rng_state(self.device) if self.cuda else torch.get_rng_state()

    def _set(self, state):
        if self.cuda:
            torch.cuda.set_rng_state(state, self.device)
        else:
            torch.set_rng_state(state)

    @contextlib.contextmanager
    def replay(self):
        after = self._get()
        self._set(self.state)
        try:
            yield
        finally:
            self._set(after)


class UCGMObjective:
    """UCGM-T loss. Holds the teacher; call once per step with the online model.

    Example::

        objective = UCGMObjective(UCGMConfig(consistency_ratio=0.0, enhanced_ratio=0.47,
                                             enhanced_style="ft-vs-fe", num_classes=1000))
        out = objective(model, x, labels)
        out.loss.backward()
    """

    def __init__(self, config: UCGMConfig, fuse_forwards: bool | str = False):
        config.validate()
        self.config = config
        self.transport: OrientedTransport = orient(config.transport)
        zeta = float(config.enhanced_ratio)
        if zeta >= 1.0 and config.consistency_ratio == 0.0:
            zeta = (zeta - 1.0) / zeta  # a CFG scale w given as zeta: zeta = 1 - 1/w (Sec. 1.2 step 8)
        self.zeta = zeta
        self.teacher = Teacher(config.teacher_decay)
        self.fuse_forwards = fuse_forwards
        # maps a bare network (the unwrapped online model, the teacher) to what the extra no-grad
        # forwards call, e.g. its torch.compile wrapper (ucgm_core.accel.CompiledModules); None: itself
        self.wrap_network: Optional[Callable[[nn.Module], nn.Module]] = None

    # -- model evaluation -----------------------------------------------------------------
    def _predict(self, network: nn.Module, x_t: Tensor, t: Tensor, labels: Tensor):
        """Returns (F, x_hat, z_hat) in internal convention."""
        F = self.transport.call(network, x_t, t, y=labels).float()
        x_hat, z_hat = self.transport.invert(F, x_t, t)
        return F, x_hat, z_hat

    def _predict_many(self, network, inputs, fuse: bool, rng: Optional[_RngReplay]):
        """Evaluate several (x_t, t, labels) triples without grad, fused into one batch if allowed."""
        with torch.no_grad():
            if fuse and len(inputs) > 1:
                x_t, t, labels = (torch.cat(parts) for parts in zip(*inputs))
                _, x_hat, z_hat = self._predict(network, x_t, t, labels)
                return list(zip(x_hat.chunk(len(inputs)), z_hat.chunk(len(inputs))))
            results = []
            for x_t, t, labels in inputs:
                ctx = rng.replay() if rng is not None else contextlib.nullcontext()
                with ctx:
                    _, x_hat, z_hat = self._predict(network, x_t, t, labels)
                results.append((x_hat, z_hat))
            return results

    # -- the step ------------------------------------------------------------------------
    def __call__(
        self,
        model: nn.Module,
        x: Tensor,
        labels: Tensor,
        t: Optional[Tensor] = None,
        z: Optional[Tensor] = None,
        drop: Optional[Tensor] = None,
        advance_teacher: bool = True,
    ) -> ObjectiveOutput:
        """One UCGM-T loss evaluation.

        Args:
            model: the online network ``model(x_t, t_native [B], y=labels) -> F``; may be DDP-wrapped.
            x: clean latents [B,C,H,W] (not modified).
            labels: int64 [B] in [0, num_classes] (not modified).
            t: optional internal times [B] or [B,1,1,1] (drawn from the time distribution if None).
            z: optional noise like ``x`` (drawn with ``torch.randn_like`` if None).
            drop: optional bool [B]: the samples whose label becomes the null class. None (default)
                keeps the original rule (the last ``round(p * B)`` labels of this batch); the
                multi-process trainer passes its slice of a mask drawn over the global batch.
            advance_teacher: advance the teacher by one step (default; only when lambda != 0 or
                zeta != 0, as in the original). Gradient accumulation
                passes False for every micro-batch but the first, so the teacher moves once per
                optimizer step.
        """
        cfg = self.config
        self._check_inputs(x, labels, t, z)
        B = x.shape[0]
        if drop is not None and (drop.shape != (B,) or drop.dtype != torch.bool):
            raise ValueError(f"drop must be a bool mask of shape [{B}], got {drop.dtype} {tuple(drop.shape)}")
        tp = self.transport
        if t is None:
            t = sample_time(B, cfg.time_dist, device=x.device)
        t = t.reshape(B, *([1] * (x.dim() - 1))).to(x.dtype)
        if z is None:
            z = torch.randn_like(x)

        labels = labels.clone()
        if drop is None:
            ndrop = label_drop_count(cfg.label_drop_ratio, B)  # fixes the original's c[-0:] bug
            if ndrop > 0:
                labels[B - ndrop :] = cfg.num_classes
            conditional = torch.zeros(B, dtype=torch.bool, device=x.device)
            conditional[: B - ndrop] = True
        else:
            drop = drop.to(labels.device)
            labels[drop] = cfg.num_classes
            conditional = ~drop.to(x.device)

        x_t = tp.noisy(x, z, t)
        online = unwrap(model)
        fuse = self._fuse(online)
        rng = None if fuse else _RngReplay(x.device)

        F, x_hat, z_hat = self._predict(model, x_t, t, labels)  # the only forward with grad
        nfe = 1

        teacher = None
        if self.zeta != 0.0 or cfg.consistency_ratio != 0.0:
            # as in the original, the teacher advances whenever lambda != 0 or zeta != 0, also when only
            # the enhancement (zeta != 0) evaluates it: its EMA / frozen copy is part of the saved state
            teacher = self._wrap(self._teacher_network(online, advance_teacher))
        x_tilde, z_tilde = x, z
        if self.zeta != 0.0:
            x_tilde, z_tilde, used = self._enhance(teacher, x, z, x_t, t, labels, conditional, x_hat, z_hat, fuse, rng)
            nfe += used
        target = tp.target(x_tilde, z_tilde, t)

        if cfg.consistency_ratio > 0.0:
            target, used = self._consistency_target(self._wrap(online), F, x_tilde, z_tilde, t, labels, fuse, rng)
            nfe += used

        target = target.detach()
        if cfg.loss == "mse":
            per_sample = mean_squared_error(F, target)
        else:
            per_sample = pseudo_huber_rmse(F, target, cfg.huber_c)
        if cfg.cosine_loss:
            per_sample = per_sample + channel_cosine_distance(F, target)
        weight = self._time_weight(t.reshape(B))
        loss = (per_sample * weight).mean()
        return ObjectiveOutput(
            loss=loss,
            per_sample=per_sample,
            weight=weight,
            prediction=F,
            target=target,
            t=t,
            z=z,
            labels=labels,
            x_enhanced=x_tilde,
            z_enhanced=z_tilde,
            nfe=nfe,
        )

    def _wrap(self, network: nn.Module) -> nn.Module:
        return network if self.wrap_network is None else self.wrap_network(network)

    def _fuse(self, online: nn.Module) -> bool:
        if self.fuse_forwards == "auto":
            return not _has_stochastic_layers(online)
        return bool(self.fuse_forwards)

    def _enhance(self, teacher, x, z, x_t, t, labels, conditional, x_hat, z_hat, fuse, rng):
        """Enhanced endpoints x~, z~ (method doc, Sec. 1.2 step 8) with the (advanced) ``teacher``.
        Returns (x~, z~, extra NFE)."""
        cfg = self.config
        null = torch.full_like(labels, cfg.num_classes)
        style = cfg.enhanced_style
        if style == "ft-vs-fe":  # P: online conditional (detached), R: teacher with null label
            ((ref_x, ref_z),) = self._predict_many(teacher, [(x_t, t, null)], fuse, rng)
            pred_x, pred_z, used = x_hat.detach(), z_hat.detach(), 1
        elif style == "fc-vs-xz":  # P: teacher conditional, R: ground truth
            ((pred_x, pred_z),) = self._predict_many(teacher, [(x_t, t, labels)], fuse, rng)
            ref_x, ref_z, used = x, z, 1
        else:  # fc-vs-fe - P: teacher conditional, R: teacher null (the original evaluates null first)
            (ref_x, ref_z), (pred_x, pred_z) = self._predict_many(
                teacher, [(x_t, t, null), (x_t, t, labels)], fuse, rng
            )
            used = 2

        lo, hi = cfg.enhanced_range
        t_flat = t.reshape(-1)
        inside = (t_flat > lo) & (t_flat < hi)
        in_range = (inside & conditional).view_as(t)
        out_range = (~inside & conditional).view_as(t)
        null_rows = (~conditional).view_as(t)

        def boosted(base, pred, ref):
            new = torch.where(in_range, base + self.zeta * (pred - ref), base)
            new = torch.where(out_range, 0.5 * (base + pred), new)
            return torch.where(null_rows, 0.5 * (base + ref), new)

        with torch.no_grad():
            return boosted(x, pred_x, ref_x), boosted(z, pred_z, ref_z), used

    def _teacher_network(self, online: nn.Module, advance: bool) -> nn.Module:
        """The teacher to evaluate: advanced by one step, or as it stands (later micro-batches)."""
        if advance or (self.teacher.module is None and self.teacher.mode != "online"):
            return self.teacher.step(online)
        if self.teacher.mode == "online":
            return unwrap(online)
        self.teacher.module.train(unwrap(online).training)
        return self.teacher.module

    def _consistency_target(self, online, F, x_tilde, z_tilde, t, labels, fuse, rng):
        """F~ = sg(F) - (alpha/D) * W(t) * clamp(df/dt, -1, 1), W = 4/sin(1.57 t) (Sec. 1.2 step 9)."""
        tp, lam = self.transport, self.config.consistency_ratio
        with torch.no_grad():
            F = F.detach()
            if lam == 1.0:  # central difference, t +- eps is not clamped (as in the original)
                eps = CENTRAL_DIFFERENCE_EPS
                r_plus, r_minus = t + eps, t - eps
                (f_plus, _), (f_minus, _) = self._predict_many(
                    online,
                    [
                        (tp.noisy(x_tilde, z_tilde, r_plus), r_plus, labels),
                        (tp.noisy(x_tilde, z_tilde, r_minus), r_minus, labels),
                    ],
                    fuse,
                    rng,
                )
                # the original multiplies each term by 1/(2 eps) = 100 before subtracting
                dfdt, used = f_plus * CENTRAL_DIFFERENCE_SCALE - f_minus * CENTRAL_DIFFERENCE_SCALE, 2
            else:  # one-sided difference to time lambda * t; x_hat_t uses F on the un-enhanced x_t
                eps_t = t - lam * t
                r = t - eps_t
                x_tilde_t = tp.noisy(x_tilde, z_tilde, t)
                x_hat_t = (tp.alpha_in(t) * F - tp.alpha_to(t) * x_tilde_t) / tp.determinant(t)
                ((f_r, _),) = self._predict_many(online, [(tp.noisy(x_tilde, z_tilde, r), r, labels)], fuse, rng)
                dfdt, used = (x_hat_t - f_r) * (1.0 / eps_t), 1
            tangent = dfdt.clamp(-1.0, 1.0)
            weight = 4.0 / torch.sin(t * HALF_PI_APPROX)
            return F - (tp.alpha_in(t) / tp.determinant(t)) * weight * tangent, used

    def _time_weight(self, t: Tensor) -> Tensor:
        if self.config.weighting == "Cosine":
            return torch.cos(t * HALF_PI_APPROX)
        return torch.ones_like(t)

    def _check_inputs(self, x, labels, t, z) -> None:
        B = x.shape[0]
        if labels.shape != (B,):
            raise ValueError(f"labels must have shape [{B}] to match x {tuple(x.shape)}, got {tuple(labels.shape)}")
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) > self.config.num_classes):
            raise ValueError(
                f"labels must lie in [0, {self.config.num_classes}] (the last is the null class), "
                f"got min {int(labels.min())}, max {int(labels.max())}"
            )
        if z is not None and z.shape != x.shape:
            raise ValueError(f"noise z has shape {tuple(z.shape)}, expected {tuple(x.shape)} like x")
        if t is not None and t.numel() != B:
            raise ValueError(f"t must hold one time per sample ({B}), got shape {tuple(t.shape)}")

    # -- resume ----------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"teacher": self.teacher.state_dict()}

    def load_state_dict(self, state: dict, template: nn.Module) -> None:
        """Restore the teacher; ``template`` (the online model) gives its architecture."""
        self.teacher.load_state_dict(state["teacher"], template)
