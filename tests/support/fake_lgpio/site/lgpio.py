"""``import lgpio`` -> the fake lgpio, in a process started with ``tests.support.fake_lgpio.child_env()``.

This directory goes on ``PYTHONPATH``; nothing else in it. The implementation is ``../_impl.py``, loaded by path
(the child need not have the repository on ``sys.path``) under a private name, and this module replaces itself in
``sys.modules`` with the fake (doing what importing lgpio does: the notification pipe in ``$LG_WD``). On a
Raspberry Pi it hands over to the real lgpio instead unless ``ROVER_SAFETY_FAKE_LGPIO_FORCE=1``.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from types import ModuleType


def _load_impl() -> ModuleType:
    name = "_rover_safety_fake_lgpio_impl"
    module = sys.modules.get(name)
    if module is None:
        path = os.path.join(os.path.dirname(os.path.dirname(os.path.realpath(__file__))), "_impl.py")
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise ImportError(f"fake lgpio: cannot load {path}", name=__name__)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up while the file runs
        spec.loader.exec_module(module)
    return module


sys.modules[__name__] = _load_impl().import_lgpio(__name__, os.path.dirname(os.path.realpath(__file__)))
