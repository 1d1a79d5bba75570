"""The `obsprop` initialisation: method parameters from observable-propagated features.

Registered as INITS["obsprop"] by `interventions.training.setup`, so `intervention.init=obsprop`
(or `method.initialize("obsprop", scale, model=model, datamodule=dm)`) uses it. A method
declares how it takes the features (`Method.obsprop_form`); one that declares none is
refused in one line.

The observable: `observable=` (an Observable or a CLI spec such as "she-he") if given,
else each training point's own n_i = e_correct_i − e_wrong_i (from the datamodule's
train tensors), whose mean n̄ is the task's observable (`observable_for_task`).

The feature vector of a site is the gradient of n · logits with respect to that site's
activation along the direct path to the logits (through ln_final with its weight and
centring; its scale is one positive constant and drops out of every normalised value):
    u = P (w_f ⊙ W_U n)                    (residual stream, before ln_final)
    attnOut, mlpOut, residPost:  y = u     (they are added to the residual stream)
    o (a head's output, d_model): y = u
    z, v (per head, d_head):      y = W_O^h u   (o_h = z_h W_O^h; v reaches z through
                                                the attention pattern, which sums to 1)
Indirect paths (through later layers) are not included.

Per form (sign convention: β = +1 pushes the correct answer up, to first order):
- "direction" (SteerVec, steervec_shared): v = scale · ȳ/‖ȳ‖ at every grid position (ȳ: the feature of n̄), so ‖v‖ =
  scale per location; β v changes the mean logit difference by β · scale · ‖ȳ‖ ≥ 0
  along the direct path. (For `o` the heads' vectors add up in the attention output.)
- "probe" (DynScalar): g = ± scale · ȳ/‖ȳ‖ (`probe="feature"`); the sign is chosen on the
  training prompts so that the first-order direct effect at the last position,
  mean_i (g·ĥ_i)(h_i·y_i), is ≥ 0. With `probe="projection"`, g = scale · G/‖G‖ with
  G = mean_i ĥ_i (h_i·y_i) at the last position, the direction that maximises that
  first-order effect (the probe analogue of ActivScalar's rule, below). The default
  `probe="auto"` uses "feature" unless the task's answer pairs cancel (see below) and
  the datamodule is there, then "projection".
- "projection" (ActivScalar): α_loc ∝ mean_i (h_i,loc · y_i,loc) over the training prompts (clean
  run), scaled so that max |α| = scale. With one answer pair this is the projection of
  the location's mean activation on its feature vector; with per-point pairs it is the
  mean of the per-point projections, i.e. each location's first-order direct effect on
  the mean logit difference per unit of β α, so Σ α · effect ≥ 0.

Tasks whose answer pairs cancel (CCC: every capital is sometimes the answer and
sometimes the foil; pronouns: she−he and he−she) have n̄ ≈ 0, so a data-independent
direction (SteerVec, DynScalar's feature probe) carries almost no signal; SteerVec
warns, DynScalar switches to the projection probe. ActivScalar's per-point
projections do not cancel.
"""

from __future__ import annotations

import warnings

import torch

from interventions.errors import ConfigError
from interventions.obsprop.layernorm import center, has_norm, is_centering, ln_weight
from interventions.obsprop.observables import Observable
from interventions.sites import HEAD_SITES, hook_name

EPS = 1e-12
FORMS = ("direction", "probe", "projection")  # how a method takes the features (`Method.obsprop_form`)


def residual_unembed(model) -> torch.Tensor:
    """[d_vocab, d_model]: row t is P (w_f ⊙ W_U[:, t]), the residual direction of e_t."""
    W_U = model.W_U.detach().float().T
    if not has_norm(model):
        return W_U
    return center(W_U * ln_weight(model, "ln_final").to(W_U.device), is_centering(model))


def _site_vector(method, model, site: str, layer: int, u: torch.Tensor) -> torch.Tensor:
    """The site's feature for residual direction u: [D] or [H', d_head] / [H', d_model]."""
    heads = list(method.grid.head_indices)
    if site in ("z", "v"):
        return model.W_O.detach().float()[layer, heads] @ u  # [H', d_head]
    if site == "o":
        return u.expand(len(heads), -1)
    return u


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True).clamp_min(EPS)


