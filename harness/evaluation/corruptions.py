"""The 15 common corruptions of CIFAR-10-C / ImageNet-C (Hendrycks & Dietterich, ICLR 2019) as batched tensor ops.

`corrupt(images, family, severity, generator)` maps float images in [0,1] of shape [B,C,H,W] (any C, H, W;
CPU or GPU) to corrupted images of the same shape and dtype. Every random number comes from `generator`
(drawn on its device, so a CPU generator gives the same corruption on every device), so a seed fixes the
corruption. No per-image Python loop: each family is a few whole-batch ops.

Severity constants follow the reference `make_cifar_c.py` (hendrycks/robustness). Constants in pixels (blur
radii, shuffle distances, flake sizes, streak lengths) are the reference's for 32-pixel images scaled by
min(H, W) / 32, so CIFAR-sized images get the reference values and a 28x28 image 7/8 of them (tiny images such
as the 8x8 digits get correspondingly faint blurs; discrete sizes are rounded, see each family). Where the
reference calls an asset or a library (frost photographs, ImageMagick's motion blur, PIL's JPEG codec,
scikit-image, OpenCV, SciPy), the family's docstring says how it is reproduced or approximated.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import pydantic
import torch
import torch.nn.functional as F
from pydantic import Field

from harness.errors import UnknownNameError
from harness.registry import Registry
from harness.schema import Strict

Tensor = torch.Tensor
SEVERITIES: tuple[int, ...] = (1, 2, 3, 4, 5)


@dataclass(frozen=True)
class CorruptionSpec:
    """A registered corruption family; `apply(images, severity, generator)` works in float32 [B,C,H,W]."""

    name: str
    category: str  # noise, blur, weather or digital, as in the paper's figure 1
    summary: str
    apply: Callable[[Tensor, int, torch.Generator | None], Tensor]


CORRUPTIONS: Registry[CorruptionSpec] = Registry("corruption")


def corruption(name: str, category: str) -> Callable[[Callable], Callable]:
    """Decorator registering `fn(images, severity, generator)` as corruption family `name`."""

    def register(fn: Callable[[Tensor, int, torch.Generator | None], Tensor]) -> Callable:
        summary = (fn.__doc__ or name).strip().splitlines()[0]
        CORRUPTIONS.add(name, CorruptionSpec(name=name, category=category, summary=summary, apply=fn))
        return fn

    return register


def corrupt(
    images: Tensor, family: str, severity: int, generator: torch.Generator | None = None
) -> Tensor:
    """`images` (float [B,C,H,W] in [0,1]) under corruption `family` at `severity` 1..5, clipped to [0,1].

    Computed in float32 (float64 stays float64) and returned in the input's dtype and device. Raises
    `UnknownNameError` (listing the families) for an unknown family and `ValueError` for bad inputs.
    """
    spec = CORRUPTIONS.get(family)
    if not isinstance(images, Tensor) or not images.is_floating_point() or images.ndim != 4:
        got = f"{images.dtype} {tuple(images.shape)}" if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"corrupt() needs float images [B,C,H,W] in [0,1], got {got}; uint8 images: x.float() / 255")
    if isinstance(severity, bool) or severity not in SEVERITIES:
        raise ValueError(f"severity must be one of {SEVERITIES}, got {severity!r}")
    work = images if images.dtype == torch.float64 else images.float()
    return spec.apply(work, int(severity), generator).clamp(0.0, 1.0).to(images.dtype)


# ---------------------------------------------------------------- random numbers and geometry helpers


def _rand(shape: tuple[int, ...], generator: torch.Generator | None, like: Tensor) -> Tensor:
    """Uniform [0,1) drawn on the generator's device, returned on `like`'s device and dtype."""
    device = generator.device if generator is not None else like.device
    return torch.rand(shape, generator=generator, device=device).to(like.device, like.dtype)


def _randn(shape: tuple[int, ...], generator: torch.Generator | None, like: Tensor) -> Tensor:
    device = generator.device if generator is not None else like.device
    return torch.randn(shape, generator=generator, device=device).to(like.device, like.dtype)


def _randint(low: int, high: int, shape: tuple[int, ...], generator: torch.Generator | None, like: Tensor) -> Tensor:
    """Integers in [low, high) on `like`'s device."""
    device = generator.device if generator is not None else like.device
    return torch.randint(low, high, shape, generator=generator, device=device).to(like.device)


