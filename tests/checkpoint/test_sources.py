"""Pretrained weights from where users get them (vitpe_mm/checkpoint/sources.py, loader.read_checkpoint).

Local paths, http(s) URLs served by a loopback server (torch's hub cache), Hugging Face hub ids from a cache that
huggingface_hub itself filled (from a loopback endpoint) read with HF_HUB_OFFLINE=1, .safetensors files and mmengine
Runner checkpoints; `prefix=`, and `init_cfg` kept on the model. No test touches the network.
"""
import hashlib
import http.server
import os
import pickle
import socket
import threading
from collections import Counter
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from vitpe_mm.checkpoint import CheckpointError, CheckpointNotAvailableError, load_pretrained, read_checkpoint
from vitpe_mm.checkpoint.sources import hub_repo_id, is_remote
from vitpe_mm.engine import mmengine_checkpoint_globals
from vitpe_mm.models.cpvt import CPVTv2

from conftest import perturb

TINY = dict(embed_dims=(16, 32, 40, 64), num_heads=(1, 2, 5, 8), mlp_ratios=(2, 2, 2, 2), depths=(1, 2, 1, 1))
COMMIT = 'a' * 40  # the revision the fake hub serves
LOOPBACK = ('127.0.0.1', 'localhost', b'127.0.0.1', b'localhost')


@pytest.fixture(scope='module')
def timm_state():
    """The state dict of a tiny timm Twins-PCPVT (timm/official keys, with its classifier head)."""
    from timm.models.twins import Twins
    torch.manual_seed(0)
    model = perturb(Twins(embed_dims=TINY['embed_dims'], num_heads=TINY['num_heads'], mlp_ratios=TINY['mlp_ratios'],
                          depths=TINY['depths'], sr_ratios=(8, 4, 2, 1), num_classes=10), std=0.05)
    return {k: v.clone().contiguous() for k, v in model.state_dict().items()}


@pytest.fixture(scope='module')
def plain_pth(timm_state, tmp_path_factory):
    path = tmp_path_factory.mktemp('plain') / 'twins_tiny.pth'
    torch.save(timm_state, path)
    return path


@pytest.fixture(scope='module')
def reference(plain_pth):
    """Features of the model loaded from the plain .pth: what every other source must give."""
    model = CPVTv2(arch=TINY).eval()
    load_pretrained(model, str(plain_pth), 'cpvt')
    x = torch.randn(1, 3, 64, 96, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        return x, model(x)


def _features_from(checkpoint, x, **cfg):
    model = CPVTv2(arch=TINY, init_cfg=dict(type='Pretrained', checkpoint=str(checkpoint), **cfg))
    model.init_weights()
    with torch.no_grad():
        return model.eval()(x)


def _assert_same_features(features, reference):
    x, expected = reference
    assert len(features) == len(expected) == 4
    for out, exp in zip(features, expected):
        assert torch.equal(out, exp)


@pytest.fixture(autouse=True)
def no_network(tmp_path, monkeypatch):
    """A fresh torch hub cache (TORCH_HOME) and HF cache, huggingface_hub offline, no proxy for the loopback."""
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch_home'))
    monkeypatch.setattr(torch.hub, '_hub_dir', None)
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    for name in ('http_proxy', 'https_proxy', 'HTTP_PROXY', 'HTTPS_PROXY', 'all_proxy', 'ALL_PROXY'):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv('NO_PROXY', '127.0.0.1,localhost')
    hf_constants = pytest.importorskip('huggingface_hub.constants')
    monkeypatch.setattr(hf_constants, 'HF_HUB_OFFLINE', True)
    monkeypatch.setattr(hf_constants, 'HF_HUB_CACHE', str(tmp_path / 'hf_cache'))
    monkeypatch.setattr(hf_constants, 'HF_HOME', str(tmp_path / 'hf_home'))
    real_getaddrinfo = socket.getaddrinfo

    def loopback_only(host, *args, **kwargs):  # any other host is refused before a DNS look-up
        if host not in LOOPBACK:
            raise AssertionError(f'a test tried to reach {host}')
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket, 'getaddrinfo', loopback_only)


