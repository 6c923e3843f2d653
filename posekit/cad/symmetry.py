"""Rotational symmetries of a mesh from its geometry alone, in BOP's models_info form.

A rotation R about an axis through the surface centroid c is a symmetry when it maps the surface onto
itself: T = [R | c - R c]. Any symmetry axis is an eigenvector of the surface's inertia tensor about
the centroid, so the candidate axes are the principal axes (plus the model-frame axes, which matter
when eigenvalues coincide, and for each accepted axis a sweep of the perpendicular plane for 180 deg
flips). A candidate is scored by the 95th percentile of the nearest-neighbour distances between the
rotated and the original surface samples (both directions), divided by the diameter. Near-passing
candidates are refined by symmetric trimmed ICP (the scanned LINEMOD models are only approximately
symmetric, and BOP's models_info transforms are refined ones), projected back onto an exact rotation
by the candidate angle, and accepted below ``threshold``. An axis symmetric under a set of irrational-ish angles
is continuous (a surface of revolution) and reported as {axis, offset}, replacing discrete ones about
that axis.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.spatial import cKDTree
from scipy.spatial.transform import Rotation

from posekit.cad.properties import sample_surface

#: Accept a candidate rotation when its score (95th percentile NN distance / diameter) is below this.
#: Calibrated on the LM-O models: eggbox and glue score ~0.019 after refinement, the best rotation
#: of the six asymmetric ones ~0.044 (the can's 180 deg about its body axis); 0.03 sits between.
DEFAULT_THRESHOLD = 0.03
SCORE_QUANTILE = 0.95
#: Angles (deg) that must all pass for an axis to count as continuous: none is 360/n for small n.
CONTINUOUS_TEST_ANGLES = (37.0, 71.0, 113.0, 151.0, 197.0, 241.0, 293.0)
#: Largest discrete order tried about an axis.
MAX_ORDER = 12
#: Candidates whose coarse score is below COARSE_FACTOR * threshold are refined by ICP and re-scored.
COARSE_FACTOR = 2.0
#: Surface samples used for coarse scores (the full query set, 2000, scores refined candidates).
COARSE_POINTS = 500


@dataclass
class CandidateScore:
    """One tested rotation: axis (unit, model frame), angle (deg) and its score (see _SurfaceMatcher.score)."""

    axis: np.ndarray
    angle_deg: float
    score: float
    accepted: bool


@dataclass
class SymmetryResult:
    """Detected symmetries (BOP form) plus every scored candidate, for reports and calibration."""

    discrete: list[np.ndarray] = field(default_factory=list)
    continuous: list[dict] = field(default_factory=list)
    candidates: list[CandidateScore] = field(default_factory=list)
    centroid: np.ndarray | None = None
    threshold: float = DEFAULT_THRESHOLD

    def best_asymmetric_margin(self) -> float:
        """Lowest score among rejected candidates (how far the closest non-symmetry is from passing)."""
        rejected = [c.score for c in self.candidates if not c.accepted]
        return min(rejected) if rejected else float("inf")


def rotation_about(axis: np.ndarray, angle_deg: float) -> np.ndarray:
    """3x3 rotation by ``angle_deg`` about the unit ``axis`` (right-hand rule)."""
    axis = np.asarray(axis, dtype=np.float64)
    return Rotation.from_rotvec(axis / np.linalg.norm(axis) * np.deg2rad(angle_deg)).as_matrix()


def transform_about(R: np.ndarray, center: np.ndarray) -> np.ndarray:
    """4x4 transform applying R about the point ``center``: x -> R (x - c) + c."""
    T = np.eye(4)
    T[:3, :3] = R
    T[:3, 3] = center - R @ center
    return T


def canonical_axis(axis: np.ndarray) -> np.ndarray:
    """Unit axis with its largest-magnitude component positive (a stable sign for reports)."""
    a = np.asarray(axis, dtype=np.float64)
    a = a / np.linalg.norm(a)
    return a if a[np.argmax(np.abs(a))] > 0 else -a


class _SurfaceMatcher:
    """Scores and refines rigid transforms of a surface onto itself with sampled points and a KD-tree."""

    def __init__(self, vertices: np.ndarray, faces: np.ndarray, diameter: float,
                 n_query: int = 2000, n_ref: int = 30000, seed: int = 0):
        self.ref = sample_surface(vertices, faces, n_ref, seed=seed)
        self.query = self.ref[np.random.default_rng(seed + 1).choice(n_ref, n_query, replace=False)]
        self.tree = cKDTree(self.ref)
        self.diameter = float(diameter)
        self.centroid = self.ref.mean(axis=0)
        self.cap = 0.25 * self.diameter

    def score(self, T: np.ndarray, n: int | None = None) -> float:
        """95th percentile of the nearest-neighbour distances of T(surface) and T^-1(surface) to the
        surface, divided by the diameter.

        A high quantile rather than the mean: an object whose bulk is symmetric but which carries an
        asymmetric part (the LM can's spout and handle, ~10% of its surface) must fail, while scan
        noise on the few percent of a symmetric object's surface (eggbox hinge, glue cap) must not.
        """
        R, t = T[:3, :3], T[:3, 3]
        q = self.query[:n]  # a prefix of a random subset is itself a random subset (coarse scores)
        d1, _ = self._nn(q @ R.T + t)
        d2, _ = self._nn((q - t) @ R)  # R^T (x - t) = T^-1 x
        return float(np.quantile(np.concatenate([d1, d2]), SCORE_QUANTILE) / self.diameter)

    def _nn(self, pts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Nearest reference point; searches are capped at a quarter of the diameter (far points are
        what makes KD-tree queries slow, and any distance that large fails every test anyway)."""
        d, i = self.tree.query(pts, distance_upper_bound=self.cap)
        far = ~np.isfinite(d)
        d[far], i[far] = self.cap, 0
        return d, i

    def refine(self, T: np.ndarray, iterations: int = 30, trim: float = 0.9) -> np.ndarray:
        """Symmetric, trimmed point-to-point ICP of the surface onto itself starting from T.

        Pairs come from both directions (T x -> surface and T^-1 x -> surface), so a 180 deg flip
        stays an involution; the worst 10% of pairs in each direction are dropped so scan artefacts
        that break the symmetry (a lid hinge, a label seam) do not pull the result.
        """
        T = T.copy()
        src = self.query
        for _ in range(iterations):
            R, t = T[:3, :3], T[:3, 3]
            d1, i1 = self._nn(src @ R.T + t)
            d2, i2 = self._nn((src - t) @ R)
            k1, k2 = d1 <= np.quantile(d1, trim), d2 <= np.quantile(d2, trim)
            T_new = _kabsch(np.vstack([src[k1], self.ref[i2[k2]]]), np.vstack([self.ref[i1[k1]], src[k2]]))
            step = np.abs(T_new - T).max()
            T = T_new
            if step < 1e-6 * max(self.diameter, 1.0):
                break
        return T


def _kabsch(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Least-squares rigid 4x4 transform mapping points a onto points b (rotation, no reflection)."""
    ca, cb = a.mean(axis=0), b.mean(axis=0)
    U, _, Vt = np.linalg.svd((a - ca).T @ (b - cb))
    D = np.diag([1.0, 1.0, np.sign(np.linalg.det(Vt.T @ U.T))])
    R = Vt.T @ D @ U.T
    T = np.eye(4)
    T[:3, :3] = R
    T[:3, 3] = cb - R @ ca
    return T


def _principal_axes(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues (ascending) and eigenvectors (columns) of the points' covariance about the centroid."""
    c = points - points.mean(axis=0)
    return np.linalg.eigh(c.T @ c / len(c))


def _candidate_axes(points: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Axes to test (principal + model frame, deduplicated) and planes (normals) whose in-plane
    directions are ambiguous because two principal moments coincide."""
    evals, evecs = _principal_axes(points)
    axes: list[np.ndarray] = []
    for a in list(evecs.T) + list(np.eye(3)):
        if all(abs(float(a @ b)) < np.cos(np.deg2rad(3.0)) for b in axes):
            axes.append(canonical_axis(a))
    planes = []
    scale = max(evals.max(), 1e-12)
    for i, j, k in ((0, 1, 2), (1, 2, 0)):
        if (evals[j] - evals[i]) / scale < 0.02:
            planes.append(evecs[:, k])
    return axes, planes


def _perpendicular_axes(normal: np.ndarray, step_deg: float) -> list[np.ndarray]:
    """Unit axes in the plane perpendicular to ``normal``, every ``step_deg`` over 180 deg."""
    normal = normal / np.linalg.norm(normal)
    u = np.cross(normal, [1.0, 0.0, 0.0])
    if np.linalg.norm(u) < 0.5:
        u = np.cross(normal, [0.0, 1.0, 0.0])
    u /= np.linalg.norm(u)
    v = np.cross(normal, u)
    return [np.cos(a) * u + np.sin(a) * v for a in np.deg2rad(np.arange(0.0, 180.0, step_deg))]


def _rotation_axis_point(T: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Axis (unit) and the point on it nearest the origin of a rigid transform that is a rotation."""
    rv = Rotation.from_matrix(T[:3, :3]).as_rotvec()
    axis = rv / max(np.linalg.norm(rv), 1e-12)
    # Points p on the axis satisfy (I - R) p = t (up to a slip along the axis); least squares with the
    # component along the axis pinned to zero gives the point nearest the origin.
    A = np.vstack([np.eye(3) - T[:3, :3], axis[None, :]])
    b = np.concatenate([T[:3, 3], [0.0]])
    p, *_ = np.linalg.lstsq(A, b, rcond=None)
    return axis, p


def _same_rotation(Ta: np.ndarray, Tb: np.ndarray, deg: float = 5.0) -> bool:
    R = Ta[:3, :3].T @ Tb[:3, :3]
    return float(np.rad2deg(np.arccos(np.clip((np.trace(R) - 1) / 2, -1, 1)))) < deg


def _angle_deg(R: np.ndarray) -> float:
    return float(np.rad2deg(np.arccos(np.clip((np.trace(R) - 1) / 2, -1, 1))))


def detect_symmetries(vertices: np.ndarray, faces: np.ndarray, diameter: float,
                      threshold: float = DEFAULT_THRESHOLD, seed: int = 0,
                      n_samples: int = 30000) -> SymmetryResult:
    """Discrete and continuous rotational symmetries of a mesh (vertices in mm), BOP form.

    Returns every non-identity element of the discrete group (4x4, translation mm; BOP's tools do
    not compose them) and continuous axes as {"axis", "offset"} (offset: the axis point nearest the
    model origin, mm). Deterministic for a fixed ``seed``. ``n_samples`` surface points form the
    reference set (2000 of them are moved and scored); fewer suffice for clean CAD shapes.
    """
    m = _SurfaceMatcher(vertices, faces, diameter, n_query=min(2000, n_samples // 5), n_ref=n_samples, seed=seed)
    c = m.centroid
    result = SymmetryResult(centroid=c, threshold=threshold)

    def test(axis: np.ndarray, angle: float) -> tuple[bool, np.ndarray]:
        """Coarse score of the rotation about the axis through the centroid; near-passing ones are
        refined by ICP, projected back onto an exact rotation by ``angle`` (so T^n = I for an
        n-fold symmetry) and scored again: the refined score decides."""
        T = transform_about(rotation_about(axis, angle), c)
        s = m.score(T, COARSE_POINTS)
        if s < COARSE_FACTOR * threshold:
            refined = m.refine(T)
            ax, p = _rotation_axis_point(refined)
            # Keep the refinement unless ICP slid towards another rotation (e.g. the identity).
            if abs(_angle_deg(refined[:3, :3]) - _angle_deg(T[:3, :3])) < 10.0 and abs(float(ax @ axis)) > 0.98:
                ax = ax if ax @ axis > 0 else -ax  # keep the sense of rotation of the candidate
                T = transform_about(rotation_about(ax, angle), p)
            s = m.score(T)
        ok = s < threshold
        result.candidates.append(CandidateScore(axis.copy(), angle, s, ok))
        return ok, T

    axes, planes = _candidate_axes(m.ref)
    continuous_axes: list[np.ndarray] = []
    discrete: list[np.ndarray] = []
    main_axes: list[np.ndarray] = []
    for axis in axes:
        tests = []
        for a in CONTINUOUS_TEST_ANGLES:
            tests.append(test(axis, a))
            if not tests[-1][0]:
                break
        if all(ok for ok, _ in tests) and len(tests) == len(CONTINUOUS_TEST_ANGLES):
            pts = [_rotation_axis_point(T) for _, T in tests]
            ax = canonical_axis(np.mean([np.sign(q[0] @ axis) * q[0] for q in pts], axis=0))
            p = np.mean([q[1] for q in pts], axis=0)
            p = p - (p @ ax) * ax
            result.continuous.append({"axis": ax, "offset": p})
            continuous_axes.append(ax)
            main_axes.append(ax)
            continue
        for n in range(MAX_ORDER, 1, -1):
            first_ok, T1 = test(axis, 360.0 / n)
            if not first_ok:
                continue
            rest = [test(axis, 360.0 * k / n) for k in range(2, n)]
            if all(ok for ok, _ in rest):
                main_axes.append(axis)
                discrete.extend([T1] + [T for _, T in rest])
                break
    # 180 deg flips perpendicular to a symmetry axis or inside a degenerate principal plane: coarse
    # scores over a sweep, then only the local minima are refined and tested.
    swept: list[np.ndarray] = []
    for normal in main_axes + planes:
        if any(abs(float(normal @ n)) > 0.99 for n in swept):
            continue
        swept.append(normal)
        about_continuous = any(abs(float(normal @ ax)) > 0.99 for ax in continuous_axes)
        sweep = _perpendicular_axes(normal, 4.0)
        coarse = np.array([m.score(transform_about(rotation_about(a, 180.0), c), COARSE_POINTS) for a in sweep])
        k = len(coarse)
        minima = [i for i in np.argsort(coarse)
                  if coarse[i] < COARSE_FACTOR * threshold
                  and coarse[i] <= coarse[(i - 1) % k] and coarse[i] <= coarse[(i + 1) % k]]
        for i in minima:
            ok, T = test(sweep[i], 180.0)
            if ok:
                discrete.append(T)
                if about_continuous:
                    break  # all perpendicular flips are equivalent modulo the continuous rotation
    # Discrete rotations about a continuous axis are already covered by it.
    discrete = [T for T in discrete
                if not any(abs(float(_rotation_axis_point(T)[0] @ ca)) > 0.99 for ca in continuous_axes)]
    if continuous_axes:
        # Every remaining element flips the continuous axis (R a = -a); they are all equivalent
        # modulo the continuous rotation, so one represents them.
        discrete = discrete[:1]
    group: list[np.ndarray] = []
    for T in discrete:
        if not any(_same_rotation(T, G) for G in group):
            group.append(T)
    # Close the group under composition (e.g. two perpendicular flips imply the third). With a
    # continuous axis BOP's tools compose the discrete elements with it themselves.
    changed = not continuous_axes
    while changed and len(group) < 60:
        changed = False
        for A in list(group):
            for B in list(group):
                C = A @ B
                if _same_rotation(C, np.eye(4)) or any(_same_rotation(C, G) for G in group):
                    continue
                if m.score(C) < threshold:
                    group.append(C)
                    changed = True
    result.discrete = group
    return result