def _pixel_scale(images: Tensor) -> float:
    """Reference pixel constants are for 32x32 CIFAR images; scale them with the image size."""
    return min(images.shape[-2:]) / 32


def _grey(images: Tensor) -> Tensor:
    """Luma [B,1,H,W] (ITU-R BT.601, as OpenCV's RGB2GRAY) of RGB images; the channel mean otherwise."""
    if images.shape[1] == 3:
        weights = images.new_tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
        return (images * weights).sum(dim=1, keepdim=True)
    return images.mean(dim=1, keepdim=True)


def _depthwise(images: Tensor, kernel: Tensor) -> Tensor:
    """Convolve every channel with the same 2-D `kernel` (odd sides), replicating edge pixels."""
    batch, channels, height, width = images.shape
    pad_y, pad_x = kernel.shape[0] // 2, kernel.shape[1] // 2
    flat = F.pad(images.reshape(batch * channels, 1, height, width), (pad_x, pad_x, pad_y, pad_y), mode="replicate")
    return F.conv2d(flat, kernel.to(images)[None, None]).view(batch, channels, height, width)


def gaussian_blur(images: Tensor, sigma: float, truncate: float = 4.0) -> Tensor:
    """Separable Gaussian blur with `sigma` in pixels, cut at `truncate` sigmas (scikit-image's default)."""
    if sigma <= 0:
        return images
    radius = max(1, math.ceil(truncate * sigma))
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64)
    taps = torch.exp(-(offsets**2) / (2 * sigma**2))
    taps = (taps / taps.sum()).to(images)
    return _depthwise(_depthwise(images, taps[None, :]), taps[:, None])


def _gather_shifted(images: Tensor, dy: Tensor, dx: Tensor) -> Tensor:
    """out[b,c,y,x] = images[b,c,y+dy,x+dx] with integer offsets broadcastable to [B,H,W], edges clamped."""
    batch, channels, height, width = images.shape
    rows = torch.arange(height, device=images.device).view(1, height, 1)
    cols = torch.arange(width, device=images.device).view(1, 1, width)
    source = (rows + dy).clamp(0, height - 1) * width + (cols + dx).clamp(0, width - 1)
    index = source.expand(batch, height, width).reshape(batch, 1, height * width).expand(-1, channels, -1)
    return images.reshape(batch, channels, height * width).gather(2, index).view_as(images)


def motion_blur_line(images: Tensor, radius: float, sigma: float, angles_degrees: Tensor) -> Tensor:
    """ImageMagick's MotionBlurImage: a one-sided line of 2*ceil(radius)+1 taps with half-Gaussian weights
    (std `sigma` pixels), at a per-image angle, with offsets rounded to whole pixels and edge pixels repeated."""
    taps = 2 * math.ceil(radius) + 1
    steps = torch.arange(taps, dtype=torch.float64)
    weights = torch.exp(-(steps**2) / (2 * sigma**2))
    weights = (weights / weights.sum()).tolist()
    theta = torch.deg2rad(angles_degrees.double().cpu())
    dx = torch.ceil(steps[None, :] * torch.cos(theta)[:, None] - 0.5).long().to(images.device)  # [B, taps]
    dy = torch.ceil(steps[None, :] * torch.sin(theta)[:, None] - 0.5).long().to(images.device)
    out = torch.zeros_like(images)
    for tap, weight in enumerate(weights):  # a loop over the kernel's taps, each a whole-batch gather
        out.add_(_gather_shifted(images, dy[:, tap, None, None], dx[:, tap, None, None]), alpha=weight)
    return out


