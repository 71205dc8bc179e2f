"""cfg.compile gets static shapes unless the config chose (torch 2.13 inductor fails on symbolic pyramid sizes)."""
import pytest

from vitpe_mm.engine.runner import static_compile_options


@pytest.mark.parametrize('given, expected', [
    (None, None),
    (False, False),
    (True, dict(dynamic=False)),
    (dict(backend='inductor'), dict(backend='inductor', dynamic=False)),
    (dict(dynamic=True), dict(dynamic=True)),  # an explicit choice is kept
    (dict(dynamic=None, mode='max-autotune'), dict(dynamic=None, mode='max-autotune')),
])
def test_static_compile_options(given, expected):
    original = dict(given) if isinstance(given, dict) else given
    assert static_compile_options(given) == expected
    assert given == original  # the config's dict is not modified in place


def test_bad_compile_option_is_rejected():
    with pytest.raises(TypeError, match='bool or a dict'):
        static_compile_options('inductor')
