"""Typed configuration of one inversion run (validated on construction)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

SelectionKind = Literal["dense", "smi", "random", "rebirth"]
StoppedPixels = Literal["frozen", "prior"]
SaliencyKind = Literal["instant", "accumulated"]
CompileMode = Literal["off", "default", "reduce-overhead"]
COMPILE_MODES = ("off", "default", "reduce-overhead")


@dataclass(frozen=True)
class StopSchedule:
    """Progressive stopping: at iteration ``iterations[i]`` stop ``ratios[i]`` of the remaining patches.

    SMI's paper default is t = 50, 100, 200, 300 with r = 0.3 each.
    """

    iterations: tuple[int, ...] = (50, 100, 200, 300)
    ratios: tuple[float, ...] = (0.3, 0.3, 0.3, 0.3)

    def __post_init__(self) -> None:
        object.__setattr__(self, "iterations", tuple(int(t) for t in self.iterations))
        object.__setattr__(self, "ratios", tuple(float(r) for r in self.ratios))
        if len(self.iterations) != len(self.ratios):
            raise ValueError(
                f"schedule.ratios: expected {len(self.iterations)} ratios (one per stop iteration), "
                f"got {len(self.ratios)}"
            )
        for r in self.ratios:
            if not 0.0 <= r < 1.0:
                raise ValueError(f"schedule.ratios: every ratio must lie in [0, 1), got {r}")
        for t in self.iterations:
            if t < 1:
                raise ValueError(f"schedule.iterations: stop iterations must be >= 1, got {t}")
        if list(self.iterations) != sorted(set(self.iterations)):
            raise ValueError(
                f"schedule.iterations: stop iterations must be strictly increasing, got {list(self.iterations)}"
            )

    def check_within(self, total_iterations: int) -> None:
        """Raise if a stop iteration does not fall inside ``[1, total_iterations)``."""
        for t in self.iterations:
            if t >= total_iterations:
                raise ValueError(
                    f"schedule.iterations: stop iteration {t} is not below the run's {total_iterations} iterations"
                )

    def kept_counts(self, num_patches: int) -> list[int]:
        """Number of kept patches after each stop step (exact integer arithmetic, at least one kept)."""
        counts, kept = [], num_patches
        for r in self.ratios:
            kept = max(1, kept - int(r * kept))
            counts.append(kept)
        return counts


@dataclass(frozen=True)
class SelectionConfig:
    """Which patches keep evolving: ``dense`` (all), ``smi`` (lowest CLS saliency stops), ``random``, or
    ``rebirth`` (patch rebirth: at each stop the *highest* CLS saliency leaves, so the rest must carry the
    class on their own; the whole image as each stop leaves it is an image of its own, kept mask the patches
    that evolved until then, and the final image is the last: one run yields ``len(schedule.iterations) + 1``
    images per target).

    A stopped patch leaves the teacher's forward either way (that is the saving). ``stopped`` says what
    happens to its pixels afterwards: ``frozen`` pins them to their values at the stop (the paper's
    inversion stopping); ``prior`` lets the image priors (TV, l2, BN prior) keep smoothing them, a
    per-pixel cost with no teacher pass, so early-stopped patches do not stay initial noise.

    ``saliency`` says which CLS attention ranks the patches at a stop: ``instant`` takes the forward
    just before the stop (the paper); ``accumulated`` sums every forward's attention since the first
    iteration, so a stop taken while the image is still near noise rests on more than one view.

    ``rejoin``: the iteration from which every stopped patch is back in the teacher's forward until the
    end (a dense finish, after the last stop), so the whole image, not only its kept patches, is
    optimised towards the target before it is kept; ``None``: never (the paper). The images' kept masks
    are then all-kept (their final phase saw every patch).
    """

    kind: SelectionKind = "smi"
    schedule: StopSchedule = field(default_factory=StopSchedule)
    stopped: StoppedPixels = "frozen"
    saliency: SaliencyKind = "instant"
    rejoin: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("dense", "smi", "random", "rebirth"):
            raise ValueError(f"selection.kind: expected one of dense, smi, random, rebirth, got {self.kind!r}")
        if self.stopped not in ("frozen", "prior"):
            raise ValueError(f"selection.stopped: expected frozen or prior, got {self.stopped!r}")
        if self.saliency not in ("instant", "accumulated"):
            raise ValueError(f"selection.saliency: expected instant or accumulated, got {self.saliency!r}")
        if self.rejoin is not None and self.kind == "rebirth":
            raise ValueError("selection.rejoin: with rebirth the patches that leave never come back (use None)")
        if self.rejoin is not None:
            if isinstance(self.rejoin, bool) or not isinstance(self.rejoin, int):
                raise ValueError(f"selection.rejoin: expected an iteration (integer) or None, got {self.rejoin!r}")
            last_stop = max(self.schedule.iterations, default=0)
            if self.rejoin <= last_stop:
                raise ValueError(f"selection.rejoin: must come after the last stop iteration ({last_stop}), "
                                 f"got {self.rejoin}")


@dataclass(frozen=True)
class LossWeights:
    """Weights of the inversion objective's terms (SMI defaults: CE 1, TV-l2 1e-4).

    ``prior_gain``: once only a share of the patches evolves (after a stop), the image priors (TV, l2) are
    weighted ``share ** -prior_gain`` times, so they hold against the class pull that fewer patches carry
    (0: constant weights).
    """

    ce: float = 1.0
    tv_l1: float = 0.0
    tv_l2: float = 1e-4
    l2: float = 0.0
    bn_prior: float = 0.0
    patch_entropy: float = 0.0
    prior_gain: float = 0.0

    def __post_init__(self) -> None:
        for name in ("ce", "tv_l1", "tv_l2", "l2", "bn_prior", "patch_entropy", "prior_gain"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or value != value or value < 0:
                raise ValueError(f"loss.{name}: weight must be a non-negative number, got {value!r}")

    def evolving(self, share: float) -> LossWeights:
        """These weights while ``share`` (0-1] of the patches evolves: the priors scaled by ``prior_gain``."""
        if not self.prior_gain or share >= 1:
            return self
        gain = share ** -self.prior_gain
        return replace(self, tv_l1=self.tv_l1 * gain, tv_l2=self.tv_l2 * gain, l2=self.l2 * gain)


@dataclass(frozen=True)
class AugmentConfig:
    """The random view the teacher sees at each inversion step.

    Always (when ``enabled``): a roll of up to ``max_roll_fraction`` of the side in whole patches, plus a
    horizontal flip. Optionally, Plug-In Inversion style (Ghiasi et al. 2022), applied on top of it:

    - ``zoom=(lo, hi)``: a random resized crop whose side is a fraction in ``[lo, hi]`` (``0 < lo <= hi
      <= 1``) of the image side, anywhere inside the image, resized back to the full size (bilinear),
      with a random horizontal flip of its own when ``flip``. ``None``: no crop.
    - ``colour_shift=a``: the normalised view becomes ``x * (1 + s) + m`` with per-channel ``s, m ~
      U(-a, a)``. ``0``: none.

    ``per_sample`` draws the crop and the colour shift for every image (True) or once per step for the
    whole batch (False). ``enabled=False`` turns every augmentation off. The defaults (no zoom, no colour
    shift) reproduce the roll/flip-only engine exactly, random stream included.
    """

    enabled: bool = True
    max_roll_fraction: float = 0.125
    flip: bool = True
    zoom: tuple[float, float] | None = None
    colour_shift: float = 0.0
    per_sample: bool = True

    def __post_init__(self) -> None:
        if not 0.0 <= self.max_roll_fraction < 1.0:
            raise ValueError(f"augment.max_roll_fraction: must lie in [0, 1), got {self.max_roll_fraction}")
        if self.zoom is not None:
            try:
                zoom = tuple(float(z) for z in self.zoom)
            except (TypeError, ValueError):
                raise ValueError(f"augment.zoom: expected None or two numbers (lo, hi), got {self.zoom!r}") from None
            if len(zoom) != 2 or not 0.0 < zoom[0] <= zoom[1] <= 1.0:
                raise ValueError(f"augment.zoom: expected 0 < lo <= hi <= 1 (crop side fractions), got {self.zoom!r}")
            object.__setattr__(self, "zoom", zoom)
        if (
            isinstance(self.colour_shift, bool)
            or not isinstance(self.colour_shift, (int, float))
            or not 0.0 <= self.colour_shift < 1.0
        ):
            raise ValueError(f"augment.colour_shift: must be a number in [0, 1), got {self.colour_shift!r}")

    @property
    def warps(self) -> bool:
        """Whether a zoom or colour shift is drawn on top of the roll/flip."""
        return self.enabled and (self.zoom is not None or self.colour_shift > 0)


@dataclass(frozen=True)
class InversionConfig:
    """Everything that defines an inversion run apart from the teacher, targets and generator.

    ``compile`` runs each iteration's teacher forward and per-sample objective through ``torch.compile``
    (``"default"``: Inductor; ``"reduce-overhead"``: Inductor plus CUDA graphs on CUDA), one graph per
    (batch, kept-token count, saliency) shape, so at most ``2 * (len(stops) + 1)`` per batch size. Fused
    kernels round differently, so it is not the eager arithmetic bit for bit: the iterates agree within
    float tolerance (1e-4 after 16 iterations in the tests), but over a long run the optimisation grows
    that difference until a near-tie in the saliency at a stop can keep another patch, and that image
    then takes another (equally valid) path. So it is part of what defines a corpus's bytes, like the
    dtype, and a manifest hashes it. ``"off"`` is the eager engine.
    """

    iterations: int = 4000
    lr: float = 0.25
    betas: tuple[float, float] = (0.5, 0.99)
    selection: SelectionConfig = field(default_factory=SelectionConfig)
    loss: LossWeights = field(default_factory=LossWeights)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    keep_best: bool = True
    compile: CompileMode = "off"
    # coarse levels of the image parametrisation: the image is the pixel level plus each level ``s`` (an
    # image at 1/s of the side) upsampled bilinearly; Adam moves every level. () = pixels only.
    pyramid: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.compile not in COMPILE_MODES:
            raise ValueError(f"compile: expected one of {', '.join(COMPILE_MODES)}, got {self.compile!r}")
        object.__setattr__(self, "pyramid", tuple(self.pyramid))
        if any(isinstance(s, bool) or not isinstance(s, int) or s < 2 for s in self.pyramid) or len(
            set(self.pyramid)
        ) != len(self.pyramid):
            raise ValueError(f"pyramid: expected distinct integer scale factors >= 2, got {self.pyramid!r}")
        if self.pyramid and self.selection.stopped == "frozen" and self.selection.kind != "dense":
            raise ValueError("pyramid: coarse levels move stopped pixels too; use selection.stopped 'prior'")
        if not isinstance(self.iterations, int) or self.iterations < 1:
            raise ValueError(f"iterations: must be a positive integer, got {self.iterations!r}")
        if not self.lr > 0:
            raise ValueError(f"lr: must be positive, got {self.lr!r}")
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise ValueError(f"betas: expected two numbers in [0, 1), got {self.betas!r}")
        if self.selection.kind != "dense":
            self.selection.schedule.check_within(self.iterations)
            rejoin = self.selection.rejoin
            if rejoin is not None and rejoin >= self.iterations:
                raise ValueError(f"selection.rejoin: iteration {rejoin} is not below the run's {self.iterations} "
                                 "iterations")