def _zoom_centre(images: Tensor, zoom: float) -> Tensor:
    """The central 1/zoom of each image resized back to full size (bilinear): the reference's `clipped_zoom`,
    as one affine resampling so fractional crops are exact."""
    theta = images.new_tensor([[1 / zoom, 0.0, 0.0], [0.0, 1 / zoom, 0.0]]).expand(images.shape[0], 2, 3)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def plasma_fractal(
    batch: int, height: int, width: int, decay: float, generator: torch.Generator | None, like: Tensor
) -> Tensor:
    """[B,1,H,W] diamond-square height maps in [0,1], the reference's `plasma_fractal` batched: the random
    displacement of level k is +-(100 / decay**k)**2, on a periodic power-of-two map cropped to H x W."""
    size = 2 ** math.ceil(math.log2(max(height, width, 2)))
    device = generator.device if generator is not None else like.device
    heights = torch.zeros(batch, size, size, dtype=torch.float64, device=device)
    step, wibble = size, 100.0

    def wibbled_mean(total: Tensor) -> Tensor:
        noise = torch.rand(total.shape, generator=generator, device=device, dtype=torch.float64)
        return total / 4 + wibble * wibble * (2 * noise - 1)

    while step >= 2:
        half = step // 2
        corners = heights[:, 0::step, 0::step]
        square = corners + corners.roll(-1, dims=1)
        heights[:, half::step, half::step] = wibbled_mean(square + square.roll(-1, dims=2))
        centres, corners = heights[:, half::step, half::step], heights[:, 0::step, 0::step]
        row_sums = centres + centres.roll(1, dims=1) + corners + corners.roll(-1, dims=2)
        heights[:, 0::step, half::step] = wibbled_mean(row_sums)
        column_sums = centres + centres.roll(1, dims=2) + corners + corners.roll(-1, dims=1)
        heights[:, half::step, 0::step] = wibbled_mean(column_sums)
        step, wibble = half, wibble / decay
    heights -= heights.amin(dim=(1, 2), keepdim=True)
    heights /= heights.amax(dim=(1, 2), keepdim=True)
    return heights[:, None, :height, :width].to(like.device, like.dtype)


# ---------------------------------------------------------------- noise


@corruption("gaussian_noise", "noise")
def _gaussian_noise(images: Tensor, severity: int, generator: torch.Generator | None) -> Tensor:
    """Additive Gaussian noise of std 0.04-0.10 (the reference's table)."""
    std = [0.04, 0.06, 0.08, 0.09, 0.10][severity - 1]
    return images + std * _randn(tuple(images.shape), generator, images)


@corruption("shot_noise", "noise")
def _shot_noise(images: Tensor, severity: int, generator: torch.Generator | None) -> Tensor:
    """Poisson (photon) noise: Poisson(x * rate) / rate with rate 500 down to 50."""
    rate = [500, 250, 100, 75, 50][severity - 1]
    device = generator.device if generator is not None else images.device
    counts = torch.poisson((images * rate).to(device), generator=generator)
    return counts.to(images.device) / rate


@corruption("impulse_noise", "noise")
def _impulse_noise(images: Tensor, severity: int, generator: torch.Generator | None) -> Tensor:
    """Salt-and-pepper noise on 1-7% of the values, half 0 and half 1, each channel independently
    (scikit-image's `random_noise(mode='s&p')`)."""
    amount = [0.01, 0.02, 0.03, 0.05, 0.07][severity - 1]
    draw = _rand(tuple(images.shape), generator, images)
    return torch.where(draw < amount / 2, 0.0, torch.where(draw < amount, 1.0, images))


# ---------------------------------------------------------------- blur