# --------------------------------------------------------------------------------------------- loopback server
class Server:
    """A loopback HTTP server: `files` maps a URL path to bytes; `truncate` paths send half of what they announce.

    Also answers like the Hugging Face hub for `/<org>/<repo>/resolve/<revision>/<file>` paths (HEAD with the
    commit and ETag headers huggingface_hub reads), so huggingface_hub's own hf_hub_download can fill a cache.
    """

    def __init__(self) -> None:
        self.files, self.truncate, self.requests = {}, set(), Counter()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def _reply(self, with_body):
                path = self.path.split('?')[0]
                server.requests[(self.command, path)] += 1
                body = server.files.get(path)
                if body is None:
                    self.send_error(404, 'Not Found')
                    return
                self.send_response(200)
                self.send_header('Content-Length', str(len(body)))
                self.send_header('ETag', f'"{hashlib.sha256(body).hexdigest()}"')
                self.send_header('X-Repo-Commit', COMMIT)
                self.end_headers()
                if with_body:
                    self.wfile.write(body[:len(body) // 2] if path in server.truncate else body)

            def do_GET(self):
                self._reply(True)

            def do_HEAD(self):
                self._reply(False)

        self.httpd = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Handler)
        self.url = f'http://127.0.0.1:{self.httpd.server_address[1]}'
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def gets(self, path: str) -> int:
        return self.requests[('GET', path)]


@pytest.fixture
def server():
    srv = Server()
    srv.thread.start()
    yield srv
    srv.httpd.shutdown()
    srv.httpd.server_close()


def _pth_bytes(state, tmp_path) -> bytes:
    path = tmp_path / 'to_serve.pth'
    torch.save(state, path)
    return path.read_bytes()


def _hub_checkpoints() -> Path:
    return Path(torch.hub.get_dir()) / 'checkpoints'


# ------------------------------------------------------------------------------------------------------ URLs
def test_url_is_downloaded_once_into_torch_hub_cache(server, timm_state, reference, tmp_path):
    server.files['/release/twins_tiny.pth'] = _pth_bytes(timm_state, tmp_path)
    url = server.url + '/release/twins_tiny.pth'
    _assert_same_features(_features_from(url, reference[0]), reference)
    cached = _hub_checkpoints() / 'twins_tiny.pth'
    assert cached.is_file() and str(cached).startswith(str(tmp_path / 'torch_home'))
    assert sorted(os.listdir(cached.parent)) == ['twins_tiny.pth']  # no temporary file left
    assert server.gets('/release/twins_tiny.pth') == 1
    # a second load reads the cache: the server is not asked again
    _assert_same_features(_features_from(url, reference[0]), reference)
    assert server.gets('/release/twins_tiny.pth') == 1


def test_hash_prefix_in_the_file_name_is_checked(server, timm_state, reference, tmp_path):
    body = _pth_bytes(timm_state, tmp_path)
    digest = hashlib.sha256(body).hexdigest()
    good, bad = f'/twins_tiny-{digest[:8]}.pth', '/twins_tiny-0badbeef.pth'
    server.files[good] = server.files[bad] = body
    _assert_same_features(_features_from(server.url + good, reference[0]), reference)
    with pytest.raises(CheckpointError, match=rf'(?s)twins_tiny-0badbeef\.pth.*sha256 {digest}.*0badbeef'):
        read_checkpoint(server.url + bad)
    assert not (_hub_checkpoints() / bad[1:]).exists()
    assert sorted(os.listdir(_hub_checkpoints())) == [good[1:]]


def test_partial_download_leaves_no_file(server, timm_state, tmp_path):
    server.files['/cut.pth'] = _pth_bytes(timm_state, tmp_path)
    server.truncate.add('/cut.pth')
    with pytest.raises(CheckpointNotAvailableError, match=r'could not download .*/cut\.pth'):
        read_checkpoint(server.url + '/cut.pth')
    assert os.listdir(_hub_checkpoints()) == []
    # served whole afterwards: downloaded (not mistaken for a cached file) and read
    server.truncate.clear()
    assert set(read_checkpoint(server.url + '/cut.pth')) == set(timm_state)
    assert server.gets('/cut.pth') == 2


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize('kind', ['404', 'refused'])
def test_unreachable_url_gives_a_short_error_naming_the_url_and_the_cache(server, kind):
    url = server.url + '/missing.pth' if kind == '404' else f'http://127.0.0.1:{_free_port()}/missing.pth'
    with pytest.raises(CheckpointNotAvailableError) as info:
        read_checkpoint(url)
    message = str(info.value)
    assert url in message and str(_hub_checkpoints() / 'missing.pth') in message and 'local path' in message
    assert ('HTTP 404' in message) if kind == '404' else ('refused' in message.lower())
    assert len(message) < 400 and '\n' not in message
    assert not (_hub_checkpoints() / 'missing.pth').exists()


def test_init_cfg_url_error_names_url(server):
    model = CPVTv2(arch=TINY, init_cfg=dict(type='Pretrained', checkpoint=server.url + '/nothing-here.pth'))
    with pytest.raises(FileNotFoundError, match=r'nothing-here\.pth.*HTTP 404'):
        model.init_weights()


# -------------------------------------------------------------------------------------------------- hub ids
def _fill_hub_cache(server, repo_id, files, monkeypatch):
    """Puts `files` (name -> bytes) of `repo_id` in the HF cache with huggingface_hub's own hf_hub_download,
    from the loopback server as the endpoint (online for the duration of the call only)."""
    from huggingface_hub import constants, hf_hub_download
    monkeypatch.setattr(constants, 'HF_HUB_OFFLINE', False)
    monkeypatch.delenv('HF_HUB_OFFLINE')
    try:
        for name, body in files.items():
            server.files[f'/{repo_id}/resolve/main/{name}'] = body
            path = hf_hub_download(repo_id, name, endpoint=server.url)
            assert Path(path).read_bytes() == body and str(path).startswith(constants.HF_HUB_CACHE)
    finally:
        monkeypatch.setattr(constants, 'HF_HUB_OFFLINE', True)
        monkeypatch.setenv('HF_HUB_OFFLINE', '1')


def _safetensors_bytes(state, tmp_path) -> bytes:
    from safetensors.torch import save_file
    path = tmp_path / 'model.safetensors'
    save_file(state, str(path))
    return path.read_bytes()


@pytest.mark.parametrize('spelling', ['timm/{}', 'hf-hub:timm/{}', 'hf_hub:timm/{}'])
def test_hub_id_loads_timm_safetensors_from_the_cache_offline(server, timm_state, reference, tmp_path, monkeypatch,
                                                              spelling):
    repo_id = 'timm/twins_tiny.in1k'
    _fill_hub_cache(server, repo_id, {'model.safetensors': _safetensors_bytes(timm_state, tmp_path)}, monkeypatch)
    before = sum(server.requests.values())
    _assert_same_features(_features_from(spelling.format('twins_tiny.in1k'), reference[0]), reference)
    assert sum(server.requests.values()) == before  # offline: read from the cache only


def test_hub_id_falls_back_to_pytorch_model_bin(server, timm_state, reference, tmp_path, monkeypatch):
    _fill_hub_cache(server, 'timm/twins_bin.in1k', {'pytorch_model.bin': _pth_bytes(timm_state, tmp_path)},
                    monkeypatch)
    _assert_same_features(_features_from('timm/twins_bin.in1k', reference[0]), reference)


def test_hub_id_offline_with_empty_cache_says_what_to_download(tmp_path):
    with pytest.raises(CheckpointNotAvailableError) as info:
        read_checkpoint('timm/twins_pcpvt_small.in1k')
    message = str(info.value)
    assert 'timm/twins_pcpvt_small.in1k' in message and 'offline' in message
    assert 'https://huggingface.co/timm/twins_pcpvt_small.in1k/resolve/main/model.safetensors' in message
    assert str(tmp_path / 'hf_cache') in message and 'local path' in message


def test_which_sources_are_remote(tmp_path, monkeypatch):
    assert hub_repo_id('timm/swin_tiny_patch4_window7_224.ms_in1k') == 'timm/swin_tiny_patch4_window7_224.ms_in1k'
    assert hub_repo_id('hf-hub:facebook/deit-small') == 'facebook/deit-small'
    assert hub_repo_id('checkpoints/cpvtv2_s.pth') is None and not is_remote('checkpoints/cpvtv2_s.pth')
    assert is_remote('https://example.org/x.pth') and is_remote('timm/x.in1k')
    monkeypatch.chdir(tmp_path)  # a local folder named timm/ wins over the hub
    (tmp_path / 'timm').mkdir()
    (tmp_path / 'timm' / 'x.pth').write_bytes(b'')
    assert hub_repo_id('timm/x.pth') is None
    with pytest.raises(ValueError, match='not a hub id'):
        hub_repo_id('hf-hub:no-slash')


def test_missing_local_file_names_the_accepted_sources(tmp_path):
    with pytest.raises(FileNotFoundError, match=r'(?s)nope\.pth.*http\(s\) URL.*hub id'):
        read_checkpoint(str(tmp_path / 'nope.pth'))


# ----------------------------------------------------------------------------------------- file formats
def test_safetensors_file(timm_state, reference, tmp_path):
    path = tmp_path / 'twins_tiny.safetensors'
    path.write_bytes(_safetensors_bytes(timm_state, tmp_path))
    _assert_same_features(_features_from(path, reference[0]), reference)
    with pytest.raises(CheckpointError, match='map_location must be a device'):
        read_checkpoint(str(path), map_location={'cuda:0': 'cpu'})


def test_prefix_selects_and_strips_keys(timm_state, reference, tmp_path):
    """A detector-like checkpoint: the backbone under `backbone.`, other modules' keys next to it."""
    wrapped = {'state_dict': {**{f'backbone.{k}': v for k, v in timm_state.items()},
                              'neck.lateral.weight': torch.zeros(2)},
               'meta': {'epoch': 3}}
    path = tmp_path / 'detector.pth'
    torch.save(wrapped, path)
    for prefix in ('backbone.', 'backbone'):
        _assert_same_features(_features_from(path, reference[0], prefix=prefix), reference)
    with pytest.raises(CheckpointError, match=r"(?s)detector\.pth.*prefix 'encoder\.'.*backbone\.blocks"):
        _features_from(path, reference[0], prefix='encoder')


# ------------------------------------------------------------------------------------------ mmengine runner
class NotAllowed:
    """A class no checkpoint may instantiate."""


@pytest.fixture(scope='module')
def runner_checkpoint(tmp_path_factory):
    """iter_2.pth of a real 2-iteration mmengine Runner run of a model with a CPVTv2 backbone."""
    from mmengine.model import BaseModel
    from mmengine.runner import Runner
    from torch.utils.data import Dataset

    class Net(BaseModel):
        def __init__(self):
            super().__init__()
            self.backbone = CPVTv2(arch=TINY, drop_path_rate=0.0)
            self.head = nn.Linear(64, 1)

        def forward(self, inputs, mode='loss'):
            feats = self.backbone(inputs)
            return dict(loss=self.head(feats[-1].mean((2, 3))).pow(2).mean() + sum(f.mean() for f in feats))

    class Images(Dataset):
        def __len__(self):
            return 4

        def __getitem__(self, i):
            return dict(inputs=torch.randn(3, 32, 32, generator=torch.Generator().manual_seed(i)))

    work_dir = tmp_path_factory.mktemp('runner')
    runner = Runner(
        model=Net(), work_dir=str(work_dir), experiment_name='tiny',
        train_dataloader=dict(dataset=Images(), sampler=dict(type='DefaultSampler', shuffle=False), batch_size=2,
                              num_workers=0, collate_fn=dict(type='default_collate')),
        optim_wrapper=dict(optimizer=dict(type='AdamW', lr=1e-2)),
        train_cfg=dict(by_epoch=False, max_iters=2),
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=2, by_epoch=False),
                           logger=dict(type='LoggerHook', interval=1)),
        randomness=dict(seed=0), log_level='WARNING')
    runner.train()
    path = work_dir / 'iter_2.pth'
    return path, {k: v.detach().clone() for k, v in runner.model.backbone.state_dict().items()}


