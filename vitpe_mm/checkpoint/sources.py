"""Where pretrained weights come from: a local file, an http(s) URL, or a Hugging Face hub id (timm's weights).

`resolve_checkpoint(source)` returns a local path:

- a local path (`~` expanded) as it is;
- `http://` / `https://`: downloaded once into torch's hub cache (`torch.hub.get_dir()/checkpoints`, where
  `torch.hub.load_state_dict_from_url` and mmengine's `load_checkpoint` put it too), through a temporary file
  in that folder renamed into place (an interrupted download leaves no file behind), with torch.hub's
  hash-prefix check when the file name carries one (`name-<sha256 prefix>.ext`, `torch.hub.HASH_REGEX`);
  a file already in the cache is not downloaded again;
- a hub id `timm/<model>.<tag>` (also `hf-hub:<org>/<repo>` / `hf_hub:<org>/<repo>`, timm's spellings, for any
  organisation): `huggingface_hub.hf_hub_download` of the `model.safetensors` timm publishes (`pytorch_model.bin`
  when the repository has no safetensors file), so huggingface_hub's cache, `HF_HOME`, `HF_ENDPOINT` and
  `HF_HUB_OFFLINE=1` apply.

A source that cannot be fetched (no network, an HTTP error, offline mode with an empty cache) raises
`CheckpointNotAvailableError` naming the file to download and where to put it.
"""
import hashlib
import http.client
import logging
import os
import re
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from typing import Optional

import torch

logger = logging.getLogger('vitpe_mm')

HUB_PREFIXES = ('hf-hub:', 'hf_hub:')
TIMM_ORG = 'timm/'
# what timm publishes on the hub, in the order tried
HUB_WEIGHT_FILES = ('model.safetensors', 'pytorch_model.bin')
_REPO_ID = re.compile(r'[\w.-]+/[\w.-]+')
_CHUNK = 1 << 20


class CheckpointNotAvailableError(FileNotFoundError):
    """A checkpoint that is not on disk and cannot be fetched (offline, unreachable, HTTP error)."""


def is_url(source: str) -> bool:
    return source.startswith(('http://', 'https://'))


def hub_repo_id(source: str) -> Optional[str]:
    """The Hugging Face repository a source names, or None for a path / URL.

    `hf-hub:org/name` and `hf_hub:org/name` always name a repository; a bare `timm/name` does unless a local
    file or folder of that name exists.
    """
    for prefix in HUB_PREFIXES:
        if source.startswith(prefix):
            repo_id = source[len(prefix):]
            break
    else:
        if not source.startswith(TIMM_ORG) or os.path.exists(source):
            return None
        repo_id = source
    if not _REPO_ID.fullmatch(repo_id):
        raise ValueError(f'{source!r} is not a hub id such as timm/twins_pcpvt_small.in1k or '
                         f'hf-hub:<org>/<repo>')
    return repo_id


def is_remote(source: str) -> bool:
    """True for a URL or a hub id: the file is fetched (or taken from a cache) when the weights are loaded."""
    return is_url(source) or hub_repo_id(source) is not None


def url_cache_path(url: str) -> str:
    """Where a URL's file is cached: torch's hub folder, under the name the URL ends with (as torch.hub)."""
    name = os.path.basename(urllib.parse.urlparse(url).path)
    if not name:
        raise ValueError(f'{url} does not end with a file name')
    return os.path.join(torch.hub.get_dir(), 'checkpoints', name)


def expected_hash_prefix(filename: str) -> Optional[str]:
    """The sha256 prefix a torch.hub-style name carries (`resnet50-0676ba61.pth` -> '0676ba61'), or None."""
    match = torch.hub.HASH_REGEX.search(filename)
    return match.group(1) if match and match.group(1) else None