def _disk_kernel(radius: float, alias_sigma: float) -> Tensor:
    """The reference's `disk`: a normalised aliased disk, smoothed by a 3x3 Gaussian of `alias_sigma`."""
    radius = max(0.5, round(2 * radius) / 2)  # half pixels: a scaled radius keeps the reference's disk shapes
    reach = math.ceil(radius) + 1  # a zero margin, so the 3x3 smoothing never falls off the edge
    offsets = torch.arange(-reach, reach + 1, dtype=torch.float64)
    disk = (offsets[:, None] ** 2 + offsets[None, :] ** 2 <= radius**2).double()
    disk /= disk.sum()
    taps = torch.exp(-torch.tensor([1.0, 0.0, 1.0], dtype=torch.float64) / (2 * alias_sigma**2))
    smoothing = torch.outer(taps, taps) / taps.sum() ** 2
    return F.conv2d(disk[None, None], smoothing[None, None], padding=1)[0, 0]


@corruption("defocus_blur", "blur")
def _defocus_blur(images: Tensor, severity: int, generator: torch.Generator | None) -> Tensor:
    """Convolution with an anti-aliased disk (radius 0.3-1.5 px at 32 px), as the reference's OpenCV filter;
    scaled radii are rounded to half pixels so small images keep the reference's disk shapes, and edges are
    replicated (OpenCV reflects)."""
    radius, alias_sigma = [(0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)][severity - 1]
    scale = _pixel_scale(images)
    return _depthwise(images, _disk_kernel(radius * scale, alias_sigma * scale))


@corruption("glass_blur", "blur")
def _glass_blur(images: Tensor, severity: int, generator: torch.Generator | None) -> Tensor:
    """Gaussian blur, local pixel shuffling, Gaussian blur again. Approximation: the reference swaps pixels
    one at a time in a Python loop; here every pixel is gathered at once from a random neighbour within the
    shuffle distance (same offsets for all channels), which mixes pixels locally the same way but vectorised
    (a pixel may be copied twice or dropped, where the reference permutes)."""
    sigma, max_delta, iterations = [(0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2)][
        severity - 1
    ]
    scale = _pixel_scale(images)
    delta = max(1, round(max_delta * scale))
    batch, _, height, width = images.shape
    shuffled = gaussian_blur(images, sigma * scale)
    for _ in range(iterations):
        dy = _randint(-delta, delta + 1, (batch, height, width), generator, images)
        dx = _randint(-delta, delta + 1, (batch, height, width), generator, images)
        shuffled = _gather_shifted(shuffled, dy, dx)
    return gaussian_blur(shuffled, sigma * scale)


@corruption("motion_blur", "blur")
def _motion_blur(images: Tensor, severity: int, generator: torch.Generator | None) -> Tensor:
    """Camera shake: ImageMagick's motion blur (radius 6-9, sigma 1-2.5 px at 32 px) at a random angle in
    [-45, 45] degrees, reimplemented from its algorithm (a one-sided line kernel) rather than called."""
    radius, sigma = [(6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5)][severity - 1]
    scale = _pixel_scale(images)
    angles = _rand((images.shape[0],), generator, images) * 90 - 45
    return motion_blur_line(images, radius * scale, sigma * scale, angles)


@corruption("zoom_blur", "blur")
def _zoom_blur(images: Tensor, severity: int, generator: torch.Generator | None) -> Tensor:
    """The mean of the image and its centre zooms 1.00, 1.01, ... up to 1.05-1.25 (the reference's table)."""
    zooms = [6, 11, 16, 21, 26][severity - 1]  # np.arange(1, 1.06, 0.01) has 6 values, and so on
    total = 2 * images  # the image itself plus its zoom by 1.00
    for step in range(1, zooms):  # a loop over zoom factors, each a whole-batch resampling
        total += _zoom_centre(images, 1 + 0.01 * step)
    return total / (zooms + 1)


# ---------------------------------------------------------------- weather