def test_mmengine_runner_checkpoint_as_pretrained(runner_checkpoint):
    path, trained = runner_checkpoint
    if torch.__version__ >= '2.6':  # the default weights-only unpickler refuses the message hub's types
        with pytest.raises(pickle.UnpicklingError):
            torch.load(path, map_location='cpu', weights_only=True)
    for cfg in (dict(prefix='backbone.'), {}):  # detector checkpoints are recognised without a prefix too
        model = CPVTv2(arch=TINY, init_cfg=dict(type='Pretrained', checkpoint=str(path), **cfg))
        model.init_weights()
        state = model.state_dict()
        assert set(state) == set(trained)
        for key, value in trained.items():
            assert torch.equal(state[key], value), key


def test_mmengine_checkpoint_globals_without_safe_globals_api(runner_checkpoint, tmp_path, monkeypatch):
    """torch < 2.5 (2.1 included) has no torch.serialization.safe_globals: the restricted-unpickler path, forced
    here, reads a real Runner checkpoint and still refuses other objects."""
    from mmengine.logging import HistoryBuffer
    path, trained = runner_checkpoint
    monkeypatch.delattr(torch.serialization, 'safe_globals', raising=False)
    original = torch._weights_only_unpickler.Unpickler
    with mmengine_checkpoint_globals():
        assert torch._weights_only_unpickler.Unpickler is not original
        ckpt = torch.load(path, map_location='cpu', weights_only=True)
    assert torch._weights_only_unpickler.Unpickler is original
    assert ckpt['meta']['iter'] == 2
    assert isinstance(ckpt['message_hub']['log_scalars']['train/loss'], HistoryBuffer)
    torch.testing.assert_close(ckpt['state_dict']['backbone.norm.weight'], trained['norm.weight'])
    assert set(read_checkpoint(str(path))['state_dict']) == set(ckpt['state_dict'])  # loader path, forced too

    evil = tmp_path / 'evil.pth'
    torch.save({'state_dict': {'w': torch.zeros(1)}, 'meta': {'x': NotAllowed()}}, evil)
    with mmengine_checkpoint_globals(), pytest.raises(pickle.UnpicklingError, match='NotAllowed'):
        torch.load(evil, map_location='cpu', weights_only=True)
    with pytest.raises(CheckpointError, match=r'(?s)evil\.pth.*refused for safety'):
        read_checkpoint(str(evil))


