"""Training: the run's wiring (``trainer``), one epoch of training and evaluation (``engine``), the
epoch's meters (``meters``), the lr / beta1 / tau schedules (``schedule``), checkpoints
(``checkpoint``), the run folder and its lock (``run_folder``), tau estimation (``estimate``),
and what a run writes at the end: exported models (``export``), the curves and the label-issue
gallery (``plots``), and the label-issue scores and report (``label_scores``, ``label_report``). ``metrics/`` holds the ``evaluate`` metric scripts the meters are checked against.

May import every lower layer: ``core``, ``models``, ``noise``, ``methods``, ``config``, ``data``.
"""

__all__: list[str] = []  # import the modules themselves (jocor_plugin.train.<module>)