def download_url(url: str, timeout: float = 60.0) -> str:
    """Returns the cached file of `url`, downloading it first when it is not in torch's hub cache."""
    dst = url_cache_path(url)
    if os.path.isfile(dst):
        return dst
    folder, name = os.path.split(dst)
    hash_prefix = expected_hash_prefix(name)
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f'.{name}.', suffix='.partial', dir=folder)
    logger.info('downloading %s to %s', url, dst)
    try:
        sha256, size = hashlib.sha256(), 0
        request = urllib.request.Request(url, headers={'User-Agent': 'vitpe_mm'})
        with os.fdopen(fd, 'wb') as out, urllib.request.urlopen(request, timeout=timeout) as response:
            expected = response.headers.get('Content-Length')
            while True:
                chunk = response.read(_CHUNK)
                if not chunk:
                    break
                out.write(chunk)
                sha256.update(chunk)
                size += len(chunk)
        if expected is not None and size != int(expected):
            raise http.client.IncompleteRead(b'', int(expected) - size)
        digest = sha256.hexdigest()
        if hash_prefix is not None and not digest.startswith(hash_prefix):
            from .loader import CheckpointError
            raise CheckpointError(
                f'{url}: the downloaded file has sha256 {digest}, but its name says it starts with {hash_prefix}; '
                'it is not kept. Check the URL (or a proxy that rewrites downloads).')
        os.replace(tmp, dst)
    except (urllib.error.URLError, http.client.HTTPException, OSError) as err:
        raise CheckpointNotAvailableError(
            f'could not download {url} ({_reason(err)}). Download it on a machine with internet access and '
            f'put it at {dst}, or pass its local path as checkpoint=.') from err
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return dst


def _reason(err: BaseException) -> str:
    if isinstance(err, urllib.error.HTTPError):
        return f'HTTP {err.code} {err.reason}'
    if isinstance(err, urllib.error.URLError):
        return str(err.reason)
    if isinstance(err, http.client.IncompleteRead):
        return f'the connection closed {err.expected} bytes before the end'
    text = str(err).strip().splitlines()
    return f'{type(err).__name__}: {text[0] if text else ""}'


def _env_offline() -> bool:
    # huggingface_hub reads HF_HUB_OFFLINE once, at import; honour it when it is set later as well
    return os.environ.get('HF_HUB_OFFLINE', '').strip().upper() in ('1', 'ON', 'YES', 'TRUE')


def hub_download(repo_id: str) -> str:
    """The local path of the weights file of a hub repository (huggingface_hub's cache, downloaded if needed)."""
    try:
        from huggingface_hub import constants, hf_hub_download
    except ImportError as err:
        raise CheckpointNotAvailableError(
            f'loading the hub id {repo_id} needs huggingface_hub (pip install huggingface_hub), or pass the local '
            f'path of its {HUB_WEIGHT_FILES[0]} as checkpoint=') from err
    errors = []
    for filename in HUB_WEIGHT_FILES:
        try:
            return hf_hub_download(repo_id, filename, local_files_only=_env_offline())
        except Exception as err:  # noqa: BLE001 - huggingface_hub's errors differ between versions; reported below
            errors.append(err)
    offline = _env_offline() or getattr(constants, 'HF_HUB_OFFLINE', False)
    endpoint = getattr(constants, 'ENDPOINT', 'https://huggingface.co').rstrip('/')
    reason = 'offline mode (HF_HUB_OFFLINE) and not in the cache' if offline else _reason(errors[0])
    raise CheckpointNotAvailableError(
        f'could not get the weights of the hub id {repo_id} ({reason}). Download '
        f'{endpoint}/{repo_id}/resolve/main/{HUB_WEIGHT_FILES[0]} and pass its local path as checkpoint=, or fill '
        f"huggingface_hub's cache ({constants.HF_HUB_CACHE}) on a machine with internet access "
        f'(`huggingface_hub.hf_hub_download("{repo_id}", "{HUB_WEIGHT_FILES[0]}")`).') from errors[0]


def resolve_checkpoint(source: str) -> str:
    """The local path of a checkpoint named by a path, an http(s) URL or a hub id (fetched when needed)."""
    source = str(source)
    if is_url(source):
        return download_url(source)
    repo_id = hub_repo_id(source)
    if repo_id is not None:
        return hub_download(repo_id)
    path = os.path.expanduser(source)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f'checkpoint file not found: {path}. Name a local file, an http(s) URL or a hub id such as '
            'timm/twins_pcpvt_small.in1k; convert an official/timm checkpoint with `python tools/convert_checkpoint.py '
            'SRC DST --model ...`, or drop init_cfg to train from scratch.')
    return path