# ------------------------------------------------------------------------------------------------ init_cfg
def test_init_cfg_is_kept_and_mmengine_does_not_load_it(plain_pth, reference, monkeypatch):
    from mmengine.model.weight_init import PretrainedInit

    def refuse(*args, **kwargs):
        raise AssertionError("mmengine's PretrainedInit must not load a vitpe_mm checkpoint")

    monkeypatch.setattr(PretrainedInit, '__call__', refuse)
    init_cfg = dict(type='Pretrained', checkpoint=str(plain_pth), prefix=None, map_location='cpu')
    model = CPVTv2(arch=TINY, init_cfg=init_cfg)
    assert model.init_cfg == init_cfg
    model.init_weights()
    assert model.init_cfg == init_cfg and model.is_init
    with torch.no_grad():
        _assert_same_features(model.eval()(reference[0]), reference)


def test_init_weights_loads_once_after_the_other_init_cfgs(plain_pth, timm_state, monkeypatch):
    import vitpe_mm.models.base as base
    calls = []
    monkeypatch.setattr(base, 'load_pretrained', lambda *a, **k: calls.append(a) or load_pretrained(*a, **k))
    init_cfg = [dict(type='Constant', layer='Linear', val=0.5, bias=0.),
                dict(type='Pretrained', checkpoint=str(plain_pth))]
    model = CPVTv2(arch=TINY, init_cfg=init_cfg)
    model.init_weights()
    # the checkpoint is loaded last, over mmengine's Constant init (mmengine's order)
    torch.testing.assert_close(model.blocks[0][0].attn.q.weight, timm_state['blocks.0.0.attn.q.weight'])
    model.init_weights()
    assert len(calls) == 1 and model.init_cfg == init_cfg


