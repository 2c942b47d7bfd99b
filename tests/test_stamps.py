"""The stamp scene builder: a tiny fake stamp folder in Tux Paint's conventions, both layouts read back by the kit's
loaders, exact ground truth, byte-identical rebuilds, errors naming the argument; and, where Debian's
tuxpaint-stamps-default is installed, a small build from the real stamps; the pair split (two objects, one image listed
once per object's sound) read back through the kit's loaders and scored by the listening meter."""
import hashlib, importlib.util
from pathlib import Path
import numpy as np
import pytest
import torch
from PIL import Image
from uspl.core import USPLConfig
from uspl.data.datasets import build_dataset
from uspl.data.layouts import mask_box
from uspl.metrics import baseline_maps, evaluate_maps, PairMeter, PAIR_BASELINES, pair_baseline_maps, sound_blind
from uspl.data.stamps import (STAMPS_DIR, build_stamps, find_stamps, write_fake_stamps, format_summary, read_pairs, PairScenes,
                              pair_loader, restrict_classes, split_pools)

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
                                        (dict(split='random'), 'split'), (dict(img_size=10), 'img_size'), (dict(workers=0), 'workers'),
                                        (dict(pairs=-1), 'pairs'), (dict(pairs=2, split='unseen-photos'), 'pairs')])
def test_bad_arguments_are_named(fake, tmp_path, bad, name):
    with pytest.raises((ValueError, FileNotFoundError), match=name): build_stamps(**{**fake, 'out': tmp_path/'x', **bad})

def test_src_without_usable_stamps(fake, tmp_path):
    (tmp_path/'empty').mkdir()
    with pytest.raises(ValueError, match='src'): build_stamps(**{**fake, 'src': tmp_path/'empty', 'out': tmp_path/'x'})
    (tmp_path/'busy').mkdir(); (tmp_path/'busy/keep.txt').write_text('x')
    with pytest.raises(ValueError, match='out'): build_stamps(**{**fake, 'out': tmp_path/'busy'})

@pytest.mark.parametrize('layout', ['s4', 'vggss'])
def test_pair_split(fake, tmp_path, layout):
    s = build_stamps(out=tmp_path/'p', layout=layout, workers=1, pairs=4, **fake)
    assert s['pairs']['images'] == 4 and s['counts']['test'] == 5 and s['pairs']['area_ratio_min'] > 0.8
    info = read_pairs(tmp_path/'p')
    assert read_pairs(tmp_path/'p'/'pairs') == info and info['layout'] == layout and len(info['pairs']) == 4
    ds = PairScenes(tmp_path/'p', USPLConfig(img_size=64))
    assert len(ds) == 8 and [ds[i]['slot'] for i in range(4)] == [0, 1, 0, 1]
    for e in info['pairs']:
        a, b = e['objects']
        assert a['class'] != b['class'] and [a['sample'], b['sample']] == e['samples']
        ma, mb = (np.array(Image.open(info['root']/o['mask'])) for o in (a, b))
        assert np.array_equal(ma == 1, mb == 2) and np.array_equal(ma == 2, mb == 1)      # the two scenes swap sounding and silent
        assert not ((ma == 1) & (ma == 2)).any() and (ma == 1).any() and (ma == 2).any()
    frames = [ds.ds.path('frame', ds.ds.items[j] if layout == 's4' else ds.ds.ids[j]) for _, _, j, _ in ds.index]
    assert frames[0].read_bytes() == frames[1].read_bytes() != frames[2].read_bytes()  # one image per pair
    b = next(iter(pair_loader(ds, pairs_per_batch=4)))
    assert b['mask'].shape == b['other'].shape == (8, 64, 64) and b['pair'].tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    r = PairMeter().update(b['mask'], b['mask'], b['other'], b['pair'], b['category']).scores()
    assert (r['selection'], r['pair_accuracy'], r['n_pairs'], r['unpaired']) == (1., 1., 4, 0) and r['swing'] > 0
    assert set(r['per_class']) == {c for c in b['category']}
    for n in PAIR_BASELINES:
        r = PairMeter().update(pair_baseline_maps(n, b), b['mask'], b['other'], b['pair'], b['category']).scores()
        assert (r['selection'], r['pair_accuracy'], r['swing']) == (.5, 0., 0.)
    r = PairMeter().update(sound_blind(b['mask'], b['pair']), b['mask'], b['other'], b['pair']).scores()
    assert (r['selection'], r['pair_accuracy'], r['swing']) == (.5, 0., 0.)

def test_pair_split_deterministic(fake, tmp_path):
    a = digest(Path(build_stamps(out=tmp_path/'a', workers=1, pairs=3, **fake)['out']))
    assert a == digest(Path(build_stamps(out=tmp_path/'b', workers=2, pairs=3, **fake)['out']))
    assert a != digest(Path(build_stamps(out=tmp_path/'c', workers=1, pairs=3, seed=1, **fake)['out']))
    assert digest(tmp_path/'a'/'pairs') != digest(Path(build_stamps(out=tmp_path/'d', workers=1, pairs=4, **fake)['out'])/'pairs')
    with pytest.raises(FileNotFoundError, match='--pairs'): read_pairs(tmp_path)

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

