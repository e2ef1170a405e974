"""The paper's brain synthesis recipe (method.md section 3) in plain NumPy/SciPy, written for the
benchmark as the peer of LayerSeg's Rust engine. Same steps and ranges, on whole volumes as the
official code does them:

1. shape: star-shaped fBm (simplex, 4-7 octaves) around a rotated ellipsoid of nominal volume
   U(7000, 200000) mm^3 (the profile's other classes: 1-3 lesions of U(2000, 7000) or
   U(300, 2000) mm^3), aspect q ~ U(0.8, 1), centre by the paper's bounding-box rule;
2. texture: B-spline elastic deformation of the texture scan (7^3 control points, 2 locked
   layers, +-7.5 mm), trilinear resampling, Gaussian blur with per-axis sigma U(0, 2);
3. intensity: texture mean inside the mask = k * healthy mean, k ~ U(1, 3);
4. alpha blend with alpha ~ U(0.2, 0.8); mask clipped to the healthy foreground;
5. the acquisition randomisation of the brain-mri profile (``synthesis.acquisition``), on the
   image and the healthy layer alike: gamma, cosine bias field, thick slices with partial-volume
   averaging, Rician noise and partial coverage, each with the profile's probability and ranges
   (the mask follows thickness and coverage).

The fBm is evaluated on a cube-map of directions (as LayerSeg does, and as the paper evaluates it
only on its mesh vertices), so both sides do the same amount of noise work.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from scipy import ndimage

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]

_GRAD3 = np.array(
    [
        [1, 1, 0], [-1, 1, 0], [1, -1, 0], [-1, -1, 0],
        [1, 0, 1], [-1, 0, 1], [1, 0, -1], [-1, 0, -1],
        [0, 1, 1], [0, -1, 1], [0, 1, -1], [0, -1, -1],
    ],
    dtype=np.float64,
)  # fmt: skip
_FACE_CELLS = 32


def simplex3(p: F64, perm: npt.NDArray[np.int64]) -> F64:
    """Gustavson's 3D simplex noise at points ``p`` (N, 3), vectorised."""
    s = p.sum(axis=1) / 3.0
    ijk = np.floor(p + s[:, None])
    t = ijk.sum(axis=1) / 6.0
    x0 = p - (ijk - t[:, None])
    order = np.argsort(-x0, axis=1, kind="stable")
    o1 = np.zeros_like(x0)
    o2 = np.zeros_like(x0)
    rows = np.arange(len(p))
    o1[rows, order[:, 0]] = 1
    o2[rows, order[:, 0]] = 1
    o2[rows, order[:, 1]] = 1
    corners = [np.zeros_like(x0), o1, o2, np.ones_like(x0)]
    ii = ijk.astype(np.int64) & 255
    total = np.zeros(len(p))
    for c, off in enumerate(corners):
        xc = x0 - off + c / 6.0
        idx = ii + off.astype(np.int64)
        g = perm[idx[:, 0] + perm[idx[:, 1] + perm[idx[:, 2]]]] % 12
        tt = 0.6 - (xc * xc).sum(axis=1)
        dot = (_GRAD3[g] * xc).sum(axis=1)
        total += np.where(tt > 0, tt**4 * dot, 0.0)
    return 32.0 * total


def fbm(p: F64, octaves: int, perm: npt.NDArray[np.int64]) -> F64:
    out = np.zeros(len(p))
    amp, freq, norm = 1.0, 1.0, 0.0
    for _ in range(octaves):
        out += amp * simplex3(p * freq, perm)
        norm += amp
        amp *= 0.5
        freq *= 2.0
    return out / norm


def direction_table(octaves: int, offset: float, perm: npt.NDArray[np.int64]) -> F64:
    m = _FACE_CELLS + 1
    g = np.linspace(-1.0, 1.0, m)
    faces = []
    for axis in range(3):
        b, c = [a for a in range(3) if a != axis]
        for sign in (-1.0, 1.0):
            q = np.zeros((m, m, 3))
            q[..., axis] = sign
            q[..., b] = g[:, None]
            q[..., c] = g[None, :]
            u = q / np.linalg.norm(q, axis=-1, keepdims=True)
            faces.append(fbm(u.reshape(-1, 3) + offset, octaves, perm).reshape(m, m))
    return np.stack(faces)


