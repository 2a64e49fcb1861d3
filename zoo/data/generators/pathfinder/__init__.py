"""Offline Pathfinder / Path-X generator: the "snakes2" task of Linsley, Kim, Veerabadran, Windolf
and Serre (2018), "Learning long-range spatial dependencies with horizontal gated recurrent units"
(NeurIPS), with the settings the Long Range Arena release used.

Writes the layout of the official release, so one loader reads generated and downloaded data::

    out_dir/pathfinder{R}/<difficulty>/imgs/<k>/sample_<j>.png     8-bit grayscale
    out_dir/pathfinder{R}/<difficulty>/metadata/<k>.npy            TEXT, one line per image

with ``<difficulty>`` = ``curv_baseline`` (contour length 6, the release's name),
``curv_contour_length_9`` or ``curv_contour_length_14``. A metadata line holds the 11 columns of
the official generator, in its order, then extra columns of ours (readers of the official files
only use fields 0, 1 and 3)::

    imgs/<k> sample_<j>.png <j> <label> <continuity> <contour_length> <distractor_length>
        <paddle_length> <paddle_thickness> <paddle_margin> <n_paddle_contrasts>
        <n_distractors_placed> <marker0_y> <marker0_x> <marker1_y> <marker1_x>

The process is the one of the official ``snakes2.py`` / ``snakes.py`` (github.com/drewlinsley/
pathfinder, commit ab9c130), re-implemented here with numpy and vectorised over many attempts at
once; docs/pathfinder.md gives the measured comparison with images of the official code.

* **Grid.** Everything lives on the integer pixel grid of the final image. A *paddle* is drawn
  from an integer start pixel in a direction ``phi``: a 1-px (32 px) or 3-px (128 px) wide line
  of ``paddle_length * antialias_scale`` pixels on a local canvas ``antialias_scale`` times finer
  (Bresenham / the filled quad of Pillow's ``ImageDraw.line``), reduced with Pillow's Lanczos
  resampling (fixed-point, horizontal pass first) by a factor of about 1.9 (the official local
  canvas is ``2 P aa + 1`` pixels reduced to ``2 P + 1``, ``P = length + ceil(thickness) +
  margin``). Its *mask* is the same line dilated by a disc of radius ``margin * aa`` and reduced
  the same way. Both are computed once per direction and cached.
* **Occupancy.** A float mask (max of the masks of the placed paddles, 1 on the ``padding``
  border) decides where paddles may go: a new paddle is accepted when ``max(mask + its mask) <
  1.8``; a snake's previous paddle is merged into the mask only after the next one is placed (so
  a snake never collides with its own neighbour), the two targets see each other's latest paddle
  only one step late, and the first target's final paddle is never merged (as in the official).
* **Growth.** From the previous *pivot* and direction ``theta`` the new pivot is
  ``ceil(pivot + (length + 2 margin) * (sin, cos) theta)``; candidate heads are the distinct
  integer points (truncated) of a circle of radius ``length + margin`` around it, one sample per
  pixel of arc; the weight of a candidate is ``cos(min(continuity * |turn|, pi/2))^2`` times
  ``1 - (mask dilated by a disc of radius margin)`` at the candidate; one is drawn by weight, the
  paddle is drawn back from it towards the pivot, and up to ``max_paddle_retrial + 1`` draws are
  tested for the collision rule above; none passes, or total weight < 1e-4: the snake fails.
* **Seeds.** A snake's first paddle starts at a pixel drawn uniformly among those where the
  paddle's mask (its fully covered pixels, shifted by one pixel as the official's structuring
  element is) touches no mask value > 0.3, direction a whole number of degrees; its pivot lies
  ``margin`` behind its start. Where that structuring element lies wholly outside the image at
  some pixel, OpenCV's dilation writes -DBL_MAX and the official search finds no coordinate at
  all: seeds in such directions always fail (330 of 360 directions at 32 px). The first target
  seeds in the central box ``2 * seed_distance`` away from the borders; the second one
  ``round(seed_distance * (sin, cos) a)`` from the first one's start (``a`` a whole number of
  degrees), unchecked against the first. The two targets of ``contour_length`` paddles grow
  alternately; if either fails the pair is discarded and a new one is tried, until one
  completes (at 32 px, contour length 14, about 1 pair in 330 completes).
* **Distractors.** ``n_distractors`` snakes of ``contour_length // 3`` paddles, each seeded
  uniformly in free space and grown the same way, ``max_distractor_retrial + 1`` tries each, then
  skipped (official ``allow_incomplete``); seeding stops when less than 1 % of the image is free.
  Few fit at 32 px (about 1.1 of 5 at contour length 14): the official images are mostly targets.
* **Ink.** Target paddles are drawn with contrast ``snake_contrast * paddle_contrast``,
  distractor paddles with ``snake_contrast`` (1.5 and 2.0 at 32 px: distractors are brighter);
  markers are discs of ``marker_radius`` drawn on the fine grid centred on the fine pixel
  ``aa * (y, x)`` and Lanczos-reduced, one at the start of a target snake, the other at the end
  of the SAME snake (label 1) or of the OTHER one (label 0). The image is the maximum of paddles
  and markers, stretched so that its maximum is 255 (``scipy.misc.imsave``'s ``bytescale``).

Ours: image ``i`` depends only on ``(seed, i)`` and the parameters (not on workers or chunking),
and labels are balanced exactly within each pair of indices ``(2p, 2p + 1)``. Target attempts
run as the rows of one array, and the first row (in order) that completes is kept, which is the
same distribution as trying them one after another; so are the tries of a distractor.

Modules: ``params`` (``PathfinderParams``, the defaults), ``raster`` (Pillow-equivalent drawing and
resizing), ``geometry`` (per-(parameters, margin) tables, cached), ``process`` (snakes, masks,
growth, targets, distractors), ``sample`` (one image: ``generate_sample``), ``io`` (the data set on
disk, metadata, the sample grid).
"""

from __future__ import annotations

from .geometry import _flip, _geometry, segment_distance  # noqa: F401  (_flip, _geometry: the tests use them)
from .io import generate_pathfinder, read_metadata, render_sample_grid
from .params import PATHFINDER_PARAMS, PathfinderParams, difficulty_dir_name, pathfinder_params
from .sample import PathfinderSample, generate_sample, render_coverage

__all__ = [
    "PATHFINDER_PARAMS",
    "PathfinderParams",
    "PathfinderSample",
    "difficulty_dir_name",
    "generate_pathfinder",
    "generate_sample",
    "pathfinder_params",
    "read_metadata",
    "render_coverage",
    "render_sample_grid",
    "segment_distance",
]
