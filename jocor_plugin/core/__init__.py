"""Core helpers every layer may use, knowing nothing of recipes, data or training.

Owns: the errors a user sees (``errors``), command-line plumbing shared by the tools (``cli``),
reading a run's ``results.json`` (``results``) and the file lock that keeps two jobs out of one
folder (``lock``). Imports nothing from the rest of ``jocor_plugin``.
"""

__all__: list[str] = []  # import the modules themselves (jocor_plugin.core.<module>)