def lookup(table: F64, q: F64) -> F64:
    a = np.abs(q)
    axis = np.argmax(a, axis=1)
    rows = np.arange(len(q))
    other = np.array([[1, 2], [0, 2], [0, 1]])[axis]
    face = axis * 2 + (q[rows, axis] >= 0)
    scale = _FACE_CELLS * 0.5 / a[rows, axis]
    s = np.clip(q[rows, other[:, 0]] * scale + _FACE_CELLS * 0.5, 0, _FACE_CELLS)
    t = np.clip(q[rows, other[:, 1]] * scale + _FACE_CELLS * 0.5, 0, _FACE_CELLS)
    i = np.minimum(s.astype(np.int64), _FACE_CELLS - 1)
    j = np.minimum(t.astype(np.int64), _FACE_CELLS - 1)
    fs, ft = s - i, t - j
    top = table[face, i, j] * (1 - ft) + table[face, i, j + 1] * ft
    bottom = table[face, i + 1, j] * (1 - ft) + table[face, i + 1, j + 1] * ft
    out: F64 = top * (1 - fs) + bottom * fs
    return out


def rotation(deg: F64) -> F64:
    a, b, c = np.radians(deg)
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    rz = np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0], [0, 0, 1]])
    out: F64 = rz @ ry @ rx
    return out


def bspline_basis(n_vox: int, n_ctrl: int = 7) -> F64:
    """(n_vox, n_ctrl) cubic B-spline weights, control points spanning the axis (SimpleITK)."""
    cells = n_ctrl - 3
    t = np.clip(np.arange(n_vox) / ((n_vox - 1) / cells), 0, cells)
    i = np.minimum(np.floor(t).astype(np.int64), cells - 1)
    u = t - i
    w = np.stack(
        [(1 - u) ** 3, 3 * u**3 - 6 * u**2 + 4, -3 * u**3 + 3 * u**2 + 3 * u + 1, u**3], axis=1
    )
    out = np.zeros((n_vox, n_ctrl))
    for q in range(4):
        out[np.arange(n_vox), i + q] = w[:, q] / 6.0
    return out


def _cosines(order: int, n: int) -> F64:
    """cos(pi l (i + 0.5) / n) for l in 0..=order (rows), i in 0..n (columns)."""
    return np.cos(np.pi * np.arange(order + 1)[:, None] * (np.arange(n) + 0.5)[None, :] / n)


def _bias_exponent(coef: F64, shape: tuple[int, ...]) -> F64:
    c0, c1, c2 = (_cosines(coef.shape[0] - 1, n) for n in shape)
    out: F64 = np.einsum("lmn,li,mj,nk->ijk", coef, c0, c1, c2, optimize=True)
    return out


def _thicken(x: F64, axis: int, t: float, phase: float) -> F64:
    """Slabs t voxels thick from -0.5 - phase * t, each the mean of x over it (edge values
    extended), linearly interpolated back at the voxel centres (nearest beyond the outer slabs)."""
    x = np.moveaxis(x, axis, 0)
    n = x.shape[0]
    prefix = np.concatenate([np.zeros((1, *x.shape[1:])), np.cumsum(x, axis=0)])

    def integral(u: npt.NDArray[np.floating]) -> F64:
        w = u + 0.5
        j = np.clip(np.floor(w).astype(np.int64), 0, n - 1)
        inside = prefix[j] + (w - j)[:, None, None] * x[j]
        below = w[:, None, None] * x[0][None]
        above = prefix[n][None] + (w - n)[:, None, None] * x[n - 1][None]
        out: F64 = np.where(
            (w <= 0)[:, None, None], below, np.where((w >= n)[:, None, None], above, inside)
        )
        return out

    start = -0.5 - phase * t
    count = int(np.ceil((n - 0.5 - start) / t))
    edges = start + t * np.arange(count + 1)
    slabs = np.diff(integral(edges), axis=0) / t
    u = (np.arange(n) - (start + 0.5 * t)) / t
    k = np.clip(np.floor(u).astype(np.int64), 0, count - 1)
    k1 = np.minimum(k + 1, count - 1)
    w = np.clip(u - k, 0, 1)[:, None, None]
    out = slabs[k] * (1 - w) + slabs[k1] * w
    return np.moveaxis(out, 0, axis)


