"""Many runs at once: grids of methods x noise x seeds (``grid``), the job runner that shares the
cores between runs (``jobs``), the paper-style report and its plots (``report``, ``report_modes``)
and W&B sweep files (``wandb_sweeps``). The command lines are ``jocor_plugin.reproduce`` and
``jocor_plugin.sweep``.

May import ``core``, ``noise`` and ``config``; runs are started as subprocesses, never imported.
"""

__all__: list[str] = []  # import the modules themselves (jocor_plugin.experiments.<module>)