@corruption("snow", "weather")
def _snow(images: Tensor, severity: int, generator: torch.Generator | None) -> Tensor:
    """Seeded flakes (thresholded, zoomed Gaussian noise) streaked by a motion blur at -135..-45 degrees, added
    twice (once rotated by 180 degrees) to a brightened image, as the reference (whose blur is ImageMagick's)."""
    mean, std, zoom, threshold, radius, sigma, keep = [
        (0.1, 0.2, 1, 0.6, 8, 3, 0.95),
        (0.1, 0.2, 1, 0.5, 10, 4, 0.9),
        (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9),
        (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85),
        (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8),
    ][severity - 1]
    batch, _, height, width = images.shape
    flakes = mean + std * _randn((batch, 1, height, width), generator, images)
    flakes = _zoom_centre(flakes, zoom)
    flakes = torch.where(flakes < threshold, 0.0, flakes).clamp_(0.0, 1.0)
    angles = _rand((batch,), generator, images) * 90 - 135
    scale = _pixel_scale(images)
    flakes = motion_blur_line(flakes, radius * scale, sigma * scale, angles)
    whitened = keep * images + (1 - keep) * torch.maximum(images, _grey(images) * 1.5 + 0.5)
    return whitened + flakes + flakes.flip(-2, -1)


def ice_texture(images: Tensor, generator: torch.Generator | None) -> Tensor:
    """A seeded procedural frost layer in [0,1], [B,C,H,W]: a rough plasma-fractal haze plus ice needles
    (sparse seeds drawn out into fading lines along three random directions per image), tinted pale blue for
    RGB; mean about 0.44. It stands in for crops of the reference's six frost photographs (not shipped here)."""
    batch, channels, height, width = images.shape
    haze = plasma_fractal(batch, height, width, 1.6, generator, images)
    reach = max(2.0, 6 * _pixel_scale(images))
    needles = torch.zeros_like(haze)
    for _ in range(3):  # three needle directions per image
        seeds = (_rand(tuple(haze.shape), generator, images) < 0.04) * _rand(tuple(haze.shape), generator, images)
        angles = _rand((batch,), generator, images) * 360
        needles = torch.maximum(needles, motion_blur_line(seeds, reach, reach / 1.5, angles) * reach)
    texture = (0.55 * haze**1.5 + needles.clamp(0.0, 1.0)).clamp_(0.0, 1.0)
    if channels == 3:
        return texture * images.new_tensor([0.86, 0.94, 1.0]).view(1, 3, 1, 1)
    return texture.expand(-1, channels, -1, -1)


@corruption("frost", "weather")
def _frost(images: Tensor, severity: int, generator: torch.Generator | None) -> Tensor:
    """clip(a * x + b * frost) with the reference's (a, b) table. Approximation: the frost layer is a seeded
    procedural ice texture (`ice_texture`), not a crop of the reference's frost photographs."""
    image_weight, frost_weight = [(1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45)][severity - 1]
    return image_weight * images + frost_weight * ice_texture(images, generator)


@corruption("fog", "weather")
def _fog(images: Tensor, severity: int, generator: torch.Generator | None) -> Tensor:
    """A plasma-fractal fog layer added and the image renormalised by its maximum, as the reference."""
    strength, decay = [(0.2, 3), (0.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75)][severity - 1]
    batch, _, height, width = images.shape
    peak = images.amax(dim=(1, 2, 3), keepdim=True)
    fogged = images + strength * plasma_fractal(batch, height, width, decay, generator, images)
    return fogged * peak / (peak + strength)


@corruption("brightness", "weather")
def _brightness(images: Tensor, severity: int, generator: torch.Generator | None) -> Tensor:
    """HSV value + 0.05..0.3, clipped: exactly the reference's rgb2hsv / hsv2rgb round trip, written as a
    rescaling of every channel by V'/V (hue and saturation kept); for C != 3 the value is the channel max."""
    shift = [0.05, 0.1, 0.15, 0.2, 0.3][severity - 1]
    value = images.amax(dim=1, keepdim=True)
    brighter = (value + shift).clamp(max=1.0)
    return torch.where(value > 0, images * (brighter / value.clamp(min=1e-12)), brighter)