def _cover(x: F64, axis: int, band: tuple[int, int]) -> F64:
    """``x`` with the slices along ``axis`` outside ``band`` (first, end) set to 0."""
    inside = np.zeros(x.shape[axis], bool)
    inside[band[0] : band[1]] = True
    shape = [1, 1, 1]
    shape[axis] = -1
    return np.where(inside.reshape(shape), x, 0.0)


def acquire(
    image: F32,
    healthy: F32,
    mask: npt.NDArray[np.bool_],
    rng: np.random.Generator,
    tumour_span: tuple[F64, F64],
) -> tuple[F32, F32, npt.NDArray[np.bool_]]:
    """The brain-mri profile's acquisition steps on image and healthy alike (zero voxels stay
    zero); ``tumour_span``: the tumours' lowest and highest reach (voxels) along each axis, which
    the covered band must contain."""
    axis = int(rng.integers(0, 3))
    thick = (rng.uniform(1.0, 7.0), rng.uniform()) if rng.uniform() < 0.5 else None
    gamma = rng.uniform(0.7, 1.5) if rng.uniform() < 0.3 else None
    bias = None
    if rng.uniform() < 0.5:
        strength = rng.uniform(0.05, 0.3)
        coef = rng.uniform(-1, 1, (4, 4, 4))
        coef[0, 0, 0] = 0.0
        f = _bias_exponent(coef, image.shape)
        bias = np.exp(f * (strength / np.abs(f).max()))
    mean = float(healthy[healthy != 0].mean())
    sigma = rng.uniform(0.0, 0.05) * mean if rng.uniform() < 0.5 else None
    coverage = None
    if rng.uniform() < 0.25:
        n = image.shape[axis]
        length = min(n, max(1, round(rng.uniform(0.5, 1.0) * n)))
        lo = int(np.clip(np.floor(tumour_span[0][axis]), 0, n))
        hi = int(np.clip(np.ceil(tumour_span[1][axis]) + 1, lo, n))
        length = max(length, hi - lo)
        first = int(rng.integers(max(0, hi - length), min(lo, n - length) + 1))
        coverage = (first, first + length)
    noise = (
        (rng.normal(0, 1, image.shape), rng.normal(0, 1, image.shape))
        if sigma is not None
        else None
    )

    def degrade(x: F32) -> F32:
        y = x.astype(np.float64)
        if gamma is not None:
            y = np.sign(y) * mean * np.abs(y / mean) ** gamma
        if bias is not None:
            y = y * bias
        if thick is not None:
            y = _thicken(y, axis, thick[0], thick[1])
        if noise is not None and sigma is not None:
            keep = y != 0
            noisy = np.sqrt((y + sigma * noise[0]) ** 2 + (sigma * noise[1]) ** 2)
            y = np.where(keep, noisy, 0.0)
        if coverage is not None:
            y = _cover(y, axis, coverage)
        return y.astype(np.float32)

    m = mask.astype(np.float64)
    if thick is not None:
        m = _thicken(m, axis, thick[0], thick[1])
    if coverage is not None:
        m = _cover(m, axis, coverage)
    return degrade(image), degrade(healthy), m >= 0.5


