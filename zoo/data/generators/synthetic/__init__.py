"""Generators of the synthetic token tasks: pure functions ``(cfg, n, rng, split) -> (inputs, labels)``.

``inputs`` and ``labels`` are ``(n, L)`` int64 arrays; ``labels`` is ``-100`` (``IGNORE``) where a
position is not scored. The task registry wraps them (``zoo/data/tasks/synthetic.py``).
"""

IGNORE = -100
