import os

import pytest

# Nothing in the tests may reach a model hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="module")
def local_ray():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, configure_logging=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="session")
def model_path() -> str:
    """The embedded model: built once, cached under $RAYLIGN_CACHE for later runs."""
    from raylign.embedded.model import ensure_embedded_model

    return str(ensure_embedded_model())