def test_real_stamp_pairs(tmp_path):
    "Pairs from the real stamps at --classes 20: both objects among the sounding classes, side by side, of similar size."
    if not Path(STAMPS_DIR).is_dir(): pytest.skip(f'tuxpaint-stamps-default not installed ({STAMPS_DIR} absent)')
    if importlib.util.find_spec('skimage') is None: pytest.skip('scikit-image not installed (its photos are the backgrounds)')
    s = build_stamps(out=tmp_path/'r', n_train=0, n_val=0, n_test=20, classes=20, pairs=12, workers=2, img_size=128)
    stamps, _ = find_stamps(STAMPS_DIR)
    sounding = {stamps[k].category for k in restrict_classes(stamps, split_pools(stamps), 20, seed=0)['test']['sounding']}
    info = read_pairs(tmp_path/'r')
    assert {o['class'] for e in info['pairs'] for o in e['objects']} <= sounding and len(sounding) == 20
    for e in info['pairs']:
        a, b = e['objects']
        assert a['class'] != b['class'] and min(a['area'], b['area']) >= 0.8 * max(a['area'], b['area']) and min(a['area'], b['area']) > 0.01
        assert a['box'][2] <= 0.5 <= b['box'][0] or b['box'][2] <= 0.5 <= a['box'][0]
    assert s['pairs']['classes'] <= 20 and s['pairs']['images'] == 12
    ds = PairScenes(tmp_path/'r', USPLConfig(img_size=96))
    b = next(iter(pair_loader(ds, pairs_per_batch=12)))
    r = PairMeter().update(pair_baseline_maps('one_object', b), b['mask'], b['other'], b['pair'], b['category']).scores()
    assert (r['selection'], r['pair_accuracy'], r['n_pairs']) == (.5, 0., 12) and 0.4 < r['miou'] < 0.6

def test_compare_listening_on_pairs(fake, tmp_path):
    "`run_compare` on s4 stamps with a pair split (tiny size): listening rows, the audio probe (also in log.jsonl), the per-class file."
    import json
    from uspl.evaluation.compare import run_compare, LISTEN_METRICS
    root = Path(build_stamps(out=tmp_path/'s', workers=1, pairs=4, **fake)['out'])
    msgs, out = [], tmp_path/'cmp'
    res = run_compare(out, ['ezvsl', 'uspl'], [0], 's4', root, size='tiny', progress=False, log=msgs.append)
    lis = res['listening']
    assert (lis['n_pairs'], lis['n_scenes']) == (4, 8)
    rows = {(r['method'], r['path']): r for r in lis['rows']}
    learned = [('ezvsl', 'coarse'), ('uspl', 'sps'), ('uspl', 'smr'), ('uspl', 'coarse')]
    assert set(rows) == {*learned, *[(f'{m} sound-blind', p) for m, p in learned],
                         ('center-prior', 'trivial'), ('all-objects', 'trivial'), ('one-object', 'trivial')}
    for r in rows.values():
        assert all(0 <= r[k] <= 1 for k in LISTEN_METRICS), r
        assert (r['n_scenes'], r['n_pairs']) == (8, 4)
    for k, r in rows.items():  # sound-blind maps and baselines: each image's two scenes cannot both be right
        if k not in learned: assert (r['selection'], r['pair_accuracy'], r['swing']) == (.5, 0., 0.), k
    assert {r['method']: r['seed'] for r in lis['rows'] if r['path'] == 'trivial'} == {'center-prior': None, 'all-objects': None, 'one-object': None}
    for p in lis['probe']:
        assert 0 <= p['accuracy'] <= 1 and 0 <= p['initial'] <= 1 and p['n'] == 8 and p['k'] == 5
        assert p['chance'] == 1 / p['classes'] and p['classes'] == len(lis['per_class'])
    assert [m.split(' (chance')[0].rsplit(' ', 1)[0] for m in msgs if ': audio probe' in m] == ['ezvsl-s0: audio probe', 'uspl-s0: audio probe']
    goals = [g['goal'] for g in res['goals']]
    assert 'uspl/sps selection accuracy >= 90%' in goals and 'ezvsl/coarse pair accuracy > 0 on every seed' in goals
    log = [json.loads(l) for l in (out/'runs'/'uspl-s0'/'log.jsonl').read_text().splitlines()]
    assert log[0]['kind'] == 'init' and 0 <= log[0]['probe_acc'] <= 1 and log[0]['steps'] == 0
    ep = [r for r in log if r.get('kind') == 'epoch']
    assert len(ep) == 2 and all(0 <= r['probe_acc'] <= 1 and r['probe_chance'] == lis['probe'][0]['chance'] for r in ep)
    side = json.loads((out/'pairs_per_class.json').read_text())
    assert set(side['classes']) == {o['class'] for e in read_pairs(root)['pairs'] for o in e['objects']}
    assert all(0 <= v <= 1 for d in side['classes'].values() for k, v in d.items() if k != 'scenes')
    assert {(e['method'], e['path']) for e in side['paths']} == set(learned)
    md = (out/'results.md').read_text()
    for s in ('| one-object | trivial | - | 50.0 ± 0.0 | 0.0 ± 0.0 | 0.000 ± 0.000 |', 'Audio probe:', '| class | scenes | ezvsl/coarse |',
              'selection accuracy >= 90%'):
        assert s in md, s
    assert (out/'pairs.png').stat().st_size > 0
