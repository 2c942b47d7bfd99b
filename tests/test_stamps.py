"""The stamp scene builder: a tiny fake stamp folder in Tux Paint's conventions, both layouts read back by the kit's
loaders, exact ground truth, byte-identical rebuilds, errors naming the argument; and, where Debian's
tuxpaint-stamps-default is installed, a small build from the real stamps."""
import hashlib, importlib.util
from pathlib import Path
import numpy as np
import pytest
import torch
from PIL import Image
from uspl.core import USPLConfig
from uspl.data.datasets import build_dataset
from uspl.data.layouts import mask_box
from uspl.metrics import baseline_maps, evaluate_maps
from uspl.data.stamps import STAMPS_DIR, build_stamps, find_stamps, write_fake_stamps, format_summary

def digest(root:Path) -> str:
    "A hash of every file's relative path and bytes (stamps.json names the output folder, so it is left out)."
    h = hashlib.sha256()
    for p in sorted(root.rglob('*')):
        if p.is_file() and p.name != 'stamps.json': h.update(p.relative_to(root).as_posix().encode()); h.update(p.read_bytes())
    return h.hexdigest()

@pytest.fixture(scope='module')
def fake(tmp_path_factory):
    "A fake stamp folder and a folder with one background photo."
    d = tmp_path_factory.mktemp('fake')
    src = write_fake_stamps(d/'stamps', n=5)
    (d/'bg').mkdir()
    yy, xx = np.mgrid[:160, :200]
    Image.fromarray(np.stack([xx % 256, yy % 256, (xx + yy) % 256], -1).astype(np.uint8)).save(d/'bg/photo.png')
    return dict(src=src, backgrounds=d/'bg', n_train=8, n_val=3, n_test=5, img_size=64, progress=False)

def test_fake_folder_conventions(fake):
    stamps, skipped = find_stamps(fake['src'])
    assert [s.category for s in stamps] == ['bell', 'bell', 'drum', 'gong', 'harp', 'horn']
    assert skipped['spoken'] == 1 and skipped['silent'] == ['things/quiet'] and skipped['thin'] == ['things/stick']

@pytest.mark.parametrize('layout', ['s4', 'vggss'])
def test_loaders_read_the_build(fake, tmp_path, layout):
    s = build_stamps(out=tmp_path/'d', layout=layout, workers=1, **fake)
    assert s['counts'] == dict(train=8, val=3 if layout == 's4' else 0, test=5)
    cfg = USPLConfig(img_size=64)
    for split, n in s['counts'].items():
        if not n: continue
        ds = build_dataset(layout, tmp_path/'d', split, cfg)
        assert len(ds) == n
        for i in range(n):
            x = ds[i]
            assert x['image'].shape == (3, 64, 64) and x['mask'].shape == (64, 64) and x['objects'].shape == (64, 64)
            assert set(x) >= {'image', 'audio', 'mask', 'has_mask', 'box', 'name', 'category', 'objects'}
            if layout == 's4':
                r = ds.items[i]
                m = np.array(Image.open(ds.path('mask', r))) > 0
                assert np.array_equal(x['mask'].numpy() > 0, m) and x['has_mask']
                assert np.array_equal(np.array(Image.open(ds.path('objects', r))) == 1, m)  # the object map's 1 is the mask
            elif split == 'test':
                obj = np.array(Image.open(ds.path('objects', ds.ids[i])))
                assert np.array_equal(x['box'].numpy(), mask_box(obj == 1)) and x['has_mask']  # the box of the sounding mask
            if layout == 's4': assert (x['objects'] >= x['mask']).all()
    b = torch.utils.data.default_collate([ds[i] for i in range(len(ds))])
    assert torch.equal(baseline_maps('all_objects', b), b['objects'])  # the all-objects baseline scores these scenes

def test_deterministic_and_independent_of_workers(fake, tmp_path):
    a = digest(Path(build_stamps(out=tmp_path/'a', workers=1, **fake)['out']))
    assert a == digest(Path(build_stamps(out=tmp_path/'b', workers=2, **fake)['out']))
    assert a == digest(Path(build_stamps(out=tmp_path/'a', workers=2, **fake)['out']))  # rebuilt over itself
    assert a != digest(Path(build_stamps(out=tmp_path/'c', seed=1, workers=1, **fake)['out']))

def test_unseen_photos_split(fake, tmp_path):
    s = build_stamps(out=tmp_path/'u', split='unseen-photos', workers=1, **fake)
    held = set(s['held_out'])
    assert len(held) == 1 and set(s['splits']['test']['sounding_stamps']) == held
    assert not held & set(s['splits']['train']['sounding_stamps']) and not held & set(s['splits']['val']['sounding_stamps'])

@pytest.mark.parametrize('bad, name', [(dict(src='/no/such/stamps'), 'src'), (dict(layout='avs'), 'layout'), (dict(n_train=-2), 'n_train'),
                                        (dict(split='random'), 'split'), (dict(img_size=10), 'img_size'), (dict(workers=0), 'workers')])
def test_bad_arguments_are_named(fake, tmp_path, bad, name):
    with pytest.raises((ValueError, FileNotFoundError), match=name): build_stamps(**{**fake, 'out': tmp_path/'x', **bad})

def test_src_without_usable_stamps(fake, tmp_path):
    (tmp_path/'empty').mkdir()
    with pytest.raises(ValueError, match='src'): build_stamps(**{**fake, 'src': tmp_path/'empty', 'out': tmp_path/'x'})
    (tmp_path/'busy').mkdir(); (tmp_path/'busy/keep.txt').write_text('x')
    with pytest.raises(ValueError, match='out'): build_stamps(**{**fake, 'out': tmp_path/'busy'})

def test_real_stamps(tmp_path):
    if not Path(STAMPS_DIR).is_dir():
        pytest.skip(f'tuxpaint-stamps-default not installed ({STAMPS_DIR} absent): apt-get install --no-install-recommends tuxpaint-stamps-default')
    if importlib.util.find_spec('skimage') is None: pytest.skip('scikit-image not installed (its photos are the backgrounds): pip install scikit-image')
    s = build_stamps(out=tmp_path/'r', n_train=4, n_val=0, n_test=24, workers=2)
    assert s['stamps'] >= 60 and s['classes'] >= 50, format_summary(s)
    assert not set(s['skipped']['silent']) ^ {'animals/birds/nandou', 'animals/lizards/iguana', 'animals/mammals/giraffe', 'animals/marsupials/wombat'}
    assert 0.05 <= s['area']['median'] <= 0.5
    ds = build_dataset('s4', tmp_path/'r', 'test', USPLConfig(img_size=96))
    b = torch.utils.data.default_collate([ds[i] for i in range(len(ds))])
    assert evaluate_maps(b['mask'], b['mask'])['miou'] == pytest.approx(1.0, abs=1e-6)
    assert evaluate_maps(baseline_maps('all_ones', b), b['mask'])['miou'] < 0.5