# ---------------------------------------------------------------- digital


@corruption("contrast", "digital")
def _contrast(images: Tensor, severity: int, generator: torch.Generator | None) -> Tensor:
    """Each channel pulled towards its mean: (x - mean) * 0.75..0.15 + mean."""
    factor = [0.75, 0.5, 0.4, 0.3, 0.15][severity - 1]
    means = images.mean(dim=(2, 3), keepdim=True)
    return (images - means) * factor + means


def _affine_inverse(source_points: Tensor, target_points: Tensor) -> Tensor:
    """[B,2,3] affine maps taking each image's three target points to its source points."""
    homogeneous = torch.cat([target_points, torch.ones_like(target_points[..., :1])], dim=-1)  # [B,3,3]
    return torch.linalg.solve(homogeneous, source_points).transpose(1, 2)


@corruption("elastic_transform", "digital")
def _elastic_transform(images: Tensor, severity: int, generator: torch.Generator | None) -> Tensor:
    """A random affine warp (three points moved by up to 3-8% of the size) then a smooth random displacement
    field, as the reference; both are folded into one bilinear resampling with reflected borders (the
    reference resamples twice, with OpenCV then SciPy)."""
    amplitude, smoothness, corner_shift = [
        (0, 0, 0.08), (0.05, 0.2, 0.07), (0.08, 0.06, 0.06), (0.1, 0.04, 0.05), (0.1, 0.03, 0.03),
    ][severity - 1]  # fmt: skip
    batch, _, height, width = images.shape
    size = min(height, width)
    amplitude, smoothness, corner_shift = amplitude * size, smoothness * size, corner_shift * size
    centre, half_side = torch.tensor([width // 2, height // 2], dtype=torch.float64), size // 3
    anchors = torch.stack([centre + half_side, centre + torch.tensor([half_side, -half_side]), centre - half_side])
    moved = anchors + corner_shift * (2 * _rand((batch, 3, 2), generator, images).double().cpu() - 1)
    inverse = _affine_inverse(anchors.expand(batch, 3, 2), moved).to(images)  # output pixel -> input pixel
    field = 2 * _rand((batch, 2, height, width), generator, images) - 1
    field = gaussian_blur(field, smoothness, truncate=3.0) * amplitude if smoothness > 0 else 0 * field
    ys, xs = torch.meshgrid(
        torch.arange(height, device=images.device, dtype=images.dtype),
        torch.arange(width, device=images.device, dtype=images.dtype),
        indexing="ij",
    )
    points = torch.stack([xs + field[:, 0], ys + field[:, 1], torch.ones_like(field[:, 0])], dim=-1)  # [B,H,W,3]
    source = torch.einsum("bhwk,bjk->bhwj", points, inverse)  # input (x, y) in pixels
    extent = images.new_tensor([max(width - 1, 1), max(height - 1, 1)])
    grid = 2 * source / extent - 1
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="reflection", align_corners=True)


@corruption("pixelate", "digital")
def _pixelate(images: Tensor, severity: int, generator: torch.Generator | None) -> Tensor:
    """Box-downsampled to 95-65% of the size and blown back up, as PIL's BOX resize twice (area averaging
    down, nearest up; PIL weighs partial pixels slightly differently)."""
    factor = [0.95, 0.9, 0.85, 0.75, 0.65][severity - 1]
    height, width = images.shape[-2:]
    small = F.interpolate(images, size=(max(1, int(height * factor)), max(1, int(width * factor))), mode="area")
    return F.interpolate(small, size=(height, width), mode="nearest")


# ---------------------------------------------------------------- JPEG

_LUMA_TABLE = (
    (16, 11, 10, 16, 24, 40, 51, 61), (12, 12, 14, 19, 26, 58, 60, 55),
    (14, 13, 16, 24, 40, 57, 69, 56), (14, 17, 22, 29, 51, 87, 80, 62),
    (18, 22, 37, 56, 68, 109, 103, 77), (24, 35, 55, 64, 81, 104, 113, 92),
    (49, 64, 78, 87, 103, 121, 120, 101), (72, 92, 95, 98, 112, 100, 103, 99),
)  # fmt: skip  # JPEG standard (ITU T.81) Annex K, table K.1
_CHROMA_TABLE = (
    (17, 18, 24, 47, 99, 99, 99, 99), (18, 21, 26, 66, 99, 99, 99, 99), (24, 26, 56, 99, 99, 99, 99, 99),
    (47, 66, 99, 99, 99, 99, 99, 99), *[(99,) * 8] * 4,
)  # fmt: skip  # table K.2
_RGB_TO_YCBCR = ((0.299, 0.587, 0.114), (-0.168736, -0.331264, 0.5), (0.5, -0.418688, -0.081312))
_YCBCR_TO_RGB = ((1.0, 0.0, 1.402), (1.0, -0.344136, -0.714136), (1.0, 1.772, 0.0))


def quantisation_table(base: tuple[tuple[int, ...], ...], quality: int) -> Tensor:
    """libjpeg's quality scaling of a base table: 5000/q percent below 50, 200-2q percent above, in [1,255]."""
    percent = 5000 / quality if quality < 50 else 200 - 2 * quality
    return ((torch.tensor(base, dtype=torch.float64) * percent + 50) // 100).clamp(1, 255)


def _dct_matrix() -> Tensor:
    """The orthonormal 8-point DCT-II, which is JPEG's 1/4 C(u) C(v) normalised transform in 2-D."""
    k, n = torch.meshgrid(torch.arange(8.0), torch.arange(8.0), indexing="ij")
    basis = torch.cos(math.pi * (2 * n + 1) * k / 16) * math.sqrt(2 / 8)
    basis[0] /= math.sqrt(2)
    return basis.double()


def _jpeg_plane(plane: Tensor, table: Tensor) -> Tensor:
    """Code and decode one [B,1,H,W] plane in 0..255: 8x8 block DCT, rounding to multiples of the table."""
    batch, _, height, width = plane.shape
    padded = F.pad(plane, (0, -width % 8, 0, -height % 8), mode="replicate")  # libjpeg repeats the edge
    rows, cols = padded.shape[-2] // 8, padded.shape[-1] // 8
    blocks = (padded - 128).reshape(batch, rows, 8, cols, 8).transpose(2, 3)
    dct, table = _dct_matrix().to(plane), table.to(plane)
    coefficients = torch.round(dct @ blocks @ dct.T / table) * table
    decoded = (dct.T @ coefficients @ dct + 128).transpose(2, 3).reshape(batch, 1, rows * 8, cols * 8)
    return decoded[..., :height, :width].round().clamp(0, 255)


def jpeg_roundtrip(images: Tensor, quality: int) -> Tensor:
    """A tensor JPEG codec (baseline, as PIL's defaults): RGB -> YCbCr, 4:2:0 chroma subsampling (2x2 mean
    down, bilinear up as libjpeg's fancy upsampling), 8x8 block DCT quantised with the standard tables at
    `quality`, 8-bit rounding. Images with C != 3 are coded channel by channel as greyscale."""
    pixels = (images * 255).round()
    luma_table, chroma_table = quantisation_table(_LUMA_TABLE, quality), quantisation_table(_CHROMA_TABLE, quality)
    if images.shape[1] != 3:
        planes = [_jpeg_plane(pixels[:, c : c + 1], luma_table) for c in range(images.shape[1])]
        return torch.cat(planes, dim=1) / 255
    height, width = images.shape[-2:]
    ycbcr = torch.einsum("ij,bjhw->bihw", pixels.new_tensor(_RGB_TO_YCBCR), pixels)
    ycbcr[:, 1:] += 128
    luma = _jpeg_plane(ycbcr[:, :1], luma_table)
    chroma = F.avg_pool2d(F.pad(ycbcr[:, 1:], (0, width % 2, 0, height % 2), mode="replicate"), 2)
    chroma = torch.cat([_jpeg_plane(chroma[:, c : c + 1], chroma_table) for c in range(2)], dim=1)
    chroma = F.interpolate(chroma, scale_factor=2, mode="bilinear", align_corners=False)[..., :height, :width]
    decoded = torch.cat([luma, chroma - 128], dim=1)
    rgb = torch.einsum("ij,bjhw->bihw", decoded.new_tensor(_YCBCR_TO_RGB), decoded)
    return rgb.round().clamp(0, 255) / 255


@corruption("jpeg_compression", "digital")
def _jpeg_compression(images: Tensor, severity: int, generator: torch.Generator | None) -> Tensor:
    """JPEG at quality 80, 65, 58, 50, 40. Approximation of PIL's libjpeg: `jpeg_roundtrip`, the same
    transform and tables in tensors (libjpeg's integer DCT and rounding differ by about one grey level)."""
    return jpeg_roundtrip(images, [80, 65, 58, 50, 40][severity - 1])


CORRUPTION_FAMILIES: tuple[str, ...] = (
    "gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur", "zoom_blur",
    "snow", "frost", "fog", "brightness", "contrast", "elastic_transform", "pixelate", "jpeg_compression",
)  # fmt: skip  # the paper's order (noise, blur, weather, digital); every one is registered above


def check_families(names: tuple[str, ...]) -> tuple[str, ...]:
    """Validate a selection of families (settings, suites): known names, no repeats; raises ValueError."""
    for name in names:
        if name not in CORRUPTIONS:
            raise ValueError(str(UnknownNameError("corruption", name, CORRUPTIONS.names())))
    if len(set(names)) != len(names):
        raise ValueError(f"corruption families must be unique, got {list(names)}")
    return names


def check_severities(severities: tuple[int, ...]) -> tuple[int, ...]:
    """Validate a selection of severities: each in 1..5, no repeats; raises ValueError."""
    if any(severity not in SEVERITIES for severity in severities) or len(set(severities)) != len(severities):
        raise ValueError(f"corruption severities must be distinct values of {SEVERITIES}, got {list(severities)}")
    return severities


class CorruptionSettings(Strict):
    """The corruption family's part of `EvaluationSettings`: `gaussian_noise` and `corruptions`."""


    noise_std: float = Field(
        0.1,
        ge=0.0,
        description="Std of the Gaussian noise corruption in [0,1] pixel units (result clipped to [0,1]).",
    )
    corruption_subset: int = Field(
        1000,
        ge=1,
        description="Test examples of the `corruptions` metric: the first n of the same seeded, class-balanced "
        "order as robust_subset, each corrupted by every selected family at every selected severity.",
    )
    corruption_severities: tuple[int, ...] = Field(
        (1, 2, 3, 4, 5),
        min_length=1,
        description="Severities (1..5) of the `corruptions` metric; columns of the others are NaN.",
    )
    corruptions: tuple[str, ...] | None = Field(
        None,
        min_length=1,
        description="Corruption families of the `corruptions` metric; None means all 15 of CIFAR-10-C "
        "(Hendrycks & Dietterich 2019); columns of the others are NaN.",
    )

    @pydantic.field_validator("corruption_severities")
    @classmethod
    def _valid_corruption_severities(cls, severities: tuple[int, ...]) -> tuple[int, ...]:
        return check_severities(severities)

    @pydantic.field_validator("corruptions")
    @classmethod
    def _known_corruption_families(cls, names: tuple[str, ...] | None) -> tuple[str, ...] | None:
        return None if names is None else check_families(names)
