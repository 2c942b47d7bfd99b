"""Run every notebook under nbdev's own test runner, one pytest test per notebook.

Cells flagged with a `tst_flags` flag from settings.ini (e.g. `#| slow`) are skipped unless the flag is
listed in the environment variable `USPL_TEST_FLAGS` (space separated), as `nbdev_test --flags` does.
"""
import os
import pytest
from nbdev.config import get_config
from conftest import ROOT, notebooks

@pytest.mark.parametrize('nb', notebooks(), ids=lambda p: p.stem)
def test_notebook(nb):
    from nbdev.test import test_nb
    cfg = get_config(path=ROOT)
    skip = cfg.get('tst_flags', '').split()
    force = os.environ.get('USPL_TEST_FLAGS', '').split()
    ok, secs = test_nb(nb, skip_flags=skip, force_flags=force, showerr=True, basepath=ROOT)
    assert ok, f'notebook {nb.name} failed (traceback above)'