@torch.no_grad()
def _site_statistics(method, model, tensors: dict, point_u: torch.Tensor, mean_dirs: dict, batch_size: int = 64):
    """Over the training prompts, per (site, layer):
    proj  [T] / [T, H']: mean_i h_i · y_i at every position (padding excluded);
    dyn   [] / [H']: mean_i (ĝ · ĥ_i)(h_i · y_i) at the last position (DynScalar's sign);
    probe [D] / [H', D]: mean_i ĥ_i (h_i · y_i) at the last position."""
    sites, layers = method.grid.sites, method.grid.layers
    heads = list(method.grid.head_indices)
    W_O = model.W_O.detach().float()
    device = model.W_U.device
    ids_all, mask_all, last_all = tensors["input_ids"], tensors["attention_mask"], tensors["last_index"]
    sums = {(s, l): 0.0 for s in sites for l in layers}
    dyn = {(s, l): 0.0 for s in sites for l in layers}
    probe = {(s, l): 0.0 for s in sites for l in layers}
    counts = torch.zeros(ids_all.shape[1])
    for start in range(0, len(ids_all), batch_size):
        sl = slice(start, start + batch_size)
        ids, mask, last = ids_all[sl].to(device), mask_all[sl].to(device), last_all[sl].to(device)
        u = point_u[sl].to(device)  # [B, d_model]
        names = {hook_name(s, l) for s in sites for l in layers}
        kwargs = {} if bool(mask.all()) else {"attention_mask": mask}
        _, cache = model.run_with_cache(ids, names_filter=lambda n: n in names, **kwargs)
        rows = torch.arange(len(ids), device=device)
        m = mask.float()
        counts += m.sum(0).cpu()
        for s in sites:
            for l in layers:
                h = cache[hook_name(s, l)].float()
                if s in HEAD_SITES:
                    h = h[:, :, heads]  # [B, T, H', d_head]: z or v (o is read on hook_z)
                    o = torch.einsum("bthe,hed->bthd", h, W_O[l, heads])  # h · (W_O u) = (h W_O) · u
                    if s == "o":
                        h = o  # DynScalar's α on o uses the head's output o_h
                    proj = torch.einsum("bthd,bd->bth", o, u)
                    proj_m = proj * m[:, :, None]
                else:
                    proj = torch.einsum("btd,bd->bt", h, u)
                    proj_m = proj * m
                sums[(s, l)] = sums[(s, l)] + proj_m.sum(0).cpu()
                g = mean_dirs[(s, l)].to(device)  # unit [D] or [H', D]
                h_last, p_last = h[rows, last], proj[rows, last]  # [B, (H',) D], [B, (H')]
                align = (_unit(h_last) * g).sum(-1)
                dyn[(s, l)] = dyn[(s, l)] + (align * p_last).sum(0).cpu()
                probe[(s, l)] = probe[(s, l)] + (_unit(h_last) * p_last[..., None]).sum(0).cpu()
    n = len(ids_all)
    denom = counts.clamp_min(1)
    proj_mean = {k: v / (denom if v.dim() == 1 else denom[:, None]) for k, v in sums.items()}
    return proj_mean, {k: v / n for k, v in dyn.items()}, {k: v / n for k, v in probe.items()}


def _resolve_observable(observable, model):
    if observable is None or isinstance(observable, Observable):
        return observable
    if isinstance(observable, str):
        return Observable.parse(observable, model.tokenizer)
    return Observable.from_vector(observable)