@pytest.mark.parametrize('bad, match', [
    (dict(type='Pretrained', checkpoint='x.pth', strict=True), 'unknown: strict'),
    (dict(type='Pretrained'), 'checkpoint=PATH|URL|HUB_ID'),
    ([dict(type='Pretrained', checkpoint='a.pth'), dict(type='Pretrained', checkpoint='b.pth')], '2 Pretrained'),
])
def test_bad_pretrained_init_cfg_is_refused_at_build(bad, match):
    with pytest.raises(ValueError, match=match):
        CPVTv2(arch=TINY, init_cfg=bad)


class GetattrPayload:
    """Pickles as getattr(owner, name), as HistoryBuffer's statistics methods are written."""

    def __init__(self, owner, name) -> None:
        self.owner, self.name = owner, name

    def __reduce__(self):
        return getattr, (self.owner, self.name)


def _payloads():
    import numpy as np
    from mmengine.logging import HistoryBuffer
    return [NotAllowed(), np.array([NotAllowed()], dtype=object), GetattrPayload(HistoryBuffer, 'update'),
            GetattrPayload(np.ndarray, 'tofile'), GetattrPayload(HistoryBuffer, '__init__')]


@pytest.mark.parametrize('index', range(5), ids=['class', 'object-array', 'getattr-update', 'getattr-ndarray',
                                                 'getattr-init'])
