"""Adjustments ferry makes to a runtime's Python so that it survives checkpoint / restore.

IPython keeps its history in SQLite. A restored runtime reopens that file from a copy with a new
inode, and SQLite then refuses to write ("attempt to write a readonly database"). With
FERRY_IPYTHON_HISTORY=memory the history lives in an in-memory SQLite database instead, which CRIU
carries across checkpoints with the rest of the process. Nothing is imported unless IPython's
history module is, so other Python programs in the runtime do not pay for this.
"""
import importlib.abc
import importlib.util
import os
import sys


class _HistoryInMemory(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != "IPython.core.history":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None:
            return spec
        original = spec.loader.exec_module

        def exec_module(module):
            original(module)
            module.HistoryManager._get_hist_file_name = lambda self, profile=None: ":memory:"

        spec.loader.exec_module = exec_module
        return spec


if os.environ.get("FERRY_IPYTHON_HISTORY") == "memory":
    sys.meta_path.insert(0, _HistoryInMemory())
