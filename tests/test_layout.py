"""The folders tell the pipeline: every exported module lives in the subpackage its notebook folder names, and the
notebook numbers are a dependency order (no notebook, nor the module it exports, imports a later notebook's module)."""
import json, re
from pathlib import Path
from conftest import ROOT, notebooks

IMPORT = re.compile(r'^\s*(?:from\s+(uspl(?:\.\w+)+)\s+import|import\s+(uspl(?:\.\w+)+))', re.M)
REGISTRY_STR = re.compile(r"'(uspl(?:\.\w+)+):\w+'")

def _cells(nb): return [''.join(c['source']) for c in json.loads(nb.read_text())['cells'] if c['cell_type'] == 'code']

def _exports():
    "module -> (notebook path relative to nbs/, its order key)"
    out = {}
    for nb in notebooks():
        for src in _cells(nb):
            m = re.search(r'^#\|\s*default_exp\s+(\S+)', src, re.M)
            if m: out[f'uspl.{m.group(1)}'] = nb
    return out

def _order(nb): return nb.relative_to(ROOT/'nbs').as_posix()

def _target(mod, exports):
    "The exported module that `mod` (a module or a package) names; None for a package's __init__."
    while mod and mod not in exports: mod = mod.rpartition('.')[0]
    return mod or None

def test_module_folders_mirror_notebook_folders():
    "A notebook in nbs/NN_pkg/ exports uspl.pkg.*; top-level notebooks export top-level modules."
    for mod, nb in _exports().items():
        parts = nb.relative_to(ROOT/'nbs').parts
        if len(parts) == 1: assert mod.count('.') == 1, (mod, nb)
        else: assert mod.split('.')[1] == parts[0].split('_', 1)[1], (mod, nb)

def test_no_notebook_imports_a_later_one():
    exports, bad = _exports(), []
    for nb in notebooks():
        text = '\n'.join(_cells(nb))
        names = [a or b for a, b in IMPORT.findall(text)] + REGISTRY_STR.findall(text)
        for name in names:
            t = _target(name, exports)
            if t is not None and _order(exports[t]) > _order(nb): bad.append(f'{_order(nb)} imports {name} ({_order(exports[t])})')
    assert not bad, 'imports of later notebooks:\n' + '\n'.join(bad)

def test_order_check_can_fail():
    "The order key puts the pipeline's folders in their order, so the check above has teeth."
    keys = sorted(_order(nb) for nb in _exports().values())
    assert keys.index('00_core.ipynb') == 0
    assert keys.index('10_data/11_audio.ipynb') < keys.index('20_components/22_mmicl.ipynb') < keys.index('50_engine/51_train.ipynb')