def synthesize(healthy: F32, texture: F32, rng: np.random.Generator) -> dict[str, F32]:
    shape = healthy.shape
    # --- sample: a size class (the brain-mri profile's: paper 0.6, small 0.2, tiny 0.2)
    lo_v, hi_v, count = [(7000, 200000, 1), (2000, 7000, 3), (300, 2000, 3)][
        int(rng.choice(3, p=[0.6, 0.2, 0.2]))
    ]
    nz = np.argwhere(healthy != 0)
    lo, hi = nz.min(axis=0), nz.max(axis=0)
    mask = np.zeros(shape, bool)
    spans = []
    for _ in range(int(rng.integers(1, count + 1))):
        volume = rng.uniform(lo_v, hi_v)
        r = (3 * volume / (4 * np.pi)) ** (1 / 3)
        q = rng.uniform(0.8, 1.0)
        radii = np.array([r * q, r / q, r])
        rot = rotation(rng.uniform(0, 180, 3))
        octaves = int(rng.integers(4, 8))
        offset = rng.uniform(0, 999)
        frac = np.array(
            [
                rng.choice([rng.uniform(0.24, 0.44), rng.uniform(0.56, 0.76)]),
                rng.uniform(0.3, 0.8),
                rng.uniform(0.3, 0.8),
            ]
        )
        centre = lo + frac * (hi - lo)
        perm = np.tile(rng.permutation(256), 3).astype(np.int64)
        # --- shape: implicit star-shaped test inside the bounding box
        table = direction_table(octaves, offset, perm)
        extent = 1.5 * np.sqrt(((rot * radii) ** 2).sum(axis=1))
        b0 = np.maximum(np.floor(centre - extent).astype(int), 0)
        b1 = np.minimum(np.ceil(centre + extent).astype(int) + 1, shape)
        grid = np.stack(
            np.meshgrid(*[np.arange(b0[a], b1[a]) for a in range(3)], indexing="ij"), axis=-1
        ).reshape(-1, 3)
        local = ((grid - centre) @ rot) / radii
        rho = np.linalg.norm(local, axis=1)
        inside = np.zeros(len(grid), bool)
        cand = rho <= 1.5
        inside[cand] = rho[cand] <= 1 + 0.5 * lookup(table, local[cand])
        mask[b0[0] : b1[0], b0[1] : b1[1], b0[2] : b1[2]] |= inside.reshape(b1 - b0)
        spans.append((centre - 1.5 * radii.max(), centre + 1.5 * radii.max()))
    mask &= healthy != 0
    # --- texture: elastic deformation of the whole scan, then blur (as torchio does)
    coarse = np.zeros((3, 7, 7, 7))
    coarse[:, 2:5, 2:5, 2:5] = rng.uniform(-7.5, 7.5, (3, 3, 3, 3))
    bx, by, bz = (bspline_basis(n) for n in texture.shape)
    field = np.einsum("xi,dijk->dxjk", bx, coarse)
    field = np.einsum("yj,dxjk->dxyk", by, field)
    field = np.einsum("zk,dxyk->dxyz", bz, field)
    coords = np.indices(texture.shape, dtype=np.float64) + field
    deformed = ndimage.map_coordinates(texture, coords, order=1, mode="constant", cval=0.0)
    blurred = ndimage.gaussian_filter(deformed, sigma=rng.uniform(0, 2, 3), mode="reflect")
    # --- intensity rule and blend
    tumour_tex = np.where(mask, blurred, 0.0)
    k = rng.uniform(1.0, 3.0)
    nonzero = tumour_tex[tumour_tex != 0]
    if nonzero.size:
        tumour_tex = tumour_tex / nonzero.mean() * k * healthy[healthy != 0].mean()
    alpha = rng.uniform(0.2, 0.8)
    m = mask.astype(np.float32)
    image = (alpha * m * tumour_tex + (1 - alpha * m) * healthy).astype(np.float32)
    span = (np.min([a for a, _ in spans], axis=0), np.max([b for _, b in spans], axis=0))
    image, healthy_out, mask = acquire(image, healthy, mask, rng, span)
    return {
        "image": image,
        "healthy": healthy_out,
        "tumour": np.where(mask, image, 0).astype(np.float32),
        "mask": mask.astype(np.uint8),
    }