def test_restricted_unpickler_path_refuses_other_objects(tmp_path, monkeypatch, index):
    from mmengine.logging import HistoryBuffer
    monkeypatch.delattr(torch.serialization, 'safe_globals', raising=False)
    path = tmp_path / 'payload.pth'
    torch.save({'state_dict': {'w': torch.zeros(2)}, 'meta': {'x': _payloads()[index]}}, path)
    with mmengine_checkpoint_globals(), pytest.raises(pickle.UnpicklingError):
        torch.load(path, map_location='cpu', weights_only=True)
    stats = tmp_path / 'stats.pth'
    torch.save({'mean': GetattrPayload(HistoryBuffer, 'mean')}, stats)
    with mmengine_checkpoint_globals():
        assert torch.load(stats, map_location='cpu', weights_only=True) == {'mean': HistoryBuffer.mean}


def test_old_torch_default_weights_only_false_is_overridden_in_the_block(runner_checkpoint, tmp_path, monkeypatch):
    """torch < 2.6 loads everything by default, so mmengine's own `torch.load(filename, map_location)` (resume,
    load_from) would unpickle anything: inside the block such calls get weights_only=True. Shown here on this torch
    with the old default forced back (TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD) and the flag set as on torch < 2.6."""
    from mmengine.runner.checkpoint import _load_checkpoint

    import vitpe_mm.engine.safe_load as safe_load
    path, _ = runner_checkpoint
    evil = tmp_path / 'evil.pth'
    torch.save({'state_dict': {'w': torch.zeros(1)}, 'meta': {'x': NotAllowed()}}, evil)
    monkeypatch.setenv('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD', '1')
    assert isinstance(torch.load(evil)['meta']['x'], NotAllowed)  # the old default: unsafe
    monkeypatch.setattr(safe_load, 'LOADS_WEIGHTS_ONLY_BY_DEFAULT', False)
    load = torch.load
    with mmengine_checkpoint_globals():
        assert _load_checkpoint(str(path), map_location='cpu')['meta']['iter'] == 2  # mmengine's own read
        with pytest.raises(pickle.UnpicklingError, match='NotAllowed'):
            _load_checkpoint(str(evil), map_location='cpu')
    assert torch.load is load