def obsprop_init(
    method,
    scale: float,
    generator: torch.Generator | None = None,
    model=None,
    datamodule=None,
    observable=None,
    split: str = "train",
    probe: str = "auto",
    **_,
) -> None:
    """Fill `method`'s parameters from observable-propagated features (module docstring)."""
    if model is None:
        raise ConfigError("init=obsprop needs the model (initialize(..., model=model, datamodule=dm))")
    if scale <= 0:
        raise ConfigError(f"init=obsprop: init_scale must be > 0 (the size of the vectors / scalars), got {scale}")
    form = method.obsprop_form
    if form not in FORMS:
        raise ConfigError(f"intervention.init=obsprop is not offered by {method.name}; use init=normal or init=zeros")
    observable = _resolve_observable(observable, model)
    if probe not in ("auto", "feature", "projection"):
        raise ConfigError(f"init=obsprop: probe={probe!r}; allowed: auto, feature, projection")
    tensors = None
    if datamodule is not None:
        datamodule.setup()
        tensors = datamodule.datasets[split].tensors
    u_mean, point_u, probe = _answer_directions(model, method, observable, tensors, probe)
    if probe == "auto":
        probe = "feature"
    if form == "projection" and tensors is None:
        raise ConfigError(f"init=obsprop for {method.name} needs the datamodule (mean activations)")

    grid = method.grid
    mean_dirs = {(s, l): _unit(_site_vector(method, model, s, l, u_mean)) for s in grid.sites for l in grid.layers}
    stats = dyn = probes = None
    if tensors is not None and form in ("projection", "probe"):
        stats, dyn, probes = _site_statistics(method, model, tensors, point_u, mean_dirs)
    elif probe == "projection" and form == "probe":
        raise ConfigError("init=obsprop: probe='projection' needs the datamodule")
    _fill(method, scale, probe, mean_dirs, stats, dyn, probes)


def _answer_directions(model, method, observable, tensors: dict | None, probe: str):
    """The residual-stream direction to propagate: the observable's, or the mean of the task's
    answer directions u_c − u_w over its data points.

    Returns (u_mean [d], point_u [N, d] or None without data, the probe to use).
    """
    U_res = residual_unembed(model)  # [V, d]
    if observable is not None:
        u_mean = U_res.T @ observable.vector(U_res.shape[0], U_res.device)
        point_u = None if tensors is None else u_mean.expand(len(tensors["input_ids"]), -1)
        return u_mean, point_u, probe
    if tensors is None:
        raise ConfigError("init=obsprop needs a datamodule (the task's answers) or observable=...")
    point_u = U_res[tensors["correct"]] - U_res[tensors["wrong"]]  # [N, d]
    u_mean = point_u.mean(0)
    typical = point_u.norm(dim=-1).mean()
    cancels = bool(u_mean.norm() < 0.1 * typical)
    if probe == "auto" and cancels:
        probe = "projection"
    if cancels and (method.obsprop_form == "direction" or (method.obsprop_form == "probe" and probe == "feature")):
        warnings.warn(
            f"init=obsprop: the task's answer pairs nearly cancel (‖mean direction‖ = "
            f"{float(u_mean.norm()):.3g} vs {float(typical):.3g} per point), so {method.name}'s one "
            "direction carries little signal; pass observable=... to choose one",
            stacklevel=4,
        )
    return u_mean, point_u, probe


@torch.no_grad()
def _fill(method, scale: float, probe: str, mean_dirs: dict, stats, dyn, probes) -> None:
    """Write the initial values into `method`'s parameters, scaled to `scale`."""
    form = method.obsprop_form
    if form == "direction":  # the same direction at every position
        for (s, l), g in mean_dirs.items():
            p = method.param(s, l)
            p.copy_((scale * g).to(p.dtype).expand_as(p))
    elif form == "probe" and probe == "projection":
        for (s, l), G in probes.items():
            p = method.param(s, l)
            p.copy_((scale * _unit(G)).to(p.dtype).reshape(p.shape))
    elif form == "probe":
        for (s, l), g in mean_dirs.items():
            sign = torch.ones(g.shape[:-1])
            if dyn is not None:
                sign = torch.where(torch.as_tensor(dyn[(s, l)]) < 0, -1.0, 1.0)
            p = method.param(s, l)
            p.copy_((scale * g * sign.to(g.device)[..., None]).to(p.dtype).reshape(p.shape))
    elif form == "projection":
        positions = list(method.grid.positions)
        values = {k: v[positions] for k, v in stats.items()}  # [P] or [P, H']
        top = max(float(v.abs().max()) for v in values.values())
        for (s, l), v in values.items():
            p = method.param(s, l)
            p.copy_((v * (scale / max(top, EPS))).to(p.dtype).reshape(p.shape))
    else:
        raise ConfigError(f"init=obsprop does not know the form {form!r} of method {method.name!r}")
