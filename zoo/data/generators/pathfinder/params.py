"""Parameters of the Pathfinder generator: ``PathfinderParams``, the per-resolution defaults LRA
used (``PATHFINDER_PARAMS``) and the release's difficulty folder names."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

__all__ = ["PATHFINDER_PARAMS", "PathfinderParams", "difficulty_dir_name", "pathfinder_params"]


@dataclass(frozen=True)
class PathfinderParams:
    """All knobs of one Pathfinder variant. Lengths are in pixels of the final image.

    The per-resolution defaults (``PATHFINDER_PARAMS``) are the arguments LRA's TFDS builders
    list as customised in the official ``snakes2_wrapper.py``, the wrapper's own values elsewhere.
    """

    resolution: int
    contour_length: int = 14
    paddle_length: int = 2
    paddle_thickness: float = 0.5
    marker_radius: float = 1.5
    seed_distance: int = 7
    continuity: float = 1.0
    paddle_margins: tuple[int, ...] = (1,)  # official paddle_margin_list: one drawn per image
    antialias_scale: int = 2  # the fine grid of paddles and markers, per axis
    distractor_budget: int = 20  # n_distractors = distractor_budget // distractor_length
    padding: int = 1  # border band (pixels) that is occupied from the start
    snake_contrast: float = 2.0  # official snake_contrast_list[0]
    paddle_contrast: float = 0.75  # official paddle_contrast_list[0]
    max_paddle_retrial: int = 2  # official max_paddle_retrial: extra draws / seed tries
    max_distractor_retrial: int = 4  # official max_distractor_contour_retrial
    min_free_fraction: float = 0.01  # official stop_with_availability (distractor seeding)
    target_batch: int = 32  # target-pair attempts grown in lock-step by the first sub-seed ...
    max_target_batch: int = 512  # ... doubling per further sub-seed up to this many
    max_target_batches: int = 1000  # sub-seeds tried before giving up on one image

    def __post_init__(self) -> None:
        if self.resolution < 8:
            raise ValueError(f"resolution must be >= 8, got {self.resolution}")
        if self.contour_length < 1:
            raise ValueError(f"contour_length must be >= 1, got {self.contour_length}")
        if self.paddle_length < 1 or self.paddle_thickness <= 0 or self.marker_radius <= 0:
            raise ValueError("paddle_length must be >= 1, paddle_thickness and marker_radius > 0")
        if int(self.paddle_length) != self.paddle_length or int(self.seed_distance) != self.seed_distance:
            raise ValueError("paddle_length and seed_distance are whole pixels")
        if self.antialias_scale < 1 or (self.paddle_thickness * self.antialias_scale) % 1:
            raise ValueError("antialias_scale must be >= 1 and paddle_thickness * antialias_scale "
                             "a whole number (as the official draw_line_n_mask requires)")
        if self.continuity <= 0:
            raise ValueError("continuity must be > 0")
        if not self.paddle_margins or min(self.paddle_margins) < 0 or any(int(m) != m for m in self.paddle_margins):
            raise ValueError("paddle_margins must be a non-empty tuple of whole non-negative pixels")
        if min(self.target_batch, self.max_target_batch, self.max_target_batches) < 1:
            raise ValueError("target_batch, max_target_batch and max_target_batches must be >= 1")
        if self.max_paddle_retrial < 0 or self.max_distractor_retrial < 0:
            raise ValueError("retrial counts must be >= 0")

    @property
    def distractor_length(self) -> int:
        return max(1, self.contour_length // 3)

    @property
    def n_distractors(self) -> int:
        return self.distractor_budget // self.distractor_length

    @property
    def max_turn(self) -> float:
        """Largest turn with non-zero weight, ``pi / (2 continuity)`` (before pixel rounding)."""
        return min(math.pi, math.pi / (2.0 * self.continuity))

    @property
    def target_contrast(self) -> float:
        return self.snake_contrast * self.paddle_contrast

    @property
    def distractor_contrast(self) -> float:
        return self.snake_contrast  # the official passes snake_contrast_list alone to distractors

    @property
    def difficulty_dir(self) -> str:
        return difficulty_dir_name(self.contour_length)


def difficulty_dir_name(contour_length: int) -> str:
    """Folder of one difficulty, as in the release: ``curv_baseline`` for contour length 6."""
    return "curv_baseline" if contour_length == 6 else f"curv_contour_length_{contour_length}"


#: Per-resolution defaults (hard set: contour length 14). 32 and 128 are LRA's Pathfinder and
#: Path-X; 64 and 256 are the other variants LRA's TFDS builders document.
PATHFINDER_PARAMS: dict[int, PathfinderParams] = {
    32: PathfinderParams(
        resolution=32, paddle_length=2, paddle_thickness=0.5, marker_radius=1.5, seed_distance=7,
        continuity=1.0, paddle_margins=(1,), antialias_scale=2, distractor_budget=20, padding=1,
        snake_contrast=2.0, paddle_contrast=0.75, target_batch=512, max_target_batch=4096,
    ),
    64: PathfinderParams(
        resolution=64, paddle_length=5, paddle_thickness=1.0, marker_radius=2.5, seed_distance=12,
        continuity=1.8, paddle_margins=(1,), antialias_scale=2, distractor_budget=22, padding=1,
        snake_contrast=0.8, paddle_contrast=1.0,
    ),
    128: PathfinderParams(
        resolution=128, paddle_length=5, paddle_thickness=1.5, marker_radius=3.0, seed_distance=20,
        continuity=1.8, paddle_margins=(2, 3), antialias_scale=2, distractor_budget=35, padding=1,
        snake_contrast=0.9, paddle_contrast=1.0, target_batch=64, max_target_batch=256,
    ),
    256: PathfinderParams(
        resolution=256, paddle_length=5, paddle_thickness=2.0, marker_radius=5.0, seed_distance=27,
        continuity=1.8, paddle_margins=(3,), antialias_scale=2, distractor_budget=30, padding=22,
        snake_contrast=1.0, paddle_contrast=1.0, target_batch=16, max_target_batch=128,
    ),
}


def pathfinder_params(resolution: int = 32, contour_length: int = 14, **overrides) -> PathfinderParams:
    """The defaults for ``resolution`` with ``contour_length`` (6 / 9 / 14 = easy / medium / hard)
    and any field overridden."""
    if resolution not in PATHFINDER_PARAMS:
        raise ValueError(f"no Pathfinder defaults for resolution {resolution}; "
                         f"known: {sorted(PATHFINDER_PARAMS)}")
    return dataclasses.replace(PATHFINDER_PARAMS[resolution], contour_length=contour_length, **overrides)
