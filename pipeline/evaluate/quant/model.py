"""A fake-quantized timm VisionTransformer: a functional re-implementation of its forward with quantizers
at every matmul input, calibrated on a batch of images.

The timm model is not patched or wrapped: :meth:`QuantViT.from_timm` reads its stages (``patch_embed``,
``_pos_embed``'s class token and position embedding, ``blocks`` with ``norm1``/``attn.qkv``/``attn.proj``/
``norm2``/``mlp.fc1``/``mlp.act``/``mlp.fc2``, ``norm``, the pooling and ``head``) into plain tensors, and
:meth:`QuantViT.forward` recomputes timm's forward from them (equal to it when quantization is off).

Quantized (as in RepQ-ViT / PTQ4ViT, so W4/A4 means what it means there):

- weights of the patch embedding, ``qkv``, ``proj``, ``fc1``, ``fc2`` and the head: per output channel,
  ``w_bits``, MSE-searched clip (:func:`~.quantizers.search_weight`);
- the image entering the patch embedding: ``input_bits`` (8, as RepQ-ViT);
- the inputs of ``qkv``, ``fc1`` and the head (LayerNorm outputs, whose channels differ by orders of
  magnitude): per channel; with ``post_ln="reparam"`` (default) the per-channel scales are then folded into
  the LayerNorm's affine and the next layer's weights (RepQ-ViT's scale reparameterisation), which leaves
  a per-tensor quantizer there and re-quantizes the rescaled weights;
- ``q``, ``k``, ``v``, the ``proj`` input: per tensor, uniform, range searched;
- the softmax output: a log quantizer below 1 with 1, 2, 4, 8 or 16 levels per octave, chosen by its error
  in the attention output (:func:`~.quantizers.search_log2`), or uniform;
- the GELU output (``fc2``'s input): uniform or PTQ4ViT's twin-uniform, by default whichever has the lower
  MSE on the calibration activations.

Calibration is sequential, as in the anchors: one forward pass of the calibration batch with every
quantizer already on, each activation quantizer searched on the activations it sees when first reached, so
the ranges of a layer reflect the quantization error upstream of it. With a token mask (:func:`token_mask`,
from an SMI corpus's kept-patch records) the ranges are searched on the kept tokens only. The residual
stream, the LayerNorms and the softmax/GELU arithmetic stay in float (as in the papers).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.evaluate.quant.quantizers import (
    Quantizer, UniformQuantizer, quant_mse, search_log2, search_twin, search_uniform, search_weight,
)

# raised when the quantizers' arithmetic changes (2: the softmax's log quantizer with top 1 and 1-16 levels
# per octave; a corpus's calibration on its kept tokens): benchmark results of another version are measured again
QUANTIZER_VERSION = 2
MIN_BITS, MAX_BITS = 2, 8
POST_LN = ("reparam", "per_channel", "per_tensor")
SOFTMAX = ("log2", "uniform")
GELU = ("auto", "uniform", "twin")


@dataclass(frozen=True)
class QuantSettings:
    """What the quantizer does: bit widths and the choice of quantizer at the sites that have one."""

    w_bits: int = 8
    a_bits: int = 8
    input_bits: int = 8  # the image entering the patch embedding
    post_ln: str = "reparam"  # LayerNorm outputs: RepQ-ViT reparameterisation, per-channel fake quant, or per tensor
    softmax: str = "log2"
    gelu: str = "auto"

    def __post_init__(self) -> None:
        for name in ("w_bits", "a_bits", "input_bits"):
            bits = getattr(self, name)
            if not MIN_BITS <= int(bits) <= MAX_BITS:
                raise ValueError(f"{name}: must be in [{MIN_BITS}, {MAX_BITS}], got {bits}")
        for name, allowed in (("post_ln", POST_LN), ("softmax", SOFTMAX), ("gelu", GELU)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name}: expected one of {', '.join(allowed)}, got {getattr(self, name)!r}")

    @property
    def label(self) -> str:
        return f"W{self.w_bits}A{self.a_bits}"


@dataclass(frozen=True)
class ViTShape:
    """The structure of a plain timm VisionTransformer (what the functional forward needs besides tensors)."""

    img_size: int
    patch_size: int
    embed_dim: int
    depth: int
    num_heads: int
    num_classes: int
    class_token: bool
    no_embed_class: bool
    global_pool: str  # "token" | "avg"
    norm_eps: float
    gelu_approximate: str  # "none" | "tanh"
    layer_scale: bool

    @property
    def prefix_tokens(self) -> int:
        return int(self.class_token)

    @property
    def grid(self) -> int:
        return self.img_size // self.patch_size

    @property
    def tokens(self) -> int:
        return self.prefix_tokens + self.grid**2


def token_mask(shape: ViTShape, patches: torch.Tensor) -> torch.Tensor:
    """``(batch, tokens)`` bool mask of the tokens to calibrate on, from ``(batch, Gh, Gw)`` kept-patch masks
    (an SMI corpus's record of each image's kept patches); the class token is always kept. ValueError when the
    grid is not the model's."""
    if patches.dim() != 3 or tuple(patches.shape[1:]) != (shape.grid, shape.grid):
        raise ValueError(f"kept-patch masks of shape {tuple(patches.shape)} do not match the model's "
                         f"{shape.grid}x{shape.grid} patch grid")
    prefix = torch.ones(patches.shape[0], shape.prefix_tokens, dtype=torch.bool, device=patches.device)
    return torch.cat([prefix, patches.flatten(1).bool()], 1)


