import pytest


@pytest.fixture(scope="session")
def toy_dir(tmp_path_factory):
    """The toy model + data, built once per test session (never the user's cache)."""
    from siren_verl.toy import ensure_toy_assets

    base = tmp_path_factory.mktemp("toy")
    ensure_toy_assets(str(base))
    return str(base)