def weight_names(shape: ViTShape) -> list[str]:
    """The quantized weights, in forward order."""
    names = ["patch_embed.proj.weight"]
    for i in range(shape.depth):
        names += [f"blocks.{i}.{m}.weight" for m in ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2")]
    return names + ["head.weight"]


def post_ln_sites(shape: ViTShape) -> list[tuple[str, str, str]]:
    """``(LayerNorm, next Linear, activation site)`` for each LayerNorm output feeding a quantized Linear."""
    sites = []
    for i in range(shape.depth):
        sites.append((f"blocks.{i}.norm1", f"blocks.{i}.attn.qkv", f"blocks.{i}.qkv_in"))
        sites.append((f"blocks.{i}.norm2", f"blocks.{i}.mlp.fc1", f"blocks.{i}.fc1_in"))
    return sites + [("norm", "head", "head_in")]


def _unsupported(why: str) -> ValueError:
    return ValueError(f"unsupported ViT for quantization: {why} (a plain timm VisionTransformer is needed)")


def vit_shape(model: nn.Module) -> ViTShape:
    """The :class:`ViTShape` of a timm VisionTransformer; ValueError naming what is not supported."""
    from timm.layers import LayerScale
    from timm.models.vision_transformer import Block, VisionTransformer

    if not isinstance(model, VisionTransformer):
        raise _unsupported(f"{type(model).__name__} is not a timm VisionTransformer")
    if getattr(model, "reg_token", None) is not None or getattr(model, "dynamic_img_size", False):
        raise _unsupported("register tokens or dynamic image size")
    if getattr(model, "attn_pool", None) is not None or model.global_pool not in ("token", "avg"):
        raise _unsupported(f"global_pool {model.global_pool!r}")
    for name in ("norm_pre", "fc_norm"):
        if not isinstance(getattr(model, name), nn.Identity):
            raise _unsupported(f"a {name}")
    pe = model.patch_embed
    if not isinstance(pe.norm, nn.Identity) or not isinstance(pe.proj, nn.Conv2d) or not pe.flatten:
        raise _unsupported("a patch embedding other than a flattened Conv2d")
    if not isinstance(model.head, nn.Linear) or not isinstance(model.norm, nn.LayerNorm):
        raise _unsupported("no linear head or final LayerNorm")
    eps = float(model.norm.eps)
    gelu, layer_scale = None, None
    for blk in model.blocks:
        if type(blk) is not Block:
            raise _unsupported(f"block type {type(blk).__name__}")
        attn, mlp = blk.attn, blk.mlp
        extras = [getattr(attn, n, None) for n in ("q_norm", "k_norm", "norm")] + [getattr(mlp, "norm", None)]
        if any(e is not None and not isinstance(e, nn.Identity) for e in extras) or getattr(attn, "gate", None):
            raise _unsupported("q/k norms, attention output norm, gates or an MLP norm")
        if not isinstance(mlp.act, nn.GELU) or not all(isinstance(n, nn.LayerNorm) for n in (blk.norm1, blk.norm2)):
            raise _unsupported("an MLP activation other than GELU or norms other than LayerNorm")
        scales = tuple(isinstance(ls, LayerScale) for ls in (blk.ls1, blk.ls2))
        if not all(scales) and not all(isinstance(ls, nn.Identity) for ls in (blk.ls1, blk.ls2)):
            raise _unsupported("layer scale of an unknown kind")
        if layer_scale is not None and layer_scale != scales[0]:
            raise _unsupported("layer scale in some blocks only")
        layer_scale, gelu = scales[0], mlp.act.approximate
        if any(float(n.eps) != eps for n in (blk.norm1, blk.norm2)):
            raise _unsupported("LayerNorms with different eps")
    side = pe.img_size[0] if isinstance(pe.img_size, (tuple, list)) else pe.img_size
    patch = pe.patch_size[0] if isinstance(pe.patch_size, (tuple, list)) else pe.patch_size
    if tuple(pe.proj.stride) != (patch, patch) or tuple(pe.proj.kernel_size) != (patch, patch):
        raise _unsupported("a patch embedding whose stride is not its patch size")
    return ViTShape(img_size=int(side), patch_size=int(patch), embed_dim=int(model.embed_dim),
                    depth=len(model.blocks), num_heads=int(model.blocks[0].attn.num_heads),
                    num_classes=int(model.num_classes), class_token=model.cls_token is not None,
                    no_embed_class=bool(model.no_embed_class), global_pool=str(model.global_pool), norm_eps=eps,
                    gelu_approximate=str(gelu or "none"), layer_scale=bool(layer_scale))


class QuantViT(nn.Module):
    """A ViT's forward over plain tensors with weight and activation fake quantizers.

    ``params``: timm's state-dict names -> float tensors (after reparameterisation, when done);
    ``weight_q``: the per-channel weight quantizers by weight name; ``acts``: the activation quantizers by
    site (``input``, ``blocks.I.{qkv_in,q,k,v,softmax,proj_in,fc1_in,fc2_in}``, ``head_in``).
    ``quant_weights`` / ``quant_acts`` switch each kind off (both off: timm's float forward).
    """

    def __init__(self, shape: ViTShape, params: dict[str, torch.Tensor], settings: QuantSettings,
                 weight_q: dict[str, UniformQuantizer] | None = None, acts: dict[str, Quantizer] | None = None) -> None:
        super().__init__()
        self.shape, self.settings = shape, settings
        self.params = params
        self.weight_q: dict[str, UniformQuantizer] = dict(weight_q or {})
        self.acts: dict[str, Quantizer] = dict(acts or {})
        self.quant_weights = bool(self.weight_q)
        self.quant_acts = bool(self.acts)
        self.calibrating = False
        self._keep: torch.Tensor | None = None  # the tokens searched on, while calibrating
        self._qweights: dict[str, torch.Tensor] = {n: q(params[n]) for n, q in self.weight_q.items()}
        self.gelu_choice: dict[str, dict[str, float]] = {}  # site -> MSE of each candidate (gelu="auto")

    @classmethod
    def from_timm(cls, model: nn.Module, settings: QuantSettings) -> QuantViT:
        """Float tensors of ``model`` (copied), no quantizer yet."""
        shape = vit_shape(model)
        params = {k: v.detach().clone().float() for k, v in model.state_dict().items()}
        for _ln, lin, _site in post_ln_sites(shape):  # the reparameterisation needs a bias
            params.setdefault(f"{lin}.bias", torch.zeros(params[f"{lin}.weight"].shape[0]))
        return cls(shape, params, settings)

    # --- quantizers -------------------------------------------------------------------------------------

    def quantize_weights(self, names: list[str] | None = None) -> None:
        """Search the weight quantizers of ``names`` (default: all) on the current float weights."""
        for name in names or weight_names(self.shape):
            self.weight_q[name] = search_weight(self.params[name], self.settings.w_bits)
            self._qweights[name] = self.weight_q[name](self.params[name])
        self.quant_weights = True

    @torch.no_grad()
    def calibrate(self, images: torch.Tensor, keep: torch.Tensor | None = None) -> None:
        """Search every activation quantizer not set yet, in one forward pass of ``images`` (normalised).

        ``keep``: a ``(batch, tokens)`` bool mask (:func:`token_mask`) of the tokens whose activations the
        ranges are searched on (default all): an SMI image's stopped patches are not what the teacher saw.
        The forward itself runs over every token."""
        if keep is not None and tuple(keep.shape) != (images.shape[0], self.shape.tokens):
            raise ValueError(f"keep: expected a mask of shape {(images.shape[0], self.shape.tokens)}, "
                             f"got {tuple(keep.shape)}")
        self.quant_acts, self.calibrating = True, True
        self._keep = None if keep is None else keep.to(device=images.device, dtype=torch.bool)
        try:
            self.forward(images)
        finally:
            self.calibrating, self._keep = False, None

    def _search(self, site: str, x: torch.Tensor, values: torch.Tensor | None = None) -> Quantizer:
        s = self.settings
        kind = site.rsplit(".", 1)[-1]
        keep = self._keep
        if keep is not None and kind == "softmax" and s.softmax == "log2":
            return search_log2(x, s.a_bits, values, rows=keep)
        if keep is not None and kind == "input":  # the kept patches' pixels
            b, c, g, p = x.shape[0], x.shape[1], self.shape.grid, self.shape.patch_size
            patches = x.reshape(b, c, g, p, g, p).permute(0, 2, 4, 1, 3, 5).reshape(b, g * g, -1)
            x = patches[keep[:, self.shape.prefix_tokens:]]
        elif keep is not None and kind != "head_in":  # token activations: the kept tokens' rows
            x = x[keep] if x.dim() == 3 else x.transpose(1, 2)[keep]
        if kind == "input":
            return search_uniform(x, s.input_bits)
        if kind in ("qkv_in", "fc1_in", "head_in"):
            return search_uniform(x, s.a_bits, per_channel=s.post_ln != "per_tensor")
        if kind == "softmax" and s.softmax == "log2":
            return search_log2(x, s.a_bits, values)
        if kind == "fc2_in" and s.gelu != "uniform":
            twin = search_twin(x, s.a_bits)
            if s.gelu == "twin":
                return twin
            uniform = search_uniform(x, s.a_bits)
            errors = {"twin": quant_mse(twin, x), "uniform": quant_mse(uniform, x)}
            self.gelu_choice[site] = errors
            return twin if errors["twin"] < errors["uniform"] else uniform
        return search_uniform(x, s.a_bits)

    @torch.no_grad()
    def reparameterize(self) -> list[str]:
        """RepQ-ViT's scale reparameterisation: fold each post-LayerNorm per-channel quantizer into the
        LayerNorm's affine and the next Linear, leaving a per-tensor quantizer with the mean scale and the
        rounded mean zero point (integer, so the quantized values are exactly the per-channel ones); the
        rescaled weights are quantized again. Returns the sites it changed."""
        changed = []
        for ln, lin, site in post_ln_sites(self.shape):
            q = self.acts[site]
            if not isinstance(q, UniformQuantizer) or q.axis is None:
                continue
            delta, zero = q.scale, q.zero
            target_delta, target_zero = delta.mean(), torch.round(zero.mean())
            r = delta / target_delta
            b = (-zero * delta) / r + target_zero * target_delta
            p = self.params
            p[f"{ln}.weight"] = p[f"{ln}.weight"] / r
            p[f"{ln}.bias"] = p[f"{ln}.bias"] / r - b
            p[f"{lin}.weight"] = p[f"{lin}.weight"] * r[None, :]
            p[f"{lin}.bias"] = p[f"{lin}.bias"] + p[f"{lin}.weight"] @ b
            self.acts[site] = UniformQuantizer(q.bits, target_delta, target_zero, None)
            changed.append(site)
        self.quantize_weights([f"{lin}.weight" for _ln, lin, _s in post_ln_sites(self.shape)])
        return changed

    def to_device(self, device: str | torch.device) -> QuantViT:
        """Move every tensor (params, quantizers) to ``device``."""
        def mv(q: Quantizer) -> Quantizer:
            return dataclasses.replace(q, **{k: v.to(device) for k, v in q.tensors().items()})
        self.params = {k: v.to(device) for k, v in self.params.items()}
        self.weight_q = {k: mv(q) for k, q in self.weight_q.items()}  # type: ignore[misc]
        self.acts = {k: mv(q) for k, q in self.acts.items()}
        self._qweights = {k: v.to(device) for k, v in self._qweights.items()}
        return self

    # --- forward ------------------------------------------------------------------------------------------

    def _w(self, name: str) -> torch.Tensor:
        return self._qweights[name] if self.quant_weights and name in self._qweights else self.params[name]

    def _act(self, site: str, x: torch.Tensor, values: torch.Tensor | None = None) -> torch.Tensor:
        """``x`` through the quantizer of ``site``, searched first when calibrating (``values``: what the
        softmax output multiplies, for its search)."""
        if not self.quant_acts:
            return x
        q = self.acts.get(site)
        if q is None:
            if not self.calibrating:
                raise RuntimeError(f"activation quantizer {site} is not calibrated")
            q = self.acts[site] = self._search(site, x, values)
        return q(x)

    def _linear(self, name: str, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self._w(f"{name}.weight"), self.params.get(f"{name}.bias"))

    def _ln(self, name: str, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, (self.shape.embed_dim,), self.params[f"{name}.weight"], self.params[f"{name}.bias"],
                            self.shape.norm_eps)

    def _block(self, i: int, x: torch.Tensor) -> torch.Tensor:
        s, pre = self.shape, f"blocks.{i}."
        batch, tokens, dim = x.shape
        heads = s.num_heads
        h = self._act(pre + "qkv_in", self._ln(pre + "norm1", x))
        qkv = self._linear(pre + "attn.qkv", h).reshape(batch, tokens, 3, heads, dim // heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        attn = (self._act(pre + "q", q) @ self._act(pre + "k", k).transpose(-2, -1)) * (dim // heads) ** -0.5
        v = self._act(pre + "v", v)
        attn = self._act(pre + "softmax", attn.softmax(dim=-1), v)
        o = (attn @ v).transpose(1, 2).reshape(batch, tokens, dim)
        o = self._linear(pre + "attn.proj", self._act(pre + "proj_in", o))
        x = x + (o * self.params[pre + "ls1.gamma"] if s.layer_scale else o)
        h = self._act(pre + "fc1_in", self._ln(pre + "norm2", x))
        h = F.gelu(self._linear(pre + "mlp.fc1", h), approximate=s.gelu_approximate)
        h = self._linear(pre + "mlp.fc2", self._act(pre + "fc2_in", h))
        return x + (h * self.params[pre + "ls2.gamma"] if s.layer_scale else h)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        s, p = self.shape, self.params
        x = F.conv2d(self._act("input", images), self._w("patch_embed.proj.weight"), p.get("patch_embed.proj.bias"),
                     stride=s.patch_size)
        x = x.flatten(2).transpose(1, 2)
        if s.class_token:
            cls = p["cls_token"].expand(x.shape[0], -1, -1)
            x = torch.cat([cls, x + p["pos_embed"]], 1) if s.no_embed_class else torch.cat([cls, x], 1) + p["pos_embed"]
        else:
            x = x + p["pos_embed"]
        for i in range(s.depth):
            x = self._block(i, x)
        x = self._ln("norm", x)
        x = x[:, 0] if s.global_pool == "token" else x[:, s.prefix_tokens:].mean(1)
        return self._linear("head", self._act("head_in", x))


@torch.no_grad()
def quantize_vit(model: nn.Module, images: torch.Tensor, settings: QuantSettings,
                 keep: torch.Tensor | None = None) -> QuantViT:
    """Post-training quantization of a timm ViT calibrated on ``images`` (a normalised batch): weights searched,
    activations calibrated sequentially, then (``post_ln="reparam"``) RepQ-ViT's reparameterisation and a
    second calibration pass of every activation quantizer downstream of the changed weights. ``keep``: the
    tokens to search the activation ranges on (:meth:`QuantViT.calibrate`; default all)."""
    qv = QuantViT.from_timm(model, settings)
    qv.to_device(images.device)
    qv.quantize_weights()
    qv.calibrate(images, keep)
    if settings.post_ln == "reparam":
        kept = set(qv.reparameterize())
        qv.acts = {site: q for site, q in qv.acts.items() if site in kept or site == "input"}
        qv.gelu_choice.clear()
        qv.calibrate(images, keep)
    return qv.eval()

